"""The optimizer's own time per step on many small tensors, against torch.optim.SGD.

10,000 parameter tensors (``--tensors``) of 64 to 4096 fp32 elements, sizes drawn at random
with a fixed seed: about 20 M elements in all, so the per-tensor costs of the step (the
Python that drives it, the host side of each op call) weigh as much as the memory passes.

What is timed, per step:

- Secant optimizers: ``opt.step(closure)`` minus the time of the closure calls inside it
  (the closure times itself). The closure only assigns precomputed gradients
  (``p.grad = g`` for every parameter); it alternates between two gradient sets (``g``
  and ``1.01 g``) so the lookahead sees a gradient that moved (``y != 0``) and the step
  is the full step, not a stalled one.
- ``torch.optim.SGD``: ``opt.step()`` alone; the same assignment of the gradients runs
  just before it, outside the timer. So the assignment is *excluded on both sides*.

Every round runs each case once, in a fixed order (interleaved rounds, as
``bench/interleaved.py``), so load drift on a shared machine hits all cases alike; the
ratios are of medians over the same rounds. Cells: median ms ±half the interquartile range.

    python bench/many_tensors.py                       # 10,000 tensors, cpp and reference
    python bench/many_tensors.py --tensors 2000 --repeats 5 --backends cpp
    python bench/many_tensors.py --profile             # also cProfile the cpp steps
"""
from __future__ import annotations

import argparse
import cProfile
import collections
import functools
import gc
import io
import os
import pstats
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import secant_ext  # noqa: E402

from report import _table  # noqa: E402
from timing import quantile  # noqa: E402

MIN_NUMEL, MAX_NUMEL = 64, 4096
# the optimizer's own time at most 3.2x that of SGD(foreach=True): 1.2x the byte floor of
# SecantSGD against SGD (32N bytes a step against 12N, 2.67x); the same bound for SecantSGDM
# against SGD with momentum
TARGET = 3.2


