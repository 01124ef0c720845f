"""Non-finite statistics skip the step (or raise, naming the parameter) and lose nothing;
extreme magnitudes never put NaN in the parameters; the curvature safeguard clips and
counts."""
from __future__ import annotations

import math

import pytest
import torch

import secant_ext
from fault_helpers import BACKENDS, fresh, quadratic, snapshot


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["train", "probe", "lookahead"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nonfinite_gradient_skips_the_step(where, value, backend):
    params, opt = fresh(backend=backend)
    train, probe = quadratic(opt, params)
    opt.step(train, probe)  # a first good step creates the momentum state
    before = snapshot(opt, params)
    train, probe = quadratic(opt, params, poison=(where, value))
    uses_probe = where == "probe" or where == "train"
    opt.step(train, probe if uses_probe else None)
    stats = opt.last_stats
    assert stats.skipped.item() and stats.skipped_total.item() == 1
    after = snapshot(opt, params)
    # only the counters of the group state move; parameters and momentum are untouched
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0]))
    key = next(iter(after[1]))
    mb = [k for k in after[1] if "momentum_buffer" in after[1][k]]
    for k in mb:
        assert torch.equal(before[1][k]["momentum_buffer"], after[1][k]["momentum_buffer"])
    assert after[1][key]["secant_state"][0] == before[1][key]["secant_state"][0]  # alpha
    # the next good step works normally
    train, probe = quadratic(opt, params)
    opt.step(train, probe)
    assert not opt.last_stats.skipped.item()
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("where", ["train", "probe", "lookahead"])
def test_nonfinite_raise_names_the_parameter(where):
    params, opt = fresh(nonfinite="raise")
    train, probe = quadratic(opt, params, poison=(where, math.nan))
    before = [p.detach().clone() for p in params]
    index = 1 if where == "lookahead" else 0
    with pytest.raises(FloatingPointError, match=rf"params'\]\[{index}\]"):
        opt.step(train, probe if where != "lookahead" else None)
    assert all(torch.equal(a, b) for a, b in zip(before, params))


def test_nonfinite_raise_uses_parameter_names():
    w = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGD([("encoder.weight", w)], nonfinite="raise",
                               backend="reference")

    def closure():
        opt.zero_grad()
        loss = (w * float("inf")).sum()
        loss.backward()
        return loss
    with pytest.raises(FloatingPointError, match="encoder.weight"):
        opt.step(closure)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-40, 0.0])
def test_extreme_magnitudes_never_put_nan_in_parameters(scale, dtype, backend):
    """Huge gradients overflow the squared sums (the step is skipped, counted), tiny and
    subnormal ones underflow them (b == 0: alpha keeps its value), zero gradients leave
    the parameters where they are; alpha stays in (0, 1] throughout."""
    p = torch.ones(257, dtype=dtype, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend=backend)

    def closure():
        opt.zero_grad()
        loss = (p.float() * scale).sum() + 0.5 * ((p.float() - 1) ** 2).sum()
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
        stats = opt.last_stats
        assert torch.isfinite(p).all()
        assert 0 < stats.alpha.item() <= 1
    if scale == 1e30:
        assert stats.skipped_total.item() == 5 or dtype == torch.float64
    if scale == 0.0:  # the minimum: gradient zero from the start, b == 0
        assert torch.equal(p.detach(), torch.ones_like(p))
        assert stats.alpha.item() == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_curvature_is_clipped_and_counted(backend):
    """On a concave direction <s, y> < 0: alpha = b / (0 + b) = 1, counted as clipped;
    the raw formula (safeguard=False) gives alpha = b / (a + b) > 1."""
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)

    def run(safeguard):
        with torch.no_grad():
            p.copy_(torch.tensor([1.0, 2.0]))
        opt = secant_ext.SecantSGD([p], backend=backend, safeguard=safeguard)

        def closure():
            opt.zero_grad()
            loss = -0.25 * (p ** 2).sum()  # Hessian -0.5 I: kappa = -0.5
            loss.backward()
            return loss
        opt.step(closure)
        return opt.last_stats
    clipped = run(True)
    assert clipped.alpha.item() == 1.0 and clipped.clipped.item()
    assert clipped.clipped_total.item() == 1
    raw = run(False)
    assert raw.alpha.item() == pytest.approx(2.0, rel=1e-15)  # 1 / (1 - 0.5)
    assert not raw.clipped.item()


def test_nonfinite_raise_in_one_group_leaves_every_group_at_x_t():
    """The raise happens before any group is updated, not after the earlier groups."""
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGD([{"params": [a]}, {"params": [b], "nonfinite": "raise"}],
                               backend="reference")

    def closure():
        opt.zero_grad()
        loss = (a ** 2).sum() + (b * float("nan")).sum()
        loss.backward()
        return loss
    with pytest.raises(FloatingPointError, match=r"param_groups\[1\]"):
        opt.step(closure)
    assert torch.equal(a.detach(), torch.ones(3)) and torch.equal(b.detach(), torch.ones(3))
