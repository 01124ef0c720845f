"""The generic properties PyTorch's own optimizer suite (``TestOptimRenewed`` in PyTorch's
test/test_optim.py, run for closure-only optimizers the way it runs LBFGS) checks, re-done
here with our own helpers so they run without PyTorch's test files: state_dict round trips
and torch.save, deepcopy, per-group options, hooks (step, state_dict, load_state_dict),
zero_grad, parameters without gradients, dtype changes through a checkpoint, named
parameters, ``lr`` in every param group and its schedulers, complex parameters, the errors
torch expects. The one deliberate difference: a parameter listed twice in a group is
refused (torch warns)."""
from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                   register_optimizer_step_pre_hook)

from secant_ext import SecantSGD, SecantSGDM, SecantSignSGD

VARIANTS = {
    "sgd": (SecantSGD, {}),
    "sgd-wd": (SecantSGD, {"weight_decay": 0.1}),
    "sgdm": (SecantSGDM, {}),
    "sgdm-nesterov-wd": (SecantSGDM, {"nesterov": True, "weight_decay": 0.1}),
    "signsgd": (SecantSignSGD, {}),
    "signum": (SecantSignSGD, {"momentum": 0.9}),
}
ALL = pytest.mark.parametrize("variant", list(VARIANTS))
ONE_PER_CLASS = pytest.mark.parametrize("variant", ["sgd", "sgdm", "signum"])

# -- helpers ---------------------------------------------------------------------------
def problem(dtype=torch.float32, seed=0, contiguous=True):
    """A small least-squares problem: (weight, bias) parameters and the data."""
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        w = torch.randn(4, 3, generator=g, dtype=dtype)
        b = torch.randn(4, generator=g, dtype=dtype)
    else:  # strided views, as torch's non-contiguous case
        w = torch.randn(4, 3, 2, generator=g, dtype=dtype)[..., 0]
        b = torch.randn(4, 2, generator=g, dtype=dtype)[..., 0]
    x = torch.randn(8, 3, generator=g, dtype=dtype)
    y = torch.randn(8, 4, generator=g, dtype=dtype)
    return [torch.nn.Parameter(w), torch.nn.Parameter(b)], (x, y)


def loss_fn(params, data):
    w, b = params
    x, y = data
    return ((x @ w.T + b - y) ** 2).mean()


def closure_for(opt, params, data):
    def closure():
        opt.zero_grad()
        loss = loss_fn(params, data)
        loss.backward()
        return loss
    return closure


def build(variant, params, **extra):
    cls, kwargs = VARIANTS[variant]
    return cls(params, **{**kwargs, **extra})


def clone_params(params, dtype=None):
    with torch.no_grad():
        return [torch.nn.Parameter(p.detach().clone().to(dtype or p.dtype)) for p in params]


def run(opt, params, data, steps):
    closure = closure_for(opt, params, data)
    for _ in range(steps):
        opt.step(closure)


def assert_bitwise(a, b):
    for p, q in zip(a, b):
        assert p.dtype == q.dtype and torch.equal(p, q), (p, q)


