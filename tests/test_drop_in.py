"""The optimizers among the usual training tools: ``lr`` and schedulers, clipping by
``max_grad_norm``, a compiled train step, gradients accumulated outside the closure, a
model moved to another dtype, complex parameters, and what ``p.grad`` holds afterwards."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import secant_ext
from independent import LeastSquares, SpecOptimizer
from test_optimizer import VARIANTS, make_closures, run_secant, torch_problem

BACKENDS = ["reference", "cpp"]


# --- lr and max_grad_norm against the independent implementation -------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("probe", [False, True], ids=["no-probe", "probe"])
@pytest.mark.parametrize("variant", ["sgd", "sgdm-nesterov-wd", "signum"])
@pytest.mark.parametrize("lr,max_grad_norm", [(0.3, None), (1.0, 0.05), (2.5, 0.2)])
def test_lr_and_clipping_match_independent_float64(variant, probe, backend, lr,
                                                    max_grad_norm):
    """The step is ``lr * alpha * min(1, max_grad_norm / (|g| + 1e-6)) * d``; alpha is
    measured on the unclipped gradients. 30 steps against the NumPy float64 algorithm, to
    the tolerance of the trajectory test in test_optimizer.py (same arithmetic, other
    orders)."""
    assert_matches_independent(variant, probe, backend, lr=lr, max_grad_norm=max_grad_norm)


def assert_matches_independent(variant, probe, backend, steps=30, **options):
    """``steps`` steps of the optimizer with ``options`` equal the NumPy float64 algorithm
    with the same options, to the tolerance of the trajectory test in test_optimizer.py."""
    cls, kwargs, spec_kwargs = VARIANTS[variant]
    problem = LeastSquares.make()
    w0, got, alphas = run_secant(cls, dict(kwargs, **options), problem, steps, probe, backend)
    spec = SpecOptimizer(**spec_kwargs, **options)
    x = [w.copy() for w in w0]
    for t in range(steps):
        spec.step(problem, x, t, probe)
    np.testing.assert_allclose(alphas, spec.alphas, rtol=1e-9, atol=0)
    for a, b in zip(got, x):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-9, atol=1e-12)


def _quadratic_mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3)).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    X, Y = torch.randn(32, 6, generator=gen).to(dtype), torch.randn(32, 3, generator=gen).to(dtype)
    return model, X, Y


def _closure(opt, model, X, Y):
    def closure():
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_leaves_alpha_alone_and_bounds_the_step(backend):
    """The first step's alpha is the same bits with and without clipping (both measure at
    the same point on unclipped gradients), and every step moves the parameters by at most
    lr * alpha * max_grad_norm while clipping bites."""
    runs = {}
    for max_norm in (None, 0.01):
        model, X, Y = _quadratic_mlp()
        opt = secant_ext.SecantSGD(model.parameters(), lr=0.7, max_grad_norm=max_norm,
                                   backend=backend)
        closure = _closure(opt, model, X, Y)
        moves, alphas, norms = [], [], []
        for _ in range(5):
            before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
            opt.step(closure)
            after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            moves.append((after - before).norm().item())
            alphas.append(opt.last_stats.alpha.item())
            norms.append(opt.last_stats.grad_norm.item())
        runs[max_norm] = (moves, alphas, norms, opt.last_stats)
    assert runs[0.01][1][0] == runs[None][1][0]
    moves, alphas, norms, stats = runs[0.01]
    for move, alpha, norm in zip(moves, alphas, norms):
        assert norm > 0.01  # clipping bites on every step
        assert move <= 0.7 * alpha * 0.01 * (1 + 1e-12)
    assert stats.step_size.item() == pytest.approx(
        0.7 * alphas[-1] * 0.01 / (norms[-1] + 1e-6), rel=1e-15)


# --- curvature_every --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("probe", [False, True], ids=["no-probe", "probe"])
@pytest.mark.parametrize("variant", ["sgd", "sgdm-nesterov-wd", "signum"])
@pytest.mark.parametrize("k,warmup", [(1, 0), (4, 0), (4, 9)])
def test_curvature_every_k_matches_independent_float64(k, warmup, variant, probe, backend):
    """Each of the first ``warmup`` steps measures, then every k-th (two evaluations); the
    others take the bias-corrected EMA (weight 0.9) of the measured alphas. k = 1 is the
    paper's rule, every step measured."""
    assert_matches_independent(variant, probe, backend, curvature_every=k,
                               curvature_warmup=warmup, lr=0.8)


