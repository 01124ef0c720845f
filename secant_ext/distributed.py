"""torch.distributed support: the statistics summed over a process group, and what the
optimizers refuse.

DDP needs nothing from here (its gradients arrive averaged, so every rank computes the
same alpha). FSDP2 (DTensor parameters) takes the process group of the parameters' device
mesh and the in-place lookahead; a manual shard passes ``process_group=``. Either way
``reduce_tables`` sums the statistics over the group. See ``docs/DISTRIBUTED.md``.
"""
from __future__ import annotations

import torch

from . import _layout as layout

DTENSOR_NEEDS_INPLACE = (
    "DTensor parameters (FSDP2 fully_shard) need lookahead='inplace' (or 'auto'): with "
    "lookahead='swap' p.data points at a buffer holding x + s, but FSDP2 all-gathers from "
    "its own sharded storage, so the closure would silently run at x again")


def is_dtensor(t: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor``; imports it only for tensor
    subclasses, so plain parameters cost nothing."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def check_dtensor(p: torch.Tensor) -> None:
    """A DTensor parameter the optimizer can step: sharded (``Shard``) on a 1-D mesh, as
    FSDP2's ``fully_shard`` leaves it. Sums over that mesh's ranks are then the sums over
    the whole tensor; a replicated placement would count it once per rank."""
    from torch.distributed.tensor import Shard
    mesh, placements = p.device_mesh, p.placements
    if mesh.ndim != 1 or not all(isinstance(pl, Shard) for pl in placements):
        raise ValueError(
            f"DTensor parameters must be sharded on a 1-D device mesh (FSDP2's fully_shard), "
            f"got placements {tuple(placements)} on a {mesh.ndim}-D mesh; HSDP and tensor "
            "parallel layouts are not supported (docs/DISTRIBUTED.md)")


def process_group_of(params):
    """The process group of the DTensor parameters' device mesh (None without DTensors);
    they must all share one mesh."""
    meshes = {id(p.device_mesh): p.device_mesh for p in params if is_dtensor(p)}
    if not meshes:
        return None
    if len(meshes) > 1:
        raise ValueError("the DTensor parameters of one optimizer live on "
                         f"{len(meshes)} device meshes; shard them all on one mesh, or pass "
                         "process_group= explicitly")
    return next(iter(meshes.values())).get_group()


class FsdpResharding:
    """The FSDP2 modules that own some of ``params``, resharded on demand.

    An FSDP2 module with ``reshard_after_backward=False`` (or between forward and backward)
    keeps its all-gathered weights and would run its next forward on them, ignoring an
    in-place change of the shards. ``reshard()`` frees them, so the next forward gathers
    the shards as they are. Modules are found through FSDP2's registry of module states;
    with no DTensor parameter this costs nothing."""

    def __init__(self, params):
        self.modules = []
        ids = {id(p) for p in params if is_dtensor(p)}
        if not ids:
            return
        from torch.distributed._composable_state import _module_state_mapping
        for module, state_ref in list(_module_state_mapping.items()):
            state = state_ref() if callable(state_ref) else state_ref
            group = getattr(state, "_fsdp_param_group", None)
            if group is not None and any(id(fp.sharded_param) in ids
                                         for fp in group.fsdp_params):
                self.modules.append((module, group))

    def reshard(self) -> None:
        for module, group in self.modules:
            if not group.is_sharded:
                module.reshard()


def reduce_tables(work, process_group) -> None:
    """The statistics of every param group summed over the ranks of ``process_group``, in
    ONE float64 all-reduce, before the division.

    ``work`` is the step's list of ``_plan.GroupWork``. Sets each group's ``combined``
    (the ``[1, NUM_STATS]`` float64 sums ``secant_alpha`` reads) and replaces each bucket's
    ``table`` by a ``[1, K]`` table of the global sums for ``update``.

    The vector's layout follows ``group["params"]`` (the same on every rank), not which
    tensors have a gradient here: a rank whose shard is empty, or with no gradient at all in
    a group, adds zeros and still joins. A non-finite value on one rank makes the sums
    non-finite on all, so every rank skips the step. For the scaled sign step each tensor's
    ``sum |v|`` and element count are summed too, and the column is rescaled so that
    ``update``'s division by the local count gives the mean over the whole tensor. The
    layout is known on the host: no device value is read, nothing syncs."""
    import torch.distributed as dist

    f64 = torch.float64
    device = work[0].now.state.device
    pieces, sign_layouts = [], []
    for w in work:
        tables = [b.now.table for b in w.buckets]
        stats = torch.cat([t[:, :layout.NUM_STATS].to(f64) for t in tables]).sum(0) \
            if tables else torch.zeros(layout.NUM_STATS, dtype=f64, device=w.now.state.device)
        pieces.append(stats.to(device))
        sign_layout = None
        if w.sign_mode == layout.SIGN_SCALED:
            index = {p: i for i, p in enumerate(w.group["params"])}
            positions = [[index[p] for p in b.params] for b in w.buckets]
            abs_sums = torch.zeros(len(index), dtype=f64, device=device)
            counts = [0.0] * len(index)
            for pos, b in zip(positions, w.buckets):
                _put(abs_sums, pos, b.now.table[:, layout.NUM_STATS:].to(f64).sum(0).to(device))
                for i, t in zip(pos, b.tensors):
                    counts[i] = float(t.numel())  # this rank's elements of the tensor
            local_counts = _host_vector(counts, device)
            pieces += [abs_sums, local_counts]
            sign_layout = (positions, local_counts)
        sign_layouts.append(sign_layout)
    total = torch.cat(pieces)
    dist.all_reduce(total, group=process_group)

    start = 0
    for w, sign_layout in zip(work, sign_layouts):
        stats = total[start:start + layout.NUM_STATS]
        start += layout.NUM_STATS
        sign_columns = [stats[:0]] * len(w.buckets)
        if sign_layout is not None:
            positions, local_counts = sign_layout
            n = local_counts.numel()
            abs_sums, counts = total[start:start + n], total[start + n:start + 2 * n]
            start += 2 * n
            # update divides by the local count; the mean wants the global one
            sign_columns = [_take(abs_sums, pos) * _take(local_counts, pos)
                            / _take(counts, pos).clamp(min=1) for pos in positions]
        for b, cols in zip(w.buckets, sign_columns):
            b.now.table = torch.cat([stats, cols]).to(device=b.now.table.device,
                                                      dtype=b.now.table.dtype).unsqueeze(0)
        w.now.combined = stats.unsqueeze(0).to(w.now.state.device)


def _runs(positions):
    """(start in positions, first, stop) of each run of consecutive integers."""
    runs, k = [], 0
    while k < len(positions):
        j = k
        while j + 1 < len(positions) and positions[j + 1] == positions[j] + 1:
            j += 1
        runs.append((k, positions[k], positions[j] + 1))
        k = j + 1
    return runs


def _put(dst: torch.Tensor, positions, src: torch.Tensor) -> None:
    """``dst[positions] = src`` by slices: no index tensor to copy to the device."""
    for k, a, b in _runs(positions):
        dst[a:b].copy_(src[k:k + b - a])


def _take(src: torch.Tensor, positions) -> torch.Tensor:
    """``src[positions]`` by slices (one slice when the positions are consecutive)."""
    parts = [src[a:b] for _, a, b in _runs(positions)]
    return parts[0] if len(parts) == 1 else torch.cat(parts) if parts else src[:0]


def _host_vector(values, device: torch.device) -> torch.Tensor:
    """A float64 vector of host numbers on ``device``; from pinned memory to a GPU, so the
    copy is asynchronous."""
    t = torch.tensor(values, dtype=torch.float64)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
