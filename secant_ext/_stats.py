"""``SecantOptimizer.last_stats``: the statistics of the latest step, read from the group
states as device tensors (docs/ALGORITHM.md, 'Device state layout')."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _layout as layout


@dataclass
class SecantStats:
    """Statistics of the latest step, as device tensors (reading one syncs, nothing else
    does). 0-dim with one param group, shape ``[num_groups]`` with several."""
    alpha: torch.Tensor
    step_size: torch.Tensor  # the step applied: lr * alpha (times the clip factor)
    lr: torch.Tensor
    dot: torch.Tensor
    s_sq: torch.Tensor
    y_sq: torch.Tensor
    curvature: torch.Tensor
    grad_norm: torch.Tensor
    skipped: torch.Tensor
    clipped: torch.Tensor
    step: torch.Tensor
    skipped_total: torch.Tensor
    clipped_total: torch.Tensor
    stalled_total: torch.Tensor  # steps whose lookahead gradient equalled the probe's exactly
    measured: torch.Tensor       # the latest step measured the curvature (curvature_every)

    @classmethod
    def from_states(cls, states: torch.Tensor) -> "SecantStats":
        """From group states stacked as ``[num_groups, STATE_SIZE]`` (or one state)."""
        def col(i):
            return states[..., i]
        s_sq = col(layout.S_SQ)
        return cls(alpha=col(layout.ALPHA), step_size=col(layout.STEP_SIZE),
                   lr=col(layout.LR), dot=col(layout.DOT), s_sq=s_sq,
                   y_sq=col(layout.Y_SQ), curvature=col(layout.DOT) / s_sq,
                   grad_norm=col(layout.G_SQ).sqrt(),
                   skipped=col(layout.LAST_SKIPPED) != 0,
                   clipped=col(layout.LAST_CLIPPED) != 0, step=col(layout.STEP),
                   skipped_total=col(layout.SKIPPED), clipped_total=col(layout.CLIPPED),
                   stalled_total=col(layout.STALLED),
                   measured=col(layout.LAST_MEASURED) != 0)


@dataclass
class SecantAdamStats(SecantStats):
    """``SecantAdam``'s statistics: those of ``SecantStats``, and its measurement under its
    own names (docs/ALGORITHM.md, 'SecantAdam'). ``alpha`` is its step size ``eta``.

    ``a``: the curvature along Adam's direction per unit step, ``<u, y> / eta'^2`` (also in
    ``dot`` and ``curvature``); ``b``: the descent left at ``x_t``, ``<u, s> / eta'`` (also
    in ``s_sq``); ``avg_a``, ``avg_c``: the averages ``A`` and ``C`` of ``a / n`` and
    ``c / n`` that set ``eta``. ``guarded``: the latest measurement found ``A`` and ``C``
    not both positive, so ``eta`` moved by the growth factor instead of ``2C/A``;
    ``guarded_total`` counts such measurements (the same fields as SecantStats' ``clipped``
    and ``clipped_total``, whose names are the SGD family's)."""
    a: torch.Tensor
    b: torch.Tensor
    avg_a: torch.Tensor
    avg_c: torch.Tensor
    guarded: torch.Tensor
    guarded_total: torch.Tensor

    @classmethod
    def from_states(cls, states: torch.Tensor) -> "SecantAdamStats":
        base = SecantStats.from_states(states)
        base.curvature = base.dot  # a is already per unit step along d
        return cls(**vars(base), a=states[..., layout.ADAM_LAST_A],
                   b=states[..., layout.ADAM_LAST_B], avg_a=states[..., layout.ADAM_A],
                   avg_c=states[..., layout.ADAM_C],
                   guarded=states[..., layout.LAST_GUARDED] != 0,
                   guarded_total=states[..., layout.GUARDED])
