"""The training loop every experiment and every optimizer shares.

Fair comparison: every method starts from the same initial weights (the seed), sees the
same mini-batches in the same order for the same number of epochs, and the loop counts
what each one really costs: gradient evaluations (backward passes) and examples whose
gradient was taken, measured by counting closure calls, not assumed.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from secant_ext.history import StepHistory

from ._deps import require
from .datasets import Dataset
from .methods import Method
from .models import predictions


@dataclass
class RunResult:
    method: Method
    evals: List[Dict[str, float]] = field(default_factory=list)  # one row per evaluation
    steps: Optional[StepHistory] = None  # per-step loss, grad norm, alpha or lr
    train_seconds: float = 0.0   # time in optimizer steps, evaluations excluded
    grad_evals: int = 0          # backward passes
    examples: int = 0            # per-example gradients taken (batch sizes summed)
    diverged: bool = False

    @property
    def final(self) -> Dict[str, float]:
        return self.evals[-1] if self.evals else {}

    def summary(self) -> Dict[str, object]:
        f = self.final
        return {"method": self.method.name, "family": self.method.family,
                "hyper": self.method.hyper, "final_train_loss": f.get("train_loss"),
                "final_test_acc": f.get("test_acc"), "final_test_loss": f.get("test_loss"),
                "epochs": f.get("epoch"), "steps": f.get("step"),
                "grad_evals": self.grad_evals, "examples": self.examples,
                "train_seconds": round(self.train_seconds, 3), "diverged": self.diverged}


@torch.no_grad()
def evaluate(model, loss_fn, x, y, batch: int = 256):
    """Mean loss and accuracy (percent) over ``x, y``."""
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        total += float(loss_fn(out, y[i:i + batch])) * len(out)
        correct += int((predictions(out) == y[i:i + batch]).sum())
    model.train()
    n = max(len(x), 1)
    return total / n, 100.0 * correct / n


def has_eval_mode(opt) -> bool:
    """Whether ``opt`` follows Schedule-Free's convention (``train()``/``eval()``: evaluate
    at the averaged point); the Secant optimizers do too (a no-op without ``average``)."""
    return all(callable(getattr(opt, m, None)) for m in ("train", "eval"))


@contextlib.contextmanager
def evaluating(opt, modes: bool):
    """``opt.eval()`` around an evaluation and ``opt.train()`` after it, when ``modes``."""
    if modes:
        opt.eval()
    try:
        yield
    finally:
        if modes:
            opt.train()


def counting_closure(opt, model, loss_fn: Callable, xb, yb, result):
    """The closure of one batch: zero the gradients, backward, and count one gradient
    evaluation and ``len(xb)`` examples on ``result``."""
    def closure():
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        result.grad_evals += 1
        result.examples += len(xb)
        return loss
    return closure


def _grad_norm(params) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


def train(model_fn: Callable[[], torch.nn.Module], method: Method, data: Dataset,
          loss_fn: Callable, epochs: float, batch_size: int, seed: int,
          max_steps: Optional[int] = None, evals_per_epoch: int = 1,
          progress: bool = True, train_loss_examples: Optional[int] = None) -> RunResult:
    """Train a fresh model (initialized from ``seed``) with ``method``; evaluate the full
    training loss (over the first ``train_loss_examples`` training examples when given)
    and the test accuracy ``evals_per_epoch`` times per epoch.

    An optimizer with ``train()``/``eval()`` methods (Schedule-Free) is put in eval mode
    for each evaluation and back in train mode after it, outside the timed steps.

    ``epochs`` may be fractional. A run whose training loss turns non-finite stops there
    and is marked ``diverged``."""
    tqdm = require("tqdm").tqdm
    torch.manual_seed(seed)
    model = model_fn()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = method.make(params)
    # Schedule-Free's convention: evaluate at the averaged point, train at the other one
    modes = has_eval_mode(opt)
    if modes:
        opt.train()
    x_loss = data.x_train[:train_loss_examples] if train_loss_examples else data.x_train
    y_loss = data.y_train[:train_loss_examples] if train_loss_examples else data.y_train
    n = len(data.x_train)
    batch_size = min(batch_size, n)
    per_epoch = max(n // batch_size, 1)  # full batches only: every step the same size
    total = max(int(round(epochs * per_epoch)), 1)
    if max_steps:
        total = min(total, max_steps)
    eval_every = max(per_epoch // max(evals_per_epoch, 1), 1)
    order = torch.Generator().manual_seed(seed)
    probe_rng = torch.Generator().manual_seed(seed + 1)
    result = RunResult(method, steps=StepHistory(getattr(opt, "HISTORY_FIELDS",
                                                         ("alpha", "grad_norm")))
                       if method.secant else StepHistory(()))

    def log_eval(step: int) -> bool:
        with evaluating(opt, modes):
            train_loss, _ = evaluate(model, loss_fn, x_loss, y_loss)
            test_loss, test_acc = evaluate(model, loss_fn, data.x_test, data.y_test)
        result.evals.append({"step": step, "epoch": step / per_epoch,
                             "grad_evals": result.grad_evals, "examples": result.examples,
                             "train_loss": train_loss, "test_loss": test_loss,
                             "test_acc": test_acc, "train_seconds": result.train_seconds})
        return math.isfinite(train_loss)

    log_eval(0)
    bar = tqdm(total=total, desc=f"{method.name:<24.24}", leave=False, disable=not progress,
               mininterval=0.5, dynamic_ncols=True)
    step, perm = 0, None
    try:
        while step < total:
            if step % per_epoch == 0:
                perm = torch.randperm(n, generator=order)
            i = step % per_epoch
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            t0 = time.perf_counter()
            if method.schedule is not None:
                lr = method.schedule(step / per_epoch)
                for g in opt.param_groups:
                    g["lr"] = lr

            closure = counting_closure(opt, model, loss_fn, xb, yb, result)
            if method.secant:
                probe = None
                if method.probe_batch:  # S_H: a separate batch, drawn independently of S_t
                    hidx = torch.randint(n, (method.probe_batch,), generator=probe_rng)
                    probe = counting_closure(opt, model, loss_fn, data.x_train[hidx],
                                             data.y_train[hidx], result)
                loss = opt.step(closure, probe_closure=probe)
                result.steps.record(opt, loss=loss)
            else:
                loss = opt.step(closure)
                result.steps.record(loss=loss, grad_norm=_grad_norm(params),
                                    lr=opt.param_groups[0].get("lr", float("nan")))
            result.train_seconds += time.perf_counter() - t0
            step += 1
            bar.update(1)
            if step % eval_every == 0 or step == total:
                ok = log_eval(step)
                f = result.final
                bar.set_postfix(loss=f"{f['train_loss']:.4g}", acc=f"{f['test_acc']:.2f}")
                if not ok:
                    result.diverged = True
                    break
    finally:
        bar.close()
    return result
