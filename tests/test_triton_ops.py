"""The Triton kernels against the eager reference (and the C++ ops), phase by phase, and a
whole optimizer trajectory with ``backend="triton"``.

On CPU the kernels run under Triton's interpreter (``conftest.py`` sets
``TRITON_INTERPRET=1``), so sizes stay small; ``bench/gpu_check.sh`` runs this file on
CUDA with the kernels compiled.

Tolerances:
- lookahead is one correctly rounded add in every dtype on both sides (PyTorch adds
  bf16/fp16 in fp32 and rounds once, as the kernel does): bitwise equal.
- fp32/fp64 sums: each of the two implementations is within ``depth * eps * sum|t_i|``
  of the exact sum, ``depth`` being the length of the longest chain of roundings
  (``_depth``), so they must agree within twice that.
- fp32/fp64 element-wise updates: a few roundings per element (``_UPDATE_OPS``), plus the
  reduction behind the sign scale, relative to the magnitudes involved.
- bf16/fp16: the kernel's error against a float64 reference (max-norm) must be at most
  twice the error of the reference run in the same low precision (flash-attention's test).
"""
from __future__ import annotations

import math

import pytest
import torch

import secant_ext
from secant_ext import _layout as L
from secant_ext import reference as R
from secant_ext import triton_kernels as T
from secant_ext._triton import _common, _tables

FLOAT_DTYPES = [torch.float32, torch.float64]
LOW_DTYPES = [torch.bfloat16, torch.float16]
ALL_DTYPES = FLOAT_DTYPES + LOW_DTYPES
# odd, empty and one-element sizes; 2500 = two full (unmasked, wide) blocks and a tail
SIZES = (1, 3, 0, 257, 2500, 1)
MANY = (5, 1, 64, 0, 129, 7, 300, 1, 2048, 33, 513, 16)          # 12 tensors
BLOCK = _common.BLOCK


# -- helpers ----------------------------------------------------------------------------
def describe_mismatch(name, got, want, tol) -> str:
    """Where and how much ``got`` misses ``want`` beyond ``tol`` (scalar or per element)."""
    got64, want64 = got.detach().double().cpu(), want.detach().double().cpu()
    diff = (got64 - want64).abs()
    diff = torch.where(torch.isnan(got64) & torch.isnan(want64), torch.zeros_like(diff), diff)
    tol = torch.as_tensor(tol, dtype=torch.float64).expand_as(diff)
    excess = (diff - tol).nan_to_num(nan=math.inf)
    bad = int((excess > 0).sum())
    if diff.numel() == 0:
        return f"{name}: empty"
    flat = int(torch.argmax(excess.reshape(-1)))
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return (f"{name}: {bad} of {diff.numel()} elements beyond tolerance; worst at {idx}: "
            f"got {got64.reshape(-1)[flat].item():.17g}, want "
            f"{want64.reshape(-1)[flat].item():.17g}, |diff| {diff.reshape(-1)[flat]:.3g} > "
            f"tol {tol.reshape(-1)[flat]:.3g}; max |diff| {diff.max().item():.3g}")


def assert_close(name, got, want, tol) -> None:
    got64, want64 = got.detach().double().cpu(), want.detach().double().cpu()
    assert got64.shape == want64.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    same_nan = torch.isnan(got64) == torch.isnan(want64)
    diff = (got64 - want64).abs().nan_to_num(nan=0.0)
    ok = same_nan & (diff <= torch.as_tensor(tol, dtype=torch.float64))
    assert bool(ok.all()), describe_mismatch(name, got, want, tol)


def assert_equal_lists(name, got, want) -> None:
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a.nan_to_num(), b.nan_to_num()), describe_mismatch(f"{name}[{i}]", a, b, 0.0)


