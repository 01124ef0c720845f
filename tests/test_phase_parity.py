"""Every implementation of the phases against the eager reference, phase by phase, within
the budgets of ``tests/numerics.py`` (its docstring derives them; docs/ALGORITHM.md
describes the phases).

Tests take an implementation the way torch's ``optim_db`` tests take an optimizer: each
parameter list below is built from per-implementation case lists, so the C++ kernels get
the wide grid (sizes up to 10^5, every variant) and the Triton kernels, which run under
the slow interpreter on CPU, a small one. ``bench/gpu_check.sh`` runs the Triton cases on
CUDA (``SECANT_TEST_DEVICES=cuda``, ``TRITON_INTERPRET=0``). The C++ extension is always
built in CI: its absence fails these tests loudly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import numerics
from numerics import CPP, TRITON, DTYPES, FULL, StatsCall, UpdateCall, assert_bitwise, \
    assert_within, make_inputs, make_state, sign_table
from secant_ext import _backends
from secant_ext import _layout as layout
from secant_ext import reference

RULES = list(layout.RULES)


def impl_params(cases):
    """pytest params (impl, device, case) from {implementation: [case ids]}."""
    out = []
    for impl, names in cases.items():
        for device in impl.devices():
            for name in names:
                out.append(pytest.param(impl, device, name, id=f"{impl.name}-{device}-{name}"))
    return out


# --- sizes ---------------------------------------------------------------------------------
CPP_SIZES = (0, 1, 3, 1023, 4097, 100003)
CPP_SIZE_CASES = {
    "one": [1], "three": [3], "1023": [1023], "4097": [4097], "100003": [100003],
    "empty": [0], "mixed": list(CPP_SIZES), "many": [(7 * i * i + 3) % 301 for i in range(40)],
    "matrix": [(37, 29)], "scalar": [()],
}
# odd, empty and one-element sizes; 2500 = two full (unmasked, wide) blocks and a tail
TRITON_SIZES = (1, 3, 0, 257, 2500, 1)
TRITON_MANY = (5, 1, 64, 0, 129, 7, 300, 1, 2048, 33, 513, 16)          # 12 tensors
TRITON_SIZE_CASES = {"odd": list(TRITON_SIZES), "many": list(TRITON_MANY)}
SIZE_CASES = {CPP: CPP_SIZE_CASES, TRITON: TRITON_SIZE_CASES}


# --- lookahead -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,device,case", impl_params(
    {impl: list(cases) for impl, cases in SIZE_CASES.items()}))
def test_lookahead(impl, device, case, dtype):
    inp = make_inputs(SIZE_CASES[impl][case], dtype, seed=1, device=device)
    x, s = inp["x"], [3 * t for t in inp["s"]]
    out = [torch.full_like(t, float("nan")) for t in x]
    x_before = numerics.clones(x)
    impl.ops().lookahead(x, s, out)
    numerics.assert_bitwise_lists("x must stay untouched", x, x_before)
    numerics.check_lookahead("lookahead", out, x, s)


_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16,
         torch.float16: torch.int16}


def _bits(ts):
    return [t.view(_BITS[t.dtype]).clone() for t in ts]


def _with_special_values(ts):
    """-0.0, inf and a NaN with a payload in the first tensor that has room for them: a
    restore that went through arithmetic, or a conversion, would change their bits."""
    for t in ts:
        if t.numel() >= 3:
            flat = t.view(-1)
            flat[0], flat[1] = -0.0, float("inf")
            flat[2:3].view(_BITS[t.dtype]).copy_(flat[2:3].view(_BITS[t.dtype]) * 0 - 7)
            break
    return ts


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,device,case", impl_params(
    {impl: list(cases) for impl, cases in SIZE_CASES.items()}))
def test_lookahead_inplace_then_restore(impl, device, case, dtype):
    """The in-place lookahead writes the bits of x to the backup and the exactly rounded
    x + s to x; the restore copies the bits back: x_t again to the last bit, NaN payloads
    and signed zeros included."""
    inp = make_inputs(SIZE_CASES[impl][case], dtype, seed=1, device=device)
    x, s = _with_special_values(inp["x"]), [3 * t for t in inp["s"]]
    x_bits = _bits(x)
    x_before = numerics.clones(x)
    backup = [torch.full_like(t, 1.5) for t in x]
    impl.ops().lookahead_inplace(x, s, backup)
    assert [torch.equal(a, b) for a, b in zip(_bits(backup), x_bits)] == [True] * len(x), \
        "the backup must hold the bits of x"
    numerics.check_lookahead("lookahead_inplace", x, x_before, s)
    impl.ops().restore(x, backup)
    assert [torch.equal(a, b) for a, b in zip(_bits(x), x_bits)] == [True] * len(x), \
        "restore must give back the bits of x"


@pytest.mark.parametrize("skipped", [False, True], ids=["applied", "skipped"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,device,case", impl_params(
    {impl: list(cases) for impl, cases in SIZE_CASES.items()}))
def test_average(impl, device, case, dtype, skipped):
    """``avg + w (x - avg)`` computed in the compute type and rounded once: within 3
    roundings of the compute type (subtract, multiply, add) of the float64 value, plus the
    one to the dtype; a skipped step writes nothing."""
    inp = make_inputs(SIZE_CASES[impl][case], dtype, seed=2, device=device)
    avg, x = inp["m"], inp["x"]
    before = numerics.clones(avg)
    state = make_state(device, taken=3, skipped=skipped)
    w = 0.3125  # exact in every dtype
    state[layout.AVG_WEIGHT] = w
    impl.ops().average(avg, x, state)
    if skipped:
        numerics.assert_bitwise_lists("a skipped step leaves the average", avg, before)
        return
    u = numerics.unit_roundoff(numerics.compute_dtype(dtype))
    for got, a, xi in zip(avg, numerics.f64(before), numerics.f64(x)):
        truth = a + w * (xi - a)
        tol = numerics.gamma(3, u) * (a.abs() + w * (xi.abs() + a.abs())) + \
            numerics.unit_roundoff(dtype) * truth.abs() * (dtype not in FULL)
        assert_within("average", got.double().cpu(), truth, tol)


# --- secant_stats ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """The direction's terms: momentum buffer given, and whether it holds an average
    (state TAKEN >= 1); nesterov; weight decay."""
    mom: bool = False
    ready: bool = False
    nesterov: bool = False
    wd: float = 0.0
    mu: float = 0.9


VARIANTS = {
    "plain": Variant(),
    "momentum_first_step": Variant(mom=True),
    "momentum": Variant(mom=True, ready=True),
    "nesterov": Variant(mom=True, ready=True, nesterov=True),
    "weight_decay": Variant(wd=0.1),
    "all": Variant(mom=True, ready=True, nesterov=True, wd=0.1),
}


@dataclass(frozen=True)
class StatsCase:
    sizes: tuple
    variant: Variant
    has_g: bool
    sign_mode: int
    seed: int


def _cpp_stats_cases():
    cases = {f"sizes-{name}": StatsCase(tuple(sizes), VARIANTS["all"], True,
                                        layout.SIGN_SCALED, 1)
             for name, sizes in CPP_SIZE_CASES.items()}
    for vname, variant in VARIANTS.items():
        for has_g in (False, True):
            for sign_mode in (layout.SIGN_NONE, layout.SIGN_SCALED):
                name = f"{vname}-{'probe' if has_g else 'g=s'}-" \
                       f"{'sign' if sign_mode == layout.SIGN_SCALED else 'nosign'}"
                cases[name] = StatsCase(CPP_SIZES, variant, has_g, sign_mode, 2)
    return cases


_T = dict(sizes=TRITON_SIZES, seed=10)
TRITON_STATS_CASES = {
    "plain": StatsCase(variant=Variant(), has_g=False, sign_mode=layout.SIGN_NONE, **_T),
    "probe": StatsCase(variant=Variant(), has_g=True, sign_mode=layout.SIGN_NONE, **_T),
    "sign": StatsCase(variant=Variant(), has_g=False, sign_mode=layout.SIGN_SCALED, **_T),
    "sign-wd": StatsCase(variant=Variant(wd=0.1), has_g=True, sign_mode=layout.SIGN_SCALED,
                         **_T),
    "signum-not-ready": StatsCase(variant=Variant(mom=True), has_g=False,
                                  sign_mode=layout.SIGN_SCALED, **_T),
    "signum-ready-nesterov-wd": StatsCase(
        variant=Variant(mom=True, ready=True, nesterov=True, wd=0.05), has_g=True,
        sign_mode=layout.SIGN_SCALED, **_T),
}
STATS_CASES = {CPP: _cpp_stats_cases(), TRITON: TRITON_STATS_CASES}


def stats_call(case: StatsCase, dtype, device="cpu", sizes=None) -> StatsCall:
    inp = make_inputs(sizes or case.sizes, dtype, seed=case.seed, device=device)
    v = case.variant
    return StatsCall(inp["s"], inp["g_plus"], inp["g"] if case.has_g else [], inp["x"],
                     inp["m"] if v.mom else [], make_state(device, taken=2 if v.ready else 0),
                     momentum=v.mu if v.mom else 0.0, nesterov=v.nesterov,
                     weight_decay=v.wd, sign_mode=case.sign_mode)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,device,case", impl_params(
    {impl: list(cases) for impl, cases in STATS_CASES.items()}))
def test_secant_stats(impl, device, case, dtype):
    spec = STATS_CASES[impl][case]
    sizes = TRITON_MANY if (impl is TRITON and dtype == torch.float32 and
                            case == "signum-ready-nesterov-wd") else None
    call = stats_call(spec, dtype, device, sizes)
    ops = impl.ops()
    table = call.run(ops)
    assert torch.equal(call.run(ops), table), "two runs gave different bits"
    numerics.check_stats(f"secant_stats {case}", table, call, impl, device)


# --- secant_alpha ------------------------------------------------------------------------------
# Tables whose column sums are exact in every order: the implementations and the reference
# see the same a, b, c and each rule's one or two correctly rounded float64 operations must
# give the same bits.
def small_integer_table(a, b, c, dtype, extra_cols=0):
    """(a, b, c) each split over three rows into parts that cancel partly."""
    rows = torch.zeros(3, layout.NUM_STATS + extra_cols, dtype=torch.float64)
    for col, v in ((layout.COL_DOT, a), (layout.COL_S_SQ, b), (layout.COL_Y_SQ, c),
                   (layout.COL_G_SQ, 11.0)):
        if math.isfinite(v):
            rows[:, col] = torch.tensor([v + 4.0, -6.0, 2.0], dtype=torch.float64)
        else:
            rows[:, col] = torch.tensor([1.0, v, -1.0], dtype=torch.float64)
    rows[:, layout.NUM_STATS:] = 1.0  # the sign columns are not read
    return rows.to(dtype)


def dyadic_table(rows, cols, dot, s_sq, y_sq, g_sq, dtype, device, seed):
    """Every entry a multiple of 1/64 below 2^10: float64 sums of a few hundred rows are
    exact in any order."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(-64 * 16, 64 * 16, (rows, cols), generator=gen).double() / 64
    keep = torch.tensor([1.0] * 4 + [0.0] * (cols - 4), dtype=torch.float64)
    t[-1] += torch.tensor([dot, s_sq, y_sq, g_sq] + [0.0] * (cols - 4),
                          dtype=torch.float64) - t.sum(dim=0) * keep
    return t.to(dtype).to(device)


