"""The numerics toolkit of the tests: one unit-roundoff convention, one error budget per
phase, input builders, float64 copies and mismatch reports. The phase-parity suite
(``test_phase_parity.py``), the property tests and ``bench/gpu_check.py`` all use it.

Convention. ``u(dtype) = 2^-p`` for a dtype of ``p`` mantissa bits (the implicit one
included), i.e. ``torch.finfo(dtype).eps / 2``: the relative error of one rounding to
nearest. ``gamma(k, u) = k u / (1 - k u)`` bounds the relative error of ``k`` roundings on
one chain (Higham, Accuracy and Stability of Numerical Algorithms, lemma 3.1). Every
tolerance below is such a gamma times the magnitude of the terms involved (the same
computation run on absolute values, in float64), never a number picked until green.

The kernels compute in the "compute dtype" (float32 for float32, bfloat16 and float16
tensors, float64 for float64: PyTorch's opmath) and round once when they store; the eager
reference run in a low-precision dtype rounds every operation to that dtype. The truth is
the reference's formula on float64 copies of the same inputs, whose own rounding error is
budgeted as well (it matters for float64 buckets).

Budgets per phase (docs/ALGORITHM.md describes the phases):

- lookahead: ``x + s`` is one operation, exactly rounded: bitwise equal to the reference
  run in the dtype, and to ``(x.double() + s.double()).to(dtype)`` (a sum of two p-bit
  numbers rounded first to p' >= 2p + 2 bits and then to p bits is the correctly rounded
  sum, so float32 math for bf16/fp16 and float64 math for float32 change nothing).
- secant_stats: a sum of terms, each formed by ``c`` roundings in the compute dtype
  (``STATS_TERM_ROUNDINGS``), accumulated by the implementation along chains of at most
  ``D`` additions in the accumulator dtype (``Implementation.stats_depth``), the table's
  rows then added in float64 (``P - 1`` additions): within
  ``[gamma(c, u_compute) (+) gamma(D, u_acc) + gamma(P - 1, u64)] sum|terms|``, ``(+)``
  composing two relative errors. The truth sums its float64 terms exactly
  (``math.fsum``), which adds ``gamma(c + 1, u64) sum|terms|``.
- secant_alpha: a few scalar float64 operations on the column sums, the same in every
  implementation: bitwise equal to the reference on tables whose column sums are exact
  in any order; on other tables the column sums differ by the row-summation orders,
  ``2 gamma(P - 1, u64) sum|column|``, and alpha inherits that through its division.
- update: ``UPDATE_ROUNDINGS`` (derived below) roundings in the compute dtype on the
  longest chain, relative to the magnitude of the terms (``|x| + alpha |d|`` evaluated on
  absolute values), the same count for the truth in float64, plus one rounding to the
  storage dtype where that differs from the compute dtype.

Low precision additionally keeps flash-attention's criterion (``assert_noise_floor``):
the error of an implementation against the truth is at most twice that of the eager
reference run in the same low precision.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from secant_ext import _backends
from secant_ext import _layout as layout
from secant_ext import reference

FULL = (torch.float32, torch.float64)
LOW = (torch.bfloat16, torch.float16)
DTYPES = FULL + LOW
F64 = torch.float64


# --- the convention ----------------------------------------------------------------------
def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p, p the mantissa bits including the implicit one: finfo(dtype).eps / 2."""
    return torch.finfo(dtype).eps / 2


def gamma(k: int, u: float) -> float:
    """Relative error bound of k roundings of unit roundoff u on one chain."""
    k = max(int(k), 0)
    assert k * u < 1, f"gamma({k}, {u}) is undefined: k u >= 1"
    return k * u / (1 - k * u)


