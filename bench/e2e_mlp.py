"""The optimizer's share of an end-to-end training step: an MNIST-sized MLP.

784-256-256-10 with ReLU, batch 128, cross-entropy; random inputs of MNIST's shape (the
time of a step does not depend on the pixel values). A step of A-SGD calls the closure
twice (at ``x_t`` and at the lookahead point); everything else in ``opt.step`` (the
lookahead, statistics, alpha, update, and the Python that drives them) is the
optimizer's own work. It is measured as the step's time minus the closures' time, and
split into the phase calls alone (kernels) and the rest (the Python that drives them).
``torch.optim``'s AdamW and SGD (foreach), whose step calls the closure once, are
measured the same way for scale.

    python bench/e2e_mlp.py --runs 3 --threads 1

The share moves with what else runs on the machine: a single-threaded job on the other
core of a 2-core machine (sharing its last-level cache and memory bandwidth) took the
A-SGD share from about 8% to 12-14% (docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Dict, List

import torch

import secant_ext
from secant_ext import _backends, _layout

from impls import phase_step
from timing import TimedLossClosure


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def optimizer_share(opt_cls, backend: str, steps: int = 60, warmup: int = 10,
                    batch: int = 128, **kwargs) -> Dict[str, float]:
    """Median step time, median closure time per step, and the optimizer's share."""
    model = _model()
    if backend is not None:  # (torch.optim's optimizers take none)
        kwargs = dict(kwargs, backend=backend)
    opt = opt_cls(model.parameters(), **kwargs)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 784, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    closure = TimedLossClosure(opt, model, torch.nn.CrossEntropyLoss(), x, y)
    step_times: List[float] = []
    closure_times: List[float] = []
    for i in range(warmup + steps):
        closure.spent = 0.0
        t0 = time.perf_counter()
        opt.step(closure)
        total = time.perf_counter() - t0
        if i >= warmup:
            step_times.append(total)
            closure_times.append(closure.spent)
    own = [s - c for s, c in zip(step_times, closure_times)]
    step_s = statistics.median(step_times)
    return dict(step_s=step_s, closures_s=statistics.median(closure_times),
                optimizer_s=statistics.median(own),
                share=statistics.median(o / s for o, s in zip(own, step_times)),
                phases_s=_phases_alone(model, backend, kwargs.get("momentum", 0.0))
                if backend is not None else None,
                steps=steps)


def _phases_alone(model, backend: str, momentum: float, repeats: int = 200) -> float:
    """Median time of the four phase calls alone on tensors of the model's shapes: the
    part of the optimizer's work that is kernels, the rest being the Python around them."""
    ns = _backends.resolve(backend, torch.device("cpu"))
    x = [p.detach().clone() for p in model.parameters()]
    g = [torch.randn_like(t) * 1e-3 for t in x]
    g_plus = [t * 1.5 for t in g]
    out = [torch.empty_like(t) for t in x]
    m = [torch.zeros_like(t) for t in x] if momentum else []
    state = torch.tensor(_layout.initial_state_values(), dtype=torch.float64)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        phase_step(ns, x, g, g_plus, out, m, state, momentum)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[repeats // 10:])


def run(backends: List[str], thread_counts: List[int]) -> List[dict]:
    """Every backend and optimizer at each thread count. One thread too: on a shared
    2-core machine a parallel region waits for a preempted peer thread, which inflates
    the many small ops of this step far more than it does large ones."""
    rows = []
    before = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for backend in backends:
                for name, cls, kw in (("A-SGD", secant_ext.SecantSGD, {}),
                                      ("A-SGDM", secant_ext.SecantSGDM, dict(momentum=0.9))):
                    res = optimizer_share(cls, backend, **kw)
                    rows.append(dict(optimizer=name, backend=backend, threads=threads, **res))
    finally:
        torch.set_num_threads(before)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each case, interleaved")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per run")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--backend", default="cpp")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("SecantSGD", secant_ext.SecantSGD, args.backend, {}),
             ("SecantSGDM", secant_ext.SecantSGDM, args.backend, dict(momentum=0.9)),
             ("SecantAdam", secant_ext.SecantAdam, args.backend, {}),
             ("AdamW foreach", torch.optim.AdamW, None, dict(lr=1e-3, foreach=True)),
             ("SGD foreach", torch.optim.SGD, None, dict(lr=1e-2, foreach=True))]
    results = {name: [] for name, *_ in cases}
    load_before = os.getloadavg()[0]
    for _ in range(args.runs):
        for name, cls, backend, kw in cases:
            results[name].append(optimizer_share(cls, backend, steps=args.steps, **kw))
    print(f"784-256-256-10 MLP, batch 128, {args.threads} thread(s), {args.runs} runs of "
          f"{args.steps} steps per case; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print("| optimizer | step ms | closures ms | own us | share (each run) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("step_s", "closures_s", "optimizer_s")}
        shares = ", ".join(f"{r['share']:.1%}" for r in runs)
        print(f"| {name} | {med['step_s'] * 1e3:.2f} | {med['closures_s'] * 1e3:.2f} | "
              f"{med['optimizer_s'] * 1e6:.0f} | {shares} |")


if __name__ == "__main__":
    main()
