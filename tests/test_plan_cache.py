"""The step keeps its buckets, buffers and momentum lists from one step to the next while
the parameters with a gradient and their storage stay the same: every change of those
plans anew, and the bits are those of an optimizer that plans every step."""
from __future__ import annotations

import pytest
import torch

import secant_ext
from secant_ext import _plan


def _run(forget_every_step, events, lookahead="swap"):
    torch.manual_seed(0)
    a = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    c = torch.randn(3, 2, requires_grad=True)
    opt = secant_ext.SecantSGDM([{"params": [a, b]}, {"params": [c], "lr": 0.5}],
                                backend="cpp", lookahead=lookahead)
    for t in range(8):
        uses_b = t != 2  # b has no gradient at step 2: another plan, then back

        def closure():
            opt.zero_grad()
            loss = (a.sin() ** 2).sum() + (c ** 4).sum() + ((b ** 2).sum() if uses_b else 0)
            loss.backward()
            return loss
        if t == 4 and "to-float64" in events:
            for p in (a, b, c):
                p.data = p.data.double()
        if t == 5 and "reload" in events:
            opt.load_state_dict(opt.state_dict())
        if t == 6 and "new-storage" in events:
            a.data = a.data.clone()
        if forget_every_step:
            opt._forget_plan()
        opt.step(closure)
    return [p.detach().clone() for p in (a, b, c)], opt.last_stats.alpha.clone()


@pytest.mark.parametrize("lookahead", ["swap", "inplace"])
@pytest.mark.parametrize("events", [(), ("to-float64",), ("reload",), ("new-storage",)],
                         ids=["plain", "to-float64", "reload", "new-storage"])
def test_cached_plan_gives_the_bits_of_planning_every_step(events, lookahead):
    cached, alpha_cached = _run(False, events, lookahead)
    fresh, alpha_fresh = _run(True, events, lookahead)
    assert torch.equal(alpha_cached, alpha_fresh)
    for x, y in zip(cached, fresh):
        assert x.dtype == y.dtype and torch.equal(x, y)


def test_the_plan_is_reused_while_nothing_changes():
    a = torch.randn(5, requires_grad=True)
    opt = secant_ext.SecantSGD([a], backend="cpp")

    def closure():
        opt.zero_grad()
        loss = (a ** 4).sum()
        loss.backward()
        return loss
    opt.step(closure)
    template = opt._plan_template
    opt.step(closure)
    assert opt._plan_template is template
    a.data = a.data.clone()  # new storage: planned anew
    opt.step(closure)
    assert opt._plan_template is not template


@pytest.mark.parametrize("lookahead_raises", [False, True], ids=["step", "raising-lookahead"])
def test_the_kept_plan_holds_no_gradient_between_steps(lookahead_raises):
    """The plan's records are reused from step to step, emptied after each: the lookahead
    gradients and the step's tables are freed when the step ends, also when the lookahead
    closure raised, and the next step gives the bits of a fresh optimizer's."""
    import weakref

    def setup():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(6, 3))
        return w, secant_ext.SecantSGDM([w], backend="cpp")

    w, opt = setup()
    seen = []

    def closure(raise_at_lookahead=False):
        opt.zero_grad()
        loss = (w.sin() ** 2).sum()
        loss.backward()
        if opt.in_lookahead:
            seen.append(weakref.ref(w.grad))
            if raise_at_lookahead:
                raise ValueError("lookahead")
        return loss
    opt.step(closure)
    if lookahead_raises:
        with pytest.raises(ValueError, match="lookahead"):
            opt.step(lambda: closure(raise_at_lookahead=True))
    assert seen and all(ref() is None for ref in seen)  # no lookahead gradient kept
    for work in opt._plan_template:  # the step's records dropped: fresh, empty ones
        assert work.now == _plan.GroupStep()
        for b in work.buckets:
            assert b.now == _plan.BucketStep()
    opt.step(closure)

    w2, fresh = setup()

    def closure2():
        fresh.zero_grad()
        loss = (w2.sin() ** 2).sum()
        loss.backward()
        return loss
    fresh.step(closure2)
    fresh.step(closure2)
    assert torch.equal(w.detach(), w2.detach())


def test_scratch_tensors_are_carved_from_one_allocation():
    """A step's scratch tensors (the previous step, the lookahead's buffers) come from one
    block per bucket, each laid out as its tensor and 16-byte aligned for the wide loads;
    tensors that do not fill their storage span, or differ in dtype, get their own."""
    like = [torch.empty(3, 5), torch.empty(1), torch.empty(2, 3, 4, 4).to(
        memory_format=torch.channels_last), torch.empty(0), torch.empty(7)]
    out = _plan.empty_like_together(like)
    assert len({t.untyped_storage().data_ptr() for t in out}) == 1
    for t, x in zip(out, like):
        assert (t.shape, t.stride(), t.dtype) == (x.shape, x.stride(), x.dtype)
        assert t.data_ptr() % 16 == 0
    spans = sorted((t.storage_offset(), t.storage_offset() + t.numel()) for t in out)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))  # no overlap
    gapped = [torch.empty(4, 6)[:, :3], torch.empty(5)]  # a slice does not fill its span
    apart = _plan.empty_like_together(gapped)
    assert len({t.untyped_storage().data_ptr() for t in apart}) == 2
    assert [t.shape for t in apart] == [x.shape for x in gapped]
    mixed = _plan.empty_like_together([torch.empty(3), torch.empty(3, dtype=torch.float64)])
    assert [t.dtype for t in mixed] == [torch.float32, torch.float64]