def low_precision_check(name, got, ref_low, exact) -> None:
    """flash-attention's criterion, max-norm over all elements of the lists."""
    err = max(((a.double() - e).abs().max().item() if a.numel() else 0.0)
              for a, e in zip(got, exact))
    ref_err = max(((a.double() - e).abs().max().item() if a.numel() else 0.0)
                  for a, e in zip(ref_low, exact))
    assert err <= 2 * ref_err + 1e-30, (
        f"{name}: kernel error {err:.3g} exceeds 2x the low-precision reference's {ref_err:.3g}; "
        + "; ".join(describe_mismatch(f"{name}[{i}]", a, e, 2 * ref_err)
                    for i, (a, e) in enumerate(zip(got, exact)) if a.numel()))


def _eps(dtype) -> float:
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _depth(numels) -> int:
    """Roundings on the longest chain of a sum of these tensors: in the kernel a lane adds
    one element per vector step, a tree adds the BLOCK lanes, the rows add in float64; a
    product, a difference and the float64 step add a few more; the reference's blocked /
    pairwise sum is shallower than that bound for these sizes."""
    n = max(sum(numels), 1)
    return math.ceil(n / BLOCK) + int(math.log2(BLOCK)) + int(math.log2(n)) + 6


def rand_lists(numels, dtype, device, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype).to(device)
            for n in numels]


def f64(tensors):
    return [t.double() for t in tensors]


def fresh_state(device, taken=0, alpha=1.0, skipped=False, ready=None):
    st = torch.tensor(L.initial_state_values(), dtype=torch.float64)
    st[L.TAKEN] = taken
    st[L.STEP] = taken
    st[L.ALPHA] = alpha
    st[L.LAST_SKIPPED] = float(skipped)
    st[L.MOMENTUM_READY] = float(taken >= 1 if ready is None else ready)
    return st.to(device)


# -- metadata ---------------------------------------------------------------------------
def test_num_partial_rows_bounds_and_formula(monkeypatch):
    assert T.num_partial_rows([]) == 1
    assert T.num_partial_rows([0, 0]) == 1
    assert T.num_partial_rows([1]) == 1
    assert T.num_partial_rows([_tables.CHUNK + 1, 1]) == 3
    assert T.num_partial_rows([2 ** 33 + 7]) <= _tables.MAX_ROWS  # 2^33 elements: bounded
    monkeypatch.setattr(_tables, "CHUNK", 10)
    monkeypatch.setattr(_tables, "MAX_ROWS", 4)
    # 13 chunks, at most 4 rows: 4 chunks a row, the last row holds one
    assert _tables.rows_and_span([25, 0, 100]) == (4, 4)


def test_tables_are_cached_and_follow_storage(triton_device):
    x = rand_lists((3, 0, 5), torch.float32, triton_device, 0)
    s = rand_lists((3, 0, 5), torch.float32, triton_device, 1)
    first = _tables.launch_tables((x, s), x[0].device)
    assert _tables.launch_tables((x, s), x[0].device) is first
    moved = [t.clone() for t in x]      # new storage: a new table, never a stale one
    assert _tables.launch_tables((moved, s), x[0].device) is not first
    out = [torch.empty_like(t) for t in x]
    T.lookahead(moved, s, out)
    assert_equal_lists("lookahead after the storage moved", out, [a + b for a, b in zip(x, s)])


@pytest.mark.parametrize("bad, message", [
    ("length", "s has 2 tensors but x has 3"),
    ("dtype", "expected torch.float32"),
    ("int", "float32, float64, bfloat16 or float16"),
    ("strided", "is not dense"),
])
def test_bad_lists_raise_clear_errors(bad, message):
    x = [torch.zeros(3), torch.zeros(4, 4), torch.zeros(2)]
    s = [torch.zeros_like(t) for t in x]
    out = [torch.zeros_like(t) for t in x]
    if bad == "length":
        s = s[:2]
    elif bad == "dtype":
        s[1] = s[1].double()
    elif bad == "int":
        x = [t.int() for t in x]
        s, out = [t.int() for t in s], [t.int() for t in out]
    elif bad == "strided":
        x[1] = torch.zeros(4, 8)[:, ::2]
    with pytest.raises((ValueError, TypeError), match=message):
        T.lookahead(x, s, out)


