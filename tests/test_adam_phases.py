"""SecantAdam's phases (``adam_stats``, ``adam_alpha``, ``adam_update``) on the C++ and Triton
kernels against the reference, to the budgets of ``numerics`` (its conventions: unit
roundoff, gamma bounds, flash-attention's criterion for bf16/fp16)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pytest
import torch

from numerics import CPP, DTYPES, F64, LOW, REFERENCE, TRITON, assert_bitwise, \
    assert_bitwise_lists, assert_noise_floor, assert_within, gamma, stats_tolerance, \
    unit_roundoff
from secant_ext import _layout as layout
from secant_ext import reference

SIZES = [37, 1, 2 * 16384 + 5, 300]
# The Triton kernels run on CPU tensors under the interpreter (CI) and on CUDA tensors in the
# GPU check (numerics.triton_devices); the inputs go there and the results come back.   # a tail, a single element, more than one chunk
IMPLS = [pytest.param(CPP, id="cpp"), pytest.param(TRITON, id="triton")]
BETAS = (0.9, 0.999)


def _lists(sizes, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    make = lambda scale: [(scale * torch.randn(n, generator=gen, dtype=F64)).to(dtype)  # noqa: E731
                          for n in sizes]
    x, s, g = make(1.0), make(0.5), make(0.5)
    u = make(1e-3)
    g_plus = [(si.to(F64) + 0.2 * torch.randn(si.shape, generator=gen, dtype=F64)).to(dtype)
              for si in s]
    m = make(0.1)
    v = [t.abs() for t in make(0.01)]
    avg = [(xi.to(F64) + 0.1 * torch.randn(xi.shape, generator=gen, dtype=F64)).to(dtype)
           for xi in x]
    return dict(x=x, s=s, g=g, u=u, g_plus=g_plus, m=m, v=v, avg=avg)


def _dev(impl):
    return impl.devices()[0]


def _to(device, lists):
    return [t.to(device) for t in lists]


def _state(taken=3, scale=2e-3, eta=1e-3, big_a=5.0, big_c=0.01, skipped=False):
    st = torch.tensor(layout.initial_state_values(), dtype=F64)
    st[layout.ALPHA] = eta
    st[layout.STEP] = st[layout.TAKEN] = float(taken)
    st[layout.STEP_SIZE] = eta
    st[layout.PREV_STEP_SCALE] = scale
    st[layout.ADAM_A], st[layout.ADAM_C] = big_a, big_c
    st[layout.BETA1_POWER], st[layout.BETA2_POWER] = BETAS[0] ** taken, BETAS[1] ** taken
    st[layout.LAST_SKIPPED] = float(skipped)
    st[layout.AVG_WEIGHT] = 1.0 / taken  # as the alpha phase sets it
    return st


# --- adam_stats ---------------------------------------------------------------------------
@dataclass
class _Call:  # what numerics.stats_tolerance reads of a call
    dtype: torch.dtype
    numels: Sequence[int]


# roundings forming one term: <u, y>: y and the product (2); <u, s>: 1; |y|^2: 2; |g|^2: 1
_TERM_ROUNDINGS = [2, 1, 2, 1]


def _stats_truth(u, g_plus, s, g):
    u, g_plus, s, g = ([t.to(F64) for t in ts] for ts in (u, g_plus, s, g))
    g = g or s
    y = [b - a for a, b in zip(s, g_plus)]
    cat = lambda ts: torch.cat([t.reshape(-1) for t in ts]) if ts else torch.zeros(0, dtype=F64)  # noqa: E731
    terms = [cat([a * b for a, b in zip(u, y)]), cat([a * b for a, b in zip(u, s)]),
             cat([b * b for b in y]), cat([a * a for a in g])]
    exact = torch.tensor([math.fsum(t.tolist()) for t in terms], dtype=F64)
    mag = torch.tensor([float(t.abs().sum()) for t in terms], dtype=F64)
    return exact, mag


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["measure", "measure-separate-g", "grad-norm-only"])
def test_adam_stats_within_budget(impl, dtype, case):
    """Column sums within the budget of the implementation's summation (numerics'
    ``stats_tolerance``: the terms' roundings in the compute dtype, the chains of
    additions in the accumulator, the rows in float64); bf16/fp16 also at least half as
    accurate as the reference run in the dtype."""
    inp = _lists(SIZES, dtype, seed=3)
    u = inp["u"] if case != "grad-norm-only" else []
    g_plus = inp["g_plus"] if case != "grad-norm-only" else []
    g = inp["g"] if case == "measure-separate-g" else []
    args = (u, g_plus, inp["s"], g, _state())
    dev = _dev(impl)
    table = impl.ops().adam_stats(*(_to(dev, a) for a in args[:4]), args[4].to(dev)).cpu()
    assert table.shape[1] == layout.NUM_STATS
    assert table.shape[0] == impl.table_rows(SIZES, dev)
    assert table.dtype == (F64 if dtype == F64 else torch.float32)
    exact, mag = _stats_truth(u, g_plus, inp["s"], g)
    tol = stats_tolerance(impl, _Call(dtype, SIZES), table.shape[0], mag, _TERM_ROUNDINGS)
    sums = table.to(F64).sum(dim=0)
    assert_within(f"{impl.name} adam_stats {dtype}", sums, exact, tol)
    if dtype in LOW:
        ref = reference.adam_stats(*args).to(F64).sum(dim=0)
        for col in range(layout.NUM_STATS):
            assert_noise_floor(f"column {col}", sums[col:col + 1], ref[col:col + 1],
                               exact[col:col + 1], torch.float32)


def test_adam_stats_reference_within_budget():
    inp = _lists(SIZES, torch.float32, seed=4)
    table = reference.adam_stats(inp["u"], inp["g_plus"], inp["s"], [], _state())
    exact, mag = _stats_truth(inp["u"], inp["g_plus"], inp["s"], [])
    tol = stats_tolerance(REFERENCE, _Call(torch.float32, SIZES), 1, mag, _TERM_ROUNDINGS)
    assert_within("reference adam_stats", table.to(F64).sum(dim=0), exact, tol)


# --- adam_alpha ---------------------------------------------------------------------------
def _exact_table(rows, values, dtype=torch.float32):
    """A table whose column sums are ``values`` exactly in any row order (dyadic parts)."""
    t = torch.zeros(rows, layout.NUM_STATS, dtype=F64)
    for k, v in enumerate(values):
        t[:, k] = v / rows if rows in (1, 2, 4) else 0.0
        if rows not in (1, 2, 4):
            t[0, k] = v
    return t.to(dtype)


ALPHA_CASES = {
    # name: (column sums <u,y>, <u,s>, |y|^2, |g|^2; state kwargs; measure; record)
    "measure-grow-capped": ((2.0 ** -10, 2.0 ** -8, 0.25, 4.0), {}, True, True),
    "measure-ratio": ((2.0 ** -3, 2.0 ** -12, 0.25, 4.0), dict(big_a=0.0, big_c=0.0), True, True),
    "negative-curvature": ((-2.0 ** -10, 2.0 ** -4, 0.25, 4.0), dict(big_a=0.0, big_c=0.0),
                           True, False),
    "uphill": ((-1.0, 2.0 ** -8, 0.25, 4.0), dict(big_a=0.0, big_c=0.0), True, False),
    "zero-measurement": ((0.0, 0.0, 0.0, 4.0), {}, True, True),
    "no-previous-step": ((2.0 ** -10, 2.0 ** -8, 0.25, 4.0), dict(scale=0.0), True, True),
    "not-measuring": ((0.0, 0.0, 0.0, 4.0), {}, False, True),
    "stalled": ((0.0, 2.0 ** -8, 0.0, 4.0), {}, True, False),
    "non-finite": ((math.inf, 2.0 ** -8, 0.25, 4.0), {}, True, True),
    "nan-grad": ((0.0, 0.0, 0.0, math.nan), {}, False, False),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(ALPHA_CASES))
@pytest.mark.parametrize("lr,max_norm", [(1.0, math.inf), (0.5, 1.5)])
def test_adam_alpha_matches_reference_bitwise(impl, case, lr, max_norm):
    """Scalar float64 arithmetic in the same order on tables whose column sums are exact:
    every field of the group state to the bit, in every branch of the rule."""
    sums, kw, measure, record = ALPHA_CASES[case]
    states = []
    for ops, dev in ((reference, "cpu"), (impl.ops(), _dev(impl))):
        st = _state(**kw)
        st[layout.LR], st[layout.MAX_GRAD_NORM] = lr, max_norm
        st = st.to(dev)
        ops.adam_alpha(_exact_table(4, sums).to(dev), st, beta1=BETAS[0], beta2=BETAS[1],
                       ema=layout.ADAM_EMA, growth=layout.ADAM_GROWTH, measure=measure,
                       record=record)
        states.append(st.cpu())
    assert_bitwise(f"{impl.name} state after adam_alpha ({case})", states[1], states[0])


def test_adam_alpha_rule_by_hand():
    """The rule on numbers worked out by hand: a = <u,y>/scale^2, c = <u,g_plus>/scale,
    both over n = |c| + scale |a|, the averages, eta = min(2 C/A, growth eta), the step and
    the kept step's scale."""
    sums = (0.125, 0.25, 1.0, 16.0)           # <u,y>, <u,s>, |y|^2, |g|^2
    st = _state(scale=0.5, eta=0.01, big_a=0.0, big_c=0.0)
    reference.adam_alpha(_exact_table(1, sums), st, beta1=0.9, beta2=0.999,
                         ema=0.5, growth=1000.0, measure=True, record=True)
    a, b, c = 0.125 / 0.25, 0.25 / 0.5, 0.375 / 0.5  # 0.5, 0.5, 0.75
    n = abs(c) + 0.5 * abs(a)                 # 1.0
    big_a, big_c = 0.5 * a / n, 0.5 * c / n   # the averages from 0: 0.25, 0.375
    assert st[layout.DOT] == a and st[layout.S_SQ] == b
    assert st[layout.ADAM_A] == big_a and st[layout.ADAM_C] == big_c
    assert st[layout.ALPHA] == 2 * big_c / big_a == 3.0
    assert st[layout.STEP_SIZE] == 3.0 and st[layout.PREV_STEP_SCALE] == 3.0
    assert st[layout.G_SQ] == 16.0 and st[layout.LAST_MEASURED] == 1
    assert st[layout.LAST_CLIPPED] == 0
    st2 = _state(scale=0.5, eta=0.01, big_a=0.0, big_c=0.0)
    reference.adam_alpha(_exact_table(1, sums), st2, beta1=0.9,
                         beta2=0.999, ema=0.5, growth=1.1, measure=True, record=False)
    assert st2[layout.ALPHA] == 1.1 * 0.01 and st2[layout.PREV_STEP_SCALE] == 0