def make_problem(n: int, seed: int = 0):
    """``n`` parameters of random sizes in [64, 4096] and two gradient sets for them."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(MIN_NUMEL, MAX_NUMEL + 1, (n,), generator=gen).tolist()
    params = [torch.nn.Parameter(torch.randn(k, generator=gen)) for k in sizes]
    grads = [torch.randn(k, generator=gen) * 1e-3 for k in sizes]
    grads_plus = [g * 1.01 for g in grads]
    return params, (grads, grads_plus)


class TimedClosure:
    """Assigns a gradient set to ``p.grad`` (alternating the two sets) and adds its own
    time to ``spent``."""

    def __init__(self, params, grad_sets):
        self.params, self.grad_sets = params, grad_sets
        self.calls = 0
        self.spent = 0.0
        self.loss = torch.zeros(())

    def __call__(self):
        t0 = time.perf_counter()
        for p, g in zip(self.params, self.grad_sets[self.calls % 2]):
            p.grad = g
        self.calls += 1
        self.spent += time.perf_counter() - t0
        return self.loss


def secant_case(cls, params, grad_sets, **kwargs) -> Callable[[], float]:
    opt = cls(params, **kwargs)
    closure = TimedClosure(params, grad_sets)

    def one_step() -> float:
        closure.spent = 0.0
        closure.calls = 0
        t0 = time.perf_counter()
        opt.step(closure)
        return time.perf_counter() - t0 - closure.spent
    one_step.opt = opt
    return one_step


def torch_case(opt, params, grad_sets) -> Callable[[], float]:
    """A ``torch.optim`` optimizer's ``step()`` alone: the gradients are assigned before it,
    outside the timer."""
    grads = grad_sets[0]

    def one_step() -> float:
        for p, g in zip(params, grads):  # the assignment: outside the timer
            p.grad = g
        t0 = time.perf_counter()
        opt.step()
        return time.perf_counter() - t0
    one_step.opt = opt
    return one_step


def sgd_case(params, grad_sets, **kwargs) -> Callable[[], float]:
    return torch_case(torch.optim.SGD(params, lr=1e-3, **kwargs), params, grad_sets)


def fused_sgd_works() -> bool:
    try:
        p = torch.nn.Parameter(torch.zeros(4))
        p.grad = torch.ones(4)
        torch.optim.SGD([p], lr=0.1, fused=True).step()
        return True
    except Exception:  # noqa: BLE001 - any refusal means "not on this build"
        return False


def build_cases(n: int, backends: List[str]):
    """{name: (step function, row label, momentum)}: each case has its own parameters (the
    steps move them; identical values at the start, the same gradients)."""
    _, grad_sets = make_problem(n)
    cases = {}

    def fresh():
        return make_problem(n)[0]

    for backend in backends:
        cases[f"SecantSGD {backend}"] = (
            secant_case(secant_ext.SecantSGD, fresh(), grad_sets, backend=backend), 0.0)
        cases[f"SecantSGDM {backend}"] = (
            secant_case(secant_ext.SecantSGDM, fresh(), grad_sets, backend=backend,
                        momentum=0.9), 0.9)
    for momentum in (0.0, 0.9):
        cases[f"SGD foreach m={momentum}"] = (
            sgd_case(fresh(), grad_sets, foreach=True, momentum=momentum), momentum)
    if fused_sgd_works():
        for momentum in (0.0, 0.9):
            cases[f"SGD fused m={momentum}"] = (
                sgd_case(fresh(), grad_sets, fused=True, momentum=momentum), momentum)
    return cases


def run(n: int, backends: List[str], repeats: int, warmup: int = 2) -> Dict[str, dict]:
    cases = build_cases(n, backends)
    times = {name: [] for name in cases}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timing.measure: no collection of a step's lists lands in a timing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(warmup):
                for fn, _m in cases.values():
                    fn()
            for _ in range(repeats):
                for name, (fn, _m) in cases.items():
                    times[name].append(fn())
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: dict(median_s=statistics.median(ts), q25_s=quantile(ts, 0.25),
                       q75_s=quantile(ts, 0.75), min_s=min(ts), momentum=cases[name][1],
                       repeats=len(ts))
            for name, ts in times.items()}


def render(res: Dict[str, dict], n: int) -> str:
    def cell(r):
        spread = (r["q75_s"] - r["q25_s"]) / 2 / r["median_s"]
        return f"{r['median_s'] * 1e3:.1f} ±{spread:.0%}"

    body = []
    for name, r in res.items():
        m = "0.9" if r["momentum"] else "0"
        ref_f = res.get(f"SGD foreach m={r['momentum']}")
        ref_u = res.get(f"SGD fused m={r['momentum']}")
        vs_f = r["median_s"] / ref_f["median_s"] if ref_f else None
        vs_u = r["median_s"] / ref_u["median_s"] if ref_u else None
        verdict = ""
        if name.startswith("Secant") and vs_f is not None:
            verdict = "met" if vs_f <= TARGET else "MISSED"
        body.append([name, m, cell(r), f"{r['median_s'] / n * 1e6:.2f}",
                     f"{vs_f:.2f}x" if vs_f else "", f"{vs_u:.2f}x" if vs_u else "", verdict])
    return "\n".join(_table(["case", "momentum", "own ms/step", "us/tensor",
                             "vs SGD foreach", "vs SGD fused", f"<= {TARGET:g}x"], body))


# The parts of a step timed by ``pieces``: (module, attribute path, label). A part the
# code no longer has is left out (the step is being reworked).
PIECES = [
    ("secant_ext._grads", "GradientLedger.set_aside", "set_aside (stale or earlier p.grad, one pass)"),
    ("secant_ext._base", "SecantOptimizer._take_into_plan", "_take_into_plan (plan checked while the gradients are taken)"),
    ("secant_ext._plan", "Bucket.take_training_grads", "take_training_grads (after the take: no pass when it fits)"),
    ("secant_ext._plan", "Bucket.take_grads_and_point_back", "take_grads_and_point_back (lookahead grads + p.data back)"),
    ("secant_ext._lookahead", "Lookahead.evaluate", "Lookahead.evaluate, all of it (closure included)"),
    ("secant_ext._lookahead", "Lookahead._buffers", "Lookahead._buffers (cached lookahead buffers)"),
    ("secant_ext._base", "SecantOptimizer._apply", "_apply, all of it (stats, alpha, update ops)"),
    ("secant_ext._grads", "GradientLedger.after_step", "after_step (p.grad put back and recorded, one pass)"),
    ("secant_ext._base", "SecantOptimizer._warn_if_unmeasured", "_warn_if_unmeasured"),
]
PHASES = ("lookahead", "secant_stats", "secant_alpha", "update")


def pieces(n: int, steps: int = 10) -> str:
    """The parts of a cpp step, each timed by a ``perf_counter`` wrapper (far less overhead
    than cProfile's per-call hooks), in ms per step (mean) and us per tensor."""
    import importlib
    from secant_ext import _backends
    acc: Dict[str, float] = collections.defaultdict(float)

    def wrap(owner, name, label):
        f = getattr(owner, name)

        @functools.wraps(f)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.perf_counter() - t0
        setattr(owner, name, timed)
        return lambda: setattr(owner, name, f)

    undo = []
    for mod, path, label in PIECES:
        owner = importlib.import_module(mod)
        *outer, name = path.split(".")
        for o in outer:
            owner = getattr(owner, o, None)
        if owner is not None and hasattr(owner, name):
            undo.append(wrap(owner, name, label))
    ns = _backends.resolve("cpp", torch.device("cpu"))
    for ph in PHASES:
        undo.append(wrap(ns, ph, f"op {ph} (C++: host side + kernel)"))
    lines = []
    try:
        for cls, kw in ((secant_ext.SecantSGD, {}), (secant_ext.SecantSGDM, dict(momentum=0.9))):
            params, grad_sets = make_problem(n)
            fn = secant_case(cls, params, grad_sets, backend="cpp", **kw)
            gc.collect()
            gc.disable()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn()
                    fn()
                    acc.clear()
                    own = []
                    for _ in range(steps):
                        own.append(fn())
            finally:
                gc.enable()
            lines += ["", f"{cls.__name__} cpp, {n} tensors, {steps} steps: own time median "
                      f"{statistics.median(own) * 1e3:.1f} ms/step (parts nest: evaluate and "
                      "_apply contain the ops and _buffers)", ""]
            lines += _table(["part", "ms/step", "us/tensor"],
                            [[k, f"{v / steps * 1e3:.2f}", f"{v / steps / n * 1e6:.3f}"]
                             for k, v in sorted(acc.items(), key=lambda kv: -kv[1])])
    finally:
        for u in reversed(undo):
            u()
    return "\n".join(lines)


def op_host_costs(n: int, repeats: int = 15) -> str:
    """The cpp ops called directly on ``n`` tensors of the benchmark's sizes and on ``n``
    tensors of one element each: the latter is their host-side cost alone (dispatch of the
    TensorList arguments, the list checks, the chunk table), the kernels having no work."""
    from secant_ext import _backends, _layout
    ns = _backends.resolve("cpp", torch.device("cpu"))
    opts = dict(momentum=0.0, nesterov=False, weight_decay=0.0, sign_mode=_layout.SIGN_NONE)
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(MIN_NUMEL, MAX_NUMEL + 1, (n,), generator=gen).tolist()

    def med(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    cols = {}
    for label, sizes in (("sizes 64-4096", real), ("1 element each", [1] * n)):
        x = [torch.randn(k) for k in sizes]
        g = [torch.randn(k) * 1e-3 for k in sizes]
        gp = [t * 1.01 for t in g]
        out = [torch.empty_like(t) for t in x]
        st = torch.tensor(_layout.initial_state_values(), dtype=torch.float64)
        tab = ns.secant_stats(g, gp, [], x, [], st, **opts)
        cols[label] = {
            "op lookahead": med(lambda: ns.lookahead(x, g, out)),
            "op secant_stats": med(lambda: ns.secant_stats(g, gp, [], x, [], st, **opts)),
            "op update": med(lambda: ns.update(x, g, [], tab, st, **opts)),
            "torch._foreach_add_ (SGD m=0's one op)":
                med(lambda: torch._foreach_add_(x, g, alpha=-1e-12)),
            "torch._foreach_zero_": med(lambda: torch._foreach_zero_(out)),
            "[torch.zeros_like(t) for t in x]": med(lambda: [torch.zeros_like(t) for t in x]),
        }
    labels = list(cols)
    body = [[k] + [f"{cols[c][k] * 1e3:.2f} ({cols[c][k] / n * 1e6:.2f})" for c in labels]
            for k in cols[labels[0]]]
    return "\n".join(["", f"Ops on {n} tensors, ms per call (us per tensor)", ""] +
                     _table(["call"] + labels, body))


def profile(n: int, steps: int = 5, top: int = 25) -> str:
    """cProfile of ``steps`` steps of SecantSGD and SecantSGDM (cpp), closures included
    (they show as ``TimedClosure.__call__``)."""
    out = []
    for cls, kw in ((secant_ext.SecantSGD, {}), (secant_ext.SecantSGDM, dict(momentum=0.9))):
        params, grad_sets = make_problem(n)
        fn = secant_case(cls, params, grad_sets, backend="cpp", **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
            fn()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(steps):
                fn()
            prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
        out.append(f"== {cls.__name__} cpp, {n} tensors, {steps} steps (tottime = self "
                   f"time; divide by {steps} for per step) ==\n{s.getvalue()}")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensors", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds")
    ap.add_argument("--backends", default="cpp,reference")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--profile", action="store_true", help="also cProfile the cpp steps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    res = run(args.tensors, args.backends.split(","), args.repeats)
    load_after = os.getloadavg()
    print(f"{args.tensors} fp32 tensors of {MIN_NUMEL}-{MAX_NUMEL} elements (seed 0), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved rounds; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print("Own time: Secant = step(closure) - closures; SGD = step() after the gradients "
          "are assigned (assignment excluded on both sides).")
    print(render(res, args.tensors))
    if args.profile:
        print(pieces(args.tensors))
        print(op_host_costs(args.tensors))
        print(profile(args.tensors))


if __name__ == "__main__":
    main()