def test_curvature_every_k_calls_the_closure_once_between_measurements():
    model, X, Y = _quadratic_mlp()
    opt = secant_ext.SecantSGD(model.parameters(), curvature_every=3, curvature_warmup=2,
                               backend="cpp")
    calls, probes = [0], [0]
    closure = _closure(opt, model, X, Y)

    def counted():
        calls[0] += 1
        return closure()

    def probe():
        probes[0] += 1
        return closure()
    measured, per_step = [], []
    for _ in range(7):
        before = (calls[0], probes[0])
        opt.step(counted, probe_closure=probe)
        per_step.append((calls[0] - before[0], probes[0] - before[1]))
        measured.append(bool(opt.last_stats.measured))
    assert measured == [True, True, False, True, False, False, True]  # warm-up: 0, 1
    assert per_step == [(1, 2) if m else (1, 0) for m in measured]
    assert opt.last_stats.stalled_total.item() == 0


# --- average=True ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["sgd", "sgdm-nesterov-wd", "signum"])
def test_averaged_iterate_matches_independent_float64(variant, backend):
    """``avg <- avg + w (x - avg)``, ``w = max(1 / steps, 0.01)``, after every update;
    opt.eval() shows it, opt.train() puts the training iterate back bit for bit, and the
    training trajectory is the one without averaging."""
    cls, kwargs, spec_kwargs = VARIANTS[variant]
    problem = LeastSquares.make()
    w0, plain, _ = run_secant(cls, kwargs, problem, 30, False, backend)
    spec = SpecOptimizer(average=True, curvature_every=2, curvature_warmup=3, **spec_kwargs)
    x = [w.copy() for w in w0]
    for t in range(30):
        spec.step(problem, x, t, False)

    w0, params, X, Y = torch_problem(problem)
    opt = cls(params, backend=backend, average=True, curvature_every=2, curvature_warmup=3,
              **kwargs)
    t_ref = [0]
    closure, _ = make_closures(opt, params, X, Y, problem, t_ref)
    for t_ref[0] in range(30):
        opt.step(closure)
    training = [p.detach().clone() for p in params]
    for a, b in zip(training, x):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-9, atol=1e-12)
    opt.eval()
    for a, b in zip(params, spec.avg):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-9, atol=1e-12)
    with pytest.raises(RuntimeError, match="opt.train"):
        opt.step(closure)
    opt.train()
    assert all(torch.equal(a, b.detach()) for a, b in zip(training, params))


def test_averaged_iterate_survives_a_checkpoint():
    """state_dict carries the average: a resumed optimizer continues bit for bit."""
    def run(split):
        model, X, Y = _quadratic_mlp()
        opt = secant_ext.SecantSGDM(model.parameters(), average=True, backend="cpp")
        for t in range(6):
            if t == split:
                state = copy.deepcopy(opt.state_dict())
                opt = secant_ext.SecantSGDM(model.parameters(), average=True, backend="cpp")
                opt.load_state_dict(state)
            opt.step(_closure(opt, model, X, Y))
        opt.eval()
        return [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(run(None), run(3)))


# --- schedulers ---------------------------------------------------------------------------
def _scheduler_cases():
    return {
        "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4),
        "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
        "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=1.0, total_steps=6, cycle_momentum=False),
    }


@pytest.mark.parametrize("name", list(_scheduler_cases()))
def test_schedulers_set_the_multiplier_of_alpha(name):
    """Each scheduler writes param_groups[i]["lr"], and the step applied is lr * alpha."""
    model, X, Y = _quadratic_mlp()
    opt = secant_ext.SecantSGD(model.parameters(), backend="cpp")
    sched = _scheduler_cases()[name](opt)
    closure = _closure(opt, model, X, Y)
    for _ in range(5):
        lr = opt.param_groups[0]["lr"]
        opt.step(closure)
        stats = opt.last_stats
        assert stats.lr.item() == lr
        assert stats.step_size.item() == stats.alpha.item() * lr
        sched.step()


