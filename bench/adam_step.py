"""SecantAdam's step against torch.optim.AdamW(fused=True), and the state each keeps.

Time: a model-sized bucket of fp32 tensors (``--elements`` in all, default 2^22, split
into ``--tensors`` of equal size), one thread by default. What is timed per step is as in
``bench/many_tensors.py``: SecantAdam ``step(closure)`` minus the closure calls (which only
assign precomputed gradients, alternating two sets so the look-back sees a gradient that
moved); AdamW ``step()`` after the same assignment, outside the timer. SecantAdam's
steps come in three kinds, timed apart (``secant_adam_cases``): the plain step, the step
before a measurement (it also writes u) and the measuring step (two closure calls, the
look-back and its statistics); after the warm-up, 1 step in 8 measures and 1 in 8
precedes a measurement. ``average=False`` for the time (AdamW keeps no average); with it
the step adds one pass (12 bytes per fp32 element). Interleaved rounds; cells are median ms
±half the interquartile range and GB/s by the byte model of docs/ALGORITHM.md; ratios of
medians from the same rounds.

Memory: the optimizer state per parameter element, in bytes, after a few steps on the same
parameters (the state's tensors with a parameter's number of elements; the few bytes of
scalars, and SecantAdam's 29-value group state, left out): SecantAdam with and without ``average``, AdamW, and Prodigy when
``prodigyopt`` is installed.

    python bench/adam_step.py                      # 2^22 elements in 16 tensors, 1 thread
    python bench/adam_step.py --elements 1048576 --repeats 30 --threads 2
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import secant_ext  # noqa: E402

import host_time  # noqa: E402
from many_tensors import TimedClosure, torch_case  # noqa: E402
from report import _table  # noqa: E402
from timing import interleaved  # noqa: E402

# bytes per fp32 element (docs/ALGORITHM.md, 'Kernels and their byte model')
BYTES = {"AdamW fused": 28, "SecantAdam, plain step": 32,
         "SecantAdam, step before a measurement": 36, "SecantAdam, measuring": 52}


def make_problem(elements: int, tensors: int, seed: int = 0):
    """``tensors`` parameters of ``elements // tensors`` each, and two gradient sets."""
    return host_time.make_problem([elements // tensors] * tensors, seed)


def _timed_step(opt, closure) -> Callable[[], float]:
    def timed() -> float:
        closure.spent = 0.0
        t0 = time.perf_counter()
        opt.step(closure)
        return time.perf_counter() - t0 - closure.spent
    return timed


def secant_adam_cases(elements, tensors, backend: str) -> Dict[str, Callable[[], float]]:
    """SecantAdam's three kinds of step, each on parameters of its own: the plain step
    (neither measures nor keeps u: 7 steps in 8 of the default schedule), the step before a
    measurement (keeps u) and the measuring step (the look-back, its statistics, the
    update). ``curvature_every=2`` without a warm-up alternates the last two (a measuring
    step then does not keep u, as after the default warm-up); each of those cases first
    steps past the other kind, untimed, when it is due."""
    params, grad_sets = make_problem(elements, tensors)
    plain = secant_ext.SecantAdam(params, backend=backend, average=False,
                                  curvature_every=1 << 40, curvature_warmup=0)
    plain_closure = TimedClosure(params, grad_sets)
    params, grad_sets = make_problem(elements, tensors)
    opt = secant_ext.SecantAdam(params, backend=backend, average=False,
                                curvature_every=2, curvature_warmup=0)
    closure = TimedClosure(params, grad_sets)
    timed = _timed_step(opt, closure)

    def case(measuring: bool) -> Callable[[], float]:
        def one_step() -> float:
            if opt._measures(opt.param_groups[0], opt._curvature_clock) != measuring:
                opt.step(closure)
            return timed()
        return one_step
    return {"SecantAdam, plain step": _timed_step(plain, plain_closure),
            "SecantAdam, step before a measurement": case(False),
            "SecantAdam, measuring": case(True)}


def time_steps(elements: int, tensors: int, backend: str, repeats: int,
               warmup: int = 3) -> Dict[str, dict]:
    cases = secant_adam_cases(elements, tensors, backend)
    adamw_params, grad_sets = make_problem(elements, tensors)
    cases["AdamW fused"] = torch_case(torch.optim.AdamW(adamw_params, lr=1e-3, fused=True),
                                      adamw_params, grad_sets)
    return interleaved(cases, repeats, warmup)


def state_bytes_per_element(make_opt: Callable, steps: int = 3) -> float:
    """Bytes of the state's parameter-sized tensors per parameter element."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))
    x, y = torch.randn(32, 64), torch.randn(32, 8)
    opt = make_opt(model.parameters())

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss
    for _ in range(steps):
        opt.step(closure)
    numel = sum(p.numel() for p in model.parameters())
    total = 0
    for p in model.parameters():  # tensors of p's size, in any shape (Prodigy flattens)
        for v in opt.state[p].values():
            if isinstance(v, torch.Tensor) and v.numel() == p.numel():
                total += v.numel() * v.element_size()
    return total / numel


def memory_rows() -> List[List[str]]:
    makers = {
        "SecantAdam (average=True, the default)": lambda p: secant_ext.SecantAdam(p),
        "SecantAdam (average=False)": lambda p: secant_ext.SecantAdam(p, average=False),
        "torch.optim.AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3),
    }
    try:
        prodigy = importlib.import_module("prodigyopt").Prodigy
        makers["Prodigy (prodigyopt)"] = lambda p: prodigy(p, lr=1.0)
    except ImportError:
        makers["Prodigy (prodigyopt not installed)"] = None
    rows = []
    for name, make in makers.items():
        if make is None:
            rows.append([name, "-", "-"])
            continue
        b = state_bytes_per_element(make)
        rows.append([name, f"{b:.0f}", f"{b / 4:.0f}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=1 << 22)
    ap.add_argument("--tensors", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="cpp", choices=("cpp", "reference"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = time_steps(args.elements, args.tensors, args.backend, args.repeats)
    ref = res["AdamW fused"]["median_s"]
    n = (args.elements // args.tensors) * args.tensors
    rows = []
    for name, r in res.items():
        med, half_iqr = r["median_s"], (r["q75_s"] - r["q25_s"]) / 2
        gbs = BYTES[name] * n / med / 1e9
        rows.append([name, f"{med * 1e3:.2f} ±{half_iqr * 1e3:.2f}", f"{gbs:.1f}",
                     f"{med / ref:.2f}x"])
    print(f"fp32, {n:,} elements in {args.tensors} tensors, {args.threads} thread(s), "
          f"backend {args.backend}, {args.repeats} interleaved rounds")
    print("\n".join(_table(["step", "ms (median ±IQR/2)", "GB/s (byte model)",
                            "vs AdamW fused"], rows)))
    print("\nstate per parameter element (parameter-sized tensors of the state)")
    print("\n".join(_table(["optimizer", "bytes", "fp32 buffers"], memory_rows())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
