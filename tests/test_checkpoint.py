"""Checkpoints: state_dict saved mid-run resumes bit for bit (in this process and in a new
one), deepcopy and pickle keep the state, and state dicts that do not fit are refused
while old ones without the newer keys still load."""
from __future__ import annotations

import copy
import io
import itertools
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import secant_ext
from secant_ext import _layout as layout
from fault_helpers import BACKENDS, quadratic
from independent import LeastSquares
from test_optimizer import VARIANTS, make_closures, torch_problem


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["sgd", "sgdm-nesterov-wd", "signum"])
def test_resume_is_bitwise_identical(variant, backend):
    """state_dict saved at step 20 and loaded into a fresh optimizer over fresh parameters
    continues bit for bit like the uninterrupted run (float32, so rounding would show)."""
    cls, kwargs, _ = VARIANTS[variant]
    problem = LeastSquares.make(seed=5)

    def build(params_from=None):
        _, params, X, Y = torch_problem(problem, torch.float32)
        if params_from is not None:
            with torch.no_grad():
                for p, q in zip(params, params_from):
                    p.copy_(q)
        opt = cls(params, backend=backend, **kwargs)
        t = [0]
        return params, opt, t, make_closures(opt, params, X, Y, problem, t)

    params, opt, t, (closure, probe) = build()
    for t[0] in range(40):
        opt.step(closure, probe)
    straight = [p.detach().clone() for p in params]

    params, opt, t, (closure, probe) = build()
    for t[0] in range(20):
        opt.step(closure, probe)
    buffer = io.BytesIO()
    torch.save({"model": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    params, opt, t, (closure, probe) = build(saved["model"])
    opt.load_state_dict(saved["opt"])
    for t[0] in range(20, 40):
        opt.step(closure, probe)
    for a, b in zip(params, straight):
        assert torch.equal(a.detach(), b)
    assert opt.last_stats.step.item() == 40


CHECKPOINT_SCRIPT = textwrap.dedent("""
    import sys, torch, secant_ext
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    X, Y = torch.randn(64, 6), torch.randn(64, 1)
    opt = secant_ext.SecantSGDM(model.parameters(), backend=sys.argv[1])
    def closure(t):
        def c():
            opt.zero_grad()
            rows = slice((t * 16) % 64, (t * 16) % 64 + 16)
            loss = ((model(X[rows]) - Y[rows]) ** 2).mean()
            loss.backward()
            return loss
        return c
    mode, path = sys.argv[2], sys.argv[3]
    start, stop = {"straight": (0, 30), "first": (0, 15), "second": (15, 30)}[mode]
    if mode == "second":
        ck = torch.load(path)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"])
    for t in range(start, stop):
        opt.step(closure(t))
    out = path if mode == "first" else path + "." + mode
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, out)
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_resumes_bitwise_in_a_new_process(tmp_path, backend):
    script = tmp_path / "run.py"
    script.write_text(CHECKPOINT_SCRIPT)
    ck = str(tmp_path / "ck.pt")
    # the new process imports the same secant_ext as this one, installed or not
    root = os.path.dirname(os.path.dirname(os.path.abspath(secant_ext.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for mode in ("straight", "first", "second"):
        subprocess.run([sys.executable, str(script), backend, mode, ck], check=True, env=env)
    straight = torch.load(ck + ".straight")["model"]
    resumed = torch.load(ck + ".second")["model"]
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_state_dict_from_another_model_is_refused():
    a = [torch.ones(3, requires_grad=True)]
    b = [torch.ones(4, requires_grad=True)]
    opt_a = secant_ext.SecantSGDM(a, backend="reference")
    _, (train, _) = None, quadratic(opt_a, a)
    opt_a.step(train)
    opt_b = secant_ext.SecantSGDM(b, backend="reference")
    with pytest.raises(ValueError, match=r"does not fit.*\(3,\).*\(4,\)"):
        opt_b.load_state_dict(opt_a.state_dict())
    opt_c = secant_ext.SecantSGDM(a + b, backend="reference")
    with pytest.raises(ValueError, match="size"):
        opt_c.load_state_dict(opt_a.state_dict())


def test_old_state_dict_without_new_keys_still_loads():
    p = [torch.ones(3, requires_grad=True)]
    opt = secant_ext.SecantSGDM(p, backend="reference")
    train, _ = quadratic(opt, p)
    opt.step(train)
    sd = opt.state_dict()
    for group in sd["param_groups"]:
        del group["lr"], group["nonfinite"]
    for st in sd["state"].values():
        st.pop("secant_state", None)
    fresh_opt = secant_ext.SecantSGDM(p, backend="reference")
    fresh_opt.load_state_dict(sd)
    assert fresh_opt.param_groups[0]["nonfinite"] == "skip"
    assert fresh_opt.param_groups[0]["lr"] == 1.0
    fresh_opt.step(train)
    assert fresh_opt.last_stats.step.item() == 1  # the group state starts afresh


@pytest.mark.parametrize("saved_size", [12, 13, 16, 21, 23, 24])
def test_group_state_of_older_versions_loads(saved_size):
    """Checkpoints of earlier versions hold a shorter group state (12 fields before the
    stalled counter, 13 before lr and clipping, 16 before the alpha carry): it loads with its values kept, the new
    fields at their initial values (the step size at the saved alpha), and the step carries
    on from there."""
    p = [torch.ones(3, requires_grad=True)]
    opt = secant_ext.SecantSGDM(p, backend="reference", lookahead="swap")
    train, _ = quadratic(opt, p)
    opt.step(train)
    opt.step(train)
    sd = opt.state_dict()
    (st,) = [v for v in sd["state"].values() if "secant_state" in v]
    full = st["secant_state"].clone()
    assert full.numel() == layout.STATE_SIZE > saved_size
    st["secant_state"] = full[:saved_size].clone()
    for group in sd["param_groups"]:
        del group["lookahead"], group["lr"], group["max_grad_norm"]
    fresh_opt = secant_ext.SecantSGDM(p, backend="reference")
    fresh_opt.load_state_dict(sd)
    loaded = fresh_opt._group_state(fresh_opt.param_groups[0])
    assert loaded.dtype == torch.float64 and torch.equal(loaded[:saved_size], full[:saved_size])
    initial = layout.initial_state_values()
    for field in range(saved_size, layout.STATE_SIZE):
        want = full[layout.ALPHA].item() if field == layout.STEP_SIZE else initial[field]

        assert loaded[field].item() == want, field
    group = fresh_opt.param_groups[0]
    assert (group["lookahead"], group["lr"], group["max_grad_norm"]) == ("auto", 1.0, None)
    fresh_opt.step(train)
    assert fresh_opt.last_stats.step.item() == 3


def test_pickle_and_deepcopy_keep_state():
    p = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGDM([p], backend="reference")

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    clone = copy.deepcopy(opt)
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for (k1, v1), (k2, v2) in itertools.zip_longest(
            opt.state_dict()["state"].items(), clone.state_dict()["state"].items()):
        assert k1 == k2 and all(torch.equal(v1[k], v2[k]) for k in v1)


def _mlp_run(opt_factory, steps, split=None, eval_at_split=False):
    """Steps of a small MLP; at ``split`` the optimizer is saved (in eval mode if asked,
    with the model's weights as they are then) and a new model and optimizer resume from
    the saved bits, as a trainer that saves a checkpoint at an evaluation would."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randn(32, 6, generator=gen), torch.randn(32, 3, generator=gen)
    opt = opt_factory(model.parameters())

    def closure():
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        loss.backward()
        return loss
    for t in range(steps):
        if t == split:
            if eval_at_split:
                opt.eval()
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            torch.manual_seed(5)
            model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                        torch.nn.Linear(16, 3))
            model.load_state_dict(saved["model"])
            opt = opt_factory(model.parameters())
            opt.load_state_dict(copy.deepcopy(saved["opt"]))  # it keeps the tensors it gets
            opt.train()
        opt.step(closure)
    return model, opt, (saved if split is not None else None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_with_curvature_every_continues_bit_for_bit(backend):
    """The clock that decides which steps measure is in the state dict: a resumed run
    measures on the same steps and gives the same bits."""
    factory = lambda p: secant_ext.SecantSGD(p, curvature_every=4, curvature_warmup=2,  # noqa: E731
                                             backend=backend)
    whole, whole_opt, _ = _mlp_run(factory, 11)
    resumed, resumed_opt, saved = _mlp_run(factory, 11, split=5)
    assert saved["opt"]["secant_curvature_clock"] == 5
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert resumed_opt.last_stats.measured.item() == whole_opt.last_stats.measured.item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_saved_in_eval_mode_resumes_the_training_iterate(backend):
    """Saved between eval() and train() (the model holds the averages): the state dict holds
    each parameter's training iterate, the loaded optimizer is in eval mode, and train()
    puts the iterate back; the run continues bit for bit. The saved model is the averages."""
    factory = lambda p: secant_ext.SecantSGDM(p, average=True, backend=backend)  # noqa: E731
    whole, whole_opt, _ = _mlp_run(factory, 7)
    resumed, resumed_opt, saved = _mlp_run(factory, 7, split=4, eval_at_split=True)
    for i, (name, w) in enumerate(saved["model"].items()):
        state = saved["opt"]["state"][i]
        assert torch.equal(w, state["average_buffer"]), name
        assert not torch.equal(w, state["training_iterate"]), name
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    whole_opt.eval()
    resumed_opt.eval()
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_state_dict_in_eval_mode_leaves_the_optimizer_state_alone():
    p = torch.nn.Parameter(torch.ones(3))
    opt = secant_ext.SecantSGD([p], average=True, backend="reference")
    train, _ = quadratic(opt, [p])
    opt.step(train)
    opt.step(train)
    opt.eval()
    sd = opt.state_dict()
    assert "training_iterate" in sd["state"][0]
    assert "training_iterate" not in opt.state[p]
    opt.train()
    assert "training_iterate" not in opt.state_dict()["state"][0]
