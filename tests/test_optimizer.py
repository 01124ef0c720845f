"""The optimizers end to end: trajectories against an independent float64 implementation,
convergence without tuning, and the closure contract (checkpoints: test_checkpoint.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import secant_ext
from independent import LeastSquares, SpecOptimizer

BACKENDS = ["reference", "cpp"]  # CI always builds the extension: "cpp" must run

VARIANTS = {
    # name: (class, kwargs, spec kwargs)
    "sgd": (secant_ext.SecantSGD, {}, dict(variant="sgd")),
    "sgd-wd": (secant_ext.SecantSGD, dict(weight_decay=0.05),
               dict(variant="sgd", weight_decay=0.05)),
    "sgdm": (secant_ext.SecantSGDM, dict(momentum=0.9),
             dict(variant="sgdm", momentum=0.9)),
    "sgdm-nesterov-wd": (secant_ext.SecantSGDM,
                         dict(momentum=0.8, nesterov=True, weight_decay=0.01),
                         dict(variant="sgdm", momentum=0.8, nesterov=True, weight_decay=0.01)),
    "sign": (secant_ext.SecantSignSGD, {}, dict(variant="sign")),
    "signum": (secant_ext.SecantSignSGD, dict(momentum=0.9),
               dict(variant="sign", momentum=0.9)),
    "sign-unscaled": (secant_ext.SecantSignSGD, dict(sign_scale="none"),
                      dict(variant="sign", sign_scale="none")),
}
RULES = ["secant", "steffensen", "bb2"]


def torch_problem(problem: LeastSquares, dtype=torch.float64, seed=1):
    rng = np.random.default_rng(seed)
    d, k = problem.X.shape[1], problem.Y.shape[1]
    w0 = [0.1 * rng.standard_normal((d, k)), 0.1 * rng.standard_normal(k)]
    params = [torch.tensor(w, dtype=dtype, requires_grad=True) for w in w0]
    X = torch.tensor(problem.X, dtype=dtype)
    Y = torch.tensor(problem.Y, dtype=dtype)
    return w0, params, X, Y


def make_closures(opt, params, X, Y, problem, t_ref):
    def loss_on(rows):
        W, c = params
        return ((X[rows] @ W + c - Y[rows]) ** 2).mean()

    def closure():
        opt.zero_grad()
        loss = loss_on(torch.as_tensor(problem.train_rows(t_ref[0])))
        loss.backward()
        return loss

    def probe():
        opt.zero_grad()
        loss = loss_on(torch.as_tensor(problem.probe_rows(t_ref[0])))
        loss.backward()
        return loss
    return closure, probe


def run_secant(cls, kwargs, problem, steps, probe, backend, dtype=torch.float64):
    w0, params, X, Y = torch_problem(problem, dtype)
    opt = cls(params, backend=backend, **kwargs)
    t = [0]
    closure, probe_closure = make_closures(opt, params, X, Y, problem, t)
    alphas = []
    for t[0] in range(steps):
        opt.step(closure, probe_closure if probe else None)
        alphas.append(opt.last_stats.alpha.item())
    return w0, [p.detach() for p in params], alphas


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("probe", [False, True], ids=["no-probe", "probe"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trajectory_matches_independent_float64(variant, rule, probe, backend):
    """50 steps equal the algorithm of docs/ALGORITHM.md written independently in NumPy float64.

    Both sides compute the same float64 arithmetic in different orders (autograd vs.
    closed-form gradients, different summation orders), so each step differs by a few
    ulps relative; the least-squares map is a contraction at these steps, so errors do
    not grow beyond a small multiple: 1e-9 relative leaves 5 orders of margin over the
    ~1e-14 seen per step, yet a wrong formula, order of operations or momentum rule
    misses it by many orders."""
    cls, kwargs, spec_kwargs = VARIANTS[variant]
    problem = LeastSquares.make()
    w0, got, alphas = run_secant(cls, dict(kwargs, rule=rule), problem, 50, probe, backend)
    spec = SpecOptimizer(rule=rule, **spec_kwargs)
    x = [w.copy() for w in w0]
    for t in range(50):
        spec.step(problem, x, t, probe)
    np.testing.assert_allclose(alphas, spec.alphas, rtol=1e-9, atol=0)
    for a, b in zip(got, x):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["sgd", "sgdm", "sign", "signum"])
def test_converges_without_tuning(variant, backend):
    """Every variant, defaults only, reduces the full-batch loss of a convex problem by
    a large factor in 300 steps (the noise floor of the data is ~0.01)."""
    cls, kwargs, _ = VARIANTS[variant]
    problem = LeastSquares.make(seed=3)
    w0, params, X, Y = torch_problem(problem, torch.float32)
    start = problem.loss(w0)
    _, got, _ = run_secant(cls, kwargs, problem, 300, False, backend, torch.float32)
    end = problem.loss([p.double().numpy() for p in got])
    assert end < 0.05 * start, (start, end)
    assert end < 0.1, end


def test_step_without_closure_explains_the_contract():
    p = torch.zeros(3, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")
    with pytest.raises(TypeError, match="needs a closure.*lookahead"):
        opt.step()


def test_closure_call_counts():
    """2 training evaluations without a probe closure; 1 + 2 probe evaluations with one."""
    p = torch.ones(4, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")
    calls = {"train": 0, "probe": 0}

    def make(name, scale):
        def closure():
            calls[name] += 1
            opt.zero_grad()
            loss = scale * (p ** 2).sum()
            loss.backward()
            return loss
        return closure

    opt.step(make("train", 1.0))
    assert calls == {"train": 2, "probe": 0}
    opt.step(make("train", 1.0), make("probe", 0.5))
    assert calls == {"train": 3, "probe": 2}


def test_returns_loss_at_x_t_and_leaves_training_gradient():
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss
    x_t = p.detach().clone()
    loss = opt.step(closure)
    assert loss.item() == (x_t ** 2).sum().item()
    assert torch.equal(p.grad, 2 * x_t)


def test_probe_evaluations_replay_the_rng():
    """Dropout masks of the two probe evaluations (at x and at x + s) match."""
    torch.manual_seed(0)
    p = torch.ones(64, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")
    masks = []

    def train():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    def probe():
        opt.zero_grad()
        out = torch.nn.functional.dropout(p, 0.5, training=True)
        masks.append(out != 0)
        loss = (out ** 2).sum()
        loss.backward()
        return loss
    for _ in range(3):
        opt.step(train, probe)
    for first, second in zip(masks[0::2], masks[1::2]):
        assert torch.equal(first, second)
    assert not torch.equal(masks[0], masks[2])  # fresh randomness from step to step


def test_param_groups_have_their_own_alpha():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGD([{"params": [a]}, {"params": [b]}], backend="reference")

    def closure():
        opt.zero_grad()
        loss = (a ** 2).sum() + 10 * (b ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    alpha = opt.last_stats.alpha
    # curvature along s is 2 for a and 20 for b: alpha = 1/(1 + kappa)
    torch.testing.assert_close(alpha, torch.tensor([1 / 3, 1 / 21], dtype=torch.float64),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(rule="newton"), "rule.*'newton'"),
    (dict(nonfinite="ignore"), "nonfinite.*'ignore'"),
    (dict(weight_decay=-1.0), "weight_decay.*-1.0"),
    (dict(backend="cuda"), "backend.*'cuda'"),
    (dict(safeguard="yes"), "safeguard.*'yes'"),
])
def test_bad_options_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("momentum", [-0.1, 0.0, 1.0, 1.5])
def test_sgdm_momentum_range(momentum):
    with pytest.raises(ValueError, match=f"momentum.*{momentum}"):
        secant_ext.SecantSGDM([torch.zeros(2, requires_grad=True)], momentum=momentum)


def test_frozen_batchnorm_keeps_running_stats_of_the_lookahead_pass():
    """With the helper registered, BatchNorm's running statistics after a step are those
    of the one forward pass at x_t, as with a plain optimizer; without it, the lookahead
    forward updates them a second time."""
    def run(protect):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6),
                                    torch.nn.Linear(6, 1))
        X, Y = torch.randn(16, 4), torch.randn(16, 1)
        opt = secant_ext.SecantSGD(model.parameters(), backend="reference")
        if protect:
            opt.register_lookahead_context(lambda: secant_ext.frozen_batchnorm(model))

        def closure():
            opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)
        return model[1]
    torch.manual_seed(0)
    once = torch.nn.BatchNorm1d(6)
    ref_model = torch.nn.Sequential(torch.nn.Linear(4, 6), once, torch.nn.Linear(6, 1))
    X = torch.randn(16, 4)
    ref_model(X)  # one training-mode forward at x_t
    protected, unprotected = run(True), run(False)
    assert torch.equal(protected.running_mean, once.running_mean)
    assert torch.equal(protected.running_var, once.running_var)
    assert protected.num_batches_tracked.item() == 1
    assert unprotected.num_batches_tracked.item() == 2


@pytest.mark.parametrize("cls", [secant_ext.SecantSGDM, secant_ext.SecantSignSGD])
def test_mixed_dtypes_in_one_group_match_the_reference(cls):
    """float32, float64 and bfloat16 parameters in one group: one bucket per dtype, one
    alpha for the group; the C++ path follows the reference within bf16 rounding."""
    def run(backend):
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(37, generator=g).requires_grad_(),
                  torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_(),
                  torch.randn(11, generator=g).bfloat16().requires_grad_()]
        opt = cls(params, backend=backend)

        def closure():
            opt.zero_grad()
            loss = sum(((p.double() - 0.3) ** 2).sum() for p in params)
            loss.backward()
            return loss
        for _ in range(10):
            opt.step(closure)
        return params, opt.last_stats.alpha
    (pc, ac), (pr, ar) = run("cpp"), run("reference")
    assert [p.dtype for p in pc] == [torch.float32, torch.float64, torch.bfloat16]
    torch.testing.assert_close(ac, ar, rtol=1e-2, atol=0)  # alpha sees the bf16 rounding
    for a, b in zip(pc, pr):
        torch.testing.assert_close(a.detach().double(), b.detach().double(),
                                   rtol=2 ** -6, atol=2 ** -6)