SMALL_CASES = {
    "positive_curvature": (3.0, 5.0, 7.0),
    "negative_curvature": (-2.0, 5.0, 7.0),
    "zero_curvature": (0.0, 5.0, 7.0),
    "a_equals_minus_b": (-5.0, 5.0, 7.0),
    "b_zero": (3.0, 0.0, 7.0),
    "all_zero": (0.0, 0.0, 0.0),
    "nan": (float("nan"), 5.0, 7.0),
    "inf": (3.0, float("inf"), 7.0),
}
DYADIC_SCENARIOS = {
    # name: (a, b, c, |g|^2, previous taken)
    "positive": (1.5, 3.0, 2.25, 4.0, 0),
    "negative-curvature": (-2.0, 3.0, 5.0, 4.0, 2),
    "zero-curvature": (0.0, 3.0, 1.0, 4.0, 1),
    "zero-gradient": (0.0, 0.0, 0.0, 0.0, 1),
    "inf": (math.inf, 3.0, 1.0, 1.0, 1),
    "nan": (1.0, 3.0, math.nan, 1.0, 1),
    "nan-gsq": (1.0, 3.0, 1.0, math.nan, 0),
}


def _small_alpha_cases():
    return [f"small-{case}-{str(dt).split('.')[-1]}-taken{taken}"
            for case in SMALL_CASES for dt in FULL for taken in (0, 3)]