# -- lookahead ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("sizes", [SIZES, MANY], ids=["odd", "many"])
def test_lookahead_equals_reference(triton_device, dtype, sizes):
    x = rand_lists(sizes, dtype, triton_device, 1)
    s = rand_lists(sizes, dtype, triton_device, 2, scale=3.0)
    got = [torch.full_like(t, float("nan")) for t in x]
    want = [torch.empty_like(t) for t in x]
    x_before = [t.clone() for t in x]
    T.lookahead(x, s, got)
    R.lookahead(x, s, want)
    assert_equal_lists("lookahead", got, want)
    assert_equal_lists("x untouched", x, x_before)


# -- secant_stats ------------------------------------------------------------------------
STATS_CASES = {
    # name: (has g, sign, momentum, nesterov, weight decay, taken)
    "plain": (False, False, 0.0, False, 0.0, 0),
    "probe": (True, False, 0.0, False, 0.0, 0),
    "sign": (False, True, 0.0, False, 0.0, 0),
    "sign-wd": (True, True, 0.0, False, 0.1, 0),
    "signum-not-ready": (False, True, 0.9, False, 0.0, 0),
    "signum-ready-nesterov-wd": (True, True, 0.9, True, 0.05, 3),
}


def _stats_inputs(sizes, dtype, device, case):
    has_g, sign, mu, nesterov, wd, taken = STATS_CASES[case]
    s = rand_lists(sizes, dtype, device, 10)
    g_plus = rand_lists(sizes, dtype, device, 11)
    g = rand_lists(sizes, dtype, device, 12) if has_g else []
    x = rand_lists(sizes, dtype, device, 13)
    m = rand_lists(sizes, dtype, device, 14) if mu > 0 else []
    return (s, g_plus, g, x, m, fresh_state(device, taken=taken), mu, nesterov, wd, sign)


def _abs_column_scale(args):
    """sum |t_i| of the terms of each column, in float64: what summation errors scale with."""
    s, g_plus, g, x, m, state, mu, nesterov, wd, sign = args
    s64, gp64 = f64(s), f64(g_plus)
    y64 = [b - a for a, b in zip(s64, gp64)]
    g64 = f64(g) if len(g) else s64
    cols = [sum((a * b).abs().sum() for a, b in zip(s64, y64)),
            sum((a * a).sum() for a in s64), sum((b * b).sum() for b in y64),
            sum((a * a).sum() for a in g64)]
    if sign:
        dirs = R.secant_stats([a.abs() for a in s64], [a.abs() for a in s64],
                              [a.abs() for a in g64], [a.abs() for a in f64(x)],
                              [a.abs() for a in f64(m)], state, mu, nesterov, wd, True)
        cols += list(dirs[0, L.NUM_STATS:])
    return torch.stack([torch.as_tensor(c, dtype=torch.float64).cpu() for c in cols])


@pytest.mark.parametrize("case", list(STATS_CASES))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_secant_stats_equals_reference(triton_device, dtype, case):
    sizes = MANY if (dtype == torch.float32 and case == "signum-ready-nesterov-wd") else SIZES
    args = _stats_inputs(sizes, dtype, triton_device, case)
    table = T.secant_stats(*args)
    sign = args[-1]
    k = L.NUM_STATS + (len(sizes) if sign else 0)
    assert table.shape == (T.num_partial_rows(sizes), k)
    assert table.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert table.device.type == torch.device(triton_device).type
    assert torch.equal(T.secant_stats(*args), table), "two runs gave different bits"
    got = table.double().sum(dim=0).cpu()
    exact = R.secant_stats(*[f64(a) if isinstance(a, list) else a for a in args[:5]],
                           *args[5:]).double().sum(dim=0).cpu()
    if dtype in FLOAT_DTYPES:
        tol = 2 * _depth(sizes) * _eps(dtype) * _abs_column_scale(args)
        assert_close(f"secant_stats {case} column sums", got, exact, tol)
    else:
        ref_low = R.secant_stats(*args).double().sum(dim=0).cpu()
        low_precision_check(f"secant_stats {case}", [got], [ref_low], [exact])