def test_reduce_lr_on_plateau_and_a_logger_read_lr():
    model, X, Y = _quadratic_mlp()
    opt = secant_ext.SecantSGDM(model.parameters(), backend="cpp")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.1)
    closure = _closure(opt, model, X, Y)
    sched.step(1.0)
    sched.step(2.0)  # worse: the multiplier drops
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    opt.step(closure)
    assert opt.last_stats.step_size.item() == pytest.approx(0.1 * opt.last_stats.alpha.item())


def test_one_cycle_momentum_cycling_is_refused_where_there_is_no_momentum():
    """SecantSGD has no momentum option, so torch's own check refuses the cycling instead of
    it silently turning momentum on; SecantSGDM's momentum is cycled."""
    model, _, _ = _quadratic_mlp()
    opt = secant_ext.SecantSGD(model.parameters())
    assert "momentum" not in opt.param_groups[0] and "momentum" not in opt.defaults
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    opt_m = secant_ext.SecantSGDM(model.parameters())
    torch.optim.lr_scheduler.OneCycleLR(opt_m, max_lr=1.0, total_steps=5)
    assert opt_m.param_groups[0]["momentum"] != 0.9  # OneCycleLR set its first momentum


def test_tensor_lr_gives_the_bits_of_a_float_lr():
    results = []
    for lr in (0.25, torch.tensor(0.25, dtype=torch.float64)):
        model, X, Y = _quadratic_mlp()
        opt = secant_ext.SecantSGD(model.parameters(), lr=lr, backend="cpp")
        closure = _closure(opt, model, X, Y)
        for _ in range(3):
            opt.step(closure)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr must be"), (dict(lr=float("nan")), "lr must be"),
    (dict(lr=torch.ones(2)), "0-dim"), (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(max_grad_norm=-1.0), "max_grad_norm"), (dict(curvature_every=0), "curvature_every"),
    (dict(curvature_warmup=-1), "curvature_warmup"), (dict(average=1), "average"),
])
def test_bad_lr_and_max_grad_norm_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], **kwargs)


# --- torch.compile --------------------------------------------------------------------------
def test_compiled_train_step_equals_eager():
    """torch.compile of a function that calls opt.step(closure): the step runs eagerly (a
    graph break), so the parameters are those of the eager loop, bit for bit."""
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        model, X, Y = _quadratic_mlp(dtype=torch.float32)
        opt = secant_ext.SecantSGD(model.parameters(), backend="cpp")

        def train_step():
            def closure():
                opt.zero_grad()
                loss = ((model(X) - Y) ** 2).mean()
                loss.backward()
                return loss
            return opt.step(closure)
        fn = torch.compile(train_step, backend="eager") if compiled else train_step
        losses = [fn().item() for _ in range(4)]
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (l_eager, p_eager), (l_comp, p_comp) = results
    assert l_eager == l_comp and l_eager[-1] < l_eager[0]
    assert all(torch.equal(a, b) for a, b in zip(p_eager, p_comp))


def test_fullgraph_compile_says_why_it_cannot():
    torch._dynamo.reset()
    model, X, Y = _quadratic_mlp(dtype=torch.float32)
    opt = secant_ext.SecantSGD(model.parameters(), backend="cpp")

    def train_step():
        return opt.step(_closure(opt, model, X, Y))
    with pytest.raises(Exception, match="lookahead point"):
        torch.compile(train_step, backend="eager", fullgraph=True)()