ALPHA_CASES = {CPP: _small_alpha_cases(), TRITON: [f"dyadic-{s}" for s in DYADIC_SCENARIOS]}


def alpha_inputs(case, rule, device):
    """(table, state) of an alpha case."""
    kind, rest = case.split("-", 1)
    if kind == "small":
        name, dt, taken = rest.rsplit("-", 2)
        table = small_integer_table(*SMALL_CASES[name], getattr(torch, dt), extra_cols=2)
        state = make_state(device, alpha=0.625, taken=int(taken[5:]), ready=False)
        state[layout.SKIPPED], state[layout.CLIPPED] = 4.0, 5.0
        return table.to(device), state
    a, b, c, g_sq, taken = DYADIC_SCENARIOS[rest]
    finite = all(math.isfinite(v) for v in (a, b, c, g_sq))
    # 300 rows: more than one vector step of a kernel; a float32 table for one rule
    dtype = torch.float32 if rule == "bb2" else torch.float64
    cols = 6 if rule == "steffensen" else 4
    table = dyadic_table(300, cols, a if finite else 0.0, b, c if finite else 0.0,
                         g_sq if finite else 0.0, dtype, device, seed=len(rest))
    if not finite:
        table[7, 0], table[7, 2], table[7, 3] = (table[7, 0] + a, table[7, 2] + c,
                                                 table[7, 3] + g_sq)
    return table, make_state(device, taken=taken, alpha=0.375)


