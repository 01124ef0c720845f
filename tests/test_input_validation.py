"""Bad input gets a clear error: sparse gradients, integer or mixed-device
parameters, duplicates, empty lists, backends that cannot run; parameters without a
gradient are left alone; non-contiguous layouts step like contiguous copies."""
from __future__ import annotations

import pytest
import torch

import secant_ext
from fault_helpers import BACKENDS


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
    (lambda: [torch.zeros(2, requires_grad=True), torch.zeros(2, device="meta")],
     "one device"),
    (lambda: [torch.zeros(2, dtype=torch.int64)], "floating point or complex"),
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


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], backend="triton")


def test_cpp_backend_without_extension(monkeypatch):
    from secant_ext import _backends
    monkeypatch.setattr(_backends, "cpp_available", lambda: False)
    with pytest.raises(ValueError, match="not built"):
        secant_ext.SecantSGD([torch.zeros(2, requires_grad=True)], backend="cpp")
