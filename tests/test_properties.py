"""Property tests: the fast ops against the reference over random shapes, dtypes and
values (hypothesis). The truth is the reference run on float64 copies; each bound is the
textbook rounding-error bound of the computation, in units u of the working precision
(u = 2^-24 for float32 arithmetic, 2^-53 for float64), plus the final rounding to the
storage dtype."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secant_ext import _backends, _layout as L, reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# The Triton kernels run here under the interpreter (tests/conftest.py), which is slow:
# the same properties, fewer examples.
FAST = {"cpp": _backends._cpp, "triton": _backends._triton}
PROFILE = settings(max_examples=30, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def unit_roundoff(dtype):
    """u of the arithmetic the kernels use for this storage dtype."""
    return 2.0 ** -53 if dtype == torch.float64 else 2.0 ** -24


def storage_ulp(t: torch.Tensor, dtype) -> torch.Tensor:
    """Half an ulp of ``dtype`` at |t| (the final rounding), at least the smallest normal."""
    info = torch.finfo(dtype)
    mag = t.abs().clamp(min=info.tiny)
    return torch.exp2(torch.floor(torch.log2(mag))) * info.eps / 2


@st.composite
def buckets(draw, max_tensors=4, max_numel=300):
    dtype = draw(st.sampled_from(DTYPES))
    sizes = draw(st.lists(st.integers(0, max_numel), min_size=1, max_size=max_tensors))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    gen = torch.Generator().manual_seed(seed)

    def make():
        return [(scale * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)
                for n in sizes]
    return dtype, sizes, make


def f64(ts):
    return [t.double() for t in ts]


@pytest.mark.parametrize("backend", list(FAST))
@PROFILE
@given(bucket=buckets())
def test_lookahead_is_exactly_rounded(backend, bucket):
    """x + s computed in float32 (float64 for float64) and rounded once: for every storage
    dtype that is the correctly rounded sum, the same bits eager PyTorch gives."""
    dtype, _, make = bucket
    x, s = make(), make()
    out = [torch.empty_like(t) for t in x]
    FAST[backend]().lookahead(x, s, out)
    for xi, si, oi in zip(x, s, out):
        assert torch.equal(oi, (xi.double() + si.double()).to(dtype))


@pytest.mark.parametrize("backend", list(FAST))
@PROFILE
@given(bucket=buckets(), probe=st.booleans())
def test_secant_stats_within_the_summation_bound(backend, bucket, probe):
    """Each sum of n terms accumulated in precision u is within (n + 3) u sum|terms| of
    the exact sum (products, the difference y = g+ - s, and n - 1 additions each round
    once); the reference on float64 copies stands in for exact."""
    dtype, sizes, make = bucket
    s, gp, g, x = make(), make(), make(), make()
    state = torch.tensor(L.initial_state_values(), dtype=torch.float64)
    gs = g if probe else []
    got = FAST[backend]().secant_stats(s, gp, gs, x, [], state, 0.0, False, 0.0, False)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    got = got.double().sum(dim=0)
    truth = reference.secant_stats(f64(s), f64(gp), f64(gs), f64(x), [], state, 0.0, False,
                                   0.0, False)[0]
    y = [a.double() - b.double() for a, b in zip(gp, s)]
    mags = [sum((a.double() * b).abs().sum().item() for a, b in zip(s, y)),
            sum((a.double() ** 2).sum().item() for a in s),
            sum((a ** 2).sum().item() for a in y),
            sum((a.double() ** 2).sum().item() for a in (g if probe else s))]
    n = sum(sizes)
    for k in range(L.NUM_STATS):
        bound = (n + 3) * unit_roundoff(dtype) * mags[k] * 1.01 + 1e-300
        assert abs(got[k].item() - truth[k].item()) <= bound, (k, got[k], truth[k], bound)


@pytest.mark.parametrize("backend", list(FAST))
@PROFILE
@given(bucket=buckets(), momentum=st.sampled_from([0.0, 0.9]),
       ready=st.booleans(), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.01]), alpha=st.floats(1e-3, 1.0))
def test_update_within_one_rounding(backend, bucket, momentum, ready, nesterov,
                                    weight_decay, alpha):
    """x - alpha d and the momentum buffer: float32 (float64) arithmetic of a handful of
    operations, each within u relative of its operands' magnitude, then one rounding to
    the storage dtype (half an ulp of the result)."""
    dtype, sizes, make = bucket
    nesterov = nesterov and momentum > 0
    x, g, m = make(), make(), make() if momentum > 0 else []
    state = torch.tensor(L.initial_state_values(), dtype=torch.float64)
    state[L.ALPHA] = alpha
    state[L.MOMENTUM_READY] = float(ready)
    stats = torch.zeros(1, L.NUM_STATS, dtype=torch.float64)
    x_fast, m_fast = [t.clone() for t in x], [t.clone() for t in m]
    FAST[backend]().update(x_fast, g, m_fast, stats.to(
        torch.float64 if dtype == torch.float64 else torch.float32), state, momentum,
        nesterov, weight_decay, L.SIGN_NONE)
    x_true, m_true = f64(x), f64(m)
    reference.update(x_true, f64(g), m_true, stats, state, momentum, nesterov, weight_decay,
                     L.SIGN_NONE)
    u = unit_roundoff(dtype)
    for i in range(len(x)):
        mag = x[i].double().abs() + alpha * (g[i].double().abs() + weight_decay *
                                             x[i].double().abs())
        if m:
            mag = mag + alpha * m[i].double().abs()
        bound = storage_ulp(x_true[i], dtype) + 8 * u * mag
        err = (x_fast[i].double() - x_true[i]).abs()
        assert (err <= bound).all(), (i, err.max(), (err - bound).argmax())
        if m:
            mmag = m[i].double().abs() + g[i].double().abs() + weight_decay * x[i].double().abs()
            mbound = storage_ulp(m_true[i], dtype) + 8 * u * mmag
            merr = (m_fast[i].double() - m_true[i]).abs()
            assert (merr <= mbound).all(), (i, merr.max())


@pytest.mark.parametrize("backend", list(FAST))
@PROFILE
@given(a=st.floats(-1e6, 1e6), b=st.floats(0, 1e6), c=st.floats(0, 1e6),
       rule=st.sampled_from(sorted(L.RULES)), safeguard=st.booleans(),
       prev=st.floats(1e-3, 1.0), bad=st.sampled_from([None, math.nan, math.inf]))
def test_secant_alpha_equals_the_reference(backend, a, b, c, rule, safeguard, prev, bad):
    """The rule's division is scalar float64 code in every backend: the same bits."""
    stats = torch.tensor([[a, b, c, b], [a / 3, b / 7, c / 5, 1.0]], dtype=torch.float64)
    if bad is not None:
        stats[1, 2] = bad
    fast, truth = (torch.tensor(L.initial_state_values(), dtype=torch.float64)
                   for _ in range(2))
    fast[L.ALPHA] = truth[L.ALPHA] = prev
    FAST[backend]().secant_alpha(stats, fast, L.RULES[rule], safeguard)
    reference.secant_alpha(stats, truth, L.RULES[rule], safeguard)
    np.testing.assert_array_equal(fast.numpy(), truth.numpy())
