"""The optimizers under Hugging Face ``accelerate`` (docs/INTEGRATIONS.md, 'accelerate'):
a loop on ``accelerator.accumulate`` that trains on every micro-batch equals docs/USAGE.md's
accumulation loop bit for bit; the loop that hands ``step`` a closure on every micro-batch,
which accelerate's wrapper calls on the syncing one only, is refused instead of training on
one micro-batch in k; the wrapper's lost return value and attributes are reached through
``.optimizer``. ``accelerate`` is a test dependency (requirements-dev.txt)."""
from __future__ import annotations

import pytest
import torch

accelerate = pytest.importorskip("accelerate")  # requirements-dev.txt installs it: never skips in CI
from accelerate.state import AcceleratorState, GradientState  # noqa: E402

import secant_ext  # noqa: E402

K = 2        # micro-batches per optimizer step
STEPS = 4    # optimizer steps


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps its state in process-wide singletons: each test starts and ends
    without one, so no accumulation setting leaks into other tests."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _batches():
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(4, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen))
            for _ in range(K * STEPS)]


def _loss(net, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(net(x), y)


def _readme_loop(batches):
    """docs/USAGE.md's accumulation loop: earlier micro-batches backward outside the step, the
    last one in a closure that does not zero, every loss divided by k."""
    net = _net()
    opt = secant_ext.SecantSGD(net.parameters())
    losses = []
    for start in range(0, len(batches), K):
        micro = batches[start:start + K]
        opt.zero_grad()
        for batch in micro[:-1]:
            (_loss(net, batch) / K).backward()

        def closure(batch=micro[-1]):
            loss = _loss(net, batch) / K
            loss.backward()
            return loss
        losses.append(opt.step(closure))
    return net, losses


def _prepared():
    accelerator = accelerate.Accelerator(gradient_accumulation_steps=K, cpu=True)
    net = _net()
    opt = secant_ext.SecantSGD(net.parameters())
    net, opt = accelerator.prepare(net, opt)
    return accelerator, net, opt


def test_accumulate_trains_on_every_micro_batch_as_the_readme_loop():
    """The documented pattern: ``accelerator.backward`` on the micro-batches that do not
    sync, ``step(closure)`` on the one that does (accelerate divides each loss by k)."""
    batches = _batches()
    accelerator, net, opt = _prepared()
    losses = []
    for batch in batches:
        with accelerator.accumulate(net):
            if accelerator.sync_gradients:
                def closure(batch=batch):
                    loss = _loss(net, batch)
                    accelerator.backward(loss)   # divides by gradient_accumulation_steps
                    return loss / K
                losses.append(opt.optimizer.step(closure))   # .optimizer: keeps the loss
                opt.zero_grad()
            else:
                accelerator.backward(_loss(net, batch))
    want_net, want_losses = _readme_loop(batches)
    assert len(losses) == STEPS
    for got, want in zip(net.parameters(), want_net.parameters()):
        assert torch.equal(got, want)
    assert [loss.item() for loss in losses] == [loss.item() for loss in want_losses]


def test_the_wrapper_step_also_works_but_drops_the_loss():
    """Through the wrapper, ``opt.step(closure)`` on the syncing micro-batch steps the same;
    accelerate's wrapper returns None, and ``opt.optimizer`` is the Secant optimizer."""
    batches = _batches()
    accelerator, net, opt = _prepared()
    for batch in batches:
        with accelerator.accumulate(net):
            if accelerator.sync_gradients:
                def closure(batch=batch):
                    loss = _loss(net, batch)
                    accelerator.backward(loss)
                    return loss / K
                assert opt.step(closure) is None
                opt.zero_grad()
            else:
                accelerator.backward(_loss(net, batch))
    want_net, _ = _readme_loop(batches)
    for got, want in zip(net.parameters(), want_net.parameters()):
        assert torch.equal(got, want)
    assert isinstance(opt.optimizer, secant_ext.SecantSGD)
    assert int(opt.optimizer.last_stats.step) == STEPS
    assert not hasattr(opt, "last_stats")  # the wrapper hides it: reach it as opt.optimizer


def test_a_closure_on_every_micro_batch_is_refused_not_silently_halved():
    """The plain closure of docs/USAGE.md handed to the wrapper on every micro-batch: accelerate
    skips the call on the micro-batches that do not sync, so the first step would hold one
    micro-batch's gradient in K. It raises instead, and the parameters do not move."""
    accelerator, net, opt = _prepared()
    before = [p.detach().clone() for p in net.parameters()]
    calls = []
    with pytest.raises(RuntimeError, match=rf"trains on 1 in {K}"):
        for batch in _batches():
            with accelerator.accumulate(net):
                def closure(batch=batch):
                    calls.append(batch)
                    opt.zero_grad()
                    loss = _loss(net, batch)
                    accelerator.backward(loss)
                    return loss
                opt.step(closure)
    assert len(calls) == 1   # the first micro-batch's closure never ran
    for got, want in zip(net.parameters(), before):
        assert torch.equal(got, want)


def test_a_closure_that_zeroes_discards_the_earlier_micro_batches_and_is_refused():
    accelerator, net, opt = _prepared()
    with pytest.raises(RuntimeError, match="gradient_accumulation_steps=2"):
        for batch in _batches():
            with accelerator.accumulate(net):
                if accelerator.sync_gradients:
                    def closure(batch=batch):
                        opt.optimizer.zero_grad()   # discards the earlier micro-batch
                        loss = _loss(net, batch)
                        accelerator.backward(loss)
                        return loss
                    opt.step(closure)
                else:
                    accelerator.backward(_loss(net, batch))


def test_without_accumulation_the_wrapper_steps_every_batch():
    accelerator = accelerate.Accelerator(cpu=True)
    net = _net()
    net, opt = accelerator.prepare(net, secant_ext.SecantSGD(net.parameters()))
    batches = _batches()[:3]
    for batch in batches:
        def closure(batch=batch):
            opt.zero_grad()
            loss = _loss(net, batch)
            accelerator.backward(loss)
            return loss
        opt.step(closure)
    ref = _net()
    ref_opt = secant_ext.SecantSGD(ref.parameters())
    for batch in batches:
        def ref_closure(batch=batch):
            ref_opt.zero_grad()
            loss = _loss(ref, batch)
            loss.backward()
            return loss
        ref_opt.step(ref_closure)
    for got, want in zip(net.parameters(), ref.parameters()):
        assert torch.equal(got, want)