# the interpreter's numpy division warns where IEEE division gives the inf/nan we test for
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("safeguard", [True, False], ids=["safeguard", "raw"])
@pytest.mark.parametrize("impl,device,case", impl_params(ALPHA_CASES))
def test_secant_alpha_exact_table(impl, device, case, rule, safeguard):
    table, state = alpha_inputs(case, rule, device)
    want = state.clone()
    reference.secant_alpha(table, want, rule=layout.RULES[rule], safeguard=safeguard)
    impl.ops().secant_alpha(table, state, rule=layout.RULES[rule], safeguard=safeguard)
    assert_bitwise(f"state after {rule} on {case}", state, want)
    finite = bool(torch.isfinite(table.double().sum(0)[:layout.NUM_STATS]).all())
    assert state[layout.LAST_SKIPPED].item() == float(not finite)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("impl,device,case", impl_params({CPP: ["random-257"]}))
def test_secant_alpha_random_table(impl, device, case, rule):
    gen = torch.Generator().manual_seed(3)
    table = torch.rand(257, layout.NUM_STATS, generator=gen, dtype=torch.float64).to(device)
    state, expected = make_state(device), make_state(device)
    reference.secant_alpha(table, expected, rule=layout.RULES[rule], safeguard=True)
    impl.ops().secant_alpha(table, state, rule=layout.RULES[rule], safeguard=True)
    col_err = numerics.alpha_sum_tolerance(table)
    fields = [layout.DOT, layout.S_SQ, layout.Y_SQ, layout.G_SQ]
    assert_within("sums", state[fields], expected[fields], col_err)
    a, b, c = (float(expected[f]) for f in (layout.DOT, layout.S_SQ, layout.Y_SQ))
    tol = numerics.alpha_tolerance(rule, col_err, a, b, c, float(expected[layout.ALPHA]))
    assert_within("alpha", state[layout.ALPHA], expected[layout.ALPHA], tol)
    # lr 1 and no clipping: the step size is alpha, and the carry's EMA (1 - beta) alpha,
    # to the same tolerance
    for field, name in ((layout.STEP_SIZE, "step size"), (layout.ALPHA_EMA, "alpha EMA")):
        assert_within(name, state[field], expected[field], tol)
    others = [i for i in range(layout.STATE_SIZE)
              if i not in fields + [layout.ALPHA, layout.STEP_SIZE, layout.ALPHA_EMA]]
    assert_bitwise("counters and flags", state[others], expected[others])