@pytest.mark.parametrize("uy,us,expected", [
    # negative curvature with descent ahead (LoRA's saddle): eta grows
    (-0.125, 0.5, 1.1 * 0.01),
    # the slope at the previous iterate points uphill: eta shrinks
    (0.125, -0.5, 0.01 / 1.1)])
def test_adam_alpha_grows_at_negative_curvature_and_shrinks_uphill(uy, us, expected):
    st = _state(scale=0.5, eta=0.01, big_a=0.0, big_c=0.0)
    reference.adam_alpha(_exact_table(1, (uy, us, 1.0, 1.0)), st, beta1=0.9, beta2=0.999,
                         ema=0.5, growth=1.1, measure=True, record=True)
    assert st[layout.ALPHA] == expected
    assert st[layout.LAST_CLIPPED] == 1 and st[layout.CLIPPED] == 1


def test_adam_reach_is_the_kernels():
    """ADAM_REACH is written into the C++ and Triton formulas: the constant the tests and
    docs read is theirs."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    cpp = (root / "csrc" / "adam.cpp").read_text()
    assert f"constexpr double kAdamReach = {layout.ADAM_REACH};" in cpp
    import inspect
    from secant_ext._triton import adam as triton_adam  # (needs triton)
    assert "REACH=_layout.ADAM_REACH" in inspect.getsource(triton_adam.adam_alpha)


# --- adam_update --------------------------------------------------------------------------
def _update_inputs(dtype, seed):
    inp = _lists(SIZES, dtype, seed)
    return [inp[k] for k in UPDATED]


UPDATED = ("x", "g", "m", "v", "u", "avg")
WRITTEN = ("x", "m", "v", "u", "avg")  # what _run_update returns


def _run_update(ops, lists, state, record, wd, device="cpu", average=True):
    x, g, m, v, u, avg = [[t.clone().to(device) for t in ts] for ts in lists]
    ops.adam_update(x, g, m, v, u if record else [], avg if average else [],
                    state.clone().to(device), beta1=BETAS[0], beta2=BETAS[1], eps=1e-8,
                    weight_decay=wd)
    return tuple([t.cpu() for t in ts] for ts in (x, m, v, u, avg))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("record,wd,average", [(True, 0.0, True), (False, 0.1, False),
                                               (True, 0.1, True), (False, 0.0, True)])
def test_adam_update_bitwise_in_float32(impl, record, wd, average):
    """fp32: the kernels do the reference's operations in its order, each correctly
    rounded (the division and the square root included), so the bits agree; the average
    fused into the pass too (the reference runs it as a pass of its own)."""
    lists = _update_inputs(torch.float32, seed=5)
    state = _state(taken=4, eta=3e-3)
    want = _run_update(reference, lists, state, record, wd, average=average)
    got = _run_update(impl.ops(), lists, state, record, wd, _dev(impl), average=average)
    for name, a, b in zip(WRITTEN, got, want):
        assert_bitwise_lists(f"{impl.name} {name}", a, b)
    if not average:
        assert_bitwise_lists(f"{impl.name} avg untouched", got[4], lists[5])


# d = (m c1) / (sqrt(v c2) + eps) + wd x: the casts of c1, c2, eps and wd (4), m c1, v c2,
# the root, the eps add, the division, wd * x and its add (7); then eta * d and x - u (with
# eta's cast, 3): 14 roundings on the longest chain, one more for torch's float64 square
# root in the reference (within an ulp, not correctly rounded).
ADAM_UPDATE_ROUNDINGS = 15


@pytest.mark.parametrize("impl", IMPLS)
def test_adam_update_float64_within_budget(impl):
    """fp64: the moments to the bit (no root involved); x and u within the roundings of
    the longest chain of both sides, relative to the magnitude of their terms,
    ``eta (|d| + wd |x|)`` and ``|x|`` (the root of the reference is torch's, which is not
    correctly rounded in float64)."""
    lists = _update_inputs(F64, seed=5)
    state = _state(taken=4, eta=3e-3)
    want = _run_update(reference, lists, state, True, 0.1)
    got = _run_update(impl.ops(), lists, state, True, 0.1, _dev(impl))
    assert_bitwise_lists(f"{impl.name} m", got[1], want[1])
    assert_bitwise_lists(f"{impl.name} v", got[2], want[2])
    rel = 2 * gamma(ADAM_UPDATE_ROUNDINGS, unit_roundoff(F64))
    x0, avg0 = lists[0], lists[5]
    for i, (gx, wx, gu, wu) in enumerate(zip(got[0], want[0], got[3], want[3])):
        direction = (want[1][i].abs() / (1 - BETAS[0] ** 4)) / \
            ((want[2][i] / (1 - BETAS[1] ** 4)).sqrt() + 1e-8)  # the state's powers: step 4
        mag_u = 3e-3 * (direction + 0.1 * x0[i].abs())
        assert_within(f"{impl.name} u[{i}]", gu, wu, rel * mag_u)
        assert_within(f"{impl.name} x[{i}]", gx, wx, rel * (x0[i].abs() + mag_u))
        # avg + w (x - avg), w = 1/4: x's error, and three roundings of terms below |avg| + |x|
        assert_within(f"{impl.name} avg[{i}]", got[4][i], want[4][i],
                      rel * (avg0[i].abs() + x0[i].abs() + mag_u))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_adam_update_low_precision_noise_floor(impl, dtype):
    """bf16/fp16: computed in float32 and rounded once at the store, so at least half as
    accurate as the reference rounding every operation to the dtype (flash-attention's
    criterion against the float64 truth)."""
    lists = _update_inputs(dtype, seed=6)
    state = _state(taken=4, eta=3e-3)
    got = _run_update(impl.ops(), lists, state, True, 0.1, _dev(impl))
    low = _run_update(reference, lists, state, True, 0.1)
    truth = _run_update(reference, [[t.to(F64) for t in ts] for ts in lists], state, True, 0.1)
    for name, a, r, t in zip(WRITTEN, got, low, truth):
        for i, (ai, ri, ti) in enumerate(zip(a, r, t)):
            assert_noise_floor(f"{impl.name} {name}[{i}]", ai, ri, ti, dtype)


@pytest.mark.parametrize("impl", IMPLS + [pytest.param(REFERENCE, id="reference")])
def test_adam_update_skipped_step_writes_nothing(impl):
    lists = _update_inputs(torch.float32, seed=7)
    got = _run_update(impl.ops(), lists, _state(skipped=True), True, 0.1, _dev(impl))
    for name, a, b in zip(WRITTEN, got, [lists[0], lists[2], lists[3], lists[4], lists[5]]):
        assert_bitwise_lists(f"{impl.name} {name} after a skipped step", a, b)


def test_adam_update_matches_float64_formula():
    """The reference itself, in float64, against Adam's formulas written out."""
    x, g, m, v, u, avg = _update_inputs(F64, seed=8)
    b1, b2 = BETAS
    bc1, bc2 = 1 - b1 ** 5, 1 - b2 ** 5  # the alpha phase moved the powers to step 5
    st = _state(taken=5, eta=3e-3)
    got = _run_update(reference, [x, g, m, v, u, avg], st, True, 0.1)
    for i in range(len(x)):
        m_new = b1 * m[i] + (1 - b1) * g[i]
        v_new = b2 * v[i] + (1 - b2) * g[i] * g[i]
        adam = (m_new / bc1) / (torch.sqrt(v_new / bc2) + 1e-8)
        d = adam + 0.1 * x[i]
        mag_u = 3e-3 * (adam.abs() + 0.1 * x[i].abs())  # the terms' size: d may cancel
        assert_within(f"x[{i}]", got[0][i], x[i] - 3e-3 * d, 1e-13 * (x[i].abs() + mag_u))
        assert_within(f"u[{i}]", got[3][i], 3e-3 * d, 1e-13 * mag_u)
        avg_new = avg[i] + 0.2 * (got[0][i] - avg[i])  # w = 1/5 after five applied steps
        assert_within(f"avg[{i}]", got[4][i], avg_new, 1e-13 * (avg[i].abs() + x[i].abs()))


