"""The records a step passes from the planning to the kernels and the all-reduce.

``plan`` groups each param group's parameters that have a gradient into buckets the
kernels can take in one call (one dtype, dense storage), as torch.optim's
``_group_tensors_by_device_and_dtype`` does for its foreach paths; parameters the kernels
cannot walk as flat storage go to the eager reference. That plan is kept from step to
step while it holds. What a step computes goes in a record of its own, made anew each
step: ``GroupWork.now`` (whether it measures, the group state, the combined sums) and
``Bucket.now`` (the gradients of each evaluation, the lookahead offsets, the momentum
buffers, the stats table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional, Tuple

import torch

from . import _backends, _host, _layout as layout, distributed as _distributed


def local(t: torch.Tensor) -> torch.Tensor:
    """What the kernels walk: a DTensor's local shard, a complex tensor's real view (as
    torch.optim treats complex parameters), else ``t``; each shares ``t``'s storage."""
    if _distributed.is_dtensor(t):
        t = t.to_local()
    return torch.view_as_real(t) if t.is_complex() else t


def for_kernels(grads, tensors, strides=None) -> List[torch.Tensor]:
    """Each gradient as the kernels take it: local, zeros where a parameter got none at
    this evaluation, and with the strides of its tensor (copied only where they differ).
    ``strides`` (those of ``tensors``, when all are plain tensors) takes the fast path."""
    if strides is not None:  # plain tensors: no DTensor, no complex view to take
        return [t if t is not None and t.stride() == st else _as_kernel_grad(t, x)
                for t, x, st in zip(grads, tensors, strides)]
    return [_as_kernel_grad(t, x) for t, x in zip(grads, tensors)]


def _as_kernel_grad(t, x):
    t = torch.zeros_like(x) if t is None else local(t)
    if t.stride() != x.stride():
        t = torch.empty_like(x, memory_format=torch.preserve_format).copy_(t)
    return t


_ALIGN_BYTES = 16  # wide (16-byte) loads and stores need every tensor to start on one


