"""The step's passes over ``p.grad`` and ``p.data`` (``secant_ext._host``): the Python ones and
the C++ ones of ``secant_ext._C`` do what their docstrings say, case by case, and a step
driven by either gives the same bits and leaves the same gradients.

A failed build must fail these tests loudly, hence the plain import of ``secant_ext._C``.
"""
from __future__ import annotations

import pytest
import torch

import secant_ext
import secant_ext._C  # noqa: F401
from secant_ext._host import passes as _host

COMPILED = _host._compiled_passes()
PASSES = pytest.mark.parametrize("passes", [_host.PYTHON, COMPILED], ids=["python", "cpp"])


def test_the_extension_has_the_passes_and_plain_parameters_get_them():
    assert COMPILED is not None and COMPILED.name == "cpp"
    params = [torch.nn.Parameter(torch.zeros(2)), torch.zeros(3, requires_grad=True)]
    assert _host.for_params(params) is COMPILED


def test_a_tensor_subclass_gets_the_python_passes():
    class Tagged(torch.nn.Parameter):
        pass
    params = [torch.nn.Parameter(torch.zeros(2)), Tagged(torch.zeros(2))]
    assert _host.for_params(params) is _host.PYTHON
    with pytest.raises(TypeError, match="Tagged"):
        COMPILED.set_data(params, [torch.ones(2), torch.ones(2)])


def _params_with_grads(n=4):
    params = [torch.nn.Parameter(torch.randn(3, k + 1)) for k in range(n)]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


@PASSES
def test_take_grads_moves_them_out(passes):
    params = _params_with_grads()
    grads = [p.grad for p in params]
    taken, fits = passes.take_grads(params, [p.data_ptr() for p in params])
    assert fits and all(t is g for t, g in zip(taken, grads))
    assert all(p.grad is None for p in params)


@PASSES
@pytest.mark.parametrize("case", ["no-grad", "sparse", "new-storage"])
def test_take_grads_leaves_every_grad_when_the_plan_does_not_fit(passes, case):
    params = _params_with_grads()
    ptrs = [p.data_ptr() for p in params]
    if case == "no-grad":
        params[2].grad = None
    elif case == "sparse":
        params[2].grad = params[2].grad.to_sparse()
    else:
        params[2].data = params[2].data.clone()
    before = [p.grad for p in params]
    assert passes.take_grads(params, ptrs) is None
    assert all(p.grad is g for p, g in zip(params, before))


@PASSES
@pytest.mark.parametrize("case", ["view", "strides"])
def test_take_grads_says_when_a_gradient_does_not_fit_the_kernels(passes, case):
    params = _params_with_grads()
    if case == "view":  # DDP's gradient_as_bucket_view
        flat = torch.randn(params[1].numel() + 5)
        params[1].grad = flat[5:].view_as(params[1])
    else:
        params[1].grad = torch.randn(params[1].shape[1], params[1].shape[0]).t()
    grads = [p.grad for p in params]
    taken, fits = passes.take_grads(params, [p.data_ptr() for p in params])
    assert not fits and all(t is g for t, g in zip(taken, grads))


@PASSES
def test_set_data_and_back_in_the_pass_that_takes_the_grads(passes):
    params = _params_with_grads()
    own = [p.data for p in params]
    buffers = [torch.full_like(p, 7.0) for p in params]
    passes.set_data(params, buffers)
    assert all(p.data_ptr() == b.data_ptr() for p, b in zip(params, buffers))
    grads = [p.grad for p in params]
    taken, fits = passes.take_grads_and_set_data(params, own)
    assert fits and all(t is g for t, g in zip(taken, grads))
    assert all(p.grad is None for p in params)
    assert all(p.data_ptr() == x.data_ptr() for p, x in zip(params, own))


