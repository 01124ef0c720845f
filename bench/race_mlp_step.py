"""The optimizer's own time per step on the MNIST race's MLP, against the race's peers.

784-128-10 with ReLU, batch 128, cross-entropy, random inputs of MNIST's shape; one
thread. Per step, what is timed is the optimizer's work: ``opt.step(closure)`` minus the
closure calls for the Secant optimizers, ``opt.step()`` alone for the others (their
closure, zero_grad + forward + backward, runs just before, outside the timer). So a
measuring step's second evaluation is not counted here; the race counts it as an
evaluation. ``SecantAdam`` runs at its defaults (after its 50-step warm-up, 1 step in 8
measures: the median is a step that does not). Interleaved rounds after a warm-up of 100
steps each (gc off); cells are median us ±half the interquartile range, ratios of medians.

    python bench/race_mlp_step.py
    python bench/race_mlp_step.py --rounds 1000
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Callable, Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import secant_ext  # noqa: E402

from report import _table  # noqa: E402
from timing import TimedLossClosure, interleaved  # noqa: E402


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))


def case(make: Callable, closure_style: bool) -> Callable[[], float]:
    """One optimizer on its own model; returns a function that steps once and gives the
    optimizer's own seconds."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    model = _model()
    opt = make(model.parameters())
    closure = TimedLossClosure(opt, model, torch.nn.CrossEntropyLoss(), x, y)

    def one_step() -> float:
        if not closure_style:
            closure()
            t0 = time.perf_counter()
            opt.step()
            return time.perf_counter() - t0
        closure.spent = 0.0
        t0 = time.perf_counter()
        opt.step(closure)
        return time.perf_counter() - t0 - closure.spent
    return one_step


def cases() -> Dict[str, Callable[[], float]]:
    out = {"SecantAdam": case(lambda p: secant_ext.SecantAdam(p), True),
           "SecantSGD": case(lambda p: secant_ext.SecantSGD(p), True),
           "AdamW foreach": case(lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True), False)}
    try:
        sf = importlib.import_module("schedulefree").SGDScheduleFree

        def make_sf(p):
            opt = sf(p, lr=1.0)
            opt.train()
            return opt
        out["Schedule-Free SGD"] = case(make_sf, False)
    except ImportError:
        print("Schedule-Free SGD skipped: schedulefree not installed (pip install schedulefree)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = interleaved(cases(), args.rounds, args.warmup)
    ref = res["AdamW foreach"]["median_s"]
    rows = []
    for name, r in res.items():
        med, half_iqr = r["median_s"], (r["q75_s"] - r["q25_s"]) / 2
        rows.append([name, f"{med * 1e6:.0f} ±{half_iqr * 1e6:.0f}", f"{med / ref:.2f}x"])
    print(f"MNIST race MLP 784-128-10, batch 128, 1 thread, {args.rounds} interleaved rounds")
    print("\n".join(_table(["optimizer", "own us/step (median ±IQR/2)", "vs AdamW foreach"],
                           rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
