"""The C++ CPU kernels (``torch.ops.secant_ext``) against the eager reference.

Tolerances come from the precision:
- fp32 and fp64 are compared with the reference run on float64 copies of the same inputs
  (the exact answer up to fp64 rounding), within a bound derived from the unit roundoff
  ``eps`` of the dtype: a sum of L terms accumulated in order has error at most
  ``(L + c) * eps * sum|terms|`` (the textbook gamma_L bound, c counting the roundings that
  form each term); an elementwise result made by k roundings is within ``k * eps / 2`` of
  the magnitude of its terms.
- bf16 and fp16 follow flash-attention: the kernel's error against the float64 answer must
  be at most twice the error of the reference run in the same low precision (max-norm per
  tensor), plus one ulp of the output only where that reference happens to be exact.

A failed build must fail these tests loudly, hence the plain import of ``secant_ext._C``.
"""
from __future__ import annotations

import math

import pytest
import torch

import secant_ext._C as _C
from secant_ext import _fake, reference as R, _layout as L

ops = torch.ops.secant_ext

FULL = (torch.float32, torch.float64)
LOW = (torch.bfloat16, torch.float16)
DTYPES = FULL + LOW
SIZES = (0, 1, 3, 1023, 4097, 100003)
SIZE_CASES = {
    "one": [1], "three": [3], "1023": [1023], "4097": [4097], "100003": [100003],
    "empty": [0], "mixed": list(SIZES), "many": [(7 * i * i + 3) % 301 for i in range(40)],
    "matrix": [(37, 29)], "scalar": [()],
}
MOMENTUM = 0.9
ALPHA = 0.37
VARIANTS = {  # momentum buffer given, and whether it already holds an average
    "plain": dict(mom=False, ready=False, nesterov=False, wd=0.0),
    "momentum_first_step": dict(mom=True, ready=False, nesterov=False, wd=0.0),
    "momentum": dict(mom=True, ready=True, nesterov=False, wd=0.0),
    "nesterov": dict(mom=True, ready=True, nesterov=True, wd=0.0),
    "weight_decay": dict(mom=False, ready=False, nesterov=False, wd=0.1),
    "all": dict(mom=True, ready=True, nesterov=True, wd=0.1),
}


# --- inputs ------------------------------------------------------------------------------
def _randn(shape, gen, scale=1.0, shift=None):
    t = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    return t if shift is None else t + shift


