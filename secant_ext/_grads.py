"""What ``p.grad`` holds around a step: gradients from earlier micro-batches, and the
training gradient the optimizer leaves after a step (docs/ALGORITHM.md, 'The step').

Gradients in ``p.grad`` when a step starts that the optimizer did not leave there
(``backward()`` on earlier micro-batches) are accumulated: added to the training gradient,
while the closure's own gradient is the probe. A closure that resets the gradients
discards them, as with ``torch.optim.LBFGS``. The gradient the optimizer left after its
previous step (the same tensor, unmodified) is stale and dropped.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from . import _host


class GradientLedger:
    """Tells earlier gradients from the ones this optimizer left, step to step."""

    def __init__(self):
        # what the last step left: the parameters, their gradients and those gradients'
        # versions (parallel lists, in the order of the step's buckets)
        self.left: Tuple[list, list, list] = ([], [], [])

    def set_aside(self, params: List[torch.Tensor]):
        """Before the closure runs: drop the stale gradients this optimizer left; set any
        other aside, with ``p.grad`` a zero tensor, so that a closure that accumulates adds
        exactly its own gradient to it, and one that resets the gradients replaces it.
        Returns ``{id(p): (p, earlier gradient, the zero tensor)}``."""
        foreign = _host.for_params(params).drop_left_grads(params, *self.left)
        earlier = {}
        for i in foreign:
            p = params[i]
            g = p.grad
            zeros = torch.zeros_like(g)
            earlier[id(p)] = (p, g, zeros)
            p.grad = zeros
        return earlier

    @staticmethod
    def put_back(earlier) -> None:
        """A closure that raised: the earlier gradients are back, with what it added."""
        for p, g, zeros in earlier.values():
            if p.grad is zeros:
                p.grad = g.add_(zeros)
            elif p.grad is None:
                p.grad = g

    @staticmethod
    def accumulated(earlier, closure_zeroed: bool):
        """``{id(p): earlier gradient}`` to accumulate onto: those whose zero tensor is still
        ``p.grad`` (the closure added to it), unless the closure called zero_grad()."""
        if closure_zeroed:
            return {}
        return {key: g for key, (p, g, zeros) in earlier.items() if p.grad is zeros}

    def after_step(self, params, buckets) -> None:
        """Put the training gradient of every stepped parameter back in ``p.grad``, and None
        elsewhere (a gradient from the probe or the lookahead alone is dropped); remember
        what was left, to know it as stale next step. One pass over the parameters."""
        left_params, left_grads, left_versions = [], [], []
        stepped = 0
        for b in buckets:
            # (a step that raised before the training gradients were taken has none)
            ps = b.params if len(b.now.taken_grads) == len(b.params) else \
                b.params[:len(b.now.taken_grads)]
            left_versions += b.passes.put_grads(ps, b.now.taken_grads)
            left_params += ps
            left_grads += b.now.taken_grads
            stepped += len(b.params)
        if stepped < len(params):
            ids = {id(p) for b in buckets for p in b.params}
            for p in params:
                if id(p) not in ids:
                    p.grad = None
        self.left = (left_params, left_grads, left_versions)