def assert_same_state_dict(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        sa, sb = a["state"][k], b["state"][k]
        assert sa.keys() == sb.keys(), k
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


# -- direction, contiguity, dtypes ----------------------------------------------------------
@ALL
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_loss_goes_down(variant, dtype, contiguous):
    params, data = problem(dtype, contiguous=contiguous)
    opt = build(variant, params)
    before = loss_fn(params, data).item()
    run(opt, params, data, 20)
    assert loss_fn(params, data).item() < before
    assert all(p.dtype == dtype for p in params)


@ALL
def test_step_returns_the_closure_loss_at_x_t(variant):
    params, data = problem()
    opt = build(variant, params)
    expected = loss_fn(params, data).item()
    assert opt.step(closure_for(opt, params, data)).item() == expected


@ALL
def test_step_without_closure_is_refused(variant):
    params, data = problem()
    opt = build(variant, params)
    loss_fn(params, data).backward()
    before = clone_params(params)
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    assert_bitwise(params, before)


# -- state_dict ------------------------------------------------------------------------------
@ALL
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dict_round_trip_then_identical_steps(variant, dtype):
    """torch's test_state_dict_deterministic: load into a fresh optimizer over equal (not
    identical) parameters, then both take the same steps bit for bit, the loaded dict is
    not modified, and the two state dicts stay equal."""
    params, data = problem(dtype)
    opt = build(variant, params)
    run(opt, params, data, 5)
    params_c = clone_params(params)
    opt_c = build(variant, params_c)
    saved = copy.deepcopy(opt.state_dict())
    to_load = copy.deepcopy(saved)
    opt_c.load_state_dict(to_load)
    assert_same_state_dict(to_load, saved)
    for _ in range(5):
        opt.step(closure_for(opt, params, data))
        opt_c.step(closure_for(opt_c, params_c, data))
        assert_bitwise(params, params_c)
    assert_same_state_dict(opt.state_dict(), opt_c.state_dict())


@ONE_PER_CLASS
def test_state_dict_torch_save_and_weights_only_load(variant):
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 3)
    sd = opt.state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    assert_same_state_dict(torch.load(buf, weights_only=True), sd)
    buf.seek(0)
    assert_same_state_dict(torch.load(buf, weights_only=False), sd)


@ONE_PER_CLASS
def test_state_dict_loads_without_newer_group_options(variant):
    """torch's test_can_load_older_state_dict: a checkpoint whose param groups lack options
    added after the first release loads, gets the old defaults, and steps as the full
    checkpoint does."""
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 3)
    full = copy.deepcopy(opt.state_dict())
    old = copy.deepcopy(full)
    for group in old["param_groups"]:
        del group["lookahead"]
        del group["nonfinite"]
    params_c = clone_params(params)
    opt_c = build(variant, params_c)
    opt.load_state_dict(old)
    opt_c.load_state_dict(full)
    assert opt.param_groups[0]["lookahead"] == "auto"
    assert opt.param_groups[0]["nonfinite"] == "skip"
    run(opt, params, data, 3)
    run(opt_c, params_c, data, 3)
    assert_bitwise(params, params_c)


@pytest.mark.parametrize("named", [(True, False), (False, True), (True, True)])
def test_named_parameters_state_dict(named):
    """torch's test_can_load_from_to_named_state_dict: named and unnamed optimizers load
    each other's state dicts; the names are kept and the next steps agree bit for bit."""
    named0, named1 = named
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x = torch.randn(8, 3)

    def closure_of(opt, m):
        def closure():
            opt.zero_grad()
            loss = m(x).pow(2).mean()
            loss.backward()
            return loss
        return closure

    opt = SecantSGDM(model.named_parameters() if named0 else model.parameters())
    for _ in range(3):
        opt.step(closure_of(opt, model))
    model_c = copy.deepcopy(model)
    opt_c = SecantSGDM(model_c.named_parameters() if named1 else model_c.parameters())
    opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt.step(closure_of(opt, model))
    opt_c.step(closure_of(opt_c, model_c))
    assert_bitwise(list(model.parameters()), list(model_c.parameters()))
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert opt_c.state_dict()["param_groups"][0].get("param_names") == names


@pytest.mark.parametrize("variant", ["sgdm", "signum"])
@pytest.mark.parametrize("src,dst", [(torch.float32, torch.float64),
                                     (torch.float64, torch.float32)])