def compose(e1: float, e2: float) -> float:
    """(1 + e1)(1 + e2) - 1: two relative errors one after the other."""
    return e1 + e2 + e1 * e2


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernels' arithmetic for tensors of ``dtype`` (PyTorch's opmath)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the stats table (and of every implementation's running sums)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def storage_rounding(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bound of one rounding of values near ``t`` to ``dtype``: u |t|, and at least half
    the subnormal spacing (a rounding in the subnormal range is absolute)."""
    info = torch.finfo(dtype)
    return unit_roundoff(dtype) * t.abs() + info.tiny * unit_roundoff(dtype)


# --- budgets -----------------------------------------------------------------------------
# secant_stats: roundings that form one term of each column before it is accumulated.
# <s,y>: y = g_plus - s, then the product (2); |s|^2: the product (1); |y|^2: y and the
# product (2); |g|^2: the product (1). A sign column sums |v| of the update direction,
# whose longest chain is that of the update below before alpha: the casts of
# weight_decay, 1 - momentum and momentum, wd * x, g + wd x, (1 - mu) g', the momentum
# add, mu m_new, the nesterov add (9); |.| is exact.
STATS_TERM_ROUNDINGS = {layout.COL_DOT: 2, layout.COL_S_SQ: 1, layout.COL_Y_SQ: 2,
                        layout.COL_G_SQ: 1}
SIGN_TERM_ROUNDINGS = 9

# update: x_new = x - alpha * d with, in the longest variant (weight decay, momentum that
# holds an average, nesterov),
#   g' = g + wd * x,  m_new = mu * m + (1 - mu) * g',  d = mu * m_new + (1 - mu) * g'.
# Both kernels (csrc/update.cpp with csrc/float_lanes.h's Direction, and
# secant_ext/_triton/update.py) cast the Python floats wd, mu, 1 - mu (formed in double)
# and the state's alpha to the compute dtype, compute every operation there, and round to
# the storage dtype once, when they store x and m (d uses the unrounded m_new; no bf16
# intermediate is ever stored). The term wd * x travels through the most roundings:
#   cast wd, wd * x, g + wd x                          3
#   cast (1 - mu), (1 - mu) * g', the add into m_new    3
#   cast mu, mu * m_new, the nesterov add               3
#   cast alpha, alpha * d, x - step                     3
# 12 in all. The momentum buffer m_new is on a prefix of that chain (6). The sign steps
# replace d by sign(d), exact where the sign is determined: their step term travels
# cast alpha, cast scale, alpha * scale, x - step (4) plus, for the scaled step, the
# scale's own float64 rounding: the sum of the table's P rows and the division by the
# numel (P in all, u64), within the 12 for tables of at most MAX_SIGN_TABLE_ROWS rows.
# The previous tests allowed 16 u (C++: 15 counted, adding the scaled sign's coefficient
# to the direction's chain it replaces) and 8 finfo.eps = 16 u (Triton: 8 operations
# counted in units of eps = 2u, missing the casts): 12 u is the count for both kernels as
# implemented; the C++ needs no more, its bf16 path also rounds once, at the store.
UPDATE_ROUNDINGS = 12
MAX_SIGN_TABLE_ROWS = 7

# C++ summation (csrc/float_lanes.h, CascadeSum): each vector lane adds a block's value to
# level 0, which folds into level 1 every 16 blocks, which folds into level 2 every 256;
# the three levels are added (2) and the lanes summed in order (lanes - 1). One table row
# is one chunk of at most CHUNK_NUMEL elements, in blocks of one vector (16 to 64 bytes:
# SSE to AVX-512).
CASCADE_FOLD = 16


def cpp_stats_depth(numels: Sequence[int], dtype: torch.dtype) -> int:
    from secant_ext import _C
    itemsize = torch.empty((), dtype=dtype).element_size()
    row = min(sum(numels), _C.CHUNK_NUMEL)
    blocks = -(-row * itemsize // 16) + len(numels)
    lanes = 64 // itemsize
    return CASCADE_FOLD + CASCADE_FOLD + -(-blocks // CASCADE_FOLD ** 2) + 2 + lanes - 1


# Triton summation (secant_ext/_triton/stats.py): each of the BLOCK lanes adds one element
# per block of the row, then tl.sum adds the lanes: compiled, 8 per thread in order and a
# 5 + 2 level shuffle tree (14); under the interpreter numpy's pairwise sum (3 halvings of
# 1024, 8 accumulators of 16, their 3-level tree: 21). 21 bounds both.
TRITON_LANE_SUM_DEPTH = 21


def triton_stats_depth(numels: Sequence[int], dtype: torch.dtype) -> int:
    from secant_ext._triton import _common, _tables
    blocks = sum(-(-int(n) // _common.BLOCK) for n in numels)
    _, span = _tables.rows_and_span(numels)
    return min(blocks, max(span, 1) * (_tables.CHUNK // _common.BLOCK)) + \
        TRITON_LANE_SUM_DEPTH


def reference_stats_depth(numels: Sequence[int], dtype: torch.dtype) -> int:
    # torch.sum's order is its own: any binary tree over N terms has depth at most N - 1;
    # the reference then adds the tensors' sums in order.
    return sum(numels) + len(numels)


# --- implementations ---------------------------------------------------------------------
def triton_devices() -> List[str]:
    """Devices the Triton kernels are tested on: ``SECANT_TEST_DEVICES`` (comma-separated),
    by default CPU under the interpreter and CUDA when compiling for real."""
    default = "cpu" if os.environ.get("TRITON_INTERPRET", "0") == "1" else "cuda"
    return [d.strip() for d in os.environ.get("SECANT_TEST_DEVICES", default).split(",")
            if d.strip()]


def _cpp_rows(numels, device):
    from secant_ext import _fake
    return int(_fake.num_partial_rows(list(numels), torch.device("cpu")))


def _triton_rows(numels, device):
    from secant_ext import _triton
    return _triton.num_partial_rows(list(numels))


@dataclass(frozen=True)
class Implementation:
    """One implementation of the four phases, as torch's ``optim_db`` describes an
    optimizer: how to get it, where it runs, and what the budgets need to know of it."""
    name: str
    namespace: Callable[[], object]          # lookahead, secant_stats, secant_alpha, update
    devices: Callable[[], List[str]]
    dtypes: Tuple[torch.dtype, ...]
    stats_depth: Callable[[Sequence[int], torch.dtype], int]
    table_rows: Optional[Callable[[Sequence[int], str], int]]
    computes_in_storage_dtype: bool = False  # the eager reference: rounds every operation

    def ops(self):
        return self.namespace()

    def compute(self, dtype: torch.dtype) -> torch.dtype:
        return dtype if self.computes_in_storage_dtype else compute_dtype(dtype)


CPP = Implementation("cpp", _backends._cpp, lambda: ["cpu"], DTYPES, cpp_stats_depth,
                     _cpp_rows)
# Triton needs TRITON_INTERPRET=1 in the environment before triton is imported to run on
# CPU tensors; tests/conftest.py sets it before any test module imports anything.
TRITON = Implementation("triton", _backends._triton, triton_devices, DTYPES,
                        triton_stats_depth, _triton_rows)
REFERENCE = Implementation("reference", lambda: _backends.REFERENCE, lambda: ["cpu"], DTYPES,
                           reference_stats_depth, lambda numels, device: 1,
                           computes_in_storage_dtype=True)
IMPLEMENTATIONS = {impl.name: impl for impl in (CPP, TRITON, REFERENCE)}


# --- inputs ------------------------------------------------------------------------------
def _shape(size):
    return size if isinstance(size, tuple) else (size,)


def rand_list(sizes, dtype, device="cpu", seed=0, scale=1.0, generator=None):
    """Standard normal float64 values times ``scale``, rounded to ``dtype``, one tensor per
    size (an int or a shape)."""
    gen = generator or torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(_shape(n), generator=gen, dtype=F64)).to(dtype).to(device)
            for n in sizes]


def make_inputs(sizes, dtype, seed=0, device="cpu"):
    """x, s, g_plus = s + noise, g, m: float64 values rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    x = [torch.randn(_shape(n), generator=gen, dtype=F64) for n in sizes]
    s = [0.5 * torch.randn(_shape(n), generator=gen, dtype=F64) for n in sizes]
    g_plus = [si + 0.2 * torch.randn(si.shape, generator=gen, dtype=F64) for si in s]
    g = [0.5 * torch.randn(_shape(n), generator=gen, dtype=F64) for n in sizes]
    m = [0.5 * torch.randn(_shape(n), generator=gen, dtype=F64) for n in sizes]
    cast = lambda ts: [t.to(dtype).to(device) for t in ts]  # noqa: E731
    return dict(x=cast(x), s=cast(s), g_plus=cast(g_plus), g=cast(g), m=cast(m))


def make_state(device="cpu", alpha=1.0, taken=0, ready=None, skipped=False):
    """A group state: ``taken`` steps applied (``step`` as many), momentum ready when
    ``ready`` (by default when a step was taken), the last step skipped if ``skipped``."""
    st = torch.tensor(layout.initial_state_values(), dtype=F64)
    st[layout.ALPHA] = st[layout.STEP_SIZE] = alpha  # lr 1, no clipping: the step is alpha
    st[layout.TAKEN] = st[layout.STEP] = float(taken)
    st[layout.MOMENTUM_READY] = float(taken >= 1 if ready is None else ready)
    st[layout.LAST_SKIPPED] = float(skipped)
    return st.to(device)


def f64(ts):
    """float64 copies on the CPU (always copies, also of CPU float64 tensors)."""
    return [t.detach().to("cpu", F64, copy=True) for t in ts]


def clones(ts):
    return [t.clone() for t in ts]


def on(device, ts):
    return [t.to(device) for t in ts]


@dataclass
class StatsCall:
    """The arguments of one secant_stats call (g or m empty: g = s, no momentum)."""
    s: list
    g_plus: list
    g: list
    x: list
    m: list
    state: torch.Tensor
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    sign_mode: int = layout.SIGN_NONE

    def kwargs(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay, sign_mode=self.sign_mode)

    def lists(self):
        return self.s, self.g_plus, self.g, self.x, self.m

    def run(self, ops):
        return ops.secant_stats(*self.lists(), self.state, **self.kwargs())

    def to64(self):
        return replace(self, s=f64(self.s), g_plus=f64(self.g_plus), g=f64(self.g),
                       x=f64(self.x), m=f64(self.m), state=self.state.cpu())

    @property
    def numels(self):
        return [t.numel() for t in self.s]

    @property
    def dtype(self):
        return self.s[0].dtype if len(self.s) else torch.float32

    @property
    def columns(self):
        return layout.NUM_STATS + (len(self.s) if self.sign_mode == layout.SIGN_SCALED else 0)


@dataclass
class UpdateCall:
    """The arguments of one update call."""
    x: list
    g: list
    m: list
    stats: torch.Tensor
    state: torch.Tensor
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    sign_mode: int = layout.SIGN_NONE

    def kwargs(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay, sign_mode=self.sign_mode)

    def run(self, ops, to64=False):
        """Runs ``ops.update`` on copies (float64 CPU copies with ``to64``): new x, m."""
        conv = f64 if to64 else clones
        x, m = conv(self.x), conv(self.m)
        g = conv(self.g)
        state = self.state.cpu() if to64 else self.state
        stats = self.stats.cpu() if to64 else self.stats
        ops.update(x, g, m, stats, state.clone(), **self.kwargs())
        return x, m


def sign_table(n, dtype, rows=3, seed=4, device="cpu"):
    """A stats table whose sign columns give each tensor's sum |v| (kept positive)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(rows, layout.NUM_STATS + n, generator=gen, dtype=F64) * 50 + 1
    return t.to(accumulator_dtype(dtype)).to(device)


# --- reports -----------------------------------------------------------------------------
def mismatch_report(what, actual, expected, tol) -> str:
    """Where and how much ``actual`` misses ``expected`` beyond ``tol`` (a number or a
    tensor of expected's shape): the worst element first, then the counts."""
    a = actual.detach().to("cpu", F64)
    e = expected.detach().to("cpu", F64)
    if a.numel() == 0:
        return f"{what}: empty"
    err = (a - e).abs()
    err = torch.where(a.isnan() & e.isnan(), torch.zeros_like(err), err)
    tol_t = torch.as_tensor(tol, dtype=F64).cpu().expand_as(err)
    excess = (err - tol_t).nan_to_num(nan=math.inf)
    flat = int(excess.reshape(-1).argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) \
        if a.dim() else ()
    over = int((excess > 0).sum())
    return (f"{what}: {over} of {err.numel()} elements beyond tolerance; worst at {idx}: got "
            f"{a.reshape(-1)[flat].item():.17g}, expected {e.reshape(-1)[flat].item():.17g}, "
            f"|error| {err.reshape(-1)[flat].item():.3g} > tolerance "
            f"{tol_t.reshape(-1)[flat].item():.3g}; max |error| "
            f"{err.nan_to_num(math.inf).max().item():.3g}")


def assert_within(what, actual, expected, tol) -> None:
    """|actual - expected| <= tol elementwise, NaN only where expected is NaN."""
    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().to("cpu", F64)
    e = expected.detach().to("cpu", F64)
    same_nan = a.isnan() == e.isnan()
    err = (a - e).abs().nan_to_num(nan=0.0)
    ok = same_nan & (err <= torch.as_tensor(tol, dtype=F64).cpu())
    assert bool(ok.all()), mismatch_report(what, actual, expected, tol)


def assert_bitwise(what, actual, expected) -> None:
    """Same shape, dtype and bits (NaN where expected has NaN)."""
    assert tuple(actual.shape) == tuple(expected.shape) and actual.dtype == expected.dtype, \
        f"{what}: {tuple(actual.shape)}/{actual.dtype} != {tuple(expected.shape)}/{expected.dtype}"
    a, e = actual.detach().cpu(), expected.detach().cpu()
    same = (a == e) | (a.isnan() & e.isnan())
    assert bool(same.all()), mismatch_report(what, actual, expected, 0.0)


def assert_bitwise_lists(what, actual, expected) -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} tensors, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_bitwise(f"{what}[{i}]", a, e)


def ulp(dtype, magnitude: float) -> float:
    """The spacing of ``dtype`` at ``magnitude`` (2 u times its binade)."""
    if magnitude == 0:
        return torch.finfo(dtype).tiny
    return torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(magnitude))


