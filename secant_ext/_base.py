"""The step shared by the three optimizers (docs/ALGORITHM.md, 'The step').

For each param group:

1. ``closure()`` at ``x_t`` gives the training gradient ``g``.
2. ``probe_closure()`` at ``x_t`` gives ``s`` (without one, ``s = g``).
3. The closure that gave ``s`` runs again at ``x_t + s`` and gives ``g_plus``
   (``_lookahead``: the parameters are restored exactly, the RNG replayed).
4. ``secant_stats`` sums ``<s,y>, |s|^2, |y|^2`` (``y = g_plus - s``), ``secant_alpha``
   turns them into alpha on the device, and ``update`` moves the parameters.

Gradients are *moved* out of ``p.grad`` after each evaluation, never copied; after the
step ``p.grad`` holds the training gradient again.
"""
from __future__ import annotations

import warnings
from typing import Callable, List

import torch
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from . import _backends, _checkpoint, _layout as layout, _options, _plan
from . import distributed as _distributed
from ._lookahead import Lookahead, RngState
from ._stats import SecantStats


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class SecantOptimizer(Optimizer):
    """Base class: the learning rate alpha of each param group comes from the regularized
    stochastic secant equation. Use ``SecantSGD``, ``SecantSGDM`` or ``SecantSignSGD``."""

    _sign_mode = layout.SIGN_NONE
    # GradScaler then hands us its scale instead of unscaling one gradient itself, so a
    # step under it can be refused with a clear message (see ``step``).
    _step_supports_amp_scaling = True

    def __init__(self, params, *, rule: str = "secant", safeguard: bool = True,
                 nonfinite: str = "skip", weight_decay: float = 0.0, momentum: float = 0.0,
                 nesterov: bool = False, sign_scale: str = "mean", backend: str = "auto",
                 lookahead: str = "auto", process_group=None):
        defaults = dict(rule=rule, safeguard=safeguard, nonfinite=nonfinite,
                        weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        sign_scale=sign_scale, backend=backend, lookahead=lookahead)
        _options.check_options(**defaults)
        super().__init__(params, defaults)
        self._lookahead = Lookahead()
        for group in self.param_groups:
            _options.check_group(group)
        self.process_group = process_group if process_group is not None else \
            _distributed.process_group_of(p for g in self.param_groups for p in g["params"])

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_lookahead"):  # not during __init__, which checks every group
            _options.check_group(self.param_groups[-1])

    # -- checkpoints --------------------------------------------------------------------
    def __setstate__(self, state):
        super().__setstate__(state)
        _checkpoint.fill_group_defaults(self.param_groups)
        self.__dict__.setdefault("process_group", None)
        self.__dict__.setdefault("_lookahead", Lookahead())

    def load_state_dict(self, state_dict) -> None:
        _checkpoint.load_state_dict(self, state_dict, super().load_state_dict)

    # -- what the user sees -------------------------------------------------------------
    @property
    def in_lookahead(self) -> bool:
        """True while a closure runs at the lookahead point (e.g. to skip logging)."""
        return self._lookahead.active

    def register_lookahead_context(self, factory: Callable) -> RemovableHandle:
        """Enter ``factory()`` (a context manager) around each lookahead evaluation, e.g.
        ``secant_ext.frozen_batchnorm(model)``. ``handle.remove()`` unregisters it."""
        return self._lookahead.register_context(factory)

    @property
    def last_stats(self) -> SecantStats:
        states = [self._group_state(g) for g in self.param_groups]
        if len({st.device for st in states}) > 1:
            states = [st.cpu() for st in states]
        stacked = torch.stack(states)
        return SecantStats.from_states(stacked[0] if len(states) == 1 else stacked)

    # -- the step -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None, probe_closure=None):
        """One step; returns the loss ``closure()`` returned at ``x_t``.

        Calls ``closure`` twice without a probe closure (at ``x_t`` and at the lookahead
        point ``x_t + g``), or once with one, and ``probe_closure`` twice (at ``x_t`` and at
        ``x_t + s``). Each closure must zero the gradients, compute the loss, call
        ``backward()`` and return the loss; it runs with gradients enabled. The lookahead
        evaluation replays the random-number state of the evaluation it pairs with.
        If a closure raises, the parameters are back at ``x_t``, ``p.grad`` holds the
        training gradient (if it was computed), the optimizer state is untouched, and the
        exception propagates.
        """
        self._refuse_unsupported_call(closure)
        devices = {p.device for g in self.param_groups for p in g["params"]}
        rng_before_train = RngState(devices)
        with torch.enable_grad():
            loss = closure()
        if loss is None:
            raise TypeError(f"{type(self).__name__}.step(): the closure returned None; it "
                            "must return the loss it computed")
        work = _plan.plan(self.param_groups, self._sign_mode,
                          keep_empty=self.process_group is not None)
        buckets = [b for w in work for b in w.buckets]
        for b in buckets:
            b.take_training_grads()
        try:
            rng_paired = rng_before_train
            if probe_closure is not None:
                rng_paired = RngState(devices)
                with torch.enable_grad():
                    probe_closure()
            for b in buckets:
                b.probes = b.take_grads() if probe_closure is not None else b.grads
            self._lookahead.evaluate(work, probe_closure or closure, rng_paired)
            self._apply(work, has_probe=probe_closure is not None)
        finally:
            for b in buckets:
                b.restore_training_grads()
        self._warn_if_stalled()
        return loss

    def _refuse_unsupported_call(self, closure) -> None:
        if closure is None:
            raise TypeError(
                f"{type(self).__name__}.step() needs a closure: a function that zeroes the "
                "gradients, computes the loss, calls loss.backward() and returns the loss. "
                "The optimizer calls it again at a lookahead point to measure curvature, "
                "so it cannot work from precomputed gradients alone.")
        if getattr(self, "grad_scale", None) is not None:
            self.grad_scale = self.found_inf = None
            raise RuntimeError(
                "torch.amp.GradScaler is not supported: a step evaluates three gradients "
                "inside closures, and the scaler unscales one. Use bf16 autocast (no loss "
                "scaling needed), or fp16 without a scaler: a step whose gradients overflow "
                "is skipped and counted (nonfinite='skip').")

    def _apply(self, work: List[_plan.GroupWork], has_probe: bool) -> None:
        """The statistics, alpha and the update of every group whose gradients are in."""
        for w in work:
            w.state = self._group_state(w.group)
            for b in w.buckets:
                b.momenta = [_plan.local(self._momentum_buffer(p)) for p in b.params] \
                    if w.group["momentum"] > 0 else []
                b.table = b.backend.secant_stats(
                    b.probes, b.lookahead_grads, b.grads if has_probe else [], b.tensors,
                    b.momenta, w.state, **w.options)
        self._reduce_tables(work)
        # Every group's alpha (and nonfinite="raise" check) before any update, so a raise
        # leaves all groups at x_t, not only the offending one.
        for w in work:
            backend = w.buckets[0].backend if w.buckets else \
                _backends.resolve(w.group["backend"], w.state.device)
            backend.secant_alpha(w.combined, w.state, rule=layout.RULES[w.group["rule"]],
                                 safeguard=w.group["safeguard"])
        for w in work:
            if w.group["nonfinite"] == "raise":
                self._raise_if_skipped(w.state, work)
        for w in work:
            for b in w.buckets:
                b.backend.update(b.tensors, b.grads, b.momenta, b.table, w.state,
                                 **w.options)

    def _warn_if_stalled(self) -> None:
        """Warn once when a lookahead did not move the evaluation (the ``STALLED`` counter:
        ``|s|^2 > 0`` but ``|y|^2 == 0`` exactly). The counter lives on the device; it is
        read on the host after steps 1, 2, 4, 8, ... only: O(log steps) syncs in all."""
        self._host_steps = getattr(self, "_host_steps", 0) + 1
        n = self._host_steps
        if n & (n - 1) or getattr(self, "_stalled_warned", False) or \
                torch.compiler.is_compiling() or _capturing():
            return
        states = [self.state[g["params"][0]].get("secant_state") for g in self.param_groups
                  if g["params"]]
        stalled = sum(int(st[layout.STALLED].item()) for st in states if st is not None)
        if stalled:
            self._stalled_warned = True
            warnings.warn(
                f"secant_ext: {stalled} step(s) so far had a lookahead gradient "
                "exactly equal to the probe gradient (|y|^2 == 0 with |s|^2 > 0): the "
                "closure did not see the parameters at x + s, so alpha was not measured. "
                "This happens when the model reads the weights' own storage (FSDP2, a "
                "captured CUDA graph, a wrapper holding the weights): pass "
                "lookahead='inplace'. (A loss that is exactly linear in the parameters "
                "also gives y == 0; then this warning can be ignored.) The count is "
                "last_stats.stalled_total.", RuntimeWarning, stacklevel=3)

    def _reduce_tables(self, work: List[_plan.GroupWork]) -> None:
        """Each group's ``combined`` table for ``secant_alpha``; with a ``process_group``,
        the sums of all its ranks, in one all-reduce (which also rewrites the buckets'
        tables for ``update``)."""
        if self.process_group is not None:
            _distributed.reduce_tables(work, self.process_group)
            return
        for w in work:
            tables = [b.table for b in w.buckets]
            w.combined = tables[0] if len(tables) == 1 else \
                torch.cat([t[:, :layout.NUM_STATS].to(torch.float64) for t in tables])

    # -- state --------------------------------------------------------------------------
    def _group_state(self, group) -> torch.Tensor:
        anchor = self.state[group["params"][0]]
        st = anchor.get("secant_state")
        if st is None:
            st = torch.tensor(layout.initial_state_values(), dtype=torch.float64,
                              device=group["params"][0].device)
            anchor["secant_state"] = st
        return st

    def _momentum_buffer(self, p):
        st = self.state[p]
        buf = st.get("momentum_buffer")
        if buf is None:  # zeros until the first applied step makes it the gradient
            buf = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["momentum_buffer"] = buf
        return buf

    def _raise_if_skipped(self, state, work: List[_plan.GroupWork]) -> None:
        if state[layout.LAST_SKIPPED].item() == 0:  # syncs: nonfinite="raise" asks for it
            return
        names = {}
        for k, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                names[p] = (group.get("param_names") or [None] * len(group["params"]))[i] \
                    or f"param_groups[{k}]['params'][{i}]"
        buckets = [b for w in work for b in w.buckets]
        for label, field in (("gradient", "grads"), ("probe gradient", "probes"),
                             ("lookahead gradient", "lookahead_grads")):
            for b in buckets:
                for p, t in zip(b.params, getattr(b, field)):
                    if not torch.isfinite(t).all():
                        raise FloatingPointError(
                            f"non-finite {label} in parameter {names[p]} (shape "
                            f"{tuple(p.shape)}); the step was not applied (nonfinite='raise')")
        elsewhere = "" if self.process_group is None else \
            ", or a non-finite value on another rank of process_group"
        raise FloatingPointError("the secant statistics overflowed (gradients too large for "
                                 f"the accumulator{elsewhere}); the step was not applied "
                                 "(nonfinite='raise')")
