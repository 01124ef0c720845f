"""One run: a workload, a method, a seed (and a peak rate for a tuned method), trained to
its budget of gradient evaluations on the workload's own batches.

Every run of a seed starts from the same weights and sees the same batches in the same
order. What a method costs is counted, not assumed: each call of the closure is one
gradient evaluation (a Secant step that measures the curvature calls it twice), and the
seconds are those spent in ``step`` (evaluations and batch drawing excluded). The
held-out metric is taken at the start, ``EVAL_POINTS`` times along the budget and at
its end, through
``opt.eval()``/``opt.train()`` for optimizers that evaluate at an averaged point
(Schedule-Free, the Secant optimizers' ``average``). A run whose loss or metric turns
non-finite stops there and is marked diverged.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import torch

from ..experiments.training import evaluating, has_eval_mode
from ..history import StepHistory
from . import methods as methods_mod
from . import workloads as workloads_mod
from .tasks import Task, trainable

EVAL_POINTS = 40        # evaluations along a run, besides the one at the start
QUICK_EVAL_POINTS = 10  # ... under --quick
SECANT_FIELDS = ("alpha", "step_size", "dot", "s_sq", "skipped", "clipped")


@dataclass(frozen=True)
class Job:
    workload: str
    method: str
    seed: int
    budget: int
    lr: Optional[float] = None
    quick: bool = False
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None

    @property
    def name(self) -> str:
        lr = f"-lr{self.lr:g}" if self.lr is not None else ""
        return f"{self.method}{lr}-s{self.seed}-b{self.budget}"

    def path(self, out: str) -> str:
        return os.path.join(out, "runs", self.workload, self.name + ".json")


def set_lr(opt, base: List[float], factor: float) -> None:
    for g, lr in zip(opt.param_groups, base):
        g["lr"] = lr * factor


def train(job: Job, task: Task, progress: bool = False) -> Dict[str, object]:
    """Run ``job`` on ``task``; the record of its evaluations and steps."""
    method = methods_mod.get(job.method)
    torch.manual_seed(job.seed)
    model = task.model_fn()
    opt = method.make(model, task, job.budget, job.lr)
    modes = has_eval_mode(opt)
    if modes:
        opt.train()
    factor = (methods_mod.warmup_cosine(job.budget, method.warmup)
              if method.warmup is not None else None)
    base = [g["lr"] for g in opt.param_groups]
    secant = isinstance(opt, torch.optim.Optimizer) and hasattr(opt, "last_stats")
    history = StepHistory(SECANT_FIELDS if secant else ())
    batches = task.batches(job.seed)
    counts = {"grad_evals": 0}
    evals: List[Dict[str, float]] = []
    seconds, step, diverged = 0.0, 0, False
    every = max(job.budget // (QUICK_EVAL_POINTS if job.quick else EVAL_POINTS), 1)
    next_eval = every

    def evaluate():
        with evaluating(opt, modes):
            e = task.evaluate(model)
        evals.append(dict(e, step=step, grad_evals=counts["grad_evals"],
                          seconds=round(seconds, 4)))
        return e

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=job.budget, desc=f"{job.workload} {job.name}"[:40], leave=False,
                   mininterval=0.5, dynamic_ncols=True)
    evaluate()
    try:
        while counts["grad_evals"] < job.budget:
            x, y = next(batches)

            def closure():
                opt.zero_grad()
                loss = task.loss_fn(model(x), y)
                if task.penalty is not None:
                    loss = loss + task.penalty(model)
                loss.backward()
                counts["grad_evals"] += 1
                return loss
            if factor is not None:
                set_lr(opt, base, factor(step))
            t0 = time.perf_counter()
            before = counts["grad_evals"]
            loss = opt.step(closure)
            seconds += time.perf_counter() - t0
            step += 1
            if bar is not None:
                bar.update(counts["grad_evals"] - before)
            if secant:
                history.record(opt, loss=loss)
            else:
                history.record(loss=loss)
            finite = math.isfinite(float(loss.detach()))
            if not finite or counts["grad_evals"] >= next_eval or \
                    counts["grad_evals"] >= job.budget:
                while next_eval <= counts["grad_evals"]:
                    next_eval += every
                e = evaluate()
                if not (finite and math.isfinite(e["metric"])):
                    diverged = True
                    break
    finally:
        if bar is not None:
            bar.close()
    final = evals[-1]
    finite_metrics = [e["metric"] for e in evals if math.isfinite(e["metric"])]
    return {"job": asdict(job), "label": method.label, "group": method.group,
            "diverged": diverged, "final_metric": math.inf if diverged else final["metric"],
            "final_loss": math.inf if diverged else final["loss"],
            "best_metric": min(finite_metrics) if finite_metrics else math.inf,
            "grad_evals": counts["grad_evals"], "steps": step, "seconds": round(seconds, 3),
            "params": sum(p.numel() for p in trainable(model)),
            "evals": evals, "history": history.rows()}


def build_task(job: Job) -> Task:
    w = workloads_mod.get(job.workload)
    return w.build(workloads_mod.Context(job.seed, job.data_dir, job.quick, job.cache_dir))


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "inf", "nan": JSON has no spelling for them
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _from_json(v):
    if v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, dict):
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def load(path: str) -> Optional[Dict[str, object]]:
    """A finished run's record, or None when it has not finished."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return _from_json(json.load(f))


def save(record: Dict[str, object], path: str) -> None:
    """Written to a temporary file and renamed: a run is on disk whole or not at all."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_safe(record), f)
    os.replace(tmp, path)


def run_job(job: Job, out: str, threads: int = 1, progress: bool = False) -> Dict[str, object]:
    """Run ``job`` (unless its record is already in ``out``) and save its record; the
    entry point of the suite's worker processes."""
    done = load(job.path(out))
    if done is not None:
        return done
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    record = train(job, build_task(job), progress=progress)
    record["wall_seconds"] = round(time.perf_counter() - t0, 2)  # with building, evaluating
    save(record, job.path(out))
    return record
