"""Property tests: the fast implementations against the reference over random shapes,
dtypes and values (hypothesis), within the budgets of ``tests/numerics.py`` (the truth is
the reference's formula on float64 copies; u = finfo(dtype).eps / 2)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numerics
from numerics import CPP, TRITON, DTYPES, StatsCall, UpdateCall, make_state
from secant_ext import _layout as layout
from secant_ext import reference

# The Triton kernels run here under the interpreter (tests/conftest.py), which is slow:
# the same properties, few examples. The examples are derived from each test's name
# (derandomize), so every clone runs the same ones: a run that fails fails again.
IMPLS = [pytest.param(impl, id=impl.name) for impl in (CPP, TRITON)]
PROFILE = settings(max_examples=30, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])


@st.composite
def buckets(draw, max_tensors=4, max_numel=300):
    dtype = draw(st.sampled_from(DTYPES))
    sizes = draw(st.lists(st.integers(0, max_numel), min_size=1, max_size=max_tensors))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    gen = torch.Generator().manual_seed(seed)

    def make():
        return numerics.rand_list(sizes, dtype, scale=scale, generator=gen)
    return dtype, sizes, make


@pytest.mark.parametrize("impl", IMPLS)
@PROFILE
@given(bucket=buckets())
def test_lookahead_is_exactly_rounded(impl, bucket):
    """x + s computed in float32 (float64 for float64) and rounded once: for every storage
    dtype that is the correctly rounded sum, the same bits eager PyTorch gives."""
    dtype, _, make = bucket
    x, s = make(), make()
    out = [torch.empty_like(t) for t in x]
    impl.ops().lookahead(x, s, out)
    numerics.check_lookahead("lookahead", out, x, s)


@pytest.mark.parametrize("impl", IMPLS)
@PROFILE
@given(bucket=buckets(), probe=st.booleans())
def test_secant_stats_within_the_summation_bound(impl, bucket, probe):
    """Each column sum within the summation budget of the implementation."""
    dtype, sizes, make = bucket
    s, gp, g, x = make(), make(), make(), make()
    call = StatsCall(s, gp, g if probe else [], x, [], make_state())
    numerics.check_stats("secant_stats", call.run(impl.ops()), call, impl)


@pytest.mark.parametrize("impl", IMPLS)
@PROFILE
@given(bucket=buckets(), momentum=st.sampled_from([0.0, 0.9]),
       ready=st.booleans(), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.01]), alpha=st.floats(1e-3, 1.0))
def test_update_within_the_rounding_budget(impl, bucket, momentum, ready, nesterov,
                                           weight_decay, alpha):
    """x - alpha d and the momentum buffer within the update budget: UPDATE_ROUNDINGS
    roundings in the compute dtype, then one rounding to the storage dtype."""
    dtype, sizes, make = bucket
    nesterov = nesterov and momentum > 0
    x, g, m = make(), make(), make() if momentum > 0 else []
    stats = torch.zeros(1, layout.NUM_STATS, dtype=numerics.accumulator_dtype(dtype))
    call = UpdateCall(x, g, m, stats, make_state(alpha=alpha, ready=ready),
                      momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    numerics.check_update("update", impl, call, dtype)


@pytest.mark.parametrize("impl", IMPLS)
@PROFILE
@given(a=st.floats(-1e6, 1e6), b=st.floats(0, 1e6), c=st.floats(0, 1e6),
       rule=st.sampled_from(sorted(layout.RULES)), safeguard=st.booleans(),
       prev=st.floats(1e-3, 1.0), bad=st.sampled_from([None, math.nan, math.inf]))
def test_secant_alpha_equals_the_reference(impl, a, b, c, rule, safeguard, prev, bad):
    """The rule's division is scalar float64 code in every implementation: the same bits."""
    stats = torch.tensor([[a, b, c, b], [a / 3, b / 7, c / 5, 1.0]], dtype=torch.float64)
    if bad is not None:
        stats[1, 2] = bad
    fast, truth = make_state(alpha=prev), make_state(alpha=prev)
    impl.ops().secant_alpha(stats, fast, rule=layout.RULES[rule], safeguard=safeguard)
    reference.secant_alpha(stats, truth, rule=layout.RULES[rule], safeguard=safeguard)
    numerics.assert_bitwise("state", fast, truth)
