"""SecantAdam end to end: its trajectory against the independent float64 implementation
(``independent.SpecAdam``), and the drop-in guarantees the other optimizers give (lr and
schedulers, ``max_grad_norm``, accumulation, averaging, checkpoints, the in-place
lookahead, non-finite gradients, complex parameters, ``torch.compile``)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import secant_ext
from independent import LeastSquares, SpecAdam
from numerics import triton_devices
from test_optimizer import make_closures, torch_problem

BACKENDS = ["reference", "cpp", "triton"]  # triton on CPU tensors under the interpreter
# small warm-up and period so that 40 steps see both regimes; eta grows from 1e-5 by at most
# 10% per measurement, so a larger lr multiplier makes the steps matter for the trajectory
SCHEDULE = dict(curvature_warmup=12, curvature_every=4)


def _device(backend):
    """Where a backend's tensors live: Triton's on CUDA in the GPU check, else the CPU."""
    return triton_devices()[0] if backend == "triton" else "cpu"


def run_adam(problem, steps, probe, backend, scheduler=None, **options):
    w0, params, X, Y = torch_problem(problem)
    dev = _device(backend)
    if dev != "cpu":
        params = [torch.tensor(p.detach().numpy(), device=dev, requires_grad=True) for p in params]
        X, Y = X.to(dev), Y.to(dev)
    opt = secant_ext.SecantAdam(params, backend=backend, **options)
    sched = scheduler(opt) if scheduler else None
    t = [0]
    closure, probe_closure = make_closures(opt, params, X, Y, problem, t)
    alphas = []
    for t[0] in range(steps):
        opt.step(closure, probe_closure if probe else None)
        alphas.append(opt.last_stats.alpha.item())
        if sched:
            sched.step()
    return w0, params, alphas, opt


def spec_run(problem, w0, steps, probe, lrs=None, **options):
    spec = SpecAdam(**options)
    x = [w.copy() for w in w0]
    for t in range(steps):
        if lrs is not None:
            spec.lr = lrs[t]
        spec.step(problem, x, t, probe)
    return spec, x


def assert_close(got, want):
    """The trajectory test's tolerance (test_optimizer.py): the same float64 arithmetic in
    other orders, a few ulps a step, 1e-9 relative leaves orders of margin."""
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.detach().cpu().numpy(), b, rtol=1e-9, atol=1e-12)


OPTIONS = {
    "defaults": {},
    "wd-clip-lr": dict(weight_decay=0.05, max_grad_norm=0.5, lr=30.0),
    "betas-eps": dict(betas=(0.8, 0.99), eps=1e-6, lr=100.0),
    "every-step": dict(curvature_every=1, curvature_warmup=0, lr=10.0),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("probe", [False, True], ids=["no-probe", "probe"])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_trajectory_matches_independent_float64(options, probe, backend):
    """40 steps (eta and the iterates) equal docs/ALGORITHM.md's SecantAdam written
    independently in NumPy float64; with a probe closure the measurement uses its batch."""
    kw = dict(SCHEDULE, **OPTIONS[options])
    problem = LeastSquares.make()
    w0, params, alphas, _ = run_adam(problem, 40, probe, backend, **kw)
    spec, x = spec_run(problem, w0, 40, probe, **kw)
    np.testing.assert_allclose(alphas, spec.alphas, rtol=1e-9, atol=0)
    assert spec.alphas[-1] > 2e-5  # the rule moved eta: the test compares measurements
    assert_close(params, x)


def test_eta_reaches_the_measured_step_on_a_quadratic():
    """Measured every step on a fixed batch, eta grows by at most 10% a measurement, and
    moves where the averages put it: 2 C / A, twice the step along Adam's direction to the
    minimum of the measured quadratic, when that is below the growth limit."""
    problem = LeastSquares.make(batch=96)
    w0, params, alphas, opt = run_adam(problem, 150, False, "cpp", curvature_every=1,
                                       curvature_warmup=0)
    ratios = np.array(alphas[2:]) / np.array(alphas[1:-1])
    assert (ratios <= 1.1 * (1 + 1e-12)).all()
    assert (ratios < 1).any()  # the averages, not the growth limit, set eta at times
    st = opt.state[params[0]]["secant_state"]
    from secant_ext import _layout as layout
    big_a, big_c = float(st[layout.ADAM_A]), float(st[layout.ADAM_C])
    assert big_a > 0 and big_c > 0
    assert alphas[-1] == pytest.approx(min(2 * big_c / big_a, 1.1 * alphas[-2]), rel=1e-12)
    assert alphas[-1] > 1e-3
    # last_stats under SecantAdam's own names: the averages that set eta, and the latest
    # measurement, a per unit step along d (the state's DOT) and b (its S_SQ)
    stats = opt.last_stats
    assert isinstance(stats, secant_ext.SecantAdamStats)
    assert (float(stats.avg_a), float(stats.avg_c)) == (big_a, big_c)
    assert float(stats.alpha) == alphas[-1]
    assert float(stats.a) == float(st[layout.DOT]) == float(stats.curvature) != 0
    assert float(stats.b) == float(st[layout.S_SQ]) != 0


def test_negative_curvature_grows_eta_and_counts_as_guarded():
    """On a concave loss every measurement has ``a < 0`` with descent ahead: ``2C/A`` says
    nothing, eta grows by the growth factor, and ``last_stats`` reports each such
    measurement as guarded (SecantStats' ``clipped``, under SecantAdam's own name)."""
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = secant_ext.SecantAdam([x], backend="cpp", curvature_warmup=10, average=False)

    def closure():
        opt.zero_grad()
        loss = -(x * x).sum()
        loss.backward()
        return loss
    etas = []
    for _ in range(6):
        opt.step(closure)
        etas.append(float(opt.last_stats.alpha))
    stats = opt.last_stats
    assert bool(stats.guarded) and bool(stats.clipped)
    assert int(stats.guarded_total) == 5  # every step but the first measures
    assert etas[1:] == pytest.approx([1.1 ** k * etas[0] for k in range(1, 6)], rel=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_schedulers_multiply_the_measured_step(backend):
    """A scheduler's lr multiplies eta; the measurement divides the previous step by the
    step size it was taken with, so it measures the same a and b whatever the schedule."""
    problem = LeastSquares.make()
    lam = lambda e: 50.0 / (1 + 0.1 * e)  # noqa: E731
    w0, params, alphas, _ = run_adam(
        problem, 30, False, backend,
        scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lam), **SCHEDULE)
    spec, x = spec_run(problem, w0, 30, False, lrs=[lam(t) for t in range(30)], **SCHEDULE)
    np.testing.assert_allclose(alphas, spec.alphas, rtol=1e-9, atol=0)
    assert_close(params, x)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_averaged_iterate_and_eval_train(backend):
    problem = LeastSquares.make()
    w0, params, _, opt = run_adam(problem, 30, False, backend, lr=20.0, **SCHEDULE)
    spec, x = spec_run(problem, w0, 30, False, lr=20.0, **SCHEDULE)
    training = [p.detach().clone() for p in params]
    opt.eval()
    assert_close(params, spec.avg)
    opt.train()
    assert all(torch.equal(a, b.detach()) for a, b in zip(training, params))


def test_accumulated_gradients_join_the_step_not_the_measurement():
    """Gradients left in p.grad before step() (earlier micro-batches) are added to the
    training gradient that forms Adam's moments and the clip; the measurement pairs the
    closure's own gradient with its look-back evaluation."""
    problem = LeastSquares.make()
    w0, params, X, Y = torch_problem(problem)
    opt = secant_ext.SecantAdam(params, backend="cpp", lr=20.0, max_grad_norm=0.5, **SCHEDULE)
    t = [0]

    def closure():  # no zero_grad: that would discard the earlier gradients
        W, c = params
        rows = torch.as_tensor(problem.train_rows(t[0]))
        loss = ((X[rows] @ W + c - Y[rows]) ** 2).mean()
        loss.backward()
        return loss
    extra = [np.full(p.shape, 0.01) for p in params]
    for t[0] in range(20):
        for p, e in zip(params, extra):
            p.grad = torch.tensor(e)
        opt.step(closure)
    spec = SpecAdam(lr=20.0, max_grad_norm=0.5, **SCHEDULE)
    x = [w.copy() for w in w0]
    for step in range(20):
        spec.step(problem, x, step, False, earlier=extra)
    assert_close(params, x)


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3)).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(32, 6, generator=gen).to(dtype)
    Y = torch.randn(32, 3, generator=gen).to(dtype)
    return model, X, Y


