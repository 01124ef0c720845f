"""The step driver shared by the four optimizers (docs/ALGORITHM.md, 'The step').

One step, for every param group:

1. ``closure()`` at ``x_t`` gives the training gradient ``g`` (plus any gradient from
   earlier micro-batches, ``_grads``).
2. On a step that measures (the rule's ``_due_to_measure``): ``probe_closure()``, if
   given, at ``x_t``; then the closure that gave the probe runs again at the lookahead
   point ``x_t + offset`` (the rule's ``_lookahead_offsets``: the SGD family's probe
   gradient ``s``, SecantAdam's previous step ``u``). ``_lookahead`` restores the
   parameters exactly and replays the RNG.
3. ``_apply`` runs the rule's three phases on the device (``_statistics``, ``_step_size``,
   ``_update``), with the statistics summed over ranks and groups in between.

The buckets the kernels take come from ``_plan`` (kept from step to step while nothing
changes). Gradients are *moved* out of ``p.grad`` after each evaluation, never copied;
after the step ``p.grad`` holds the training gradient again.
"""
from __future__ import annotations

import warnings
from typing import Callable, List

import torch
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from . import _backends, _checkpoint, _layout as layout, _options, _plan
from . import distributed as _distributed
from ._grads import GradientLedger
from ._lookahead import Lookahead, RngState
from ._stats import SecantStats
from ._host import callers as _callers, grad_mode as _grad_mode, hooked_step


_NOT_TRACEABLE = (
    "a secant step calls its closure again at a lookahead point and restores the "
    "parameters around it, which a traced graph cannot express; torch.compile runs it "
    "eagerly (a graph break). Use fullgraph=False for a function that calls "
    "optimizer.step(closure), or compile the model or the loss instead")


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _write_step_inputs(state: torch.Tensor, group, written: dict) -> None:
    """The group's ``lr`` and ``max_grad_norm`` into its state, where ``secant_alpha``
    reads them (a tensor ``lr`` is copied on the device, a number without a sync).

    ``written`` remembers, per state tensor, the numbers last written to it: the same
    numbers are not written again (two ``fill_`` calls a step are measurable on a small
    model: docs/PERFORMANCE.md, 'The step's fixed cost'). Only the step-size phase's
    caller writes these fields, and a state tensor that
    is replaced (a checkpoint loaded, the model moved) is a new key."""
    lr, max_norm = group["lr"], group["max_grad_norm"]
    if isinstance(lr, torch.Tensor):
        state[layout.LR].copy_(lr)
        written.pop(id(state), None)
    else:
        last = written.get(id(state))
        if last is not None and last[0] is state and last[1] == lr and last[2] == max_norm:
            return
        state[layout.LR].fill_(lr)
        written[id(state)] = (state, lr, max_norm)
    state[layout.MAX_GRAD_NORM].fill_(float("inf") if max_norm is None else max_norm)