def empty_like_together(tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    """Uninitialized tensors like ``tensors`` (sizes, strides, dtype, device), carved from
    ONE allocation when they share a dtype and a device and each fills its storage span
    (else one allocation each). Why one: a step's scratch memory is freed when the step
    ends; glibc gives many freed blocks of a megabyte back to the system, and a
    measuring step then faults in fresh pages every time (as much time as its
    arithmetic, docs/PERFORMANCE.md, "SecantAdam's memory"), while one block of their
    total size it keeps for the next request. Each tensor starts 16-byte aligned."""
    if not tensors:
        return []
    first = tensors[0]
    together = all(t.dtype == first.dtype and t.device == first.device and
                   (t.numel() == 0 or 1 + sum((n - 1) * st for n, st in
                                              zip(t.shape, t.stride())) == t.numel())
                   for t in tensors)
    if not together:
        return [torch.empty_like(t, memory_format=torch.preserve_format) for t in tensors]
    unit = max(1, _ALIGN_BYTES // first.element_size())
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() // unit) * unit
    flat = torch.empty(total, dtype=first.dtype, device=first.device)
    return [flat.as_strided(t.shape, t.stride(), offset) for t, offset in zip(tensors, offsets)]


@dataclass
class BucketStep:
    """What one step puts in a bucket (``Bucket.now``), made anew for every step: nothing
    of one step's is there for the next to read."""
    # Gradients as the kernels take them (local, with the strides of tensors): g, s, g_plus.
    grads: List[torch.Tensor] = field(default_factory=list)
    own_grads: List[torch.Tensor] = field(default_factory=list)        # the closure's alone
    probes: List[torch.Tensor] = field(default_factory=list)           # own_grads without a probe
    offsets: List[torch.Tensor] = field(default_factory=list)          # s of the lookahead x + s
    lookahead_grads: List[torch.Tensor] = field(default_factory=list)  # g_plus, at x + s
    taken_grads: List[torch.Tensor] = field(default_factory=list)      # p.grad again after the step
    momenta: List[torch.Tensor] = field(default_factory=list)          # empty without momentum
    table: Optional[torch.Tensor] = None                               # the statistics' [P, K] sums
    raw: List[torch.Tensor] = field(default_factory=list)  # taken by take_if_planned
    raw_fits: bool = False  # raw needs no copy nor restriding (checked while taking)


@dataclass
class Bucket:
    """Parameters of one param group that one backend call takes together: the plan, kept
    from step to step while it holds (``SecantOptimizer._plan_template``), and ``now``,
    this step's record."""
    backend: SimpleNamespace
    params: List[torch.Tensor]    # as the group lists them (p.grad, state, names)
    tensors: List[torch.Tensor]   # what the kernels walk: params, or their local shards
    ptrs: List[int] = field(default_factory=list)  # the params' data_ptr() when planned
    # the strides of plain tensors (None when some are DTensors or complex views)
    strides: Optional[List[tuple]] = None
    # the lookahead buffers, the parameters' own storage, the momentum buffers as the
    # kernels take them
    cache: Dict[str, list] = field(default_factory=dict)
    # the passes over p.grad and p.data (_host): C++ for plain tensors, else Python
    passes: SimpleNamespace = field(default_factory=lambda: _host.PYTHON)
    now: BucketStep = field(default_factory=BucketStep)

    def clear(self) -> None:
        """Drop what a step put here, leaving the plan and its caches for the next one."""
        self.now = BucketStep()

    def take_if_planned(self, check: bool = True) -> bool:
        """Move the closure's gradients out of ``p.grad`` while checking (``check``), in the
        same pass, that a plan of an earlier step still fits them: every parameter has a
        dense gradient and the storage it had when planned. False (``p.grad`` as it was)
        when it does not.

        One pass over the parameters, checks included, rather than one to check and one to
        take: with 10,000 small tensors each pass costs mostly the cache misses of reaching
        every tensor, which a pass that does more per tensor does not add."""
        if not check:
            self.now.raw = _host.move_grads_out_raw(self.params)
            self.now.raw_fits = False
            return True
        taken = self.passes.take_grads(self.params, self.ptrs)
        if taken is None:
            return False
        self.now.raw, fits = taken
        self.now.raw_fits = fits and self.strides is not None
        return True

    def put_back(self, raw) -> None:
        self.passes.put_grads(self.params, raw)

    def take_training_grads(self, accumulated) -> None:
        """From the gradients ``take_if_planned`` moved out: the closure's own gradients as
        the kernels take them, and the training gradients: the same, or with the earlier
        gradients of ``accumulated`` (``{id(p): gradient}``) added."""
        if self.now.raw_fits:  # checked while taking: no view, the kernels' strides
            own = self.now.own_grads = self.now.raw
        else:
            own = _host.copied_views(self.now.raw)
            self.now.own_grads = for_kernels(own, self.tensors, self.strides)
        if not accumulated:
            self.now.taken_grads, self.now.grads = own, self.now.own_grads
            return
        self.now.taken_grads = [g if id(p) not in accumulated else accumulated[id(p)].add_(g)
                                for p, g in zip(self.params, own)]
        self.now.grads = for_kernels(self.now.taken_grads, self.tensors, self.strides)

    def take_grads(self) -> List[torch.Tensor]:
        """The gradients of the evaluation that just ran, moved out of ``p.grad``."""
        return for_kernels(_host.move_grads_out(self.params), self.tensors, self.strides)

    def take_grads_and_point_back(self) -> List[torch.Tensor]:
        """``take_grads`` after a swapped lookahead, with ``p.data`` pointed back at the
        parameters' own storage in the same pass (``Lookahead`` does it again, harmlessly,
        if this raises midway)."""
        grads, fits = self.passes.take_grads_and_set_data(self.params, self.cache["storage"])
        if fits and self.strides is not None:  # checked in the pass: no view, the strides
            return grads
        return for_kernels(_host.copied_views(grads), self.tensors, self.strides)


@dataclass
class GroupStep:
    """What one step decides and computes for a param group (``GroupWork.now``), made anew
    for every step."""
    measure: bool = True                     # this step measures the curvature
    record: bool = False                     # SecantAdam: keep this step for the next measurement
    state: Optional[torch.Tensor] = None     # the float64 group state, set when applying
    combined: Optional[torch.Tensor] = None  # the [R, NUM_STATS] table the step size reads


@dataclass
class GroupWork:
    """One param group's part of a step: its plan (the group, its buckets, the lookahead
    mode) and ``now``, this step's record."""
    group: dict
    sign_mode: int
    buckets: List[Bucket]
    lookahead: str = "swap"                  # "swap" or "inplace"
    now: GroupStep = field(default_factory=GroupStep)

    def clear(self) -> None:
        """Drop what a step put here and in the buckets."""
        self.now = GroupStep()
        for b in self.buckets:
            b.clear()

    @property
    def options(self) -> Dict[str, object]:
        """The update's hyperparameters, as the ops take them (keyword-only)."""
        g = self.group
        return dict(momentum=g.get("momentum", 0.0), nesterov=g.get("nesterov", False),
                    weight_decay=g["weight_decay"], sign_mode=self.sign_mode)


def sign_mode_of(group, optimizer_sign_mode: int) -> int:
    if optimizer_sign_mode != layout.SIGN_NONE and group.get("sign_scale") == "none":
        return layout.SIGN_UNSCALED
    return optimizer_sign_mode


def lookahead_mode(param_groups) -> str:
    """``"auto"`` resolved for these groups: ``"inplace"`` when any parameter is a DTensor
    (FSDP2 all-gathers from the shards' own storage), else ``"swap"``."""
    if any(_distributed.is_dtensor(p) for g in param_groups for p in g["params"]):
        return "inplace"
    return "swap"


def options_key(param_groups):
    """The options that choose buckets, and the groups' parameter lists: a plan made for
    other ones is not tried. Which parameters have a gradient and where their storage is
    (a model moved to another dtype, device or memory format has new storage) are checked
    while the gradients are taken (``Bucket.take_if_planned``, ``idle_still_idle``)."""
    return tuple((g["backend"], g["lookahead"], g.get("momentum", 0.0) > 0, id(g["params"]),
                  len(g["params"])) for g in param_groups)


def reusable(param_groups) -> bool:
    """False with DTensor parameters, whose plan is made anew every step."""
    return not any(_distributed.is_dtensor(p) for g in param_groups for p in g["params"]
                   if type(p) not in (torch.Tensor, torch.nn.Parameter))


def idle_params(param_groups) -> List[torch.Tensor]:
    """The parameters without a gradient, which a plan leaves out."""
    return [p for g in param_groups for p in g["params"] if p.grad is None]


def idle_still_idle(idle) -> bool:
    return all(p.grad is None for p in idle)


def plan(param_groups, optimizer_sign_mode: int, keep_empty: bool) -> List[GroupWork]:
    """One ``GroupWork`` per param group whose parameters have gradients (every group with
    ``keep_empty``: a sharded step joins the all-reduce even with nothing to add)."""
    auto = None
    work = []
    for group in param_groups:
        by_kind: Dict[Tuple[torch.dtype, bool], List[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise ValueError("sparse gradients are not supported by secant_ext "
                                 "optimizers; use torch.optim.SparseAdam for sparse layers")
            t = local(p)
            dense = t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)
            by_kind.setdefault((p.dtype, dense), []).append(p)
        buckets = []
        for (_, dense), ps in by_kind.items():
            tensors = [local(p) for p in ps]
            plain = all(t is p for t, p in zip(tensors, ps))
            buckets.append(Bucket(
                _backends.resolve(group["backend"], ps[0].device) if dense
                else _backends.REFERENCE, ps, tensors,
                [] if any(map(_distributed.is_dtensor, ps)) else [p.data_ptr() for p in ps],
                strides=[t.stride() for t in tensors] if plain else None,
                passes=_host.for_params(ps)))
        if buckets or keep_empty:
            mode = group["lookahead"]
            if mode == "auto":
                auto = auto or lookahead_mode(param_groups)
                mode = auto
            work.append(GroupWork(group, sign_mode_of(group, optimizer_sign_mode), buckets,
                                  lookahead=mode))
    return work