def _closure(opt, model, X, Y, t=None):
    def closure():
        opt.zero_grad()
        rows = slice(None) if t is None else slice((t[0] % 4) * 8, (t[0] % 4) * 8 + 8)
        loss = ((model(X[rows]) - Y[rows]) ** 2).mean()
        loss.backward()
        return loss
    return closure


def _train(opt_factory, steps=25, split=None, dtype=torch.float64, eval_at_end=True):
    model, X, Y = _mlp(dtype=dtype)
    opt = opt_factory(model.parameters())
    t = [0]
    for t[0] in range(steps):
        if t[0] == split:
            state = copy.deepcopy(opt.state_dict())
            opt = opt_factory(model.parameters())
            opt.load_state_dict(state)
        opt.step(_closure(opt, model, X, Y, t))
    if eval_at_end:
        opt.eval()
    return [p.detach().clone() for p in model.parameters()], opt


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_checkpoint_resume_is_bit_for_bit(backend):
    """state_dict at any step (inside the warm-up, on a step before a measurement, after)
    continues bit for bit: moments, the kept previous step, the averages, the clock."""
    make = lambda ps: secant_ext.SecantAdam(ps, backend=backend, lr=30.0, **SCHEDULE)  # noqa: E731
    whole, _ = _train(make)
    for split in (5, 14, 15, 19):
        resumed, _ = _train(make, split=split)
        assert all(torch.equal(a, b) for a, b in zip(whole, resumed)), f"split at {split}"


