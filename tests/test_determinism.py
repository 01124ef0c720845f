"""The same seed gives the same bits, and the C++ bits do not depend on the thread count."""
from __future__ import annotations

import pytest
import torch

import secant_ext
from fault_helpers import BACKENDS


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
