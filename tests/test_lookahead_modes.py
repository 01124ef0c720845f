"""The two ways of evaluating the closure at x + s (``lookahead="swap"`` / ``"inplace"``):
the same bits wherever both see the parameters, and only the in-place one where the
closure reads the parameters' own storage; the stalled-lookahead guard that tells them
apart."""
from __future__ import annotations

import warnings

import pytest
import torch

import secant_ext

VARIANTS = {
    "sgd": (secant_ext.SecantSGD, {}),
    "sgdm-nesterov-wd": (secant_ext.SecantSGDM, dict(nesterov=True, weight_decay=0.01)),
    "sign": (secant_ext.SecantSignSGD, {}),
    "signum": (secant_ext.SecantSignSGD, dict(momentum=0.9)),
}


def _mlp_run(cls, kwargs, lookahead, backend, probe, dtype, steps=8):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 2)).to(dtype)
    opt = cls(model.parameters(), backend=backend, lookahead=lookahead, **kwargs)
    gen = torch.Generator().manual_seed(1)
    alphas = []
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=gen).to(dtype), torch.randn(16, 2, generator=gen).to(dtype)

        def closure(rows=slice(None)):
            opt.zero_grad()
            loss = ((model(x[rows]) - y[rows]) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure, (lambda: closure(slice(0, 4))) if probe else None)
        alphas.append(opt.last_stats.alpha.clone())
    return [p.detach().clone() for p in model.parameters()], torch.stack(alphas), opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("probe", [False, True], ids=["no-probe", "probe"])
@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_inplace_gives_the_bits_of_the_swap(variant, backend, probe, dtype):
    """Both evaluate the closure at the same exactly rounded x + s and restore x_t exactly,
    so every later bit agrees."""
    cls, kwargs = VARIANTS[variant]
    p_swap, a_swap, _ = _mlp_run(cls, kwargs, "swap", backend, probe, dtype)
    p_inplace, a_inplace, opt = _mlp_run(cls, kwargs, "inplace", backend, probe, dtype)
    assert torch.equal(a_swap, a_inplace)
    for a, b in zip(p_swap, p_inplace):
        assert torch.equal(a, b)
    assert opt.last_stats.stalled_total.item() == 0


def test_auto_is_swap_for_plain_tensors():
    """Same bits as an explicit swap; the mode only changes for DTensor parameters (tested
    with FSDP2 in test_distributed.py)."""
    cls, kwargs = VARIANTS["sgd"]
    p_auto, a_auto, _ = _mlp_run(cls, kwargs, "auto", "cpp", False, torch.float32)
    p_swap, a_swap, _ = _mlp_run(cls, kwargs, "swap", "cpp", False, torch.float32)
    assert torch.equal(a_auto, a_swap) and all(map(torch.equal, p_auto, p_swap))


class CapturedQuadratic:
    """f(x) = 0.5 x^T A x - b^T x evaluated by code that captured the parameter's storage
    once (as a replayed CUDA graph or a wrapper holding the weights does): it reads the
    captured tensor, never ``p``, and writes the analytic gradient into ``p.grad``."""

    def __init__(self, p: torch.Tensor, seed=0):
        gen = torch.Generator().manual_seed(seed)
        m = torch.randn(p.numel(), p.numel(), generator=gen, dtype=p.dtype)
        self.A = m @ m.T / p.numel() + torch.eye(p.numel(), dtype=p.dtype)
        self.b = torch.randn(p.numel(), generator=gen, dtype=p.dtype)
        self.p, self.storage = p, p.data  # the storage as it was when captured

    def closure(self):
        x = self.storage
        self.p.grad = (self.A @ x - self.b).clone()
        return 0.5 * x @ self.A @ x - self.b @ x


def _captured_run(lookahead, steps=6):
    p = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p.requires_grad_()
    problem = CapturedQuadratic(p)
    opt = secant_ext.SecantSGD([p], backend="cpp", lookahead=lookahead)
    losses = [opt.step(problem.closure).item() for _ in range(steps)]
    return p.detach().clone(), losses, opt


def _plain_run(steps=6):
    """The same problem with a closure that reads ``p`` itself: what both modes must give."""
    p = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p.requires_grad_()
    problem = CapturedQuadratic(p)

    def closure():
        opt.zero_grad()
        loss = 0.5 * p @ problem.A @ p - problem.b @ p
        loss.backward()
        return loss
    opt = secant_ext.SecantSGD([p], backend="cpp")
    for _ in range(steps):
        opt.step(closure)
    return p.detach().clone(), opt


def test_storage_capturing_closure_needs_the_inplace_lookahead():
    """With the swap the captured storage still holds x: y == 0 exactly, every step is
    counted as stalled and alpha stays 1 (wrong). In place, the captured code sees x + s and
    the run equals the one whose closure reads the parameter."""
    want, opt_plain = _plain_run()
    got, _, opt = _captured_run("inplace")
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    assert opt.last_stats.stalled_total.item() == 0
    assert opt_plain.last_stats.alpha.item() < 0.9  # the curvature was really measured

    with pytest.warns(RuntimeWarning, match="lookahead='inplace'") as record:
        wrong, _, opt_swap = _captured_run("swap")
    assert sum("stalled_total" in str(w.message) for w in record) == 1, "warn once"
    assert opt_swap.last_stats.stalled_total.item() == 6
    assert opt_swap.last_stats.alpha.item() == 1.0
    assert not torch.allclose(wrong, want)


def test_stalled_warning_is_read_only_at_powers_of_two(monkeypatch):
    """The host reads the device counters after steps 1, 2, 4, 8, ... only (any read of a
    tensor's values to the host: ``item`` or ``tolist``)."""
    reads = []
    original_item, original_tolist = torch.Tensor.item, torch.Tensor.tolist

    def counting_item(self):
        reads.append(1)
        return original_item(self)

    def counting_tolist(self):
        reads.append(1)
        return original_tolist(self)
    p = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p.requires_grad_()

    def closure():
        opt.zero_grad()
        loss = (p ** 4).sum()
        loss.backward()
        return loss
    opt = secant_ext.SecantSGD([p], backend="cpp")
    steps_with_reads = []
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a curved loss never stalls
        for t in range(1, 17):
            before = len(reads)
            opt.step(closure)
            if len(reads) > before:
                steps_with_reads.append(t)
    assert steps_with_reads == [1, 2, 4, 8, 16]


def test_bad_lookahead_mode_is_refused():
    with pytest.raises(ValueError, match="lookahead must be one of"):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], lookahead="copy")