def make_inputs(sizes, dtype, seed=0):
    """x, s, g_plus = s + noise, g, m: float64 values rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [s if isinstance(s, tuple) else (s,) for s in sizes]
    x = [_randn(sh, gen) for sh in shapes]
    s = [_randn(sh, gen, 0.5) for sh in shapes]
    g_plus = [si + _randn(si.shape, gen, 0.2) for si in s]
    g = [_randn(sh, gen, 0.5) for sh in shapes]
    m = [_randn(sh, gen, 0.5) for sh in shapes]
    cast = lambda ts: [t.to(dtype) for t in ts]  # noqa: E731
    return dict(x=cast(x), s=cast(s), g_plus=cast(g_plus), g=cast(g), m=cast(m))


def f64(ts):
    return [t.to(torch.float64) for t in ts]


def clones(ts):
    return [t.clone() for t in ts]


def make_state(alpha=ALPHA, ready=False, skipped=False):
    st = torch.tensor(L.initial_state_values(), dtype=torch.float64)
    st[L.ALPHA] = alpha
    st[L.TAKEN] = 2.0 if ready else 0.0
    st[L.STEP] = st[L.TAKEN]
    st[L.MOMENTUM_READY] = 1.0 if ready else 0.0
    st[L.LAST_SKIPPED] = 1.0 if skipped else 0.0
    return st


def eps(dtype):
    return torch.finfo(dtype).eps / 2  # unit roundoff: the relative error of one rounding


# The update forms x - coef * d (or x - coef * sign(d)) in at most 15 roundings: weight decay
# 2, momentum 5 (with the casts of mu and 1 - mu), nesterov 3, coef 3 (alpha's cast, the
# scale's cast, their product), the step 2. To first order each adds at most eps times the
# magnitude of its terms, so 16 eps bounds the whole.
UPDATE_ROUNDINGS = 16


def ulp(dtype, magnitude):
    """The spacing of ``dtype`` at ``magnitude`` (the smallest meaningful absolute error)."""
    if magnitude == 0:
        return torch.finfo(dtype).tiny
    return torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(magnitude))


# --- reporting -----------------------------------------------------------------------------
def fail_report(what, actual, expected, tol):
    """Where and how much ``actual`` misses ``expected`` (max excess over the tolerance)."""
    a, e = actual.to(torch.float64).flatten(), expected.to(torch.float64).flatten()
    err = (a - e).abs()
    tol_t = torch.as_tensor(tol, dtype=torch.float64).expand_as(err.view(actual.shape)).flatten() \
        if torch.as_tensor(tol).numel() > 1 else torch.full_like(err, float(tol))
    excess = torch.nan_to_num(err - tol_t, nan=math.inf)
    i = int(excess.argmax())
    idx = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), actual.shape)) \
        if actual.dim() else ()
    return (f"{what}: max abs error {float(err.nan_to_num(math.inf).max()):.6g}; worst at "
            f"index {idx}: got {float(a[i])!r}, expected {float(e[i])!r}, error "
            f"{float(err[i]):.6g} > tolerance {float(tol_t[i]):.6g} "
            f"({int((excess > 0).sum())} of {err.numel()} elements over)")


def assert_within(what, actual, expected, tol):
    """|actual - expected| <= tol elementwise (tol a number or a tensor of expected's shape)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = (actual.to(torch.float64) - expected.to(torch.float64)).abs()
    ok = err <= torch.as_tensor(tol, dtype=torch.float64)
    assert bool(ok.all()), fail_report(what, actual, expected, tol)


def assert_noise_floor(what, actual, ref_low, ref64, out_dtype):
    """flash-attention's criterion: the kernel's max error against fp64 is at most twice
    the error of the reference run in the same low precision, plus one ulp of the output
    dtype only where that reference is exact to the output's precision (within half an ulp:
    the correctly rounded answer, which no implementation can be asked to beat by 2x).

    That case is real: a bf16 column of sum |v| has no low-precision step at all (|v| of a
    bf16 value is exact), only the float32 accumulation of both, and torch.sum's cascade
    lands on the correctly rounded float32 value where the kernel's lane sums were measured
    one ulp off."""
    if actual.numel() == 0:
        return
    err_fast = float((actual.to(torch.float64) - ref64).abs().max())
    err_ref = float((ref_low.to(torch.float64) - ref64).abs().max())
    out_ulp = ulp(out_dtype, float(ref64.abs().max()))
    floor = out_ulp if err_ref <= out_ulp / 2 else 0.0
    tol = 2 * err_ref + floor
    assert err_fast <= tol, (
        f"{what}: kernel error {err_fast:.6g} exceeds 2 x the low-precision reference's "
        f"error {err_ref:.6g} (+ floor {floor:.3g}); "
        + fail_report(what, actual, ref64, tol))


def assert_bitwise(what, actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, \
        f"{what}: {actual.shape}/{actual.dtype} != {expected.shape}/{expected.dtype}"
    same = (actual == expected) | (actual.isnan() & expected.isnan())
    assert bool(same.all()), fail_report(what, actual, expected, 0.0)


# --- lookahead -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", SIZE_CASES, ids=str)
def test_lookahead_matches_reference(dtype, case):
    inp = make_inputs(SIZE_CASES[case], dtype)
    out = [torch.full_like(x, float("nan")) for x in inp["x"]]
    x_before = clones(inp["x"])
    ops.lookahead(inp["x"], inp["s"], out)
    for i, (x, xb) in enumerate(zip(inp["x"], x_before)):
        assert_bitwise(f"x[{i}] must stay untouched", x, xb)
    if dtype in FULL:
        # x + s is one correctly rounded operation: the only right answer is the reference's.
        for i, (o, x, s) in enumerate(zip(out, inp["x"], inp["s"])):
            assert_bitwise(f"out[{i}]", o, x + s)
        return
    ref_low = [torch.empty_like(x) for x in inp["x"]]
    R.lookahead(inp["x"], inp["s"], ref_low)
    ref64 = [torch.empty_like(x) for x in f64(inp["x"])]
    R.lookahead(f64(inp["x"]), f64(inp["s"]), ref64)
    for i, (o, lo, hi) in enumerate(zip(out, ref_low, ref64)):
        assert_noise_floor(f"out[{i}]", o, lo, hi, dtype)


# --- secant_stats --------------------------------------------------------------------------
def stats_args(inp, variant, has_g, sign, to64=False):
    conv = f64 if to64 else (lambda ts: ts)
    m = conv(inp["m"]) if variant["mom"] else []
    return (conv(inp["s"]), conv(inp["g_plus"]), conv(inp["g"]) if has_g else [],
            conv(inp["x"]), m, make_state(ready=variant["ready"]), MOMENTUM,
            variant["nesterov"], variant["wd"], sign)


def stats_magnitudes(inp, variant, has_g, sign):
    """Per column: the sum of |terms| (float64), and the number of terms."""
    s, gp = f64(inp["s"]), f64(inp["g_plus"])
    g = f64(inp["g"]) if has_g else s
    y_mag = [gp_i.abs() + s_i.abs() for s_i, gp_i in zip(s, gp)]
    mags = [sum(float((si.abs() * yi).sum()) for si, yi in zip(s, y_mag)),
            sum(float((si * si).sum()) for si in s),
            sum(float((yi * yi).sum()) for yi in y_mag),
            sum(float((gi * gi).sum()) for gi in g)]
    total = sum(t.numel() for t in s)
    lengths = [total] * L.NUM_STATS
    if sign:
        ready = torch.tensor(variant["ready"])
        ms = f64(inp["m"]) if variant["mom"] else [None] * len(g)
        for gi, xi, mi in zip(g, f64(inp["x"]), ms):
            mi = None if mi is None else mi.abs()
            d, _ = R._direction(gi.abs(), xi.abs(), mi, ready, MOMENTUM,
                                variant["nesterov"], variant["wd"])
            mags.append(float(d.sum()))
            lengths.append(gi.numel())
    return torch.tensor(mags, dtype=torch.float64), lengths


def check_stats(what, table, inp, variant, has_g, sign, dtype):
    n = len(inp["s"])
    k = L.NUM_STATS + (n if sign else 0)
    assert table.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert table.dim() == 2 and table.shape[1] == k, f"{what}: table shape {tuple(table.shape)}"
    assert table.shape[0] == _fake.num_partial_rows([t.numel() for t in inp["s"]],
                                                    torch.device("cpu"))
    sums = table.to(torch.float64).sum(dim=0)
    ref64 = R.secant_stats(*stats_args(inp, variant, has_g, sign, to64=True))[0]
    if dtype in FULL:
        # Each row sums one chunk of at most CHUNK_NUMEL terms in its accumulator's dtype;
        # the rows are then added in float64. +24: the lane reduction (at most 16 adds) and
        # the roundings that form each term (y = g_plus - s, the product, the direction).
        mags, lengths = stats_magnitudes(inp, variant, has_g, sign)
        chain = torch.tensor([min(n_k, _C.CHUNK_NUMEL) + 24 for n_k in lengths],
                             dtype=torch.float64)
        assert_within(what, sums, ref64, chain * eps(dtype) * mags)
    else:
        ref_low = R.secant_stats(*stats_args(inp, variant, has_g, sign))[0]
        for col in range(k):
            assert_noise_floor(f"{what} column {col}", sums[col:col + 1], ref_low[col:col + 1],
                               ref64[col:col + 1], torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", SIZE_CASES, ids=str)
def test_secant_stats_sizes(dtype, case):
    inp = make_inputs(SIZE_CASES[case], dtype, seed=1)
    variant = VARIANTS["all"]
    table = ops.secant_stats(*stats_args(inp, variant, True, True))
    check_stats("secant_stats", table, inp, variant, True, True, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("has_g", [False, True], ids=["g=s", "probe"])
@pytest.mark.parametrize("sign", [False, True], ids=["nosign", "sign"])
def test_secant_stats_variants(dtype, variant, has_g, sign):
    inp = make_inputs(SIZES, dtype, seed=2)
    table = ops.secant_stats(*stats_args(inp, VARIANTS[variant], has_g, sign))
    check_stats("secant_stats", table, inp, VARIANTS[variant], has_g, sign, dtype)


@pytest.mark.parametrize("sign", [False, True])
def test_empty_lists_and_tensors(sign):
    state = make_state(ready=True)
    # lookahead's only arguments are lists: with all of them empty the dispatcher has no
    # tensor to pick a device by (torch's own _foreach_ ops refuse empty lists too). The
    # optimizer never calls it so; the other ops dispatch on the state and work.
    with pytest.raises(NotImplementedError, match="no tensor arguments"):
        ops.lookahead([], [], [])
    ops.update([], [], [], torch.zeros(1, L.NUM_STATS), state, MOMENTUM, True, 0.1,
               L.SIGN_SCALED if sign else L.SIGN_NONE)
    table = ops.secant_stats([], [], [], [], [], state, 0.0, False, 0.0, sign)
    assert_bitwise("empty bucket", table, torch.zeros(1, L.NUM_STATS))
    inp = make_inputs([0, 0], torch.bfloat16)
    table = ops.secant_stats(inp["s"], inp["g_plus"], [], inp["x"], [], state, 0.0, False,
                             0.0, sign)
    assert_bitwise("empty tensors", table, torch.zeros(1, L.NUM_STATS + (2 if sign else 0)))


# --- secant_alpha --------------------------------------------------------------------------
# Tables of small integers: every order of summation is exact, so the kernel and the
# reference see the same a, b, c and each rule's one or two correctly rounded operations
# must give the same bits. Each case is (a, b, c) spread over three rows.
ALPHA_CASES = {
    "positive_curvature": (3.0, 5.0, 7.0),
    "negative_curvature": (-2.0, 5.0, 7.0),
    "zero_curvature": (0.0, 5.0, 7.0),
    "a_equals_minus_b": (-5.0, 5.0, 7.0),
    "b_zero": (3.0, 0.0, 7.0),
    "all_zero": (0.0, 0.0, 0.0),
    "nan": (float("nan"), 5.0, 7.0),
    "inf": (3.0, float("inf"), 7.0),
}


def alpha_table(a, b, c, dtype, extra_cols=0):
    rows = torch.zeros(3, L.NUM_STATS + extra_cols, dtype=torch.float64)
    for col, v in ((L.COL_DOT, a), (L.COL_S_SQ, b), (L.COL_Y_SQ, c), (L.COL_G_SQ, 11.0)):
        if math.isfinite(v):  # split into parts that cancel partly, to exercise every row
            rows[:, col] = torch.tensor([v + 4.0, -6.0, 2.0], dtype=torch.float64)
        else:
            rows[:, col] = torch.tensor([1.0, v, -1.0], dtype=torch.float64)
    rows[:, L.NUM_STATS:] = 1.0  # the sign columns are not read
    return rows.to(dtype)


@pytest.mark.parametrize("rule", L.RULES, ids=str)
@pytest.mark.parametrize("safeguard", [True, False], ids=["safeguard", "raw"])
@pytest.mark.parametrize("case", ALPHA_CASES, ids=str)
@pytest.mark.parametrize("table_dtype", FULL, ids=str)
@pytest.mark.parametrize("taken", [0, 3])
def test_secant_alpha_matches_reference(rule, safeguard, case, table_dtype, taken):
    table = alpha_table(*ALPHA_CASES[case], table_dtype, extra_cols=2)
    state = make_state(alpha=0.625)
    state[L.TAKEN] = state[L.STEP] = float(taken)
    state[L.SKIPPED], state[L.CLIPPED] = 4.0, 5.0
    expected = state.clone()
    R.secant_alpha(table, expected, L.RULES[rule], safeguard)
    ops.secant_alpha(table, state, L.RULES[rule], safeguard)
    assert_bitwise(f"state after {rule} on {case}", state, expected)


@pytest.mark.parametrize("rule", L.RULES, ids=str)
def test_secant_alpha_random_table(rule):
    # Float64 row sums in any order agree within rows * eps * sum|column|; alpha then
    # inherits that error through one or two divisions and additions.
    gen = torch.Generator().manual_seed(3)
    rows = 257
    table = torch.rand(rows, L.NUM_STATS, generator=gen, dtype=torch.float64)
    state, expected = make_state(), make_state()
    R.secant_alpha(table, expected, L.RULES[rule], True)
    ops.secant_alpha(table, state, L.RULES[rule], True)
    col_err = (rows + 2) * eps(torch.float64) * table.abs().sum(dim=0)
    fields = [L.DOT, L.S_SQ, L.Y_SQ, L.G_SQ]
    assert_within("sums", state[fields], expected[fields], col_err)
    a, b, c = (float(expected[f]) for f in (L.DOT, L.S_SQ, L.Y_SQ))
    rel = {"secant": (col_err[0] + 2 * col_err[1]) / (a + b),
           "steffensen": col_err[1] / b + col_err[0] / a,
           "bb2": col_err[0] / a + (col_err[1] + col_err[2]) / (b + c)}[rule]
    tol = (float(rel) + 4 * eps(torch.float64)) * abs(float(expected[L.ALPHA]))
    assert_within("alpha", state[L.ALPHA], expected[L.ALPHA], tol)
    others = [i for i in range(L.STATE_SIZE) if i not in fields + [L.ALPHA]]
    assert_bitwise("counters and flags", state[others], expected[others])


def test_secant_alpha_rejects_unknown_rule():
    with pytest.raises(RuntimeError, match="unknown rule code 7"):
        ops.secant_alpha(torch.zeros(1, 4), make_state(), 7, True)


# --- update --------------------------------------------------------------------------------
def sign_table(n, dtype, seed=4):
    """A 3-row stats table whose sign columns give each tensor's sum |v| (kept positive)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(3, L.NUM_STATS + n, generator=gen, dtype=torch.float64) * 50 + 1
    return t.to(torch.float64 if dtype == torch.float64 else torch.float32)


def run_update(fn, inp, variant, table, state, sign_mode, to64=False):
    """Runs ``fn`` (the op or the reference) on copies; returns the new x and m."""
    conv = f64 if to64 else clones
    x, m = conv(inp["x"]), conv(inp["m"]) if variant["mom"] else []
    fn(x, conv(inp["g"]), m, table, state.clone(), MOMENTUM, variant["nesterov"],
       variant["wd"], sign_mode)
    return x, m


def update_tolerances(inp, variant, table, sign_mode, dtype):
    """Per tensor: (tol_x, tol_m) for fp32/fp64: UPDATE_ROUNDINGS * eps times the magnitude
    of the terms, |x| + |coef| * |d| with |d| evaluated on absolute values. Where d is itself
    within its rounding error of 0 its sign is undetermined, and a flip (an error of
    2 coef) is a right answer."""
    e = UPDATE_ROUNDINGS * eps(dtype)
    ready = torch.tensor(variant["ready"])
    sums = table.to(torch.float64).sum(dim=0)[L.NUM_STATS:]
    out = []
    ms = f64(inp["m"]) if variant["mom"] else [None] * len(inp["x"])
    for i, (x, g, m) in enumerate(zip(f64(inp["x"]), f64(inp["g"]), ms)):
        d_mag, m_mag = R._direction(g.abs(), x.abs(), None if m is None else m.abs(), ready,
                                    MOMENTUM, variant["nesterov"], variant["wd"])
        d, _ = R._direction(g, x, m, ready, MOMENTUM, variant["nesterov"], variant["wd"])
        coef = ALPHA * (float(sums[i]) / max(x.numel(), 1) if sign_mode == L.SIGN_SCALED else 1)
        step_mag = coef * (d_mag if sign_mode == L.SIGN_NONE else torch.ones_like(d_mag))
        ambiguous = (d.abs() <= e * d_mag) if sign_mode != L.SIGN_NONE else \
            torch.zeros_like(d, dtype=torch.bool)
        tol_x = e * (x.abs() + step_mag) + ambiguous * 2 * coef
        tol_m = None if m_mag is None else e * m_mag
        out.append((tol_x, tol_m))
    return out


def check_update(inp, variant, sign_mode, dtype):
    n = len(inp["x"])
    table = sign_table(n, dtype)
    state = make_state(ready=variant["ready"])
    x, m = run_update(ops.update, inp, variant, table, state, sign_mode)
    x64, m64 = run_update(R.update, inp, variant, table, state, sign_mode, to64=True)
    if dtype in FULL:
        tols = update_tolerances(inp, variant, table, sign_mode, dtype)
        for i, (tol_x, tol_m) in enumerate(tols):
            assert_within(f"x[{i}]", x[i], x64[i], tol_x)
            if variant["mom"]:
                assert_within(f"m[{i}]", m[i], m64[i], tol_m)
        return
    x_low, m_low = run_update(R.update, inp, variant, table, state, sign_mode)
    for i in range(n):
        assert_noise_floor(f"x[{i}]", x[i], x_low[i], x64[i], dtype)
        if variant["mom"]:
            assert_noise_floor(f"m[{i}]", m[i], m_low[i], m64[i], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", SIZE_CASES, ids=str)
def test_update_sizes(dtype, case):
    check_update(make_inputs(SIZE_CASES[case], dtype, seed=5), VARIANTS["all"],
                 L.SIGN_NONE, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("sign_mode", [L.SIGN_NONE, L.SIGN_SCALED, L.SIGN_UNSCALED],
                         ids=["direction", "scaled_sign", "unscaled_sign"])
def test_update_variants(dtype, variant, sign_mode):
    check_update(make_inputs(SIZES, dtype, seed=6), VARIANTS[variant], sign_mode, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sign_mode", [L.SIGN_NONE, L.SIGN_SCALED, L.SIGN_UNSCALED])
def test_skipped_step_changes_nothing(dtype, sign_mode):
    inp = make_inputs([3, 4097], dtype, seed=7)
    inp["g"][1][5] = float("nan")  # what made the step skip; must not leak into x or m
    x, m = clones(inp["x"]), clones(inp["m"])
    ops.update(x, inp["g"], m, sign_table(2, dtype), make_state(ready=True, skipped=True),
               MOMENTUM, True, 0.1, sign_mode)
    for i in range(2):
        assert_bitwise(f"x[{i}]", x[i], inp["x"][i])
        assert_bitwise(f"m[{i}]", m[i], inp["m"][i])


# --- a whole step, thread counts, layouts --------------------------------------------------
def whole_step(backend, inp, state, rule, sign_mode):
    out = [torch.empty_like(x) for x in inp["x"]]
    backend.lookahead(inp["x"], inp["s"], out)
    table = backend.secant_stats(inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"], state,
                                 MOMENTUM, True, 0.1, sign_mode == L.SIGN_SCALED)
    backend.secant_alpha(table, state, rule, True)
    backend.update(inp["x"], inp["g"], inp["m"], table, state, MOMENTUM, True, 0.1, sign_mode)
    return out, table


@pytest.mark.parametrize("sign_mode", [L.SIGN_NONE, L.SIGN_SCALED])
def test_zero_probe_gradient_keeps_alpha(sign_mode):
    # b == 0: alpha keeps its previous value, and the step is still taken.
    inp = make_inputs([5, 1023], torch.float32, seed=8)
    inp["s"] = [torch.zeros_like(s) for s in inp["s"]]
    inp["g_plus"] = clones(inp["s"])
    state = make_state(alpha=0.25, ready=True)
    x_ref, m_ref = f64(inp["x"]), f64(inp["m"])
    ref_state = state.clone()
    whole_step(R, dict(inp, x=x_ref, m=m_ref, **{k: f64(inp[k]) for k in ("s", "g_plus", "g")}),
               ref_state, L.RULES["secant"], sign_mode)
    whole_step(ops, inp, state, L.RULES["secant"], sign_mode)
    assert float(state[L.ALPHA]) == 0.25 and float(state[L.LAST_SKIPPED]) == 0
    assert_bitwise("state", state[[L.ALPHA, L.TAKEN, L.LAST_SKIPPED, L.LAST_CLIPPED]],
                   ref_state[[L.ALPHA, L.TAKEN, L.LAST_SKIPPED, L.LAST_CLIPPED]])
    for i in range(2):  # the step moved x as the float64 reference did
        d_mag = m_ref[i].abs() + inp["g"][i].double().abs() + x_ref[i].abs()  # wd, mu < 1
        assert_within(f"x[{i}]", inp["x"][i], x_ref[i], UPDATE_ROUNDINGS *
                      eps(torch.float32) * (x_ref[i].abs() + 0.25 * d_mag))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_results_do_not_depend_on_thread_count(dtype):
    sizes = [4097, 3, 100003, 2 * _C.CHUNK_NUMEL + 5, 1]
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            inp = make_inputs(sizes, dtype, seed=9)
            results.append((whole_step(ops, inp, make_state(ready=True), 0, L.SIGN_SCALED),
                            inp["x"], inp["m"]))
    finally:
        torch.set_num_threads(threads)
    ((out1, table1), x1, m1), ((out2, table2), x2, m2) = results
    assert table1.shape[0] > 2, "too few chunks to test the split over threads"
    assert_bitwise("stats table", table1, table2)
    for i in range(len(sizes)):
        assert_bitwise(f"out[{i}]", out1[i], out2[i])
        assert_bitwise(f"x[{i}]", x1[i], x2[i])
        assert_bitwise(f"m[{i}]", m1[i], m2[i])


def test_dense_non_contiguous_layouts_walk_storage():
    # A transposed matrix and a channels_last image are dense: the kernels walk their
    # storage, which is right as long as every tensor of a parameter shares the strides.
    gen = torch.Generator().manual_seed(10)

    def make():
        return [torch.randn(64, 33, generator=gen).t(),
                torch.randn(2, 3, 5, 7, generator=gen).to(memory_format=torch.channels_last)]

    inp = dict(x=make(), s=make(), g_plus=make(), g=make(), m=make())
    assert not any(t.is_contiguous() for t in inp["x"])
    out = [torch.empty_like(t) for t in inp["x"]]
    ops.lookahead(inp["x"], inp["s"], out)
    for i, (o, x, s) in enumerate(zip(out, inp["x"], inp["s"])):
        assert o.stride() == x.stride()
        assert_bitwise(f"lookahead[{i}]", o, x + s)
    variant = VARIANTS["all"]
    table = ops.secant_stats(*stats_args(inp, variant, True, True))
    check_stats("secant_stats", table, inp, variant, True, True, torch.float32)
    for sign_mode in (L.SIGN_NONE, L.SIGN_SCALED):
        check_update(inp, variant, sign_mode, torch.float32)


# --- errors ---------------------------------------------------------------------------------
def test_clear_errors_for_bad_input():
    a, b = torch.zeros(4), torch.zeros(4)
    state = make_state()
    with pytest.raises(RuntimeError, match=r"s\[0\] has dtype Double but the call's first"):
        ops.lookahead([a], [b.double()], [torch.empty(4)])
    with pytest.raises(RuntimeError, match=r"s has 2 tensors but x has 1"):
        ops.lookahead([a], [b, b], [a])
    with pytest.raises(RuntimeError, match=r"must share strides"):
        ops.lookahead([torch.zeros(4, 3).t()], [torch.zeros(3, 4)], [torch.zeros(3, 4)])
    with pytest.raises(RuntimeError, match=r"is not dense"):
        ops.lookahead([torch.zeros(8)[::2]], [torch.zeros(8)[::2]], [torch.zeros(8)[::2]])
    with pytest.raises(RuntimeError, match=r"has shape \[5\] but x\[0\] has shape \[4\]"):
        ops.lookahead([a], [torch.zeros(5)], [a])
    with pytest.raises(RuntimeError, match=r"has dtype Int; supported"):
        ops.lookahead([a.int()], [b.int()], [a.int()])
    with pytest.raises(RuntimeError, match=r"m has 2 tensors but s has 1 \(pass an empty"):
        ops.secant_stats([a], [b], [], [a], [a, b], state, 0.9, False, 0.0, True)
    with pytest.raises(RuntimeError, match=r"state must be float64"):
        ops.secant_stats([a], [b], [], [a], [], state.float(), 0.0, False, 0.0, False)
    with pytest.raises(RuntimeError, match=r"needs a \[P, 5\] stats table"):
        ops.update([a], [b], [], torch.zeros(1, 4), state, 0.0, False, 0.0, L.SIGN_SCALED)
    with pytest.raises(RuntimeError, match=r"unknown sign_mode 3"):
        ops.update([a], [b], [], torch.zeros(1, 4), state, 0.0, False, 0.0, 3)


# --- torch.library ---------------------------------------------------------------------------
def small_args(dtype=torch.float32):
    inp = make_inputs([3, (2, 5), 1], dtype, seed=11)
    return inp, make_state(ready=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck(dtype):
    inp, state = small_args(dtype)
    out = [torch.empty_like(x) for x in inp["x"]]
    torch.library.opcheck(ops.lookahead.default, (inp["x"], inp["s"], out))
    for sign in (False, True):
        torch.library.opcheck(ops.secant_stats.default,
                              (inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"], state,
                               MOMENTUM, True, 0.1, sign))
    table = ops.secant_stats(inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"], state,
                             MOMENTUM, True, 0.1, True)
    torch.library.opcheck(ops.secant_alpha.default, (table, state.clone(), 0, True))
    torch.library.opcheck(ops.update.default, (inp["x"], inp["g"], inp["m"], table, state,
                                               MOMENTUM, True, 0.1, L.SIGN_SCALED))
    torch.library.opcheck(ops.update.default, (inp["x"], inp["g"], [], table, state, 0.0,
                                               False, 0.0, L.SIGN_NONE))


def test_fake_table_rows_follow_the_chunks():
    chunk = _C.CHUNK_NUMEL
    for numels, rows in (([], 1), ([0], 1), ([1], 1), ([chunk], 1), ([chunk, 1], 2),
                         ([chunk - 1, 2, chunk], 3)):
        assert _fake.num_partial_rows(numels, torch.device("cpu")) == rows
        s = [torch.ones(n) for n in numels]
        table = ops.secant_stats(s, s, [], s, [], make_state(), 0.0, False, 0.0, False)
        assert table.shape == (rows, L.NUM_STATS), (numels, tuple(table.shape))