class SecantOptimizer(Optimizer):
    """The step driver: each param group's step size is measured by a secant along a step,
    on the device, with no learning rate to set. Use ``SecantAdam``, ``SecantSGD``,
    ``SecantSGDM`` or ``SecantSignSGD``.

    The driver runs the closures, keeps the gradients, evaluates the lookahead point and
    sums the statistics over ranks; it is the only code that touches ``p.grad`` and
    ``p.data``. A rule (``SecantAdam``, ``_sgd_family.SecantSGDFamily``) is a subclass that
    builds its ``defaults`` and says, through its hooks, which steps measure
    (``_due_to_measure``), where the lookahead point is (``_lookahead_offsets``), what a
    fresh group state holds (``_initial_state_values``) and how its three phases run on the
    device (``_statistics``, ``_step_size``, ``_update``), which ``_apply`` calls in order.
    """

    # How the plan lays out the per-tensor sums: only the scaled sign step has any.
    _sign_mode = layout.SIGN_NONE
    # The per-parameter buffers that start at zeros; any other starts as a copy of p.
    _zero_buffers: tuple = ()
    # GradScaler then hands us its scale instead of unscaling one gradient itself, so a
    # step under it can be refused with a clear message (see ``step``).
    _step_supports_amp_scaling = True
    # The lookahead's scratch buffers are kept between steps (cheapest when most steps
    # measure); False: allocated for each measuring step alone.
    _keeps_lookahead_buffers = True
    # The swap lookahead may write its point over the offsets (the rule recomputes them).
    _lookahead_into_offsets = False
    # Per-parameter state that earlier versions kept and this rule no longer needs: dropped
    # from a loaded checkpoint.
    _retired_state: tuple = ()
    # _warn_if_unmeasured's test for gradients clipped inside the closure reads <s, y>,
    # which only the rules that measure along s have
    _detects_clipped_closure = False

    def __init__(self, params, defaults: dict, process_group=None):
        """``defaults``: the rule's options, each checked by the rule (``_options``)."""
        _options.check_common(**{k: defaults[k] for k in _options.COMMON})
        super().__init__(params, defaults)
        self._lookahead = Lookahead()
        self._stepping = False       # a step is running (a closure calling step() again)
        self._zeroed_in_step = False  # a closure called zero_grad() during this step
        self._grads = GradientLedger()  # earlier gradients vs the ones a step left
        self._curvature_clock = 0     # steps so far, for curvature_every (checkpointed)
        self._forget_plan()
        self._training_weights = None  # {id(p): x} while opt.eval() shows the averages
        for group in self.param_groups:
            _options.check_group(group)
        self.process_group = process_group if process_group is not None else \
            _distributed.process_group_of(p for g in self.param_groups for p in g["params"])

    # -- the rule's hooks ---------------------------------------------------------------
    def _due_to_measure(self, work: List[_plan.GroupWork]) -> bool:
        """Mark each group's work (``w.now.measure``) for this step; True when the step
        evaluates the lookahead point (one closure call for every group)."""
        raise NotImplementedError

    def _lookahead_offsets(self, work: _plan.GroupWork, bucket) -> List[torch.Tensor]:
        """The offsets of the lookahead point ``x_t + offset`` for the bucket's parameters;
        empty: they stay at ``x_t``."""
        raise NotImplementedError

    def _statistics(self, w: _plan.GroupWork, b, separate_grads: bool) -> torch.Tensor:
        """Phase 1 on one bucket: its table of partial sums. ``separate_grads``: the
        training gradient is not the probe gradient."""
        raise NotImplementedError

    def _step_size(self, i: int, w: _plan.GroupWork) -> None:
        """Phase 2 of the ``i``-th group's work, on the device, from its summed statistics
        ``w.now.combined`` (``_backend_of(w)`` runs it)."""
        raise NotImplementedError

    def _update(self, w: _plan.GroupWork, b) -> None:
        """Phase 3 on one bucket: the parameters (and the rule's buffers) moved."""
        raise NotImplementedError

    def _initial_state_values(self) -> List[float]:
        """A fresh group state's values (``_layout``)."""
        return layout.initial_state_values()

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_lookahead"):  # not during __init__, which checks every group
            _options.check_group(self.param_groups[-1])
            self._forget_plan()

    # -- checkpoints --------------------------------------------------------------------
    def __setstate__(self, state):
        super().__setstate__(state)
        _checkpoint.fill_group_defaults(self.param_groups, self.defaults)
        for name, value in (("process_group", None), ("_lookahead", Lookahead()),
                            ("_stepping", False), ("_zeroed_in_step", False),
                            ("_grads", GradientLedger()), ("_curvature_clock", 0),
                            ("_training_weights", None)):
            self.__dict__.setdefault(name, value)
        self._forget_plan()

    def state_dict(self):
        """``torch.optim``'s state dict, plus what continuing the run bit for bit needs: the
        step clock of ``curvature_every`` and, saved between ``eval()`` and ``train()``, the
        training iterate of every averaged parameter (the parameters then hold the
        averages; the loaded optimizer is in eval mode, and ``train()`` puts it back)."""
        return _checkpoint.with_run_state(self, super().state_dict())

    def load_state_dict(self, state_dict) -> None:
        self._forget_plan()
        _checkpoint.load_state_dict(self, state_dict, super().load_state_dict)
        for st in self.state.values():
            for name in self._retired_state:
                st.pop(name, None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._stepping:  # a closure resets the gradients: earlier ones are not accumulated
            self._zeroed_in_step = True
        super().zero_grad(set_to_none)

    # -- averaged iterates (average=True) -------------------------------------------------
    @torch.no_grad()
    def eval(self) -> None:
        """Put the averaged weights into the parameters (for evaluation, or a checkpoint
        meant for inference), keeping the training iterate aside; ``train()`` puts it back.
        Only the groups with ``average=True`` change. The Schedule-Free convention: call it
        before evaluating, and ``train()`` before the next step."""
        if self._training_weights is not None:
            return
        kept = {}
        for group in self.param_groups:
            if not group["average"]:
                continue
            for p in group["params"]:
                avg = self.state[p].get("average_buffer") if p in self.state else None
                if avg is not None:
                    kept[id(p)] = (p, p.detach().clone(memory_format=torch.preserve_format))
                    p.copy_(avg)
        # Nothing averaged yet (or average=False): the parameters did not change, so there is
        # no eval mode to leave; loops that call eval() on any optimizer (Hugging Face's
        # Trainer does) can step straight on.
        self._training_weights = kept or None

    @torch.no_grad()
    def train(self) -> None:
        """Put the training iterate back after ``eval()``."""
        if self._training_weights is None:
            return
        for p, x in self._training_weights.values():
            p.copy_(x)
        self._training_weights = None

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
        return SecantStats.from_states(self._stacked_states())

    def _stacked_states(self) -> torch.Tensor:
        """The group states, one (or ``[num_groups, STATE_SIZE]``, on the CPU when the
        groups' devices differ)."""
        states = [self._group_state(g) for g in self.param_groups]
        if len({st.device for st in states}) > 1:
            states = [st.cpu() for st in states]
        stacked = torch.stack(states)
        return stacked[0] if len(states) == 1 else stacked

    # -- the step -----------------------------------------------------------------------
    @hooked_step
    @torch.compiler.disable(reason=_NOT_TRACEABLE)
    def step(self, closure=None, probe_closure=None):
        """One step; returns the loss ``closure()`` returned at ``x_t``.

        Calls ``closure`` twice without a probe closure (at ``x_t`` and at the lookahead
        point ``x_t + s``), or once with one, and ``probe_closure`` twice (at ``x_t`` and at
        ``x_t + s``). Each closure computes the loss, calls ``backward()`` and returns the
        loss; it runs with gradients enabled. The lookahead evaluation replays the
        random-number state of the evaluation it pairs with.

        Gradients already in ``p.grad`` that this optimizer did not leave there (earlier
        micro-batches' ``backward()``) are accumulated: they are added to the training
        gradient, and the closure's own gradient is the probe ``s`` for the curvature.
        A closure that resets the gradients (``opt.zero_grad()``, or ``p.grad = None``)
        discards them, as with ``torch.optim.LBFGS``.

        If a closure raises, the parameters are back at ``x_t``, ``p.grad`` holds the
        training gradient (if it was computed), the optimizer state (the step clock of
        ``curvature_every`` too) is untouched, and the exception propagates. After a step
        ``p.grad`` is the training gradient, or None.
        """
        self._refuse_unsupported_call(closure)
        if self._training_weights is not None:
            raise RuntimeError(f"{type(self).__name__}.step() after opt.eval(): the parameters "
                               "hold the averaged weights; call opt.train() before stepping")
        if self._stepping:
            raise RuntimeError(f"{type(self).__name__}.step() was called from inside a "
                               "closure of a step that is still running")
        self._stepping, self._zeroed_in_step = True, False
        wrapped_by = _callers.accelerate_gradient_state(self)
        grad_was = _grad_mode.is_enabled()  # as @torch.no_grad() would (see _grad_mode)
        _grad_mode.set_enabled(False)
        try:
            return self._step(closure, probe_closure, wrapped_by)
        finally:
            self._stepping = False
            _grad_mode.set_enabled(grad_was)

    def _step(self, closure, probe_closure, accelerate_state=None):
        params = [p for g in self.param_groups for p in g["params"]]
        # CUDA random states are replayed for the CUDA devices the parameters are on; none
        # can be while CUDA is not initialized (then skip the pass over the parameters)
        devices = {p.device for p in params} if torch.cuda.is_initialized() else ()
        rng_before_train = RngState(devices)
        earlier = self._grads.set_aside(params)
        try:
            loss = _grad_mode.call_with_grad(closure)
            if loss is None:
                raise TypeError(f"{type(self).__name__}.step(): the closure returned None; "
                                "it must return the loss it computed")
        except BaseException:
            self._grads.put_back(earlier)  # the earlier gradients, with what it added
            raise
        accumulated = self._grads.accumulated(earlier, self._zeroed_in_step)
        if accelerate_state is not None:
            _callers.refuse_dropped_micro_batches(accelerate_state, accumulated,
                                                  type(self).__name__)
        work = self._take_into_plan()
        buckets = [b for w in work for b in w.buckets]
        for b in buckets:
            b.take_training_grads(accumulated)
        measuring = self._due_to_measure(work)
        try:
            rng_paired = rng_before_train
            if probe_closure is not None and measuring:
                rng_paired = RngState(devices)
                _grad_mode.call_with_grad(probe_closure)
            for b in buckets:
                b.now.probes = b.take_grads() if probe_closure is not None and measuring \
                    else b.now.own_grads
            for w in work:
                for b in w.buckets:
                    b.now.offsets = self._lookahead_offsets(w, b) if measuring else []
            if measuring:
                self._lookahead.evaluate(work, probe_closure or closure, rng_paired,
                                         self._keeps_lookahead_buffers,
                                         self._lookahead_into_offsets)
            else:  # no lookahead: the statistics give |g|^2 (and the sign sums) alone
                for b in buckets:
                    b.now.lookahead_grads = b.now.own_grads
            self._apply(work, separate_grads=(probe_closure is not None and measuring)
                        or bool(accumulated))
            # a step whose closure raised leaves the clock with the rest of the state
            self._curvature_clock += 1
        finally:
            try:
                self._grads.after_step(params, buckets)  # p.grad: the training gradients
            finally:
                for w in work:  # this step's records dropped: the next starts fresh ones
                    w.clear()
        self._warn_if_unmeasured()
        return loss

    def _take_into_plan(self) -> List[_plan.GroupWork]:
        """This step's buckets, with the closure's gradients moved out of ``p.grad`` into
        them: the last step's layout and caches while the parameters with a gradient and
        their storage are the same (checked while taking them), else planned anew."""
        key = _plan.options_key(self.param_groups)
        if key == self._plan_key and (not self._plan_idle or
                                      _plan.idle_still_idle(self._plan_idle)):
            work = self._plan_template
            buckets = [b for w in work for b in w.buckets]
            taken = []
            for b in buckets:
                if not b.take_if_planned():
                    for t in taken:
                        t.put_back(t.now.raw)
                    break
                taken.append(b)
            else:
                return work
        template = _plan.plan(self.param_groups, self._sign_mode,
                              keep_empty=self.process_group is not None)
        reusable = _plan.reusable(self.param_groups)
        self._plan_template = template
        self._plan_key = key if reusable else None
        self._plan_idle = _plan.idle_params(self.param_groups)
        for b in (b for w in template for b in w.buckets):
            b.take_if_planned(check=False)
        return template

    def _forget_plan(self) -> None:
        """After anything that replaces state or groups (load_state_dict, a new group)."""
        self._plan_key, self._plan_template, self._plan_idle = None, [], []
        self._inputs_written = {}

    def _refuse_unsupported_call(self, closure) -> None:
        # The scaler first: it calls step() without a closure, and its message is the clearer.
        if getattr(self, "grad_scale", None) is not None:
            self.grad_scale = self.found_inf = None
            raise RuntimeError(
                "torch.amp.GradScaler is not supported: a step evaluates three gradients "
                "inside closures, and the scaler unscales one. Use bf16 autocast (no loss "
                "scaling needed), or fp16 without a scaler: a step whose gradients overflow "
                "is skipped and counted (nonfinite='skip').")
        if closure is None:
            raise TypeError(
                f"{type(self).__name__}.step() needs a closure: a function that zeroes the "
                "gradients, computes the loss, calls loss.backward() and returns the loss. "
                "The optimizer calls it again at a lookahead point to measure curvature, "
                "so it cannot work from precomputed gradients alone. For Hugging Face's "
                "Trainer, which calls step() without one, use "
                "secant_ext.huggingface.SecantTrainer; docs/INTEGRATIONS.md shows a plain "
                "loop, Lightning, accelerate and the Trainer.")

    def _apply(self, work: List[_plan.GroupWork], separate_grads: bool) -> None:
        """The rule's three phases for every group whose gradients are in: the statistics
        of each bucket, summed per group (and over ranks); every group's step size (and
        ``nonfinite="raise"`` check) before any update, so a raise leaves all groups at
        ``x_t``, not only the offending one; then the update of each bucket."""
        for w in work:
            w.now.state = self._group_state(w.group)
            _write_step_inputs(w.now.state, w.group, self._inputs_written)
            for b in w.buckets:
                b.now.table = self._statistics(w, b, separate_grads)
        self._reduce_tables(work)
        self._share_grad_norm(work)
        for i, w in enumerate(work):
            self._step_size(i, w)
        for w in work:
            if w.group["nonfinite"] == "raise":
                self._raise_if_skipped(w.now.state, work)
        for w in work:
            for b in w.buckets:
                self._update(w, b)

    @staticmethod
    def _backend_of(w: _plan.GroupWork):
        """The backend of a group's step-size phase: its buckets', or (no bucket on this
        rank) the one its option resolves to for the state's device."""
        return w.buckets[0].backend if w.buckets else \
            _backends.resolve(w.group["backend"], w.now.state.device)

    def _share_grad_norm(self, work: List[_plan.GroupWork]) -> None:
        """``max_grad_norm`` clips by the norm over the whole model, as
        ``clip_grad_norm_(model.parameters())`` does, also across param groups (Hugging Face's
        Trainer splits decay and no-decay parameters): each group's state gets the other
        groups' ``|g|^2``, which ``secant_alpha`` adds to its own. A non-finite one (a group
        that skips) becomes inf, so the others do not move either, as ``clip_grad_norm_``'s
        coefficient 0 would have it. Device ops only; nothing to do with one group."""
        if not work or len(self.param_groups) < 2 or \
                all(g["max_grad_norm"] is None for g in self.param_groups):
            return
        own = [w.now.combined[:, layout.COL_G_SQ].to(torch.float64).sum() for w in work]
        device = work[0].now.state.device
        total = torch.stack([g.to(device) for g in own]).sum()
        for w, g in zip(work, own):
            others = total - g.to(device)
            others = torch.where(torch.isfinite(others), others, torch.inf)
            w.now.state[layout.CLIP_G_SQ_OTHERS].copy_(others.clamp(min=0))

    def _warn_if_unmeasured(self) -> None:
        """Warn once for each way a closure can keep alpha from being measured. Read from the
        device after steps 1, 2, 4, 8, ... only (O(log steps) syncs in all, one each):

        - a stalled lookahead (the ``STALLED`` counter: ``|s|^2 > 0`` but ``|y|^2 == 0``
          exactly): the closure never saw the parameters at ``x + s``;
        - gradients clipped inside the closure: the latest measurement had negative
          curvature with the gradient at ``x + s`` of the same norm as the one at ``x``
          (``|g+|^2 = b + 2a + c`` equal to ``b`` within 1e-4, where float32 sums agree to
          about 1e-6 and two clipped norms to ``1e-6 / max_norm``), which is what
          ``clip_grad_norm_`` on both gradients, or Lightning's ``gradient_clip_val``, makes
          of any curvature: the safeguard then pins alpha at 1."""
        self._host_steps = getattr(self, "_host_steps", 0) + 1
        n = self._host_steps
        warned = self.__dict__.setdefault("_warned", set())
        if n & (n - 1) or len(warned) == 2 or torch.compiler.is_compiling() or _capturing():
            return
        fields = [layout.STALLED, layout.LAST_MEASURED, layout.DOT, layout.S_SQ, layout.Y_SQ]
        states = [self.state[g["params"][0]].get("secant_state") for g in self.param_groups
                  if g["params"]]
        rows = [st[fields] for st in states if st is not None]
        if not rows:
            return
        if len({r.device for r in rows}) > 1:
            rows = [r.cpu() for r in rows]
        rows = torch.stack(rows).tolist()  # the one sync
        stalled = sum(int(r[0]) for r in rows)
        pinned = self._detects_clipped_closure and any(
            m and a < 0 < b and abs(2 * a + c) <= 1e-4 * b for _, m, a, b, c in rows)
        if stalled and "stalled" not in warned:
            warned.add("stalled")
            warnings.warn(
                f"secant_ext: {stalled} step(s) so far had a lookahead gradient "
                "exactly equal to the probe gradient (|y|^2 == 0 with |s|^2 > 0): the "
                "closure did not see the parameters at x + s, so alpha was not measured. "
                "This happens when the model reads the weights' own storage (FSDP2, a "
                "captured CUDA graph, a wrapper holding the weights): pass "
                "lookahead='inplace'. (A loss that is exactly linear in the parameters "
                "also gives y == 0; then this warning can be ignored.) The count is "
                "last_stats.stalled_total.", RuntimeWarning, stacklevel=3)
        if pinned and "clipped" not in warned:
            warned.add("clipped")
            warnings.warn(
                "secant_ext: the gradient at the lookahead point had the same norm as the "
                "one at x_t, with negative curvature: something clipped both gradients to "
                "one norm (clip_grad_norm_ inside the closure, or PyTorch Lightning's "
                "gradient_clip_val), which pins alpha at 1 whatever the curvature. Clip with "
                "the optimizer's max_grad_norm instead: it clips the step and measures alpha "
                "on the unclipped gradients (docs/INTEGRATIONS.md).",
                RuntimeWarning, stacklevel=3)

    def _reduce_tables(self, work: List[_plan.GroupWork]) -> None:
        """Each group's ``combined`` table for ``secant_alpha``; with a ``process_group``,
        the sums of all its ranks, in one all-reduce (which also rewrites the buckets'
        tables for ``update``)."""
        if self.process_group is not None:
            _distributed.reduce_tables(work, self.process_group)
            return
        for w in work:
            tables = [b.now.table for b in w.buckets]
            w.now.combined = tables[0] if len(tables) == 1 else \
                torch.cat([t[:, :layout.NUM_STATS].to(torch.float64) for t in tables])

    # -- state --------------------------------------------------------------------------
    def _group_state(self, group) -> torch.Tensor:
        p = group["params"][0]
        anchor = self.state[p]
        st = anchor.get("secant_state")
        if st is None:
            st = torch.tensor(self._initial_state_values(), dtype=torch.float64,
                              device=p.device)
            anchor["secant_state"] = st
        elif st.device != p.device:  # the model moved (model.to(...))
            st = anchor["secant_state"] = st.to(p.device)
        return st

    def _kernel_buffers(self, bucket, name: str) -> List[torch.Tensor]:
        """The bucket's per-parameter buffers ``name`` (momentum, average) as the kernels
        take them, kept with the plan."""
        buffers = bucket.cache.get(name)
        if buffers is None:
            buffers = [_plan.local(self._buffer(p, name)) for p in bucket.params]
            bucket.cache[name] = buffers
        return buffers

    def _buffer(self, p, name: str):
        """The buffer ``name`` of ``p``, following its dtype, device and layout: those the
        rule names in ``_zero_buffers`` start at zeros, any other (the average) at p."""
        st = self.state[p]
        buf = st.get(name)
        if buf is None:
            buf = torch.zeros_like(p, memory_format=torch.preserve_format) \
                if name in self._zero_buffers else \
                p.detach().clone(memory_format=torch.preserve_format)
            st[name] = buf
        elif buf.dtype != p.dtype or buf.device != p.device or buf.stride() != p.stride():
            buf = torch.empty_like(p, memory_format=torch.preserve_format).copy_(buf)
            st[name] = buf
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
                for p, t in zip(b.params, getattr(b.now, field)):
                    if not torch.isfinite(t).all():
                        raise FloatingPointError(
                            f"non-finite {label} in parameter {names[p]} (shape "
                            f"{tuple(p.shape)}); the step was not applied (nonfinite='raise')")
        elsewhere = "" if self.process_group is None else \
            ", or a non-finite value on another rank of process_group"
        raise FloatingPointError("the secant statistics overflowed (gradients too large for "
                                 f"the accumulator{elsewhere}); the step was not applied "
                                 "(nonfinite='raise')")