def test_load_state_dict_into_other_dtype(variant, src, dst):
    """The per-parameter state follows the new parameters' dtype (as torch's base class
    casts it); the group state stays float64 with the saved values; steps continue close
    to the run that never changed dtype."""
    params, data = problem(src)
    opt = build(variant, params)
    run(opt, params, data, 4)
    saved = copy.deepcopy(opt.state_dict())
    params_d = clone_params(params, dst)
    opt_d = build(variant, params_d)
    opt_d.load_state_dict(copy.deepcopy(saved))
    for p in params_d:
        buf = opt_d.state[p].get("momentum_buffer")
        assert buf is not None and buf.dtype == dst and buf.shape == p.shape
    anchors = [k for k, v in saved["state"].items() if "secant_state" in v]
    assert anchors
    for k in anchors:
        st = opt_d.state[params_d[k]]["secant_state"]
        assert st.dtype == torch.float64
        assert torch.equal(st, saved["state"][k]["secant_state"])
    data_d = tuple(t.to(dst) for t in data)
    for _ in range(3):
        opt.step(closure_for(opt, params, data))
        opt_d.step(closure_for(opt_d, params_d, data_d))
    for p, q in zip(params, params_d):
        torch.testing.assert_close(q.to(src), p, rtol=1e-4, atol=1e-5)


# -- deepcopy, repr -----------------------------------------------------------------------------
@ALL
def test_deepcopy_keeps_public_attrs_and_steps_identically(variant):
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 3)
    params_c, opt_c = copy.deepcopy((params, opt))
    public = lambda o: {k for k in vars(o) if not k.startswith("_")}  # noqa: E731
    assert public(opt_c) == public(opt)
    assert opt_c.param_groups[0]["params"][0] is params_c[0]
    for _ in range(3):
        opt.step(closure_for(opt, params, data))
        opt_c.step(closure_for(opt_c, params_c, data))
    assert_bitwise(params, params_c)


@ALL
def test_repr_names_the_class_and_options(variant):
    params, _ = problem()
    opt = build(variant, params)
    text = repr(opt)
    assert type(opt).__name__ in text and "weight_decay" in text


# -- param groups ---------------------------------------------------------------------------------
@ONE_PER_CLASS
def test_param_groups_with_different_options(variant):
    """torch's test_param_groups_weight_decay, driven by closures: per-group options are
    kept in their group, the others come from the defaults, and the loss goes down."""
    params, data = problem()
    w, b = params
    opt = build(variant, [{"params": [w], "weight_decay": 0.5}, {"params": [b]}])
    assert opt.param_groups[0]["weight_decay"] == 0.5
    assert opt.param_groups[1]["weight_decay"] == opt.defaults["weight_decay"]
    before = loss_fn(params, data).item()
    run(opt, params, data, 20)
    assert loss_fn(params, data).item() < before

    # The option acts: the same run without it moves w differently.
    params_ref, _ = problem()
    opt_ref = build(variant, [{"params": [params_ref[0]]}, {"params": [params_ref[1]]}])
    run(opt_ref, params_ref, data, 20)
    assert not torch.equal(params_ref[0], w)


@ONE_PER_CLASS
def test_add_param_group_is_stepped(variant):
    params, data = problem()
    w, b = params
    opt = build(variant, [w])
    opt.add_param_group({"params": [b], "weight_decay": 0.2})
    assert opt.param_groups[1]["weight_decay"] == 0.2
    before = b.detach().clone()
    run(opt, params, data, 2)
    assert not torch.equal(b, before)


# -- parameters without gradients, zero gradients ----------------------------------------------------
@ALL
def test_params_without_grad_are_left_untouched(variant):
    """A parameter with requires_grad=False (its grad stays None) does not move and gets
    no momentum, even with weight decay; the others still train."""
    params, data = problem()
    w, b = params
    b.requires_grad_(False)
    frozen = b.detach().clone()
    opt = build(variant, [w, b], weight_decay=0.3)
    before = loss_fn(params, data).item()
    run(opt, params, data, 5)
    assert torch.equal(b, frozen)
    assert "momentum_buffer" not in opt.state.get(b, {})
    assert loss_fn(params, data).item() < before