def test_state_holds_adamw_names_and_three_buffers():
    _, opt = _train(lambda ps: secant_ext.SecantAdam(ps, backend="cpp"), steps=3,
                    eval_at_end=False)
    p = opt.param_groups[0]["params"][0]
    assert set(opt.state[p]) == {"exp_avg", "exp_avg_sq", "average_buffer", "secant_state"}
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert "rule" not in opt.param_groups[0] and "momentum" not in opt.param_groups[0]


def _held_bytes(opt, model):
    """Bytes of every tensor the optimizer holds between steps, each storage once: its
    state, the lookahead's buffers and the plan's caches; the parameters and gradients
    (the model's) left out."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    tensors = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    tensors += list(opt._lookahead.buffers.values())
    tensors += [t for w in opt._plan_template for b in w.buckets for ts in b.cache.values()
                for t in ts if torch.is_tensor(t)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(n for ptr, n in storages.items() if ptr not in own)


@pytest.mark.parametrize("average,per_param", [(True, 12), (False, 8)])
@pytest.mark.parametrize("lookahead", ["swap", "inplace"])
def test_persistent_state_is_adamw_s_plus_the_average(average, per_param, lookahead):
    """Between steps, in the warm-up (every step measures) and after it, SecantAdam holds
    AdamW's two moments (and the average with average=True): 8 or 12 bytes per fp32
    parameter, plus the group state's float64 values; the previous step and the
    lookahead's buffers live for a measuring step alone."""
    model, X, Y = _mlp(dtype=torch.float32)
    n = sum(p.numel() for p in model.parameters())
    opt = secant_ext.SecantAdam(model.parameters(), backend="cpp", average=average,
                                lookahead=lookahead, **SCHEDULE)
    t = [0]
    for t[0] in range(20):
        opt.step(_closure(opt, model, X, Y, t))
        assert _held_bytes(opt, model) == per_param * n + 8 * secant_ext._layout.STATE_SIZE, \
            f"after step {t[0]}"


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_checkpoint_with_a_previous_step_loads_and_continues_the_same(backend):
    """Earlier versions kept the previous step as ``previous_step``: such a checkpoint
    loads, the buffer is dropped (the step is recomputed), and the run continues bit for
    bit as the one that never saved."""
    make = lambda ps: secant_ext.SecantAdam(ps, backend=backend, lr=30.0, **SCHEDULE)  # noqa: E731
    whole, _ = _train(make)
    model, X, Y = _mlp()
    opt = make(model.parameters())
    t = [0]
    for t[0] in range(25):
        if t[0] == 15:  # the step before a measurement (every 4th from the 12th)
            sd = copy.deepcopy(opt.state_dict())
            for st in sd["state"].values():
                st["previous_step"] = torch.randn_like(st["exp_avg"])  # as old versions kept
            opt = make(model.parameters())
            opt.load_state_dict(sd)
            assert all("previous_step" not in st for st in opt.state.values())
        opt.step(_closure(opt, model, X, Y, t))
    opt.eval()
    assert all(torch.equal(a, b.detach()) for a, b in zip(whole, model.parameters()))


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_inplace_lookahead_gives_the_same_bits(backend):
    """lookahead="inplace" (FSDP2, captured graphs) writes x_(t-1) into the parameters' own
    storage and copies x_t back: the same bits as pointing p.data at a buffer."""
    runs = [_train(lambda ps, m=mode: secant_ext.SecantAdam(ps, backend=backend, lr=30.0,
                                                            lookahead=m, **SCHEDULE))[0]
            for mode in ("swap", "inplace")]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_measuring_steps_call_the_closure_twice_and_the_first_never_measures():
    model, X, Y = _mlp()
    opt = secant_ext.SecantAdam(model.parameters(), backend="cpp", curvature_warmup=3,
                                curvature_every=4)
    calls = [0]
    closure = _closure(opt, model, X, Y)

    def counted():
        calls[0] += 1
        return closure()
    per_step, measured = [], []
    for _ in range(9):
        before = calls[0]
        opt.step(counted)
        per_step.append(calls[0] - before)
        measured.append(bool(opt.last_stats.measured))
    # steps 1..9: never the first; the warm-up's 2 and 3; then every 4th (4 and 8)
    assert measured == [False, True, True, True, False, False, False, True, False]
    assert per_step == [2 if m else 1 for m in measured]


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_nonfinite_gradient_skips_the_step(backend):
    model, X, Y = _mlp()
    opt = secant_ext.SecantAdam(model.parameters(), backend=backend, curvature_every=1,
                                curvature_warmup=0)
    closure = _closure(opt, model, X, Y)
    for _ in range(3):
        opt.step(closure)
    before = copy.deepcopy(opt.state_dict())
    weights = [p.detach().clone() for p in model.parameters()]

    def poisoned():
        loss = closure()
        model[0].weight.grad[0, 0] = float("inf")
        return loss
    opt.step(poisoned)
    stats = opt.last_stats
    assert bool(stats.skipped) and stats.skipped_total.item() == 1
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    after = opt.state_dict()["state"]
    for k, st in before["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "average_buffer"):
            assert torch.equal(st[name], after[k][name]), name
    opt.step(closure)  # the kept previous step still points back: the next one measures
    assert bool(opt.last_stats.measured)
    opt_raise = secant_ext.SecantAdam(model.parameters(), backend=backend, nonfinite="raise")
    opt_raise.step(_closure(opt_raise, model, X, Y))
    with pytest.raises(FloatingPointError, match=r"param_groups\[0\]\['params'\]\[0\]"):
        opt_raise.step(poisoned)


def test_complex_parameter_steps_as_its_real_view():
    """A complex parameter steps as torch.optim.AdamW steps one: elementwise on the real
    and imaginary parts (view_as_real), so it equals the real model of its parts."""
    torch.manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.complex128)
    X = torch.randn(16, 5, dtype=torch.complex128)
    Y = torch.randn(16, 3, dtype=torch.complex128)
    zc = torch.nn.Parameter(w.clone())
    zr = torch.nn.Parameter(torch.view_as_real(w.clone()).clone())
    opts = [secant_ext.SecantAdam([p], backend="cpp", lr=30.0, **SCHEDULE) for p in (zc, zr)]

    def loss_of(z):
        return ((X @ z - Y).abs() ** 2).mean()
    for t in range(20):
        rows = slice((t % 2) * 8, (t % 2) * 8 + 8)
        for opt, p, as_complex in ((opts[0], zc, lambda z: z), (opts[1], zr, torch.view_as_complex)):
            def closure(opt=opt, p=p, as_complex=as_complex):
                opt.zero_grad()
                loss = ((X[rows] @ as_complex(p) - Y[rows]).abs() ** 2).mean()
                loss.backward()
                return loss
            opt.step(closure)
    torch.testing.assert_close(torch.view_as_real(zc.detach()), zr.detach(), rtol=1e-12,
                               atol=1e-14)
    assert float(loss_of(zc.detach())) < float(loss_of(w))