def assert_noise_floor(what, actual, ref_low, ref64, out_dtype, exact_ulps: float = 0.5) -> None:
    """flash-attention's criterion: the max error of ``actual`` against the float64 truth
    is at most twice that of the reference run in the same low precision, plus one ulp of
    ``out_dtype`` only where that reference is exact to the output's precision (within
    ``exact_ulps``, half an ulp by default: the correctly rounded answer, which no
    implementation can be asked to beat by 2x; a bf16 column of sum |v| is such a case:
    torch.sum's cascade lands on the correctly rounded float32 value where the kernel's lane
    sums were measured one ulp off)."""
    if actual.numel() == 0:
        return
    ref64 = ref64.detach().to("cpu", F64)
    err = float((actual.detach().to("cpu", F64) - ref64).abs().max())
    err_ref = float((ref_low.detach().to("cpu", F64) - ref64).abs().max())
    out_ulp = ulp(out_dtype, float(ref64.abs().max()))
    floor = out_ulp if err_ref <= out_ulp * exact_ulps else 0.0
    tol = 2 * err_ref + floor
    assert err <= tol, (f"{what}: error {err:.6g} exceeds 2 x the low-precision reference's "
                        f"error {err_ref:.6g} (+ floor {floor:.3g}); "
                        + mismatch_report(what, actual, ref64, tol))


