"""Training loops that call ``step()`` through a wrapper, recognized so that their pitfalls
fail loudly instead of training on less data than the user meant.

accelerate's ``AcceleratedOptimizer.step(closure)`` calls the optimizer only on the
micro-batch that syncs gradients (``accelerator.accumulate``); on the others it returns
without calling the closure. A loop that hands every micro-batch's closure to ``step``
would so train on one micro-batch in k, with no error anywhere. The optimizer sees the
result: a step under accumulation with no gradient from the earlier micro-batches.
"""
from __future__ import annotations

import sys
from typing import Optional

_FRAMES = 8  # step()'s own decorators stand between it and its caller


def accelerate_gradient_state(optimizer) -> Optional[object]:
    """accelerate's ``GradientState`` when the ``step()`` calling this came through an
    ``AcceleratedOptimizer`` wrapping ``optimizer``, else None (also without accelerate)."""
    module = sys.modules.get("accelerate.optimizer")
    wrapper_class = getattr(module, "AcceleratedOptimizer", None)
    if wrapper_class is None:
        return None
    frame = sys._getframe(2)  # the frame that called step()
    code = wrapper_class.step.__code__
    for _ in range(_FRAMES):
        if frame is None:
            return None
        if frame.f_code is code:
            wrapper = frame.f_locals.get("self")
            if getattr(wrapper, "optimizer", None) is optimizer:
                return getattr(wrapper, "gradient_state", None)
            return None
        frame = frame.f_back
    return None


def refuse_dropped_micro_batches(gradient_state, accumulated, name: str) -> None:
    """RuntimeError when accelerate accumulates over k > 1 micro-batches but this step holds
    the closure's gradient alone: k - 1 micro-batches were never trained on. The last
    accumulation of an epoch may be a single micro-batch (``end_of_dataloader``)."""
    k = getattr(gradient_state, "num_steps", 1)
    if k <= 1 or accumulated or getattr(gradient_state, "end_of_dataloader", False):
        return
    raise RuntimeError(
        f"{name}.step() under accelerate's gradient accumulation (gradient_accumulation_steps"
        f"={k}) got no gradient from the earlier micro-batches: AcceleratedOptimizer.step "
        "calls the closure only on the micro-batch that syncs, so a closure handed to step() "
        f"on every micro-batch trains on 1 in {k} of them. On the other micro-batches call "
        "accelerator.backward(loss) yourself, and pass step() a closure that does not zero "
        "the gradients on the last one (docs/INTEGRATIONS.md, 'accelerate'); the step was "
        "not applied.")