# --- accumulated gradients ----------------------------------------------------------------
def _micro_batches():
    model, X, Y = _quadratic_mlp()
    return model, (X[:16], Y[:16]), (X[16:], Y[16:])


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean() / 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_accumulated_outside_the_closure_are_added(backend):
    """backward() on micro-batch 1, then step(closure on micro-batch 2) whose closure does
    not reset the gradients (Lightning's accumulate_grad_batches): the training gradient is
    the sum of both, the curvature is measured with the closure's own gradient. That is
    step(closure on both, probe_closure=closure on micro-batch 2), to rounding."""
    model, b1, b2 = _micro_batches()
    opt = secant_ext.SecantSGD(model.parameters(), backend=backend)
    for _ in range(3):
        opt.zero_grad()
        _loss(model, b1).backward()

        def closure():
            loss = _loss(model, b2)
            loss.backward()
            return loss
        opt.step(closure)
    got = [p.detach().clone() for p in model.parameters()]

    model, b1, b2 = _micro_batches()
    ref = secant_ext.SecantSGD(model.parameters(), backend=backend)
    for _ in range(3):
        def both():
            ref.zero_grad()
            loss = _loss(model, b1) + _loss(model, b2)
            loss.backward()
            return loss

        def own():
            ref.zero_grad()
            loss = _loss(model, b2)
            loss.backward()
            return loss
        ref.step(both, probe_closure=own)
    for a, b in zip(got, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_closure_that_resets_gradients_discards_earlier_ones(backend):
    """loss.backward(); opt.step(closure) with a closure that zeroes the gradients behaves
    as the loop without the extra backward (as torch.optim.LBFGS does), bit for bit; so
    does a closure that never zeroes (the gradient left by the last step is stale)."""
    def run(extra_backward, zeroing):
        model, X, Y = _quadratic_mlp()
        opt = secant_ext.SecantSGDM(model.parameters(), backend=backend)

        def closure():
            if zeroing:
                opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward()
            return loss
        for _ in range(3):
            if extra_backward:
                ((model(X) - Y) ** 2).mean().backward()
            opt.step(closure)
        return [p.detach().clone() for p in model.parameters()]
    plain = run(False, True)
    for extra_backward, zeroing in ((True, True), (False, False)):
        assert all(torch.equal(a, b) for a, b in zip(plain, run(extra_backward, zeroing)))


# --- state follows the parameters; re-entrancy; p.grad --------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_momentum_follows_the_model_to_bfloat16(backend):
    """After model.to(torch.bfloat16) the momentum buffers follow the parameters' dtype: the
    optimizer carries on exactly as a new one that loads its state dict (which casts the
    buffers to the parameters' dtype, as torch.optim's load_state_dict does)."""
    model, X, Y = _quadratic_mlp(dtype=torch.float32)
    opt = secant_ext.SecantSGDM(model.parameters(), backend=backend)
    closure = _closure(opt, model, X, Y)
    opt.step(closure)
    opt.step(closure)
    model.to(torch.bfloat16)
    twin_model = copy.deepcopy(model)
    twin = secant_ext.SecantSGDM(twin_model.parameters(), backend=backend)
    twin.load_state_dict(opt.state_dict())
    X, Y = X.bfloat16(), Y.bfloat16()
    for o, m in ((opt, model), (twin, twin_model)):
        closure = _closure(o, m, X, Y)
        for _ in range(3):
            o.step(closure)
    for p in model.parameters():
        assert opt.state[p]["momentum_buffer"].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin_model.parameters()))
    assert torch.equal(opt.last_stats.alpha, twin.last_stats.alpha)


@pytest.mark.parametrize("variant", ["sgd", "sgdm-nesterov-wd", "signum"])
def test_complex_parameters_step_as_their_real_views(variant):
    """As torch.optim does: a complex parameter steps like its torch.view_as_real view."""
    cls, kwargs, _ = VARIANTS[variant]
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(5, 3, dtype=torch.complex128, generator=gen)
    target = torch.randn(5, 3, dtype=torch.complex128, generator=gen)

    def run(as_complex):
        p = z0.clone().requires_grad_() if as_complex else \
            torch.view_as_real(z0.clone()).requires_grad_()
        opt = cls([p], backend="cpp", **kwargs)

        def closure():
            opt.zero_grad()
            z = p if as_complex else torch.view_as_complex(p)
            loss = ((z - target).abs() ** 4).sum()
            loss.backward()
            return loss
        for _ in range(4):
            opt.step(closure)
        return torch.view_as_real(p.detach()) if as_complex else p.detach()
    assert torch.equal(run(True), run(False))