# --- lookahead ---------------------------------------------------------------------------
def check_lookahead(what, out, x, s) -> None:
    """``out`` is the exactly rounded x + s: the reference's bits in the dtype, and those of
    the float64 sum rounded to the dtype."""
    want = [torch.empty_like(t) for t in x]
    reference.lookahead(x, s, want)
    assert_bitwise_lists(f"{what} (reference in the dtype)", out, want)
    rounded = [(a.double() + b.double()).to(a.dtype) for a, b in zip(x, s)]
    assert_bitwise_lists(f"{what} (float64 sum rounded)", out, rounded)


# --- secant_stats ------------------------------------------------------------------------
def stats_terms(call: StatsCall):
    """Per column, the float64 terms (flattened, all tensors) and their absolute values
    evaluated on absolute inputs: the truth's summands and the magnitude the error
    bounds scale with."""
    c = call.to64()
    s, gp = c.s, c.g_plus
    g = c.g if len(c.g) else s
    y = [b - a for a, b in zip(s, gp)]
    cat = lambda ts: torch.cat([t.reshape(-1) for t in ts]) if ts else torch.zeros(0, dtype=F64)  # noqa: E731
    terms = [cat([a * b for a, b in zip(s, y)]), cat([a * a for a in s]),
             cat([b * b for b in y]), cat([a * a for a in g])]
    mags = [t.abs() for t in terms]
    if call.sign_mode == layout.SIGN_SCALED:
        ready = c.state[layout.TAKEN] >= 1
        ms = c.m if len(c.m) else [None] * len(g)
        for gi, xi, mi in zip(g, c.x if len(c.x) else g, ms):
            v, _ = reference._direction(gi, xi, mi, ready, c.momentum, c.nesterov,
                                        c.weight_decay)
            v_mag, _ = reference._direction(gi.abs(), xi.abs(), None if mi is None
                                            else mi.abs(), ready, c.momentum, c.nesterov,
                                            c.weight_decay)
            terms.append(v.abs().reshape(-1))
            mags.append(v_mag.reshape(-1))
    return terms, mags


