"""Faults and bad input (issue 6): a clear error, and nothing lost."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import secant_ext

BACKENDS = ["reference", "cpp"]


def snapshot(opt, params):
    """Parameters, gradients-free optimizer state and group state, cloned."""
    state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
             for k, s in opt.state_dict()["state"].items()}
    return [p.detach().clone() for p in params], state


def assert_same(a, b):
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for n in sa[k]:
            assert torch.equal(sa[k][n], sb[k][n]), (k, n)


def quadratic(opt, params, poison=None):
    """closure and probe closure of sum_i |p_i|^2 with optional poisoning:
    poison = (which call: 'train'|'probe'|'lookahead', value)."""
    calls = {"train": 0, "probe": 0}

    def loss_of():
        return sum(((p - 0.5) ** 2).sum() for p in params)

    def train():
        opt.zero_grad()
        calls["train"] += 1
        loss = loss_of()
        loss.backward()
        if poison and poison[0] == "train" and calls["train"] == 1:
            params[0].grad[0] = poison[1]
        if poison and poison[0] == "lookahead" and calls["train"] == 2:
            params[-1].grad.view(-1)[-1] = poison[1]
        return loss

    def probe():
        opt.zero_grad()
        calls["probe"] += 1
        loss = 0.5 * loss_of()
        loss.backward()
        if poison and poison[0] == "probe" and calls["probe"] == 1:
            params[0].grad[1] = poison[1]
        return loss
    return train, probe


def fresh(cls=secant_ext.SecantSGDM, backend="reference", **kw):
    params = [torch.randn(5, generator=torch.Generator().manual_seed(0)).requires_grad_(),
              torch.randn(2, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()]
    return params, cls(params, backend=backend, **kw)


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


class Boom(Exception):
    pass


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("call", ["train", "probe", "lookahead-probe", "lookahead-train"])
def test_closure_that_raises_leaves_everything_at_x_t(call, exc, backend):
    params, opt = fresh(backend=backend)
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


# --- bad input -------------------------------------------------------------------------

def test_sparse_gradient_is_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = secant_ext.SecantSGD(emb.parameters(), backend="reference")

    def closure():
        opt.zero_grad()
        loss = emb(torch.tensor([1, 2])).sum()
        loss.backward()
        return loss
    with pytest.raises(ValueError, match="sparse gradients"):
        opt.step(closure)


@pytest.mark.parametrize("make,match", [
    (lambda: [torch.zeros(2, dtype=torch.complex64, requires_grad=True)], "complex"),
    (lambda: [torch.zeros(2, requires_grad=True), torch.zeros(2, device="meta")],
     "one device"),
    (lambda: [torch.zeros(2, dtype=torch.int64)], "floating point"),
])
def test_bad_parameters_give_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        secant_ext.SecantSGD(make(), backend="reference")


def test_same_parameter_twice_is_refused():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="same parameter twice"), \
            pytest.warns(UserWarning, match="duplicate"):
        secant_ext.SecantSGD([p, p], backend="reference")


def test_empty_parameter_list_is_refused():
    with pytest.raises(ValueError, match="empty parameter list"):
        secant_ext.SecantSGD([], backend="reference")


def test_parameters_without_gradient_are_left_alone():
    used = torch.ones(3, requires_grad=True)
    frozen = torch.ones(3, requires_grad=False)
    unused = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGD([used, frozen, unused], backend="reference")

    def closure():
        opt.zero_grad()
        loss = (used ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    assert torch.equal(frozen, torch.ones(3)) and torch.equal(unused.detach(), torch.ones(3))
    assert not torch.equal(used.detach(), torch.ones(3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["transposed", "channels_last", "strided", "0-dim"])
def test_layouts_match_contiguous(layout, backend):
    """Non-contiguous, channels_last, strided-view and 0-dim parameters step exactly like
    contiguous copies of themselves."""
    torch.manual_seed(0)
    base = {"transposed": lambda: torch.randn(5, 7).t(),
            "channels_last": lambda: torch.randn(2, 3, 4, 5).to(
                memory_format=torch.channels_last),
            "strided": lambda: torch.randn(6, 8)[:, ::2].detach(),
            "0-dim": lambda: torch.randn(())}[layout]()
    plain = base.contiguous().clone().requires_grad_()
    odd = base.clone(memory_format=torch.preserve_format) if layout != "strided" else base
    odd.requires_grad_()
    target = torch.randn(base.shape)

    def run(p):
        opt = secant_ext.SecantSGDM([p], backend=backend)

        def closure():
            opt.zero_grad()
            loss = ((p - target) ** 4).sum()
            loss.backward()
            return loss
        for _ in range(3):
            opt.step(closure)
        return p.detach()
    torch.testing.assert_close(run(odd), run(plain), rtol=1e-6, atol=1e-6)


def test_closure_returning_none_is_refused():
    p = torch.ones(2, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")

    def closure():
        opt.zero_grad()
        (p ** 2).sum().backward()
    with pytest.raises(TypeError, match="returned None"):
        opt.step(closure)


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], backend="triton")


def test_cpp_backend_without_extension(monkeypatch):
    from secant_ext import _backends
    monkeypatch.setattr(_backends, "cpp_available", lambda: False)
    with pytest.raises(ValueError, match="not built"):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], backend="cpp")


# --- checkpoints -----------------------------------------------------------------------

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
        del group["sign_scale"], group["nonfinite"]
    for st in sd["state"].values():
        st.pop("secant_state", None)
    fresh_opt = secant_ext.SecantSGDM(p, backend="reference")
    fresh_opt.load_state_dict(sd)
    assert fresh_opt.param_groups[0]["nonfinite"] == "skip"
    fresh_opt.step(train)
    assert fresh_opt.last_stats.step.item() == 1  # the group state starts afresh


# --- determinism -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_bits(backend):
    def run():
        torch.manual_seed(123)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2),
                                    torch.nn.ReLU(), torch.nn.Linear(16, 1))
        X, Y = torch.randn(32, 8), torch.randn(32, 1)
        opt = secant_ext.SecantSGDM(model.parameters(), backend=backend)

        def closure():
            opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward()
            return loss
        for _ in range(10):
            opt.step(closure)
        return [p.detach().clone() for p in model.parameters()]
    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


def test_cpp_bits_do_not_depend_on_thread_count():
    def run(threads):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            g = torch.Generator().manual_seed(7)
            params = [torch.randn(n, generator=g).requires_grad_() for n in (100_003, 65_537, 5)]
            target = [torch.randn(p.shape, generator=g) for p in params]
            opt = secant_ext.SecantSGDM(params, backend="cpp")

            def closure():
                opt.zero_grad()
                loss = sum(((p - t) ** 4).sum() for p, t in zip(params, target))
                loss.backward()
                return loss
            for _ in range(5):
                opt.step(closure)
            return [p.detach().clone() for p in params], opt.last_stats.dot.clone()
        finally:
            torch.set_num_threads(old)
    (p1, d1), (p2, d2) = run(1), run(2)
    assert torch.equal(d1, d2)
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)


# --- mixed precision -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_model_reaches_the_fp32_loss(backend):
    """200 steps of A-SGD on least squares in bf16 end within the loss that bf16 rounding
    of the weights alone costs: the fp32 solution rounded to bf16 (relative error 2^-9 per
    weight) has a loss excess of about |X w|^2 2^-18 * 2; we allow 4x that plus the fp32
    run's own loss, measured, not guessed."""
    torch.manual_seed(0)
    X = torch.randn(256, 16)
    w_true = torch.randn(16, 1)
    Y = X @ w_true + 0.01 * torch.randn(256, 1)

    def run(dtype):
        w = torch.zeros(16, 1, dtype=dtype, requires_grad=True)
        opt = secant_ext.SecantSGD([w], backend=backend)

        def closure():
            opt.zero_grad()
            loss = ((X.to(dtype) @ w - Y.to(dtype)).float() ** 2).mean()
            loss.backward()
            return loss
        for _ in range(200):
            opt.step(closure)
        return w.detach().float()
    w32, w16 = run(torch.float32), run(torch.bfloat16)
    loss = lambda w: ((X @ w - Y) ** 2).mean().item()  # noqa: E731
    rounded = loss(w32.bfloat16().float())
    assert loss(w16) <= loss(w32) + 4 * max(rounded - loss(w32), (X @ w32).pow(2).mean().item()
                                              * 2 ** -18)


def test_autocast_inside_the_closure():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    X, Y = torch.randn(64, 8), torch.randn(64, 1)
    opt = secant_ext.SecantSGD(model.parameters(), backend="reference")

    def closure():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ((model(X).float() - Y) ** 2).mean()
        loss.backward()
        return loss
    first = opt.step(closure).item()
    for _ in range(30):
        last = opt.step(closure).item()
    assert last < 0.8 * first
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_grad_scaler_is_refused_clearly():
    """GradScaler cannot unscale the three gradient evaluations of a step: refused with a
    clear message whichever way the closure is passed, parameters untouched."""
    p = torch.ones(3, requires_grad=True)
    opt = secant_ext.SecantSGD([p], backend="reference")
    scaler = torch.amp.GradScaler("cpu", enabled=True)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        scaler.scale(loss).backward()
        return loss
    with pytest.raises(RuntimeError, match="[Cc]losure"):
        scaler.step(opt, closure=closure)
    closure()  # the usual pattern: scale and backward first, then scaler.step
    with pytest.raises(RuntimeError, match="GradScaler is not supported"):
        scaler.step(opt, closure)
    assert torch.equal(p.detach(), torch.ones(3))


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
