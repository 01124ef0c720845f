"""SecantAdam: Adam's direction, with a step size measured by a secant that looks back."""
from __future__ import annotations

from typing import List

import torch

from . import _layout as layout, _options, _plan
from ._base import SecantOptimizer
from ._stats import SecantAdamStats


class SecantAdam(SecantOptimizer):
    r"""Adam (AdamW's decoupled weight decay) whose step size sets itself.

    The direction is Adam's, ``d = m_hat / (sqrt(v_hat) + eps)``; the step size ``eta`` is
    measured along the step the optimizer took last (docs/ALGORITHM.md, 'SecantAdam'). On
    a measuring step the closure runs once more, at the previous iterate
    ``x_t + u = x_(t-1)``, on the same batch: the batch is independent of ``u``, so

    .. math:: b = \frac{\langle u, g(x_t)\rangle}{\eta'}, \qquad
              a = \frac{\langle u, g(x_t + u) - g(x_t)\rangle}{\eta'^2}

    (``eta'`` the step size ``u`` was taken with) are the descent still left along ``d``
    and the curvature along it; ``c = eta' a + b`` is the slope at ``x_(t-1)``, so
    ``c / a`` is the step from there to the minimum of the measured quadratic. Each
    measurement is divided by ``|c| + eta' |a|`` (it weighs the same however large the
    gradients were) and averaged (weight 0.9), and ``eta <- min(2 C / A, 1.1 eta)``:
    twice the step to the minimum, the largest that quadratic is stable under, with the
    averaged iterate in the middle; allowed to grow by 10% per measurement from 1e-5. With
    negative curvature and descent ahead (LoRA's saddle) eta grows by 10%; when the step
    went uphill it shrinks by 10%. Each of the first ``curvature_warmup`` steps measures,
    then every ``curvature_every``-th; a measuring step costs two evaluations of the
    closure, any other one.

    Args:
        params: parameters or param groups, as for ``torch.optim.AdamW``.
        lr: a multiplier of the measured step size (default 1.0), a number or a 0-dim
            tensor; schedulers act on it. Not Adam's learning rate: there is none to set.
        betas: Adam's moment decays (default (0.9, 0.999)).
        eps: added to ``sqrt(v_hat)`` (default 1e-8).
        weight_decay: decoupled, as AdamW's: the step is ``eta (d + weight_decay x)``
            (default 0).
        max_grad_norm: clip the step by the whole model's gradient norm, as
            ``clip_grad_norm_`` would, from the norm the statistics already compute; the
            measurement uses the unclipped gradients. ``None`` (default): no clipping.
        curvature_every: after the warm-up, measure every this many steps (default 8).
        curvature_warmup: measure on each of the first this many steps, from the second on
            (the first has no previous step to look back along; default 50).
        average: keep the averaged iterate (``avg <- avg + w (x - avg)``, ``w`` = max(1 /
            steps, 0.03): about the last 33 iterates); ``opt.eval()`` puts it into the
            parameters for evaluation, ``opt.train()`` puts the training iterate back.
            Default True: on the workload suite the language models end worse without it
            (docs/RESULTS.md, 'SecantAdam at its defaults').
        nonfinite: ``"skip"`` a step with a non-finite gradient (state unchanged, counted)
            or ``"raise"`` ``FloatingPointError`` naming the parameter.
        backend: ``"auto"``, ``"triton"``, ``"cpp"`` or ``"reference"``.
        lookahead: ``"auto"``, ``"swap"`` or ``"inplace"``, as for ``SecantSGD``.
        process_group: sum the statistics over this group's ranks (sharded parameters).

    State per parameter, held between steps: ``exp_avg`` and ``exp_avg_sq`` (as AdamW),
    and ``average_buffer`` with ``average=True``: 12 bytes per fp32 parameter, 8 (AdamW's)
    without the average. The previous step ``u`` is recomputed from them on a measuring
    step, which alone holds one more buffer, for ``u`` and the lookahead point (4 bytes,
    let go at its end; 8 with the in-place lookahead's backup).

    ``last_stats`` (a ``SecantAdamStats``): ``alpha`` is eta, ``step_size`` the applied step
    (``eta * lr * clip``), ``a`` and ``b`` the latest measurement (also in
    ``dot``/``curvature`` and ``s_sq``), ``avg_a`` and ``avg_c`` the averages that set eta,
    ``measured`` whether the step measured, ``guarded`` whether a measurement moved eta by
    the growth factor because an average was not positive.
    """

    _zero_buffers = ("exp_avg", "exp_avg_sq")
    # The lookahead's buffers live for a measuring step alone (1 step in 8 after the
    # warm-up); the swap lookahead writes x + u over u, which is recomputed for the
    # statistics; a checkpoint's previous_step (kept by earlier versions) is dropped.
    _keeps_lookahead_buffers = False
    _lookahead_into_offsets = True
    _retired_state = ("previous_step",)

    def __init__(self, params, *, lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 max_grad_norm=None, curvature_every=8, curvature_warmup=50, average=True,
                 nonfinite="skip", backend="auto", lookahead="auto", process_group=None):
        _options.check_betas(betas)
        _options.check_nonnegative("eps", eps)
        defaults = dict(lr=lr, max_grad_norm=max_grad_norm, curvature_every=curvature_every,
                        curvature_warmup=curvature_warmup, average=average,
                        nonfinite=nonfinite, weight_decay=weight_decay, betas=tuple(betas),
                        eps=eps, backend=backend, lookahead=lookahead)
        super().__init__(params, defaults, process_group)

    @property
    def last_stats(self) -> SecantAdamStats:
        return SecantAdamStats.from_states(self._stacked_states())

    # -- which steps measure ------------------------------------------------------------
    @staticmethod
    def _measures(group, n: int) -> bool:
        """Whether step ``n`` (0-based) measures: it needs a previous step to look back
        along, so never the first; then each step of the warm-up and every
        ``curvature_every``-th (counted from 1)."""
        return n >= 1 and (n < group["curvature_warmup"] or (n + 1) % group["curvature_every"] == 0)

    def _due_to_measure(self, work) -> bool:
        n = self._curvature_clock  # (advanced by _step once the step is through)
        for w in work:
            w.now.measure = self._measures(w.group, n)
            w.now.record = self._measures(w.group, n + 1)  # the next step looks back at this one
        # from the groups, not the work: every rank runs the closure as often, whichever
        # parameters have gradients there
        return any(self._measures(g, n) for g in self.param_groups)

    def _lookahead_offsets(self, work, bucket) -> List[torch.Tensor]:
        """The previous step ``u``: the lookahead point is the previous iterate. ``u`` is
        not kept between steps: ``adam_previous_step`` recomputes it from ``x``, ``m``, ``v``
        and the group state into a buffer this step alone holds. The swap lookahead then
        writes ``x + u`` over it, and ``_statistics`` recomputes ``u`` there for the
        statistics: one buffer for the step, not two. A group that does not measure on
        this step (another group's schedule does) stays at ``x_t``: its last step may not
        be the one its state describes, and moving it would disturb the measuring groups'
        evaluation."""
        if not work.now.measure:
            return []
        u = _plan.empty_like_together(bucket.tensors)
        self._previous_step(work, bucket, u)
        return u

    def _previous_step(self, work, bucket, out: List[torch.Tensor]) -> None:
        bucket.backend.adam_previous_step(
            bucket.tensors, self._kernel_buffers(bucket, "exp_avg"),
            self._kernel_buffers(bucket, "exp_avg_sq"), out,
            self._group_state(work.group), eps=work.group["eps"],
            weight_decay=work.group["weight_decay"])

    def _initial_state_values(self):
        values = super()._initial_state_values()
        values[layout.ALPHA] = layout.ADAM_ETA0
        values[layout.STEP_SIZE] = 0.0
        values[layout.AVG_FLOOR] = layout.ADAM_AVG_FLOOR
        return values

    # -- the phases ---------------------------------------------------------------------
    def _statistics(self, w: _plan.GroupWork, b, separate_grads: bool) -> torch.Tensor:
        # (b.now.offsets: u on a measuring step, else empty)
        if w.now.measure and w.lookahead == "swap":  # x + u is there: u again
            self._previous_step(w, b, b.now.offsets)
        now = b.now
        return b.backend.adam_stats(now.offsets, now.lookahead_grads if w.now.measure else [],
                                    now.probes, now.grads if separate_grads else [], w.now.state)

    def _step_size(self, i: int, w: _plan.GroupWork) -> None:
        """``adam_alpha`` on the device, from the group's summed statistics (the one method
        a variant of the rule replaces: ``experiments/adam_rules.py``)."""
        beta1, beta2 = w.group["betas"]
        self._backend_of(w).adam_alpha(w.now.combined, w.now.state, beta1=beta1, beta2=beta2,
                                       ema=layout.ADAM_EMA, growth=layout.ADAM_GROWTH,
                                       measure=w.now.measure, record=w.now.record)

    def _update(self, w: _plan.GroupWork, b) -> None:
        beta1, beta2 = w.group["betas"]
        b.backend.adam_update(  # the average in the same pass (4 bytes fewer)
            b.tensors, b.now.grads, self._kernel_buffers(b, "exp_avg"),
            self._kernel_buffers(b, "exp_avg_sq"), [],
            self._kernel_buffers(b, "average_buffer") if w.group["average"] else [],
            w.now.state, beta1=beta1, beta2=beta2, eps=w.group["eps"],
            weight_decay=w.group["weight_decay"])