@pytest.mark.parametrize("others", [0.0, 12.0, float("inf")], ids=["one-group", "others", "others-inf"])
@pytest.mark.parametrize("impl,device,case", impl_params({CPP: ["clip"], TRITON: ["clip"]}))
def test_secant_alpha_clips_by_the_whole_models_norm(impl, device, case, others):
    """``max_grad_norm`` clips by the norm over every param group: the clip's norm is
    ``sqrt(|g|^2 + CLIP_G_SQ_OTHERS)``. The table's sums are exact (small integers), so
    every implementation gives the reference's bits, and the reference gives the clip
    written out here in float64."""
    table = torch.tensor([[1.0, 4.0, 2.0, 3.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    state = make_state(device, alpha=0.5, taken=1)
    state[layout.LR] = 2.0
    state[layout.MAX_GRAD_NORM] = 1.5
    state[layout.CLIP_G_SQ_OTHERS] = others
    want = state.clone()
    reference.secant_alpha(table.to(device), want, rule=layout.RULES["secant"], safeguard=True)
    impl.ops().secant_alpha(table.to(device), state, rule=layout.RULES["secant"],
                            safeguard=True)
    assert_bitwise("state with a clip over the whole model", state, want)
    alpha = 4.0 / (1.0 + 4.0)
    clip = min(1.0, 1.5 / (math.sqrt(4.0 + others) + 1e-6))
    assert want[layout.STEP_SIZE].item() == alpha * 2.0 * clip
    assert want[layout.G_SQ].item() == 4.0  # the group's own |g|^2 is still what it reports


# --- update ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UpdateCase:
    sizes: tuple
    variant: Variant
    sign_mode: int
    seed: int
    table: str = "random"     # "random": sign_table; "stats": the bucket's own stats, 2 rows
    skipped: bool = False
    alpha: float = 0.37


SIGN_MODE_IDS = {layout.SIGN_NONE: "direction", layout.SIGN_SCALED: "scaled_sign",
                 layout.SIGN_UNSCALED: "unscaled_sign"}


def _cpp_update_cases():
    cases = {f"sizes-{name}": UpdateCase(tuple(sizes), VARIANTS["all"], layout.SIGN_NONE, 5)
             for name, sizes in CPP_SIZE_CASES.items()}
    for vname, variant in VARIANTS.items():
        for mode, mode_id in SIGN_MODE_IDS.items():
            cases[f"{vname}-{mode_id}"] = UpdateCase(CPP_SIZES, variant, mode, 6)
    for mode, mode_id in SIGN_MODE_IDS.items():
        cases[f"skipped-{mode_id}"] = UpdateCase((3, 4097), VARIANTS["all"], mode, 7,
                                                 skipped=True)
    return cases


_U = dict(sizes=TRITON_SIZES, seed=20, table="stats", alpha=0.3)
TRITON_UPDATE_CASES = {
    "plain": UpdateCase(variant=Variant(), sign_mode=layout.SIGN_NONE, **_U),
    "weight-decay": UpdateCase(variant=Variant(wd=0.1), sign_mode=layout.SIGN_NONE, **_U),
    "momentum-not-ready": UpdateCase(variant=Variant(mom=True), sign_mode=layout.SIGN_NONE,
                                     **_U),
    "momentum-ready": UpdateCase(variant=Variant(mom=True, ready=True),
                                 sign_mode=layout.SIGN_NONE, **_U),
    "nesterov-wd": UpdateCase(variant=Variant(mom=True, ready=True, nesterov=True, wd=0.01,
                                              mu=0.8), sign_mode=layout.SIGN_NONE, **_U),
    "sign-scaled": UpdateCase(variant=Variant(), sign_mode=layout.SIGN_SCALED, **_U),
    "signum-scaled-wd": UpdateCase(variant=Variant(mom=True, ready=True, wd=0.05),
                                   sign_mode=layout.SIGN_SCALED, **_U),
    "sign-unscaled": UpdateCase(variant=Variant(), sign_mode=layout.SIGN_UNSCALED, **_U),
    "skipped": UpdateCase(variant=Variant(mom=True, ready=True, nesterov=True, wd=0.1),
                          sign_mode=layout.SIGN_NONE, skipped=True, **_U),
}
UPDATE_CASES = {CPP: _cpp_update_cases(), TRITON: TRITON_UPDATE_CASES}


def update_call(case: UpdateCase, dtype, device="cpu", sizes=None) -> UpdateCall:
    inp = make_inputs(sizes or case.sizes, dtype, seed=case.seed, device=device)
    v = case.variant
    state = make_state(device, alpha=case.alpha, taken=2 if v.ready else 0, ready=v.ready,
                       skipped=case.skipped)
    x, g, m = inp["x"], inp["g"], inp["m"] if v.mom else []
    kw = dict(momentum=v.mu if v.mom else 0.0, nesterov=v.nesterov, weight_decay=v.wd,
              sign_mode=case.sign_mode)
    if case.table == "stats":   # the bucket's stats (its sign columns give mean |v|), 2 rows
        table = reference.secant_stats(g, g, g, x, m, state, **dict(
            kw, sign_mode=layout.SIGN_SCALED if case.sign_mode == layout.SIGN_SCALED
            else layout.SIGN_NONE))
        table = torch.cat([table, 0.5 * table])
    else:
        table = sign_table(len(x), dtype, device=device)
    return UpdateCall(x, g, m, table, state, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl,device,case", impl_params(
    {impl: list(cases) for impl, cases in UPDATE_CASES.items()}))
def test_update(impl, device, case, dtype):
    spec = UPDATE_CASES[impl][case]
    sizes = TRITON_MANY if (impl is TRITON and dtype == torch.float32 and
                            case == "nesterov-wd") else None
    call = update_call(spec, dtype, device, sizes)
    if spec.skipped:
        big = max(range(len(call.g)), key=lambda i: call.g[i].numel())
        call.g[big].view(-1)[5] = float("nan")  # what made the step skip; must not leak
        x, m = call.run(impl.ops())
        numerics.assert_bitwise_lists("x of a skipped step", x, call.x)
        numerics.assert_bitwise_lists("m of a skipped step", m, call.m)
        return
    numerics.check_update(f"update {case}", impl, call, dtype)


# --- a whole step ------------------------------------------------------------------------------
def whole_step(ops, inp, state, rule, sign_mode):
    out = [torch.empty_like(x) for x in inp["x"]]
    kw = dict(momentum=0.9, nesterov=True, weight_decay=0.1)
    ops.lookahead(inp["x"], inp["s"], out)
    table = ops.secant_stats(inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"], state,
                             sign_mode=layout.SIGN_SCALED if sign_mode == layout.SIGN_SCALED
                             else layout.SIGN_NONE, **kw)
    ops.secant_alpha(table, state, rule=rule, safeguard=True)
    ops.update(inp["x"], inp["g"], inp["m"], table, state, sign_mode=sign_mode, **kw)
    return out, table


@pytest.mark.parametrize("sign_mode", [layout.SIGN_NONE, layout.SIGN_SCALED],
                         ids=["direction", "scaled_sign"])
@pytest.mark.parametrize("impl,device,case", impl_params({CPP: ["zero-probe"]}))
def test_zero_probe_gradient_keeps_alpha(impl, device, case, sign_mode):
    # b == 0: alpha keeps its previous value, and the step is still taken.
    inp = make_inputs([5, 1023], torch.float32, seed=8, device=device)
    inp["s"] = [torch.zeros_like(s) for s in inp["s"]]
    inp["g_plus"] = numerics.clones(inp["s"])
    state = make_state(device, alpha=0.25, taken=2)
    before = {k: numerics.clones(v) for k, v in inp.items()}
    ref_state = state.clone()
    inp64 = {k: numerics.f64(v) for k, v in inp.items()}
    _, ref_table = whole_step(_backends.REFERENCE, inp64, ref_state,
                              layout.RULES["secant"], sign_mode)
    _, table = whole_step(impl.ops(), inp, state, layout.RULES["secant"], sign_mode)
    assert float(state[layout.ALPHA]) == 0.25 and float(state[layout.LAST_SKIPPED]) == 0
    fields = [layout.ALPHA, layout.TAKEN, layout.LAST_SKIPPED, layout.LAST_CLIPPED]
    assert_bitwise("state", state[fields], ref_state[fields])
    # the step moved x (and m) as the float64 reference did, within the update budget
    call = UpdateCall(before["x"], before["g"], before["m"], table, state, momentum=0.9,
                      nesterov=True, weight_decay=0.1, sign_mode=sign_mode)
    numerics.check_update("whole step", impl, call, torch.float32,
                          result=(inp["x"], inp["m"]))


# --- the toolkit itself ------------------------------------------------------------------------
def test_toolkit_convention_and_reports():
    assert numerics.unit_roundoff(torch.float32) == 2.0 ** -24
    assert numerics.unit_roundoff(torch.float64) == 2.0 ** -53
    assert numerics.unit_roundoff(torch.bfloat16) == 2.0 ** -8
    assert numerics.unit_roundoff(torch.float16) == 2.0 ** -11
    # the update budget is one count: an error of one rounding more is rejected
    u = numerics.unit_roundoff(torch.float32)
    call = UpdateCall([torch.tensor([1.0])], [torch.tensor([0.0])], [], torch.zeros(1, 4),
                      make_state(alpha=0.5))
    (tol_x, _), = numerics.update_tolerances(CPP, call, torch.float32)[0]
    assert numerics.UPDATE_ROUNDINGS * u < float(tol_x) < (numerics.UPDATE_ROUNDINGS + 1) * u
    # reports point at the worst element
    want = torch.zeros(2, 3)
    got = want.clone()
    got[1, 2] = 0.5
    got[0, 1] = 0.01
    msg = numerics.mismatch_report("t", got, want, 1e-3)
    assert "2 of 6 elements" in msg and "(1, 2)" in msg and "got 0.5" in msg, msg
    with pytest.raises(AssertionError, match=r"worst at \(1, 2\)"):
        assert_within("t", got, want, 1e-3)