EXACT_SUM_LIMIT = 1 << 20


def stats_truth(call: StatsCall):
    """(column sums of the float64 terms, sum|terms| per column, roundings that form each
    term), float64 on the CPU. Sums are exact (math.fsum) up to EXACT_SUM_LIMIT terms;
    above, torch's float64 sum in some order (stats_tolerance budgets its N roundings)."""
    terms, mags = stats_terms(call)
    n = max(sum(call.numels), 1)
    rounds = [STATS_TERM_ROUNDINGS[k] for k in range(layout.NUM_STATS)] + \
        [SIGN_TERM_ROUNDINGS] * (len(terms) - layout.NUM_STATS)
    mag = torch.tensor([float(a.sum()) for a in mags], dtype=F64)
    if n <= EXACT_SUM_LIMIT:
        exact = torch.tensor([math.fsum(t.tolist()) for t in terms], dtype=F64)
    else:  # bench/gpu_check.py's 2^26 elements: torch's float64 sum, its error budgeted
        exact = torch.stack([t.sum() for t in terms])
    mag = mag * (1 + gamma(n + SIGN_TERM_ROUNDINGS, unit_roundoff(F64)))  # its own rounding
    return exact, mag, rounds


def stats_tolerance(impl: Implementation, call: StatsCall, rows: int, mag, rounds):
    """Per column: the budget of ``impl``'s column sums (its rows added in float64)
    against the exact sums (module docstring)."""
    dtype = call.dtype
    u_c, u_a, u64 = unit_roundoff(impl.compute(dtype)), unit_roundoff(accumulator_dtype(dtype)), \
        unit_roundoff(F64)
    depth = impl.stats_depth(call.numels, dtype)
    n = sum(call.numels)
    rel = []
    for c in rounds:
        kernel = compose(gamma(c, u_c), gamma(depth, u_a))
        truth = gamma(c + 1 + (n if n > EXACT_SUM_LIMIT else 0), u64)
        rel.append(compose(kernel, gamma(max(rows - 1, 0), u64)) + truth)
    return torch.tensor(rel, dtype=F64) * mag


