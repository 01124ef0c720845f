"""A closure that raises (an exception or KeyboardInterrupt) at any of the evaluations of a
step leaves everything at x_t, and the optimizer carries on; a closure that returns None
is refused."""
from __future__ import annotations

import pytest
import torch

import secant_ext
from fault_helpers import BACKENDS, assert_same, fresh, quadratic, snapshot


class Boom(Exception):
    pass


@pytest.mark.parametrize("lookahead", ["swap", "inplace"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("call", ["train", "probe", "lookahead-probe", "lookahead-train"])
def test_closure_that_raises_leaves_everything_at_x_t(call, exc, backend, lookahead):
    params, opt = fresh(backend=backend, lookahead=lookahead)
    train, probe = quadratic(opt, params)
    opt.step(train, probe)
    before = snapshot(opt, params)
    counts = {"train": 0, "probe": 0}

    def wrap(name, fn, fail_at):
        def closure():
            counts[name] += 1
            if counts[name] == fail_at:
                raise exc()
            return fn()
        return closure
    fail = {"train": ("train", 1), "probe": ("probe", 1), "lookahead-probe": ("probe", 2),
            "lookahead-train": ("train", 2)}[call]
    use_probe = call in ("probe", "lookahead-probe")
    t = wrap("train", train, fail[1] if fail[0] == "train" else 0)
    p = wrap("probe", probe, fail[1] if fail[0] == "probe" else 0)
    with pytest.raises(exc):
        opt.step(t, p if use_probe else None)
    assert_same(before, snapshot(opt, params))
    assert not opt.in_lookahead
    if call != "train":  # the training gradient was computed: it is back in p.grad
        for q in params:
            torch.testing.assert_close(q.grad, 2 * (q.detach() - 0.5), rtol=0, atol=0)
    train, probe = quadratic(opt, params)
    opt.step(train, probe)  # and the optimizer carries on
    assert opt.last_stats.step.item() == 2


def test_closure_returning_none_is_refused():
    p = torch.ones(2, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")

    def closure():
        opt.zero_grad()
        (p ** 2).sum().backward()
    with pytest.raises(TypeError, match="returned None"):
        opt.step(closure)


@pytest.mark.parametrize("fail_at", [1, 2], ids=["closure", "lookahead"])
def test_secant_adam_closure_that_raises_leaves_its_state_and_schedule(fail_at):
    """SecantAdam measures on a schedule of steps (curvature_every): a step whose closure
    raises leaves the parameters, the state and the schedule's clock as they were, so the
    run goes on with the bits of one that never tried that step."""
    def setup():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 2))]
        return params, secant_ext.SecantAdam(params, backend="cpp", curvature_every=2,
                                             curvature_warmup=2)

    def closure_of(opt, params):
        def closure():
            opt.zero_grad()
            loss = sum(((p - 0.5) ** 4).sum() for p in params)
            loss.backward()
            return loss
        return closure

    params, opt = setup()
    ref_params, ref = setup()
    for _ in range(3):
        opt.step(closure_of(opt, params))
        ref.step(closure_of(ref, ref_params))
    before = snapshot(opt, params)
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == fail_at:
            raise ValueError("closure")
        return closure_of(opt, params)()
    with pytest.raises(ValueError):
        opt.step(failing)
    assert len(calls) == fail_at  # (step 4 measures: the lookahead is its second call)
    assert_same(before, snapshot(opt, params))
    for _ in range(4):
        opt.step(closure_of(opt, params))
        ref.step(closure_of(ref, ref_params))
    for p, q in zip(params, ref_params):
        assert torch.equal(p.detach(), q.detach())