# --- adam_previous_step -------------------------------------------------------------------
def _run_previous_step(ops, x, m, v, state, wd, device="cpu"):
    u = [torch.full_like(t, float("nan")).to(device) for t in x]
    ops.adam_previous_step(_to(device, x), _to(device, m), _to(device, v), u,
                           state.clone().to(device), eps=1e-8, weight_decay=wd)
    return [t.cpu() for t in u]


def _after_update(impl, dtype, wd, seed, device="cpu"):
    """x, m, v and the u that ``adam_update`` wrote, and the state as the next step finds
    it (PREV_STEP_SCALE: the step size the update took)."""
    lists = _update_inputs(dtype, seed)
    state = _state(taken=4, eta=3e-3, scale=3e-3)
    x, m, v, u, _ = _run_update(impl.ops(), lists, state, True, wd, device, average=False)
    return x, m, v, u, state


@pytest.mark.parametrize("impl", IMPLS + [pytest.param(REFERENCE, id="reference")])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_adam_previous_step_without_decay_is_the_update_s_own_step(impl, dtype):
    """Without weight decay the recomputation repeats the update's operations on the
    moments it stored: the same bits as the u the update computed, in float32 and float64."""
    dev = _dev(impl)
    x, m, v, u, state = _after_update(impl, dtype, 0.0, seed=9, device=dev)
    got = _run_previous_step(impl.ops(), x, m, v, state, 0.0, dev)
    assert_bitwise_lists(f"{impl.name} u", got, u)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_previous_step_bitwise_in_float32(impl, wd):
    lists = _update_inputs(torch.float32, seed=10)
    x, m, v = lists[0], lists[2], lists[3]
    state = _state(taken=4, scale=3e-3)
    want = _run_previous_step(reference, x, m, v, state, wd)
    got = _run_previous_step(impl.ops(), x, m, v, state, wd, _dev(impl))
    assert_bitwise_lists(f"{impl.name} u", got, want)