def check_stats(what, table, call: StatsCall, impl: Implementation, device="cpu") -> None:
    """The table's shape, dtype and device, and its column sums within the budget of
    ``impl``; for bf16/fp16 also flash-attention's criterion against the reference run in
    the dtype."""
    dtype = call.dtype
    assert table.dtype == accumulator_dtype(dtype), f"{what}: table dtype {table.dtype}"
    assert table.dim() == 2 and table.shape[1] == call.columns, \
        f"{what}: table shape {tuple(table.shape)}, expected {call.columns} columns"
    if impl.table_rows is not None:
        rows = impl.table_rows(call.numels, device)
        assert table.shape[0] == rows, f"{what}: {table.shape[0]} rows, expected {rows}"
    assert table.device.type == torch.device(device).type, f"{what}: on {table.device}"
    sums = table.detach().to("cpu", F64).sum(dim=0)
    exact, mag, rounds = stats_truth(call)
    tol = stats_tolerance(impl, call, table.shape[0], mag, rounds)
    assert_within(f"{what} column sums", sums, exact, tol)
    if dtype in LOW:
        # Both sides sum in float32, so where the reference's products are exact its error
        # is float32 summation's, as the kernel's: within an ulp of the float32 output, which
        # sum lands nearer the truth is the two orders' luck (a fp16 |s|^2 of 842 terms: the
        # reference 0.63 ulp off, the kernel 1.4), not the 2x the criterion measures
        ref_low = call.run(_backends.REFERENCE)[0].to("cpu", F64)
        for col in range(call.columns):
            assert_noise_floor(f"{what} column {col}", sums[col:col + 1], ref_low[col:col + 1],
                               exact[col:col + 1], torch.float32, exact_ulps=1.0)