def test_compiled_train_step_matches_eager():
    """torch.compile of a function that calls step(closure): the step runs eagerly (a
    graph break, as for the other optimizers), with the same bits."""
    runs = []
    for compiled in (False, True):
        model, X, Y = _mlp(dtype=torch.float32)
        opt = secant_ext.SecantAdam(model.parameters(), backend="cpp", lr=30.0, **SCHEDULE)
        closure = _closure(opt, model, X, Y)

        def train_step():
            return opt.step(closure)
        fn = torch.compile(train_step, backend="eager") if compiled else train_step
        for _ in range(8):
            fn()
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("kwargs,match", [
    (dict(betas=(0.9, 1.0)), "betas must be two numbers in"),
    (dict(betas=(0.9,)), "betas must be two numbers in"),
    (dict(eps=-1.0), "eps must be a finite number >= 0"),
    (dict(lr=-1.0), "lr must be a finite number >= 0"),
    (dict(curvature_every=0), "curvature_every must be an integer >= 1"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number"),
])
def test_bad_options_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        secant_ext.SecantAdam([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_defaults_learn_a_small_regression():
    """Defaults only: eta starts at 1e-5 and grows to its own scale (10% a measurement at
    most: about 220 steps to 1e-2 on the default schedule), then falls once the batches'
    noise, not the fit, sets the slope the measurements see; the averaged weights fit the
    full batch to the noise level (the start's loss is 6.4, the noise's 0.01)."""
    problem = LeastSquares.make(batch=32)
    w0, params, alphas, opt = run_adam(problem, 1000, False, "cpp")
    start = problem.loss(w0)
    opt.eval()
    end = problem.loss([p.detach().numpy() for p in params])
    assert max(alphas) > 1000 * alphas[0]
    assert alphas[-1] < 0.1 * max(alphas)
    assert end < 0.002 * start


@pytest.mark.parametrize("lookahead", ["swap", "inplace"])
def test_a_group_that_does_not_measure_stays_at_x_t_in_the_lookahead(lookahead):
    """Param groups on different schedules: on a step where only one group measures, the
    look-back evaluation sees the other group's parameters at x_t, bit for bit (its kept
    step may be an older one); where both measure, both look back."""
    model, X, Y = _mlp()
    first, second = model[0], model[2]
    opt = secant_ext.SecantAdam(
        [{"params": first.parameters(), "curvature_every": 1, "curvature_warmup": 0},
         {"params": second.parameters(), "curvature_every": 3, "curvature_warmup": 0}],
        backend="cpp", lr=30.0, lookahead=lookahead)
    closure = _closure(opt, model, X, Y)
    seen = {}

    def watching():
        if opt.in_lookahead:
            seen["second"] = second.weight.detach().clone()
            seen["first"] = first.weight.detach().clone()
        return closure()
    for step in range(1, 10):  # 1-based: the second group measures on steps 3, 6, 9
        seen.clear()
        before = (first.weight.detach().clone(), second.weight.detach().clone())
        opt.step(watching)
        if step == 1:
            assert not seen  # no group measures on the first step
            continue
        assert not torch.equal(seen["first"], before[0])  # the first group looks back
        if step % 3 == 0:
            assert not torch.equal(seen["second"], before[1]), step
        else:
            assert torch.equal(seen["second"], before[1]), step