@ALL
def test_step_with_no_grads_at_all_is_a_noop(variant):
    """torch's test_step_is_noop_when_params_have_no_grad: nothing requires grad, the
    closure returns a constant; the step does not raise and nothing moves."""
    params = [torch.randn(2, 3), torch.randn(2, 3)]
    before = [p.clone() for p in params]
    opt = build(variant, params)
    opt.step(lambda: torch.tensor([1.0]))
    assert_bitwise(params, before)


@pytest.mark.parametrize("variant", ["sgd", "sgdm", "signsgd", "signum"])
def test_step_is_noop_for_zero_grads(variant):
    """torch's test_step_is_noop_for_zero_grads (no weight decay)."""
    p = torch.randn(5, 1, requires_grad=True)
    before = p.detach().clone()
    opt = build(variant, [p])

    def closure():
        p.grad = torch.zeros_like(p)
        return torch.tensor([1.0])
    opt.step(closure)
    assert torch.equal(p, before)


@ONE_PER_CLASS
def test_zero_grad_set_to_none(variant):
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 1)
    assert all(p.grad is not None for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    loss_fn(params, data).backward()
    opt.zero_grad(set_to_none=False)
    for p in params:
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()


# -- hooks --------------------------------------------------------------------------------------
@ALL
def test_step_hooks_run_once_per_step_in_order(variant):
    """torch's test_step_all_hooks / pre / post: global and local hooks run once per step
    (not once per closure call), in the order global pre, pre, post, global post; the pre
    hook sees x_t, the post hook the updated parameters; removed hooks stop."""
    params, data = problem()
    opt = build(variant, params)
    seen = []
    x0 = clone_params(params)

    def pre(o, args, kwargs):
        assert o is opt
        seen.append(("pre", torch.equal(params[0], x0[0])))

    def post(o, args, kwargs):
        seen.append(("post", torch.equal(params[0], x0[0])))

    handles = [register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("gpre",))),
               opt.register_step_pre_hook(pre), opt.register_step_post_hook(post),
               register_optimizer_step_post_hook(lambda o, a, k: seen.append(("gpost",)))]
    try:
        calls = []
        inner = closure_for(opt, params, data)

        def closure():
            calls.append(1)
            return inner()
        opt.step(closure)
        assert seen == [("gpre",), ("pre", True), ("post", False), ("gpost",)]
        assert len(calls) >= 2  # the closure ran at x_t and at the lookahead point
    finally:
        for h in handles:
            h.remove()
    opt.step(closure_for(opt, params, data))
    assert len(seen) == 4


@ONE_PER_CLASS
def test_a_pre_hook_may_replace_the_steps_arguments(variant):
    """As torch.optim's step wrapper: a pre hook returning ``(args, kwargs)`` replaces them;
    any other value is refused."""
    params, data = problem()
    opt = build(variant, params)
    called = []

    def replacement():
        called.append(1)
        return closure_for(opt, params, data)()
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: ((args[0], replacement), kwargs))
    opt.step(closure_for(opt, params, data))
    assert len(called) >= 2  # the replacement ran, at x_t and at the lookahead point
    handle.remove()
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: "neither")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step(closure_for(opt, params, data))
    handle.remove()