# --- secant_alpha ------------------------------------------------------------------------
def alpha_sum_tolerance(table: torch.Tensor) -> torch.Tensor:
    """Column sums of ``table`` in two row orders, float64: within 2 gamma(P - 1) sum|col|."""
    rows = table.shape[0]
    return 2 * gamma(max(rows - 1, 0), unit_roundoff(F64)) * \
        table.detach().to("cpu", F64).abs().sum(dim=0)


def alpha_tolerance(rule: str, col_err, a: float, b: float, c: float, alpha: float) -> float:
    """alpha's error from column-sum errors ``col_err`` (dot, |s|^2, |y|^2) through the
    rule's quotient (first order), plus the rule's own few float64 roundings."""
    rel = {"secant": (col_err[0] + 2 * col_err[1]) / (a + b),
           "steffensen": col_err[1] / b + col_err[0] / a,
           "bb2": col_err[0] / a + (col_err[1] + col_err[2]) / (b + c)}[rule]
    return (float(rel) + gamma(4, unit_roundoff(F64))) * abs(alpha)


# --- update ------------------------------------------------------------------------------
def update_tolerances(impl: Implementation, call: UpdateCall, dtype: torch.dtype):
    """Per tensor (tol_x, tol_m or None): UPDATE_ROUNDINGS roundings in ``impl``'s compute
    dtype and as many in the float64 truth, relative to the magnitude of the terms, plus
    the rounding to the storage dtype where the compute dtype is wider. Where the exact d
    is within that error of 0 a sign step may go either way: a flip (2 coef) is right."""
    u_c, u64 = unit_roundoff(impl.compute(dtype)), unit_roundoff(F64)
    rel = gamma(UPDATE_ROUNDINGS, u_c) + gamma(UPDATE_ROUNDINGS, u64)
    stored = impl.compute(dtype) != dtype
    if call.sign_mode == layout.SIGN_SCALED:
        assert call.stats.shape[0] <= MAX_SIGN_TABLE_ROWS, \
            "the update budget covers the scale's row sum for small tables only"
    state = call.state.cpu()
    ready = state[layout.MOMENTUM_READY] != 0
    alpha = float(state[layout.ALPHA])
    sums = call.stats.detach().to("cpu", F64).sum(dim=0)[layout.NUM_STATS:]
    xs, gs = f64(call.x), f64(call.g)
    ms = f64(call.m) if len(call.m) else [None] * len(xs)
    x_new, m_new = call.run(_backends.REFERENCE, to64=True)
    out = []
    for i, (x, g, m) in enumerate(zip(xs, gs, ms)):
        d_mag, m_mag = reference._direction(g.abs(), x.abs(), None if m is None else m.abs(),
                                            ready, call.momentum, call.nesterov,
                                            call.weight_decay)
        d, _ = reference._direction(g, x, m, ready, call.momentum, call.nesterov,
                                    call.weight_decay)
        if call.sign_mode == layout.SIGN_NONE:
            coef, step_mag = alpha, alpha * d_mag
            ambiguous = torch.zeros_like(d, dtype=torch.bool)
        else:
            coef = alpha * (float(sums[i]) / max(x.numel(), 1)
                            if call.sign_mode == layout.SIGN_SCALED else 1.0)
            step_mag = torch.full_like(d, coef)
            ambiguous = d.abs() <= rel * d_mag
        # the store rounds the computed value, within rel * magnitude of the truth
        tol_x = rel * (x.abs() + step_mag) + ambiguous * 2 * coef
        if stored:
            tol_x = tol_x + storage_rounding(x_new[i].abs() + tol_x, dtype)
        tol_m = None
        if m_mag is not None:
            tol_m = rel * m_mag
            if stored:
                tol_m = tol_m + storage_rounding(m_new[i].abs() + tol_m, dtype)
        out.append((tol_x, tol_m))
    return out, (x_new, m_new)


