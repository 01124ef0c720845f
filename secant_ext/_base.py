"""The step shared by the three optimizers: closures, lookahead, statistics, update.

A step (SPEC section 1), for each param group:

1. ``closure()`` at ``x_t`` gives the training gradient ``g``.
2. ``probe_closure()`` at ``x_t`` gives ``s`` (without one, ``s = g``).
3. The parameters point at lookahead storage holding ``x_t + s``; the probe closure (or the
   training closure) runs again there, replaying the RNG state of the evaluation it pairs
   with so that dropout masks match, and gives ``g_plus``. The parameters then point back
   at the untouched ``x_t``: restoring is a pointer swap, exact in every dtype.
4. ``secant_stats`` sums ``<s,y>, |s|^2, |y|^2`` (``y = g_plus - s``), ``secant_alpha``
   turns them into alpha on the device, and ``update`` moves the parameters.

Gradients are *moved* out of ``p.grad`` after each evaluation (``p.grad = None``), so a
closure that zeroes gradients in place cannot clobber the ones already taken, and no copy
is made. After the step ``p.grad`` holds the training gradient again.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch.optim import Optimizer

from . import _backends, _layout as L, distributed as _distributed

NONFINITE_MODES = ("skip", "raise")


@dataclass
class SecantStats:
    """Statistics of the latest step, as device tensors (reading one syncs, nothing else
    does). 0-dim with one param group, shape ``[num_groups]`` with several."""
    alpha: torch.Tensor
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


class _RngState:
    """The CPU and CUDA generator states, to replay an evaluation's random numbers."""

    def __init__(self, devices):
        self.cpu = torch.get_rng_state()
        cuda = [d for d in devices if d.type == "cuda"]
        if cuda and torch.cuda.is_current_stream_capturing():
            # PyTorch refuses to read or set a CUDA generator's state during graph capture
            # ("Cannot call CUDAGeneratorImpl::current_seed during CUDA graph capture").
            _backends._warn_once(
                "rng-capture", "secant_ext: inside CUDA graph capture the CUDA random state "
                "cannot be replayed, so dropout masks of the lookahead evaluation differ "
                "from those at x_t; capture models without dropout for exact curvature")
            cuda = []
        self.cuda = {d: torch.cuda.get_rng_state(d) for d in cuda}

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, st in self.cuda.items():
            torch.cuda.set_rng_state(st, d)


def _check_positive_float(name: str, value, allow_zero: bool = True) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