def test_secant_stats_rows_spanning_tensors(triton_device, monkeypatch):
    """Small chunks and few rows: a row sums several tensors and a tensor spans rows, so the
    per-tensor sign columns are flushed mid-row and zero-filled elsewhere."""
    monkeypatch.setattr(_tables, "CHUNK", 2 * BLOCK)
    monkeypatch.setattr(_tables, "MAX_ROWS", 3)
    sizes = (5000, 0, 5, 2100, 1, 1100)     # 3 + 0 + 1 + 2 + 1 + 1 chunks, 3 a row
    args = _stats_inputs(sizes, torch.float64, triton_device, "signum-ready-nesterov-wd")
    table = T.secant_stats(*args)
    assert table.shape == (3, L.NUM_STATS + len(sizes))
    exact = R.secant_stats(*args).sum(dim=0).cpu()
    tol = 2 * _depth(sizes) * _eps(torch.float64) * _abs_column_scale(args)
    assert_close("secant_stats, rows spanning tensors", table.sum(dim=0).cpu(), exact, tol)
    # each tensor's column is non-zero only in the rows that hold its chunks
    chunks = [-(-n // (2 * BLOCK)) for n in sizes]
    first = [sum(chunks[:i]) for i in range(len(sizes))]
    span = -(-sum(chunks) // 3)
    for i, (f, c) in enumerate(zip(first, chunks)):
        rows = {r for r in range(3) if c and f < (r + 1) * span and f + c > r * span}
        nonzero = {r for r in range(3) if table[r, L.NUM_STATS + i] != 0}
        assert nonzero <= rows, f"tensor {i}: sign sum written to rows {nonzero}, owns {rows}"
    # the scaled sign update reads those multi-row columns
    s, g_plus, g, x, m, state, mu, nesterov, wd, _ = args
    st = fresh_state(triton_device, taken=3, alpha=0.25)
    xt, mt = [t.clone() for t in x], [t.clone() for t in m]
    xr, mr = [t.clone() for t in x], [t.clone() for t in m]
    T.update(xt, g, mt, table, st, mu, nesterov, wd, L.SIGN_SCALED)
    R.update(xr, g, mr, table, st, mu, nesterov, wd, L.SIGN_SCALED)
    for i, (a, b) in enumerate(zip(xt + mt, xr + mr)):
        assert_close(f"sign update after a multi-row table [{i}]", a, b,
                     2 * _depth(sizes) * _eps(torch.float64) * (b.abs() + 1))


# -- secant_alpha ------------------------------------------------------------------------
def _dyadic_table(rows, cols, dot, s_sq, y_sq, g_sq, dtype, device, seed):
    """A table whose columns sum to the given values exactly in any order: every entry is a
    multiple of 1/64 below 2^10, so float64 sums of a few hundred rows are exact and the
    kernel and the reference must agree bitwise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(-64 * 16, 64 * 16, (rows, cols), generator=gen).double() / 64
    t[-1] += torch.tensor([dot, s_sq, y_sq, g_sq] + [0.0] * (cols - 4), dtype=torch.float64) \
        - t.sum(dim=0) * torch.tensor([1.0] * 4 + [0.0] * (cols - 4), dtype=torch.float64)
    return t.to(dtype).to(device)


ALPHA_SCENARIOS = {
    # name: (a, b, c, |g|^2, previous taken)
    "positive": (1.5, 3.0, 2.25, 4.0, 0),
    "negative-curvature": (-2.0, 3.0, 5.0, 4.0, 2),
    "zero-curvature": (0.0, 3.0, 1.0, 4.0, 1),
    "zero-gradient": (0.0, 0.0, 0.0, 0.0, 1),
    "inf": (math.inf, 3.0, 1.0, 1.0, 1),
    "nan": (1.0, 3.0, math.nan, 1.0, 1),
    "nan-gsq": (1.0, 3.0, 1.0, math.nan, 0),
}


# the interpreter's numpy division warns where IEEE division gives the inf/nan we test for
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("rule", list(L.RULES))
@pytest.mark.parametrize("safeguard", [True, False])
@pytest.mark.parametrize("scenario", list(ALPHA_SCENARIOS))
def test_secant_alpha_equals_reference(triton_device, rule, safeguard, scenario):
    a, b, c, g_sq, taken = ALPHA_SCENARIOS[scenario]
    finite = all(math.isfinite(v) for v in (a, b, c, g_sq))
    # 300 rows: more than one vector step of the kernel; a float32 sign table for one case
    dtype = torch.float32 if rule == "bb2" else torch.float64
    cols = 6 if rule == "steffensen" else 4
    table = _dyadic_table(300, cols, a if finite else 0.0, b, c if finite else 0.0,
                          g_sq if finite else 0.0, dtype, triton_device, seed=len(scenario))
    if not finite:
        table[7, 0], table[7, 2], table[7, 3] = (table[7, 0] + a, table[7, 2] + c,
                                                 table[7, 3] + g_sq)
    state = fresh_state(triton_device, taken=taken, alpha=0.375)
    want, got = state.clone(), state.clone()
    R.secant_alpha(table, want, L.RULES[rule], safeguard)
    T.secant_alpha(table, got, L.RULES[rule], safeguard)
    assert torch.equal(got.nan_to_num(), want.nan_to_num()) and \
        torch.equal(got.isnan(), want.isnan()), describe_mismatch("state", got, want, 0.0)
    assert got[L.LAST_SKIPPED].item() == float(not finite)


def test_secant_alpha_reads_a_strided_table(triton_device):
    wide = _dyadic_table(40, 9, 2.0, 6.0, 3.0, 1.0, torch.float64, triton_device, seed=3)
    table = wide[:, :L.NUM_STATS]          # the optimizer slices sign tables like this
    want, got = fresh_state(triton_device), fresh_state(triton_device)
    R.secant_alpha(table, want, L.RULES["secant"], True)
    T.secant_alpha(table, got, L.RULES["secant"], True)
    assert torch.equal(got, want), describe_mismatch("state", got, want, 0.0)
    assert got[L.ALPHA].item() == 0.75


# -- update ------------------------------------------------------------------------------
UPDATE_CASES = {
    # name: (momentum, nesterov, weight decay, sign mode, taken, skipped)
    "plain": (0.0, False, 0.0, L.SIGN_NONE, 1, False),
    "weight-decay": (0.0, False, 0.1, L.SIGN_NONE, 1, False),
    "momentum-not-ready": (0.9, False, 0.0, L.SIGN_NONE, 0, False),
    "momentum-ready": (0.9, False, 0.0, L.SIGN_NONE, 2, False),
    "nesterov-wd": (0.8, True, 0.01, L.SIGN_NONE, 2, False),
    "sign-scaled": (0.0, False, 0.0, L.SIGN_SCALED, 1, False),
    "signum-scaled-wd": (0.9, False, 0.05, L.SIGN_SCALED, 2, False),
    "sign-unscaled": (0.0, False, 0.0, L.SIGN_UNSCALED, 1, False),
    "skipped": (0.9, True, 0.1, L.SIGN_NONE, 2, True),
}
_UPDATE_OPS = 8  # roundings on the longest chain: wd, two for momentum, two for nesterov, step, sub


@pytest.mark.parametrize("case", list(UPDATE_CASES))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_update_equals_reference(triton_device, dtype, case):
    mu, nesterov, wd, sign_mode, taken, skipped = UPDATE_CASES[case]
    sizes = MANY if (dtype == torch.float32 and case == "nesterov-wd") else SIZES
    x = rand_lists(sizes, dtype, triton_device, 20)
    g = rand_lists(sizes, dtype, triton_device, 21)
    m = rand_lists(sizes, dtype, triton_device, 22) if mu > 0 else []
    state = fresh_state(triton_device, taken=taken, alpha=0.3, skipped=skipped)
    # the table the update reads: this bucket's stats (its sign columns give mean |v|)
    table = R.secant_stats(g, g, g, x, m, state, mu, nesterov, wd, sign_mode == L.SIGN_SCALED)
    table = torch.cat([table, 0.5 * table])   # two rows, so the column sum is a real sum
    xt, mt = [t.clone() for t in x], [t.clone() for t in m]
    T.update(xt, g, mt, table, state, mu, nesterov, wd, sign_mode)
    if skipped:
        assert_equal_lists("x of a skipped step", xt, x)
        assert_equal_lists("m of a skipped step", mt, m)
        return
    x64, m64 = f64(x), f64(m)
    R.update(x64, f64(g), m64, table, state, mu, nesterov, wd, sign_mode)
    if dtype in FLOAT_DTYPES:
        eps = _eps(dtype)
        depth = _UPDATE_OPS + (_depth(sizes) if sign_mode == L.SIGN_SCALED else 0)
        # each rounding acts on x, on a part of the step, or on the result
        alpha = state[L.ALPHA].item()
        scale = [xi.double().abs() + yi.abs() + alpha * (gi.double().abs() + mi.double().abs()
                 + wd * xi.double().abs()) + 1e-300
                 for xi, yi, gi, mi in zip(x, x64, g, m if m else g)]
        for i, (a, b, sc) in enumerate(zip(xt, x64, scale)):
            assert_close(f"update {case} x[{i}]", a, b, depth * eps * sc)
        for i, (a, b, mi, gi) in enumerate(zip(mt, m64, m, g)):
            sc = mi.double().abs() + gi.double().abs() + wd * x[i].double().abs()
            assert_close(f"update {case} m[{i}]", a, b, _UPDATE_OPS * eps * sc)
    else:
        xr, mr = [t.clone() for t in x], [t.clone() for t in m]
        R.update(xr, g, mr, table, state, mu, nesterov, wd, sign_mode)
        low_precision_check(f"update {case} x", xt, xr, x64)
        if m:
            low_precision_check(f"update {case} m", mt, mr, m64)


def test_update_reads_alpha_and_flags_from_the_state(triton_device):
    """Same inputs, different states: alpha and momentum readiness come from the device."""
    x = rand_lists((5,), torch.float64, triton_device, 30)
    g = rand_lists((5,), torch.float64, triton_device, 31)
    m = rand_lists((5,), torch.float64, triton_device, 32)
    table = torch.zeros(1, L.NUM_STATS, dtype=torch.float64, device=triton_device)
    results = []
    for alpha, ready in ((0.5, True), (0.25, True), (0.5, False)):
        xt, mt = [x[0].clone()], [m[0].clone()]
        st = fresh_state(triton_device, taken=1, alpha=alpha, ready=ready)
        T.update(xt, g, mt, table, st, 0.5, False, 0.0, L.SIGN_NONE)
        m_new = 0.5 * m[0] + 0.5 * g[0] if ready else g[0]
        assert_close(f"m, alpha={alpha}, ready={ready}", mt[0], m_new, 4e-16 * (m_new.abs() + 1))
        assert_close(f"x, alpha={alpha}, ready={ready}", xt[0], x[0] - alpha * m_new,
                     4e-16 * (x[0].abs() + 1))
        results.append(xt[0])
    assert not torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


# -- the C++ ops --------------------------------------------------------------------------
def _on(device, args):
    return [[t.to(device) for t in a] if isinstance(a, list) else
            (a.to(device) if isinstance(a, torch.Tensor) else a) for a in args]


def test_equals_the_cpp_ops(triton_device):
    """The same calls through ``torch.ops.secant_ext`` (the C++ CPU kernels, on CPU copies
    of the inputs): CI always builds the extension, so its absence is a failure here."""
    assert secant_ext.cpp_available(), (
        "secant_ext._C is not built; build it with `pip install --no-build-isolation -e .`")
    ops, dev = torch.ops.secant_ext, triton_device
    for dtype in FLOAT_DTYPES:
        eps = _eps(dtype)
        for case in ("probe", "signum-ready-nesterov-wd"):
            args = _stats_inputs(SIZES, dtype, "cpu", case)
            got = T.secant_stats(*_on(dev, args)).double().sum(dim=0).cpu()
            want = ops.secant_stats(*args).double().sum(dim=0)
            assert_close(f"secant_stats {case} vs C++", got, want,
                         2 * _depth(SIZES) * eps * _abs_column_scale(args))
        x = rand_lists(SIZES, dtype, "cpu", 40)
        s = rand_lists(SIZES, dtype, "cpu", 41)
        out_t, out_c = [torch.empty_like(t, device=dev) for t in x], [torch.empty_like(t) for t in x]
        T.lookahead(*_on(dev, [x, s]), out_t)
        ops.lookahead(x, s, out_c)
        assert_equal_lists("lookahead vs C++", [t.cpu() for t in out_t], out_c)
        table = _dyadic_table(30, 4, -1.0, 3.0, 2.0, 1.0, torch.float64, "cpu", seed=5)
        for rule in L.RULES.values():
            st_t, st_c = fresh_state(dev, taken=1), fresh_state("cpu", taken=1)
            T.secant_alpha(table.to(dev), st_t, rule, True)
            ops.secant_alpha(table, st_c, rule, True)
            assert torch.equal(st_t.cpu(), st_c), describe_mismatch(f"state rule {rule}",
                                                                    st_t, st_c, 0)
        for case in ("nesterov-wd", "signum-scaled-wd"):
            mu, nesterov, wd, sign_mode, taken, _ = UPDATE_CASES[case]
            g = rand_lists(SIZES, dtype, "cpu", 42)
            m = rand_lists(SIZES, dtype, "cpu", 43)
            state = fresh_state("cpu", taken=taken, alpha=0.3)
            table = R.secant_stats(g, g, g, x, m, state, mu, nesterov, wd, True)
            xt, gt, mt, tt, st = _on(dev, [x, g, m, table, state])
            xt, mt = [t.clone() for t in xt], [t.clone() for t in mt]
            xc, mc = [t.clone() for t in x], [t.clone() for t in m]
            T.update(xt, gt, mt, tt, st, mu, nesterov, wd, sign_mode)
            ops.update(xc, g, mc, table, state, mu, nesterov, wd, sign_mode)
            depth = _UPDATE_OPS + _depth(SIZES)
            for i, (a, b) in enumerate(zip(xt + mt, xc + mc)):
                assert_close(f"update {case} vs C++ [{i}]", a.cpu(), b,
                             2 * depth * eps * (b.double().abs() + 1))


# -- whole trajectories ---------------------------------------------------------------------
TRAJECTORIES = {
    "sgd": (secant_ext.SecantSGD, {}),
    "sgd-wd-bb2": (secant_ext.SecantSGD, dict(weight_decay=0.01, rule="bb2")),
    "sgdm-nesterov": (secant_ext.SecantSGDM, dict(momentum=0.9, nesterov=True)),
    "signsgd": (secant_ext.SecantSignSGD, {}),
    "signum": (secant_ext.SecantSignSGD, dict(momentum=0.9)),
    # W stored transposed: not contiguous, so the optimizer gives it to the reference and
    # c to Triton: two buckets, one alpha from the concatenated tables
    "sgdm-two-buckets": (secant_ext.SecantSGDM, dict(momentum=0.9, transposed_w=True)),
}


def _least_squares_run(device, cls, kwargs, backend, steps=10):
    kwargs = dict(kwargs)
    transposed_w = kwargs.pop("transposed_w", False)
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(64, 6, generator=gen, dtype=torch.float64).to(device)
    Y = torch.randn(64, 2, generator=gen, dtype=torch.float64).to(device)
    W = (0.1 * torch.randn(6, 2, generator=gen, dtype=torch.float64)).to(device)
    W = (W.t().contiguous().t() if transposed_w else W).requires_grad_()
    c = torch.zeros(2, dtype=torch.float64, device=device, requires_grad=True)
    opt = cls([W, c], backend=backend, **kwargs)
    batches = [torch.arange(64, device=device)[(torch.arange(16, device=device) * 5 + 3 * t) % 64]
               for t in range(steps)]

    def closure_for(rows):
        def closure():
            opt.zero_grad()
            loss = ((X[rows] @ W + c - Y[rows]) ** 2).mean()
            loss.backward()
            return loss
        return closure

    alphas = []
    for rows in batches:
        opt.step(closure_for(rows), probe_closure=closure_for(rows[:8]))
        alphas.append(opt.last_stats.alpha.item())
    return [W.detach().cpu(), c.detach().cpu()], torch.tensor(alphas, dtype=torch.float64)


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_trajectory_equals_reference(triton_device, name):
    cls, kwargs = TRAJECTORIES[name]
    params_t, alphas_t = _least_squares_run(triton_device, cls, kwargs, "triton")
    params_r, alphas_r = _least_squares_run(triton_device, cls, kwargs, "reference")
    # float64 all through: only summation order differs, ~1e-16 a step, grown over 10 steps
    assert_close(f"{name} alphas", alphas_t, alphas_r, 1e-12 * alphas_r.abs())
    for i, (a, b) in enumerate(zip(params_t, params_r)):
        assert_close(f"{name} param {i}", a, b, 1e-12 * (b.abs() + b.abs().max()))
    assert not torch.equal(params_r[0], _least_squares_run(triton_device, cls, kwargs,
                                                           "reference", steps=0)[0][0])


# -- what only the compiler shows ------------------------------------------------------------
def test_kernels_compile_for_sm90_with_wide_loads():
    """The interpreter accepts code the compiler rejects, and cannot show how memory is
    accessed: compile for sm_90 without a GPU (Triton's ahead-of-time path, in a process
    without the interpreter) and check that full blocks move 16 bytes a thread-access
    (2 such accesses a thread per fp32 block of 1024 over 128 threads, 1 for bf16)."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", "secant_ext._triton._aot", "--arch", "90",
                           "--dtypes", "fp32,bf16"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert results and proc.returncode == 0, proc.stderr[-3000:] + "\n" + "\n".join(
        f"{r['kernel']} {r['variant']}: {r['error']}" for r in results if not r["ok"])
    # (tensors read, tensors written) in full blocks
    tensors = {("lookahead", ""): (2, 1), ("stats", "sign=False"): (2, 0),
               ("stats", "sign=True"): (5, 0), ("update", "m=True"): (3, 2),
               ("update", "m=False"): (2, 1)}
    checked = 0
    for r in results:
        for (kernel, flag), (reads, writes) in tensors.items():
            if r["kernel"] != kernel or flag not in r["variant"]:
                continue
            per_tensor = 2 if r["variant"].startswith("fp32") else 1
            loads, stores = r["loads"].get("ld.global.v4.b32", 0), \
                r["loads"].get("st.global.v4.b32", 0)
            assert (loads, stores) == (reads * per_tensor, writes * per_tensor), (
                f"{kernel} {r['variant']}: {loads} wide loads and {stores} wide stores, "
                f"expected {reads * per_tensor} and {writes * per_tensor}: {r['loads']}")
            checked += 1
    assert checked == 10, f"checked {checked} variants, expected 10"


def test_triton_is_the_cuda_kernel_of_the_ops():
    """With the extension loaded, ``torch.ops.secant_ext.*`` on CUDA tensors dispatch to the
    Triton launchers (registering touches no GPU, so this holds on a CPU-only machine)."""
    assert secant_ext.cpp_available(), "secant_ext._C is not built"
    for name in ("lookahead", "secant_stats", "secant_alpha", "update"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"secant_ext::{name}", "CUDA"), \
            f"secant_ext::{name} has no CUDA kernel"


def test_describe_mismatch_points_at_the_worst_element():
    want = torch.zeros(2, 3)
    got = want.clone()
    got[1, 2] = 0.5
    msg = describe_mismatch("t", got, want, 1e-3)
    assert "1 of 6 elements" in msg and "(1, 2)" in msg and "got 0.5" in msg, msg