@pytest.mark.parametrize("caller_grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("probe", [False, True], ids=["closure", "probe"])
def test_closures_run_with_gradients_and_the_callers_grad_mode_comes_back(caller_grad, probe):
    """As ``@torch.no_grad()`` on ``step`` and ``torch.enable_grad()`` around each closure
    would have it: every closure (and lookahead context) runs with gradients enabled, and
    the caller's grad mode is back after the step, also after a closure raised."""
    params, data = problem()
    opt = build("sgdm", params)
    seen = []
    closure = closure_for(opt, params, data)

    def recording(fn):
        def wrapped():
            seen.append(torch.is_grad_enabled())
            return fn()
        return wrapped

    class Context:
        def __enter__(self):
            seen.append(torch.is_grad_enabled())

        def __exit__(self, *exc):
            return False

    opt.register_lookahead_context(Context)
    kwargs = dict(probe_closure=recording(closure)) if probe else {}
    with torch.set_grad_enabled(caller_grad):
        opt.step(recording(closure), **kwargs)
        assert torch.is_grad_enabled() is caller_grad
        assert seen == [True] * (4 if probe else 3)  # the closures and the context

        def raising():
            raise ValueError("from the closure")
        for failing in ("closure", "lookahead"):
            calls = []

            def fails_at_lookahead():
                calls.append(1)
                if len(calls) == 2:
                    raise ValueError("from the lookahead")
                return closure()
            with pytest.raises(ValueError, match="from the"):
                opt.step(raising if failing == "closure" else fails_at_lookahead)
            assert torch.is_grad_enabled() is caller_grad


@ONE_PER_CLASS
def test_the_step_is_labelled_in_a_profile(variant):
    """``Optimizer.step#<class>.step`` in a profiler's trace, as torch.optim's optimizers
    label theirs (the label is entered only while a profiler runs)."""
    params, data = problem()
    opt = build(variant, params)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step(closure_for(opt, params, data))
    names = {e.name for e in prof.events()}
    assert f"Optimizer.step#{type(opt).__name__}.step" in names
    assert type(opt).step.hooked  # torch.optim does not wrap it a second time


@ONE_PER_CLASS
def test_state_dict_hooks(variant):
    """torch's test_state_dict_pre_hook / post_hook / pre_post_hook."""
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 1)
    opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("test", 1))

    def post(o, sd):
        sd["ran_pre"] = sd["state"].pop("test", None) == 1
        return sd
    opt.register_state_dict_post_hook(post)
    sd = opt.state_dict()
    assert sd["ran_pre"] and "test" not in sd["state"]
    assert any("secant_state" in s for s in sd["state"].values())


@ONE_PER_CLASS
def test_load_state_dict_pre_hooks_edit_or_replace_the_dict(variant):
    """torch's test_load_state_dict_pre_hook_and_prepend / pre_post_hook, on an option we
    have (weight_decay): a pre hook may edit the dict in place or return a new one, hooks
    registered with prepend=True run first, and the post hook sees the loaded groups."""
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 2)
    sd = opt.state_dict()

    def edit_in_place(o, d):
        d["param_groups"][0]["weight_decay"] = 0.002

    def replace(o, d):
        d = copy.deepcopy(d)
        d["param_groups"][0]["weight_decay"] = 0.003
        return d

    seen = []
    opt_c = build(variant, clone_params(params))
    opt_c.register_load_state_dict_pre_hook(edit_in_place)
    opt_c.register_load_state_dict_post_hook(lambda o: seen.append(
        o.param_groups[0]["weight_decay"]))
    opt_c.load_state_dict(copy.deepcopy(sd))
    assert opt_c.param_groups[0]["weight_decay"] == 0.002
    opt_c.register_load_state_dict_pre_hook(replace, prepend=True)
    opt_c.load_state_dict(copy.deepcopy(sd))
    assert opt_c.param_groups[0]["weight_decay"] == 0.002  # the in-place hook ran last
    opt_d = build(variant, clone_params(params))
    opt_d.register_load_state_dict_pre_hook(replace)
    opt_d.register_load_state_dict_post_hook(lambda o: seen.append(
        o.param_groups[0]["weight_decay"]))
    opt_d.load_state_dict(copy.deepcopy(sd))
    assert opt_d.param_groups[0]["weight_decay"] == 0.003
    assert seen == [0.002, 0.002, 0.003]


def _primed(variant):
    params, data = problem()
    opt = build(variant, params)
    run(opt, params, data, 2)
    return params, opt, copy.deepcopy(opt.state_dict())


def _group_states(state_dict):
    return {k: v["secant_state"] for k, v in state_dict["state"].items()
            if "secant_state" in v}