class SecantOptimizer(Optimizer):
    """Base class: the learning rate alpha of each param group comes from the regularized
    stochastic secant equation. Use ``SecantSGD``, ``SecantSGDM`` or ``SecantSignSGD``."""

    _sign_mode = L.SIGN_NONE
    # GradScaler then hands us its scale instead of unscaling one gradient itself, so a
    # step under it can be refused with a clear message (see ``step``).
    _step_supports_amp_scaling = True

    def __init__(self, params, *, rule: str = "secant", safeguard: bool = True,
                 nonfinite: str = "skip", weight_decay: float = 0.0, momentum: float = 0.0,
                 nesterov: bool = False, sign_scale: str = "mean", backend: str = "auto",
                 process_group=None):
        if rule not in L.RULES:
            raise ValueError(f"rule must be one of {tuple(L.RULES)}, got {rule!r}")
        if not isinstance(safeguard, bool):
            raise ValueError(f"safeguard must be True or False, got {safeguard!r}")
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
        _check_positive_float("weight_decay", weight_decay)
        _check_positive_float("momentum", momentum)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0, got momentum=0")
        if sign_scale not in ("mean", "none"):
            raise ValueError(f"sign_scale must be 'mean' or 'none', got {sign_scale!r}")
        _backends.validate_backend(backend)
        defaults = dict(rule=rule, safeguard=safeguard, nonfinite=nonfinite,
                        weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        sign_scale=sign_scale, backend=backend)
        super().__init__(params, defaults)
        self.process_group = process_group
        self._lookahead_buffers: Dict[torch.Tensor, torch.Tensor] = {}
        self._lookahead_contexts: List[Callable] = []
        self.in_lookahead = False
        for group in self.param_groups:
            self._check_group(group)

    # -- validation ---------------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_lookahead_buffers"):  # not during __init__
            self._check_group(self.param_groups[-1])

    def _check_group(self, group) -> None:
        if group["rule"] not in L.RULES:
            raise ValueError(f"rule must be one of {tuple(L.RULES)}, got {group['rule']!r}")
        _check_positive_float("weight_decay", group["weight_decay"])
        _check_positive_float("momentum", group["momentum"])
        _backends.validate_backend(group["backend"])
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ValueError("a param group lists the same parameter twice; pass each "
                             "parameter once")
        devices = {p.device for p in group["params"]}
        if len(devices) == 1 and group["backend"] != "auto":
            _backends.resolve(group["backend"], next(iter(devices)))  # fails loudly now
        if len(devices) > 1:
            raise ValueError("all parameters of a param group must be on one device (alpha "
                             f"is shared by the group), got {sorted(map(str, devices))}; "
                             "put each device's parameters in a group of its own")
        for p in group["params"]:
            if _distributed.is_dtensor(p):
                raise ValueError(_distributed.DTENSOR_REFUSED)
            if p.is_complex():
                raise ValueError(f"complex parameters are not supported (got {p.dtype}); "
                                 "pass torch.view_as_real(p) views instead")
            if not p.is_floating_point():
                raise ValueError(f"parameters must be floating point, got {p.dtype}")
            if p.is_sparse:
                raise ValueError("sparse parameters are not supported")

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # checkpoints from older versions lack new options
            for key, value in dict(rule="secant", safeguard=True, nonfinite="skip",
                                   weight_decay=0.0, momentum=0.0, nesterov=False,
                                   sign_scale="mean", backend="auto").items():
                group.setdefault(key, value)
        self.__dict__.setdefault("process_group", None)
        self.__dict__.setdefault("_lookahead_buffers", {})
        self.__dict__.setdefault("_lookahead_contexts", [])
        self.__dict__.setdefault("in_lookahead", False)

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state["_lookahead_buffers"] = {}  # scratch, rebuilt on the next step
        state["process_group"] = None
        return state

    # -- state --------------------------------------------------------------------------
    def _group_state(self, group) -> torch.Tensor:
        anchor = self.state[group["params"][0]]
        st = anchor.get("secant_state")
        if st is None:
            st = torch.tensor(L.initial_state_values(), dtype=torch.float64,
                              device=group["params"][0].device)
            anchor["secant_state"] = st
        return st

    def load_state_dict(self, state_dict) -> None:
        # The base class casts floating state to each parameter's dtype; the group state is
        # float64 on purpose (exact counters, full-precision alpha), so it is kept aside.
        state_dict = dict(state_dict)
        per_param = {k: dict(v) for k, v in state_dict["state"].items()}
        kept = {k: v.pop("secant_state") for k, v in per_param.items() if "secant_state" in v}
        state_dict["state"] = per_param
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        by_id = dict(zip(ids, params))
        for k, st in kept.items():
            if st.shape != (L.STATE_SIZE,):
                raise ValueError(f"secant_state of saved parameter {k} has shape "
                                 f"{tuple(st.shape)}, expected ({L.STATE_SIZE},)")
            p = by_id[k]
            self.state[p]["secant_state"] = st.to(dtype=torch.float64, device=p.device)
        for p in params:
            buf = self.state[p].get("momentum_buffer") if p in self.state else None
            if buf is not None and buf.shape != p.shape:
                raise ValueError(f"the state dict does not fit this model: a momentum buffer "
                                 f"of shape {tuple(buf.shape)} was loaded for a parameter of "
                                 f"shape {tuple(p.shape)}")

    # -- statistics ---------------------------------------------------------------------
    @property
    def last_stats(self) -> SecantStats:
        states = torch.stack([self._group_state(g) for g in self.param_groups]) \
            if len({g["params"][0].device for g in self.param_groups}) == 1 else \
            torch.stack([self._group_state(g).cpu() for g in self.param_groups])
        if len(self.param_groups) == 1:
            states = states[0]
        col = lambda i: states[..., i]  # noqa: E731
        s_sq = col(L.S_SQ)
        return SecantStats(alpha=col(L.ALPHA), dot=col(L.DOT), s_sq=s_sq, y_sq=col(L.Y_SQ),
                           curvature=col(L.DOT) / s_sq, grad_norm=col(L.G_SQ).sqrt(),
                           skipped=col(L.LAST_SKIPPED) != 0, clipped=col(L.LAST_CLIPPED) != 0,
                           step=col(L.STEP), skipped_total=col(L.SKIPPED),
                           clipped_total=col(L.CLIPPED))

    # -- lookahead helpers ----------------------------------------------------------------
    def register_lookahead_context(self, factory: Callable):
        """Enter ``factory()`` (a context manager) around each lookahead evaluation, e.g.
        ``secant_ext.frozen_batchnorm(model)``. Returns a handle with ``remove()``."""
        self._lookahead_contexts.append(factory)
        contexts = self._lookahead_contexts

        class _Handle:
            def remove(self_inner):
                if factory in contexts:
                    contexts.remove(factory)
        return _Handle()

    # -- the step -----------------------------------------------------------------------
    def _take_grads(self, params) -> List[Optional[torch.Tensor]]:
        grads = []
        for p in params:
            t = p.grad
            # DDP(gradient_as_bucket_view=True) leaves p.grad a view into its bucket, which
            # the next backward overwrites in place: such a gradient is kept as a copy.
            if t is not None and t._is_view():
                t = t.clone(memory_format=torch.preserve_format)
            grads.append(t)
            p.grad = None
        return grads

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
        devices = {p.device for g in self.param_groups for p in g["params"]}
        rng_before_train = _RngState(devices)
        with torch.enable_grad():
            loss = closure()
        if loss is None:
            raise TypeError(f"{type(self).__name__}.step(): the closure returned None; it "
                            "must return the loss it computed")
        plan = self._plan()
        flat = [p for _, buckets in plan for _, ps in buckets for p in ps]
        g = self._take_grads(flat)
        try:
            if probe_closure is not None:
                rng_paired = _RngState(devices)
                with torch.enable_grad():
                    probe_closure()
                s = self._take_grads(flat)
            else:
                rng_paired, s = rng_before_train, g
            s = [t if t is not None else torch.zeros_like(p) for p, t in zip(flat, s)]
            g_plus = self._evaluate_lookahead(plan, flat, s, probe_closure or closure,
                                              rng_paired)
            self._apply(plan, g, s, g_plus, has_probe=probe_closure is not None)
        finally:
            for p, t in zip(flat, g):
                p.grad = t
        return loss

    def _plan(self):
        """[(group, [(backend, params)])]: the parameters with a gradient, bucketed by
        dtype; parameters the kernels cannot treat as flat storage go to the reference."""
        plan = []
        for group in self.param_groups:
            buckets: Dict[tuple, List[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("sparse gradients are not supported by secant_ext "
                                     "optimizers; use torch.optim.SparseAdam for sparse layers")
                dense = p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last)
                buckets.setdefault((p.dtype, dense), []).append(p)
            out = []
            for (_, dense), ps in buckets.items():
                backend = _backends.resolve(group["backend"], ps[0].device) if dense else \
                    _backends.REFERENCE
                out.append((backend, ps))
            plan.append((group, out))
        return plan

    def _evaluate_lookahead(self, plan, flat, s, closure, rng: _RngState):
        """``g_plus``: the closure's gradient at ``x + s``; parameters restored exactly."""
        s_of = dict(zip(flat, s))
        for _, buckets in plan:
            for backend, ps in buckets:
                backend.lookahead(ps, [_like(s_of[p], p) for p in ps],
                                  [self._lookahead_buffer(p) for p in ps])
        saved = [p.data for p in flat]
        for p in flat:
            p.data = self._lookahead_buffers[p]
        try:
            rng.restore()
            self.in_lookahead = True
            with torch.enable_grad(), contextlib.ExitStack() as stack:
                for factory in self._lookahead_contexts:
                    stack.enter_context(factory())
                closure()
            return [t if t is not None else torch.zeros_like(p)
                    for p, t in zip(flat, self._take_grads(flat))]
        finally:
            self.in_lookahead = False
            for p, x in zip(flat, saved):
                p.data = x
                p.grad = None

    def _lookahead_buffer(self, p: torch.Tensor) -> torch.Tensor:
        buf = self._lookahead_buffers.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or \
                buf.device != p.device or buf.stride() != p.stride():
            buf = torch.empty_like(p, memory_format=torch.preserve_format)
            self._lookahead_buffers[p] = buf
        return buf

    def _apply(self, plan, g, s, g_plus, has_probe: bool) -> None:
        flat = [p for _, buckets in plan for _, ps in buckets for p in ps]
        g_of, s_of, gp_of = dict(zip(flat, g)), dict(zip(flat, s)), dict(zip(flat, g_plus))
        work = []
        for group, buckets in plan:
            # With a process group every rank joins the collective, even with no gradient here.
            if not buckets and self.process_group is None:
                continue
            state = self._group_state(group)
            mu, nesterov, wd = group["momentum"], group["nesterov"], group["weight_decay"]
            sign = self._sign_mode != L.SIGN_NONE
            sign_mode = self._sign_mode
            if sign and group["sign_scale"] == "none":
                sign_mode = L.SIGN_UNSCALED
            tables, args = [], []
            for backend, ps in buckets:
                ms = [self._momentum_buffer(p) for p in ps] if mu > 0 else []
                gs = [_like(g_of[p], p) for p in ps]
                table = backend.secant_stats(
                    [_like(s_of[p], p) for p in ps], [_like(gp_of[p], p) for p in ps],
                    gs if has_probe else [], ps, ms, state, mu, nesterov, wd,
                    sign_mode == L.SIGN_SCALED)
                tables.append(table)
                args.append((backend, ps, gs, ms))
            work.append((group, state, sign_mode, args, tables))
        reduced = self._reduce_tables(work)
        # Every group's alpha (and nonfinite="raise" check) before any update, so a raise
        # leaves all groups at x_t, not only the offending one.
        for (group, state, _, args, _), (combined, _) in zip(work, reduced):
            alpha_backend = args[0][0] if args else \
                _backends.resolve(group["backend"], state.device)
            alpha_backend.secant_alpha(combined, state, L.RULES[group["rule"]],
                                       group["safeguard"])
        for group, state, _, _, _ in work:
            if group["nonfinite"] == "raise":
                self._raise_if_skipped(state, flat, g, s, g_plus)
        for (group, state, sign_mode, args, _), (_, tables) in zip(work, reduced):
            mu, nesterov, wd = group["momentum"], group["nesterov"], group["weight_decay"]
            for (backend, ps, gs, ms), table in zip(args, tables):
                backend.update(ps, gs, ms, table, state, mu, nesterov, wd, sign_mode)

    def _reduce_tables(self, work):
        """Per entry of ``work`` (``(group, state, sign_mode, args, tables)``): the table
        ``secant_alpha`` reads and the tables ``update`` reads. With a ``process_group``,
        summed over its ranks in one all-reduce (``distributed.reduce_tables``)."""
        if self.process_group is not None:
            return _distributed.reduce_tables(work, self.process_group)
        return [(tables[0] if len(tables) == 1 else
                 torch.cat([t[:, :L.NUM_STATS].to(torch.float64) for t in tables]), tables)
                for _, _, _, _, tables in work]

    def _momentum_buffer(self, p):
        st = self.state[p]
        buf = st.get("momentum_buffer")
        if buf is None:  # zeros until the first applied step makes it the gradient
            buf = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["momentum_buffer"] = buf
        return buf

    def _raise_if_skipped(self, state, flat, g, s, g_plus) -> None:
        if state[L.LAST_SKIPPED].item() == 0:  # syncs: nonfinite="raise" asks for a check
            return
        names = {}
        for k, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                names[p] = (group.get("param_names") or [None] * len(group["params"]))[i] \
                    or f"param_groups[{k}]['params'][{i}]"
        for label, grads in (("gradient", g), ("probe gradient", s),
                             ("lookahead gradient", g_plus)):
            for p, t in zip(flat, grads):
                if t is not None and not torch.isfinite(t).all():
                    raise FloatingPointError(
                        f"non-finite {label} in parameter {names[p]} (shape "
                        f"{tuple(p.shape)}); the step was not applied (nonfinite='raise')")
        elsewhere = "" if self.process_group is None else \
            ", or a non-finite value on another rank of process_group"
        raise FloatingPointError("the secant statistics overflowed (gradients too large for "
                                 f"the accumulator{elsewhere}); the step was not applied "
                                 "(nonfinite='raise')")


def _like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of ``p``, so the kernels can walk both as flat storage."""
    if t.stride() == p.stride():
        return t
    return torch.empty_like(p, memory_format=torch.preserve_format).copy_(t)
