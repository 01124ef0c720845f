"""Wall-clock timing with warmup and a spread, sized to a time budget.

``time.perf_counter`` around single calls, not ``torch.utils.benchmark``'s blocked
ranges: one call of a large case takes 10 ms to seconds, far above the timer's
resolution, and single calls give the spread between calls that the tables report.
CPU ops are synchronous, so no device synchronization is needed.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, asdict
from typing import Callable, List


@dataclass
class Timing:
    median_s: float
    q25_s: float
    q75_s: float
    min_s: float
    max_s: float
    repeats: int
    first_s: float  # the first call: includes torch.compile's compilation, if any

    def as_dict(self) -> dict:
        return asdict(self)


def quantile(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# A first call this long is already in its steady state (a one-time cost of a few ms,
# such as starting the thread pool, is lost in it) and counts as a timed call: that
# saves a whole call of the eager reference at 2**26, seconds each.
STEADY_FIRST_CALL_S = 0.2


def measure(fn: Callable[[], object], budget_s: float = 1.0, min_repeats: int = 3,
            max_repeats: int = 30, compiles: bool = False) -> Timing:
    """Time ``fn``: a first call timed apart (``first_s``), then as many timed calls as
    fit in ``budget_s``, at least ``min_repeats``. The first call counts among them when
    it took ``STEADY_FIRST_CALL_S`` or more, unless ``compiles`` (it then compiled)."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first >= STEADY_FIRST_CALL_S and not compiles:
        times = [first]
    else:  # size the repeats from a warm call
        t0 = time.perf_counter()
        fn()
        times = [time.perf_counter() - t0]
    repeats = int(min(max_repeats, max(min_repeats, budget_s / max(times[0], 1e-9))))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats - 1):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(median_s=statistics.median(times), q25_s=quantile(times, 0.25),
                  q75_s=quantile(times, 0.75), min_s=min(times), max_s=max(times),
                  repeats=len(times), first_s=first)


def interleaved(cases: "dict[str, Callable[[], float]]", repeats: int,
                warmup: int) -> "dict[str, dict]":
    """Run every case once per round, in a fixed order (so load drift on a shared machine
    hits all cases alike), ``warmup`` rounds untimed then ``repeats`` timed, gc off and
    warnings silenced; each case returns its own seconds. Per case: ``median_s``,
    ``q25_s``, ``q75_s``."""
    import warnings
    times = {name: [] for name in cases}
    gc.collect()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(warmup):
                for fn in cases.values():
                    fn()
            for _ in range(repeats):
                for name, fn in cases.items():
                    times[name].append(fn())
    finally:
        gc.enable()
    return {name: dict(median_s=statistics.median(ts), q25_s=quantile(ts, 0.25),
                       q75_s=quantile(ts, 0.75)) for name, ts in times.items()}


class TimedLossClosure:
    """A training closure (``opt.zero_grad()``, the loss of ``model`` on ``x, y``,
    ``backward()``) that adds its own seconds to ``spent``: the optimizer's own time of a
    step is the step's time minus ``spent``."""

    def __init__(self, opt, model, loss_fn, x, y):
        self.opt, self.model, self.loss_fn, self.x, self.y = opt, model, loss_fn, x, y
        self.spent = 0.0

    def __call__(self):
        t0 = time.perf_counter()
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.spent += time.perf_counter() - t0
        return loss