@ONE_PER_CLASS
def test_load_state_dict_post_hook_sees_the_restored_state(variant):
    """The post hook runs once the whole optimizer state is back, the group state too."""
    params, opt, sd = _primed(variant)
    seen = {}
    opt_c = build(variant, clone_params(params))

    def post(o):
        seen.update({i: o.state[p]["secant_state"].clone()
                     for i, p in enumerate(o.param_groups[0]["params"])
                     if i in _group_states(sd)})
    opt_c.register_load_state_dict_post_hook(post)
    opt_c.load_state_dict(copy.deepcopy(sd))
    assert seen.keys() == _group_states(sd).keys() and seen
    for k, st in _group_states(sd).items():
        assert torch.equal(seen[k], st)


@ONE_PER_CLASS
def test_load_state_dict_pre_hook_sees_the_group_state(variant):
    """A pre hook gets the state dict as saved, the group state included."""
    params, opt, sd = _primed(variant)
    seen = []
    opt_c = build(variant, clone_params(params))
    opt_c.register_load_state_dict_pre_hook(lambda o, d: seen.append(_group_states(d)))
    opt_c.load_state_dict(copy.deepcopy(sd))
    assert len(seen) == 1 and seen[0].keys() == _group_states(sd).keys() and seen[0]


@ONE_PER_CLASS
def test_load_state_dict_pre_hook_can_rewrite_the_group_state(variant):
    """The state dict a pre hook returns is the one loaded, its group state included."""
    params, opt, sd = _primed(variant)

    def rewrite(o, d):
        d = copy.deepcopy(d)
        for v in d["state"].values():
            if "secant_state" in v:
                v["secant_state"] = v["secant_state"] + 1.0
        return d
    opt_c = build(variant, clone_params(params))
    opt_c.register_load_state_dict_pre_hook(rewrite)
    opt_c.load_state_dict(copy.deepcopy(sd))
    loaded = _group_states(opt_c.state_dict())
    for k, st in _group_states(sd).items():
        assert torch.equal(loaded[k], st + 1.0)


# -- errors torch expects -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SecantSGD, SecantSGDM, SecantSignSGD])
def test_errors_torch_expects(cls):
    p = torch.nn.Parameter(torch.randn(1, 1))
    q = torch.nn.Parameter(torch.randn(1, 1))
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts"):
        cls(p)
    with pytest.raises(ValueError, match="more than one parameter group"):
        cls([{"params": p}, {"params": p}])
    with pytest.raises(ValueError, match="with/without names"):
        cls([("weight", p), q])
    with pytest.raises(ValueError, match="with/without names"):
        cls([{"params": [p]}, {"params": [("weight", q)]}])
    # Deliberately stricter than torch (which only warns): a parameter listed twice in one
    # group is refused, since it would be counted twice in the group's statistics.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own duplicate warning
        with pytest.raises(ValueError, match="same parameter twice"):
            cls([p, p])


# -- lr (being added) --------------------------------------------------------------------------------
def first_step(variant, dtype=torch.float64, **extra):
    params, data = problem(dtype)
    x0 = clone_params(params)
    opt = build(variant, params, **extra)
    opt.step(closure_for(opt, params, data))
    return [p.detach() - q.detach() for p, q in zip(params, x0)], opt


@ONE_PER_CLASS
def test_lr_is_in_defaults_and_every_param_group(variant):
    params, _ = problem()
    opt = build(variant, [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}])
    assert opt.defaults["lr"] == 1.0
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5]


@ONE_PER_CLASS
def test_lr_scales_the_step(variant):
    """The first step from the same point with lr=0.5 is half the lr=1 step (alpha is
    measured at x_t before lr applies, and the first momentum is the gradient)."""
    full, _ = first_step(variant)
    half, _ = first_step(variant, lr=0.5)
    for f, h in zip(full, half):
        torch.testing.assert_close(h, 0.5 * f, rtol=1e-9, atol=1e-12)


