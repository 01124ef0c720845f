"""Mixed precision: a bf16 model reaches the fp32 loss, autocast inside the closure works,
GradScaler is refused clearly."""
from __future__ import annotations

import pytest
import torch

import secant_ext
from fault_helpers import BACKENDS


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