def check_update(what, impl: Implementation, call: UpdateCall, dtype: torch.dtype,
                 result=None) -> None:
    """``impl``'s update (or ``result``, its new (x, m)) against the float64 truth within
    the update budget; for bf16/fp16 also flash-attention's criterion."""
    x, m = result if result is not None else call.run(impl.ops())
    tols, (x64, m64) = update_tolerances(impl, call, dtype)
    for i, (tol_x, tol_m) in enumerate(tols):
        assert_within(f"{what} x[{i}]", x[i], x64[i], tol_x)
        if tol_m is not None:
            assert_within(f"{what} m[{i}]", m[i], m64[i], tol_m)
    if dtype in LOW:
        x_low, m_low = call.run(_backends.REFERENCE)
        for i in range(len(x)):
            assert_noise_floor(f"{what} x[{i}]", x[i], x_low[i], x64[i], dtype)
            if len(call.m):
                assert_noise_floor(f"{what} m[{i}]", m[i], m_low[i], m64[i], dtype)


def update_error_ratio(impl: Implementation, call: UpdateCall, dtype, x, m) -> float:
    """max |error| / tolerance over x and m (<= 1 within the budget), for reports."""
    tols, (x64, m64) = update_tolerances(impl, call, dtype)
    worst = 0.0
    for i, (tol_x, tol_m) in enumerate(tols):
        pairs = [(x[i], x64[i], tol_x)] + ([(m[i], m64[i], tol_m)] if tol_m is not None else [])
        for a, e, t in pairs:
            if a.numel():
                r = (a.detach().to("cpu", F64) - e).abs() / t.clamp_min(1e-300)
                worst = max(worst, float(r.max()))
    return worst


def stats_error_ratio(impl: Implementation, call: StatsCall, table) -> float:
    """max |error| / tolerance over the columns (<= 1 within the budget), for reports."""
    sums = table.detach().to("cpu", F64).sum(dim=0)
    exact, mag, rounds = stats_truth(call)
    tol = stats_tolerance(impl, call, table.shape[0], mag, rounds)
    return float(((sums - exact).abs() / tol.clamp_min(1e-300)).max())