@ONE_PER_CLASS
def test_tensor_lr_matches_float_lr(variant):
    """torch's test_tensor_lr: a 0-dim tensor lr gives the same bits as the number."""
    a, _ = first_step(variant, dtype=torch.float32, lr=0.5)
    b, _ = first_step(variant, dtype=torch.float32, lr=torch.tensor(0.5))
    assert_bitwise(a, b)


@ONE_PER_CLASS
def test_param_group_with_lr_zero_is_untouched(variant):
    """torch's test_param_groups_lr, with a closure: a group with lr=0 does not move
    while the other group trains."""
    params, data = problem()
    irrelevant = torch.nn.Parameter(torch.randn(2))
    kept = irrelevant.detach().clone()
    opt = build(variant, [{"params": params}, {"params": [irrelevant], "lr": 0.0}])
    assert opt.defaults["lr"] == opt.param_groups[0]["lr"] == 1.0

    def closure():
        opt.zero_grad()
        loss = loss_fn(params, data) + (irrelevant ** 2).sum()
        loss.backward()
        return loss
    before = loss_fn(params, data).item()
    for _ in range(10):
        opt.step(closure)
    assert torch.equal(irrelevant, kept)
    assert loss_fn(params, data).item() < before


@ONE_PER_CLASS
def test_lr_schedulers_drive_the_groups(variant):
    """torch's test_forloop_goes_right_direction with_lrsched and
    test_param_group_with_lrscheduler_goes_right_direction."""
    params, data = problem()
    opt = build(variant, [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}])
    sched = StepLR(opt, step_size=1, gamma=0.5)
    plateau = ReduceLROnPlateau(opt)
    before = loss_fn(params, data).item()
    for _ in range(5):
        loss = opt.step(closure_for(opt, params, data))
        sched.step()
        plateau.step(loss.item())
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 ** 5, 0.5 ** 6])
    assert loss_fn(params, data).item() < before


@ONE_PER_CLASS
def test_load_state_dict_post_hook_reads_lr(variant):
    """torch's test_load_state_dict_post_hook reads param_groups[0]['lr']."""
    params, _ = problem()
    opt = build(variant, params)
    seen = []
    opt.register_load_state_dict_post_hook(lambda o: seen.append(o.param_groups[0]["lr"]))
    opt.load_state_dict(opt.state_dict())
    assert seen == [1.0]


# -- complex parameters (being added) ------------------------------------------------------------
@ONE_PER_CLASS
def test_complex_params_step_like_their_real_views(variant):
    """torch's test_complex: a complex parameter steps like its view_as_real twin (a real
    parameter alongside, as torch mixes them)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, dtype=torch.complex128, generator=g)
    r = torch.randn(3, dtype=torch.float64, generator=g)
    a = torch.randn(6, 4, dtype=torch.complex128, generator=g)
    t = torch.randn(6, dtype=torch.complex128, generator=g)
    zc = z.clone().requires_grad_()
    rc = r.clone().requires_grad_()
    zr = torch.view_as_real(z).clone().requires_grad_()
    rr = r.clone().requires_grad_()

    def loss(zz, rr_):
        return ((a @ zz).sum(-1) - t).abs().pow(2).sum() + (rr_ * rr_.sum()).sum()

    opt_c = build(variant, [zc, rc])
    opt_r = build(variant, [zr, rr])

    def closure_c():
        opt_c.zero_grad()
        value = loss(zc, rc)
        value.backward()
        return value

    def closure_r():
        opt_r.zero_grad()
        value = loss(torch.view_as_complex(zr), rr)
        value.backward()
        return value
    for _ in range(3):
        opt_c.step(closure_c)
        opt_r.step(closure_r)
    torch.testing.assert_close(torch.view_as_real(zc.detach()), zr.detach(), rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(rc.detach(), rr.detach(), rtol=1e-10, atol=1e-12)
