"""SecantAdam's step against torch.optim.AdamW(fused=True), and the state each keeps.

Time: a model-sized bucket of fp32 tensors (``--elements`` in all, default 2^22, split
into ``--tensors`` of equal size), one thread by default. What is timed per step is as in
``bench/many_tensors.py``: SecantAdam ``step(closure)`` minus the closure calls (which only
assign precomputed gradients, alternating two sets so the look-back sees a gradient that
moved); AdamW ``step()`` after the same assignment, outside the timer. SecantAdam's
steps come in three kinds, timed apart (``secant_adam_cases``): the plain step, the step
before a measurement (the same passes; it keeps only the step size) and the measuring step
(two closure calls, the previous step recomputed, the look-back and its statistics); after
the warm-up, 1 step in 8 measures and 1 in 8 precedes a measurement. ``average=False`` for the time (AdamW keeps no average); with it
the step adds one pass (12 bytes per fp32 element). Interleaved rounds; cells are median ms
±half the interquartile range and GB/s by the byte model of docs/ALGORITHM.md; ratios of
medians from the same rounds.

Memory: bytes per parameter held between steps and at a measuring step's peak, for every
optimizer of ``bench/memory.py`` (the Secant optimizers, AdamW, Schedule-Free AdamW and
Prodigy when installed).

    python bench/adam_step.py                      # 2^22 elements in 16 tensors, 1 thread
    python bench/adam_step.py --elements 1048576 --repeats 30 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import secant_ext  # noqa: E402

import host_time  # noqa: E402
from many_tensors import TimedClosure, torch_case  # noqa: E402
from memory import memory_rows  # noqa: E402
from report import _table  # noqa: E402
from timing import interleaved  # noqa: E402

# bytes per fp32 element (docs/ALGORITHM.md, 'Kernels and their byte model'): the plain
# step's statistics read g (4) and its update moves AdamW's 28; a measuring step adds the
# previous step twice (m, v read, u written: 12 each; the swap lookahead writes x + u over
# it in between: x, u read, 12) and reads u, g_plus and s for its statistics (12, not 4)
BYTES = {"AdamW fused": 28, "SecantAdam, plain step": 32,
         "SecantAdam, step before a measurement": 32, "SecantAdam, measuring": 76}
CYCLE = {"SecantAdam, plain step": 6, "SecantAdam, step before a measurement": 1,
         "SecantAdam, measuring": 1}  # an 8-step cycle after the warm-up


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
    (6 steps in 8 of the default schedule), the step before a measurement (the same passes;
    it keeps the step size of u for the next one) and the measuring step (u recomputed, the
    look-back, its statistics, the update). ``curvature_every=2`` without a warm-up
    alternates the last two; each of those cases first steps past the other kind, untimed,
    when it is due."""
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
                     f"{med / ref:.2f}x", f"{BYTES[name] / BYTES['AdamW fused']:.2f}x"])
    cycle = sum(k * res[name]["median_s"] for name, k in CYCLE.items())
    cycle_bytes = sum(k * BYTES[name] for name, k in CYCLE.items())
    rows.append(["SecantAdam, 8-step cycle (per step)", f"{cycle / 8 * 1e3:.2f}",
                 f"{cycle_bytes * n / cycle / 1e9:.1f}", f"{cycle / (8 * ref):.2f}x",
                 f"{cycle_bytes / (8 * BYTES['AdamW fused']):.2f}x"])
    print(f"fp32, {n:,} elements in {args.tensors} tensors, {args.threads} thread(s), "
          f"backend {args.backend}, {args.repeats} interleaved rounds")
    print("\n".join(_table(["step", "ms (median ±IQR/2)", "GB/s (byte model)",
                            "vs AdamW fused", "bytes vs AdamW's"], rows)))
    print("\nbytes per fp32 parameter (bench/memory.py)")
    print("\n".join(_table(["optimizer", "between steps", "at peak (measuring step)"],
                           memory_rows())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