# u = eta' (d + wd x) r with d as in adam_update (11 roundings, its casts included), then
# eta' * (.) and the factor r (its cast and the product: 3 more)
PREVIOUS_STEP_ROUNDINGS = 15


@pytest.mark.parametrize("impl", IMPLS + [pytest.param(REFERENCE, id="reference")])
def test_adam_previous_step_with_decay_undoes_the_update(impl):
    """With weight decay the update's x' is gone; ``u = eta' (d + wd x) / (1 - eta' wd)``
    from x = x' - u gives back the update's u to the roundings of both chains, relative to
    the size of its terms, in float64 (where the identity is exact but for rounding)."""
    dev = _dev(impl)
    x, m, v, u, state = _after_update(impl, F64, 0.1, seed=11, device=dev)
    got = _run_previous_step(impl.ops(), x, m, v, state, 0.1, dev)
    rel = 2 * gamma(ADAM_UPDATE_ROUNDINGS + PREVIOUS_STEP_ROUNDINGS, unit_roundoff(F64))
    for i, (gu, wu) in enumerate(zip(got, u)):
        direction = (m[i].abs() / (1 - BETAS[0] ** 4)) / \
            ((v[i] / (1 - BETAS[1] ** 4)).sqrt() + 1e-8)
        mag = 3e-3 * (direction + 0.1 * x[i].abs())
        assert_within(f"{impl.name} u[{i}]", gu, wu, rel * mag)


@pytest.mark.parametrize("impl", IMPLS + [pytest.param(REFERENCE, id="reference")])
def test_adam_previous_step_is_zero_without_a_kept_step(impl):
    lists = _update_inputs(torch.float32, seed=12)
    got = _run_previous_step(impl.ops(), lists[0], lists[2], lists[3], _state(scale=0.0),
                             0.1, _dev(impl))
    for i, t in enumerate(got):
        assert torch.equal(t, torch.zeros_like(t)), f"{impl.name} u[{i}]"