def test_step_called_from_inside_a_closure_raises():
    p = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")

    def closure():
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step(lambda: (p ** 2).sum())
        return (p ** 2).sum()
    with pytest.raises(RuntimeError, match="inside a closure"):
        opt.step(closure)
    assert torch.equal(p.detach(), torch.ones(3)) and opt.last_stats.step.item() == 0


def test_gradient_only_at_the_lookahead_is_not_left_in_p_grad():
    """p.grad after a step is the training gradient, or None where there was none."""
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = secant_ext.SecantSGD([a, b], backend="reference")
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        loss = (a ** 2).sum() + ((b ** 2).sum() if calls[0] == 2 else 0)
        loss.backward()
        return loss
    opt.step(closure)
    assert b.grad is None and torch.equal(b.detach(), torch.ones(2))
    assert torch.equal(a.grad, 2 * torch.ones(3))


def test_step_without_a_closure_points_to_the_integrations():
    opt = secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)])
    with pytest.raises(TypeError, match="docs/INTEGRATIONS.md"):
        opt.step()


# --- slice_probe ------------------------------------------------------------------------------
def test_slice_probe_is_the_hand_written_probe_on_the_first_rows():
    """The helper's probe closure gives the step of a hand-written probe closure on the
    first rows of the batch, bit for bit."""
    def run(helper):
        model, X, Y = _quadratic_mlp()
        opt = secant_ext.SecantSGD(model.parameters(), backend="cpp")

        def loss_of(x, y):
            return ((model(x) - y) ** 2).mean()

        def closure():
            opt.zero_grad()
            loss = loss_of(X, Y)
            loss.backward()
            return loss

        def by_hand():
            opt.zero_grad()
            loss = loss_of(X[:8], Y[:8])
            loss.backward()
            return loss
        probe = secant_ext.slice_probe(loss_of, X, Y, size=8) if helper else by_hand
        for _ in range(3):
            opt.step(closure, probe_closure=probe)
        return [p.detach().clone() for p in model.parameters()], opt.last_stats.alpha
    (p_helper, a_helper), (p_hand, a_hand) = run(True), run(False)
    assert torch.equal(a_helper, a_hand) and a_helper.item() < 1
    assert all(torch.equal(a, b) for a, b in zip(p_helper, p_hand))


@pytest.mark.parametrize("args,match", [
    (dict(size=0), "size must be"), (dict(size=2.5), "size must be"),
])
def test_slice_probe_refuses_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        secant_ext.slice_probe(lambda x: x.sum(), torch.zeros(4), **args)


def test_slice_probe_refuses_batches_of_different_lengths():
    with pytest.raises(ValueError, match="different numbers of rows"):
        secant_ext.slice_probe(lambda x, y: x.sum(), torch.zeros(4), torch.zeros(5))


