"""The SGD family's rule (A-SGD, A-SGDM, A-SIGNSGD): the step size from the secant along the
probe gradient ``s`` (docs/ALGORITHM.md, 'The step').

On a step that measures, the closure runs again at ``x_t + s``; ``secant_stats`` sums
``<s,y>, |s|^2, |y|^2`` (``y = g_plus - s``), ``secant_alpha`` turns them into alpha (or
the carried alpha) and the step size on the device, ``update`` moves the parameters and
``average`` the averaged iterate.
"""
from __future__ import annotations

from typing import List

import torch

from . import _layout as layout, _options, _plan
from ._base import SecantOptimizer


class SecantSGDFamily(SecantOptimizer):
    """The rule ``SecantSGD``, ``SecantSGDM`` and ``SecantSignSGD`` share; each passes the
    options it has (``rule_options``: a subset of ``rule``, ``safeguard``, ``momentum``,
    ``nesterov``, ``sign_scale``), and a param group carries those alone (so OneCycleLR's
    momentum cycling is refused by torch's own check for SecantSGD)."""

    _zero_buffers = ("momentum_buffer",)  # the first applied step makes it the gradient
    _detects_clipped_closure = True

    def __init__(self, params, *, lr, max_grad_norm, curvature_every, curvature_warmup,
                 average, nonfinite, weight_decay, backend, lookahead, process_group,
                 **rule_options):
        _options.check_sgd_family(**rule_options)
        defaults = dict(lr=lr, max_grad_norm=max_grad_norm, curvature_every=curvature_every,
                        curvature_warmup=curvature_warmup, average=average, **rule_options,
                        nonfinite=nonfinite, weight_decay=weight_decay, backend=backend,
                        lookahead=lookahead)
        super().__init__(params, defaults, process_group)

    def _lookahead_offsets(self, work, bucket) -> List[torch.Tensor]:
        """The ``s`` of the lookahead point ``x_t + s``: the probe gradient. Empty: the
        bucket's parameters stay at ``x_t`` for the lookahead evaluation."""
        return bucket.now.probes

    def _due_to_measure(self, work) -> bool:
        """Mark the groups that measure the curvature this step (each of the first
        ``curvature_warmup`` steps, then every ``curvature_every``-th step of the
        optimizer); True when any does, and then the step evaluates the lookahead (for every
        group: it is one closure call)."""
        n = self._curvature_clock  # (advanced by _step once the step is through)
        for w in work:
            g = w.group
            w.now.measure = n < g["curvature_warmup"] or n % g["curvature_every"] == 0
        return any(w.now.measure for w in work) or not work

    def _statistics(self, w: _plan.GroupWork, b, separate_grads: bool) -> torch.Tensor:
        b.now.momenta = self._kernel_buffers(b, "momentum_buffer") \
            if w.group.get("momentum", 0.0) > 0 else []
        # x and m form the direction, which only the scaled sign step's sums read: other
        # steps pass none (each list costs a conversion per tensor)
        sign = w.sign_mode == layout.SIGN_SCALED
        return b.backend.secant_stats(
            b.now.probes, b.now.lookahead_grads, b.now.grads if separate_grads else [],
            b.tensors if sign else [], b.now.momenta if sign else [], w.now.state, **w.options)

    def _step_size(self, i: int, w: _plan.GroupWork) -> None:
        self._backend_of(w).secant_alpha(
            w.now.combined, w.now.state, rule=layout.RULES[w.group["rule"]],
            safeguard=w.group["safeguard"], measure=w.now.measure)

    def _update(self, w: _plan.GroupWork, b) -> None:
        b.backend.update(b.tensors, b.now.grads, b.now.momenta, b.now.table, w.now.state,
                         **w.options)
        if w.group["average"]:
            b.backend.average(self._kernel_buffers(b, "average_buffer"), b.tensors, w.now.state)