@PASSES
def test_take_grads_and_set_data_with_a_missing_gradient(passes):
    params = _params_with_grads()
    params[3].grad = None
    taken, fits = passes.take_grads_and_set_data(params, [p.data for p in params])
    assert not fits and taken[3] is None and taken[0] is not None


@PASSES
def test_put_grads_returns_the_versions(passes):
    params = _params_with_grads(3)
    grads = [torch.ones_like(p) for p in params]
    grads[1].add_(1)  # version 1
    versions = passes.put_grads(params, [grads[0], grads[1], None])
    assert versions == [0, 1, None]
    assert params[0].grad is grads[0] and params[1].grad is grads[1]
    assert params[2].grad is None


@PASSES
@pytest.mark.parametrize("order", ["same", "reversed"])
def test_drop_left_grads_drops_only_what_the_last_step_left_unmodified(passes, order):
    params = _params_with_grads(6)
    left = list(params[:5]) if order == "same" else list(reversed(params[:5]))
    grads = [p.grad for p in left]
    versions = passes.put_grads(left, grads)
    grads[0].mul_(2)                       # modified in place: an earlier micro-batch added
    left[1].grad = torch.zeros_like(left[1])  # replaced
    left[2].grad = None                    # cleared (nothing to set aside)
    versions[3] = None                     # (no gradient recorded for it)
    grads[3] = None
    # left[4]: left as it was: dropped; params[5]: not in the ledger: foreign
    foreign = passes.drop_left_grads(params, left, grads, versions)
    kept = (left[0], left[1], left[3], params[5])
    expected = [i for i, p in enumerate(params) if any(p is q for q in kept)]
    assert sorted(foreign) == expected
    assert left[4].grad is None
    assert all(params[i].grad is not None for i in expected)


class _Problem:
    """A small model over three param groups (one parameter without a gradient at some
    steps), stepped with micro-batch accumulation and a probe closure on alternate steps."""

    def __init__(self, passes, monkeypatch, lookahead):
        torch.manual_seed(0)
        self.params = [torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(7)),
                       torch.nn.Parameter(torch.randn(3, 2))]
        monkeypatch.setattr(_host, "_COMPILED", False if passes == "python" else None)
        a, b, c = self.params
        self.opt = secant_ext.SecantSGDM([{"params": [a, b]}, {"params": [c], "lr": 0.5}],
                                         backend="cpp", lookahead=lookahead)

    def loss(self, t, scale=1.0):
        a, b, c = self.params
        extra = (b ** 2).sum() if t != 3 else 0
        return scale * ((a.sin() ** 2).sum() + (c ** 4).sum() + extra)

    def run(self, steps=8):
        grads = []
        for t in range(steps):
            if t % 3 == 1:  # an earlier micro-batch's gradient in p.grad
                self.loss(t, 0.5).backward()

            def closure():
                loss = self.loss(t)
                loss.backward()
                return loss

            def probe():
                self.opt.zero_grad()
                self.loss(t, 0.9).backward()
            self.opt.step(closure, probe_closure=probe if t % 2 else None)
            grads.append([None if p.grad is None else p.grad.clone() for p in self.params])
        return [p.detach().clone() for p in self.params], grads


@pytest.mark.parametrize("lookahead", ["swap", "inplace"])
def test_a_step_on_either_passes_gives_the_same_bits(monkeypatch, lookahead):
    problems = {}
    for passes in ("python", "cpp"):
        problem = _Problem(passes, monkeypatch, lookahead)
        problems[passes] = problem.run()
        used = {b.passes.name for w in problem.opt._plan_template for b in w.buckets}
        assert used == {passes}
    (x_py, g_py), (x_cpp, g_cpp) = problems["python"], problems["cpp"]
    for x, y in zip(x_py, x_cpp):
        assert torch.equal(x, y)
    for step_py, step_cpp in zip(g_py, g_cpp):
        for g, h in zip(step_py, step_cpp):
            assert (g is None) == (h is None)
            assert g is None or torch.equal(g, h)