# --- max_grad_norm over the whole model ----------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_max_grad_norm_clips_by_the_norm_over_every_param_group(backend):
    """With several param groups the clip's norm is the whole model's, as
    ``clip_grad_norm_(model.parameters())``: each group moves by ``lr * alpha_k * clip``
    with ``clip = min(1, max_grad_norm / (sqrt(sum_k |g_k|^2) + 1e-6))`` (float64, so the
    move is checked to 1e-12), alpha_k still the group's own, unclipped measurement; a
    group without ``max_grad_norm`` is not clipped."""
    model, X, Y = _quadratic_mlp()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    limit = 0.05
    opt = secant_ext.SecantSGD([{"params": first}, {"params": second}], max_grad_norm=limit,
                               backend=backend)
    unclipped = secant_ext.SecantSGD([{"params": first}, {"params": second}], backend=backend)
    state = copy.deepcopy(unclipped.state_dict())
    for step in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        closure = _closure(opt, model, X, Y)
        opt.step(closure)
        stats = opt.last_stats
        g_sq = [n.item() ** 2 for n in stats.grad_norm]
        clip = min(1.0, limit / (np.sqrt(sum(g_sq)) + 1e-6))
        assert clip < min(1.0, limit / (np.sqrt(max(g_sq)) + 1e-6))   # per group would differ
        for k, params in enumerate((first, second)):
            want = stats.alpha[k].item() * clip
            assert stats.step_size[k].item() == pytest.approx(want, rel=1e-12)
            idx = [i for i, p in enumerate(model.parameters()) if any(p is q for q in params)]
            for i, p in zip(idx, params):
                assert torch.allclose(before[i] - want * p.grad, p, rtol=0, atol=1e-12)
    # the alphas are those the unclipped optimizer measures at the same points
    model2, X2, Y2 = _quadratic_mlp()
    unclipped = secant_ext.SecantSGD([{"params": list(model2[0].parameters())},
                                      {"params": list(model2[2].parameters())}],
                                     backend=backend)
    unclipped.load_state_dict(state)
    unclipped.step(_closure(unclipped, model2, X2, Y2))
    model3, X3, Y3 = _quadratic_mlp()
    clipped = secant_ext.SecantSGD([{"params": list(model3[0].parameters())},
                                    {"params": list(model3[2].parameters()),
                                     "max_grad_norm": None}], max_grad_norm=limit,
                                   backend=backend)
    clipped.step(_closure(clipped, model3, X3, Y3))
    assert torch.equal(clipped.last_stats.alpha, unclipped.last_stats.alpha)
    norm = clipped.last_stats.grad_norm.norm().item()
    assert clipped.last_stats.step_size[0].item() == pytest.approx(
        clipped.last_stats.alpha[0].item() * limit / (norm + 1e-6), rel=1e-12)
    assert clipped.last_stats.step_size[1].item() == clipped.last_stats.alpha[1].item()


# --- eval() / train() without averages ---------------------------------------------------
def test_eval_without_averaged_weights_is_a_no_op():
    """Loops that call ``optimizer.eval()`` on any optimizer (Hugging Face's Trainer does)
    before evaluating: with ``average=False``, or before the first step, the parameters do
    not change and the next step works without ``train()``."""
    model, X, Y = _quadratic_mlp()
    opt = secant_ext.SecantSGD(model.parameters(), backend="cpp")
    opt.eval()                       # before any step
    opt.step(_closure(opt, model, X, Y))
    before = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    opt.step(_closure(opt, model, X, Y))   # no "step() after opt.eval()"
    averaging = secant_ext.SecantSGD(model.parameters(), average=True, backend="cpp")
    averaging.step(_closure(averaging, model, X, Y))
    averaging.eval()
    with pytest.raises(RuntimeError, match=r"step\(\) after opt.eval\(\)"):
        averaging.step(_closure(averaging, model, X, Y))


# --- clipping inside the closure is noticed ----------------------------------------------
def test_clip_grad_norm_inside_the_closure_warns_once():
    """Clipping both gradients to one norm pins alpha at 1 (docs/USAGE.md, 'Caveats'); the
    optimizer notices the signature (negative curvature, two gradients of the same norm) on
    its periodic read and says so once; clipping with max_grad_norm does not warn."""
    def run(clip_inside, **options):
        model, X, Y = _quadratic_mlp()
        opt = secant_ext.SecantSGD(model.parameters(), backend="cpp", **options)

        def closure():
            opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward()
            if clip_inside:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            return loss
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(9):
                opt.step(closure)
        return [w for w in caught if "clip_grad_norm_ inside the closure" in str(w.message)], opt
    caught, opt = run(True)
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)
    assert opt.last_stats.alpha.item() == 1.0   # what the warning is about
    assert run(False, max_grad_norm=0.01)[0] == []
    assert run(False)[0] == []


def test_a_step_where_no_parameter_has_a_gradient_with_several_clipped_groups():
    """Nothing to clip and nothing to step: the parameters stay, no error."""
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    other = torch.ones(4, requires_grad=True)   # not the optimizer's
    opt = secant_ext.SecantSGD([{"params": [a]}, {"params": [b]}], max_grad_norm=1.0,
                               backend="cpp")

    def closure():
        opt.zero_grad()
        loss = (other ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.ones(2))
    assert a.grad is None and b.grad is None
