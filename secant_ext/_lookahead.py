"""The lookahead evaluation: the closure's gradient at ``x_t + s``, with ``x_t`` restored
exactly (docs/ALGORITHM.md, 'The step'), by a pointer swap or in place (``Lookahead``).
The closure replays the random-number state of the evaluation it pairs with, so dropout
masks match and ``y = g_plus - s`` measures curvature, not noise.
Context managers registered by the user (``contexts.frozen_batchnorm``) wrap the evaluation.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable, Dict, Iterable

import torch
from torch.utils.hooks import RemovableHandle

from . import _backends, _plan, distributed as _distributed
from ._host import grad_mode as _grad_mode


class RngState:
    """The CPU and CUDA generator states, to replay an evaluation's random numbers."""

    def __init__(self, devices: Iterable[torch.device]):
        self.cpu = torch.default_generator.get_state()  # (torch.get_rng_state, one call less)
        self.cuda = {}
        if not devices:  # (CUDA not initialized: no CUDA state to capture)
            return
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
        torch.default_generator.set_state(self.cpu)
        for d, st in self.cuda.items():
            torch.cuda.set_rng_state(st, d)


class Lookahead:
    """Runs a closure at ``x_t + s`` and restores ``x_t`` exactly, in one of two ways:

    - ``"swap"``: each parameter's ``p.data`` points at a buffer holding ``x_t + s`` while
      the closure runs, then back at its own, untouched storage. Cheapest (the buffer is
      written once), but invisible to code that reads the parameters' original storage.
    - ``"inplace"``: ``x_t`` is copied into a backup buffer and ``s`` added in the
      parameters' own storage (one fused pass); afterwards the backup is copied back, bit
      for bit, also when the closure raises. Works with FSDP2 (which all-gathers from the
      shards' storage) and with anything else that captured the storage; moves more bytes.

    Holds one scratch buffer per parameter (the lookahead point, or the backup; rebuilt
    when a tensor's shape, dtype, device or strides change), between steps too unless
    ``evaluate`` is told otherwise, and the registered contexts.
    ``active`` is True while the closure runs (``SecantOptimizer.in_lookahead``)."""

    def __init__(self):
        self.buffers: Dict[torch.Tensor, torch.Tensor] = {}
        self.contexts: "OrderedDict[int, Callable]" = OrderedDict()
        self.active = False

    def register_context(self, factory: Callable) -> RemovableHandle:
        handle = RemovableHandle(self.contexts)
        self.contexts[handle.id] = factory
        return handle

    def evaluate(self, work, closure: Callable, rng: RngState, keep_buffers: bool = True,
                 into_offsets: bool = False) -> None:
        """Fill each bucket's ``lookahead_grads`` with ``closure``'s gradient at
        ``x_t + offsets`` (the offsets already have the kernels' layout). The parameters are
        back at ``x_t`` (and ``p.grad`` is None) when this returns or raises.
        ``keep_buffers=False``: the scratch buffers are let go afterwards (a rule that
        measures on few steps holds them for those steps alone). ``into_offsets``: a
        swapped bucket's lookahead point is written over its offsets (the rule recomputes
        them afterwards), so it needs no buffer of its own."""
        swapped = [b for w in work if w.lookahead == "swap" for b in w.buckets if b.now.offsets]
        inplace = [b for w in work if w.lookahead == "inplace" for b in w.buckets if b.now.offsets]
        staying = [b for w in work for b in w.buckets if not b.now.offsets]  # evaluated at x_t
        buckets = swapped + inplace + staying
        # (FSDP2 shards change in place only with the in-place lookahead)
        fsdp = _distributed.FsdpResharding([p for b in inplace for p in b.params]) \
            if inplace else None
        points = {id(b): b.now.offsets if into_offsets else self._buffers(b) for b in swapped}
        for b in swapped:  # (out may be s: the kernels read each block before writing it)
            b.backend.lookahead(b.tensors, b.now.offsets, points[id(b)])
        moved = []
        pointed_back = 0  # swapped buckets whose p.data is the parameters' own again
        try:
            if fsdp is not None:  # so the closure all-gathers the shards written below
                fsdp.reshard()
            for b in inplace:
                b.backend.lookahead_inplace(b.tensors, b.now.offsets, self._buffers(b))
                moved.append(b)
            for b in swapped:
                b.passes.set_data(b.params, self._swap_targets(b, points[id(b)]))
            rng.restore()
            self.active = True
            _grad_mode.call_with_grad(
                (lambda: self._in_contexts(closure)) if self.contexts else closure)
            for b in swapped:  # leaves p.grad None, p.data the parameter's own
                b.now.lookahead_grads = b.take_grads_and_point_back()
                pointed_back += 1
            for b in inplace + staying:
                b.now.lookahead_grads = b.take_grads()
        except BaseException:
            for b in buckets:
                for p in b.params:
                    p.grad = None
            raise
        finally:
            self.active = False
            for b in swapped[pointed_back:]:  # (no "storage" yet: the swap never happened)
                for p, x in zip(b.params, b.cache.get("storage", ())):
                    p.data = x
            for b in moved:
                b.backend.restore(b.tensors, b.cache["buffers"])
            if fsdp is not None:  # no module keeps the gathered x_t + s
                fsdp.reshard()
            if not keep_buffers:
                self._let_go(swapped + inplace)

    def _let_go(self, buckets) -> None:
        """Drop the scratch buffers of ``buckets`` (they are allocated again when needed)."""
        for b in buckets:
            b.cache.pop("buffers", None)
            b.cache.pop("swap_targets", None)
            for p in b.params:
                self.buffers.pop(p, None)

    def _in_contexts(self, closure: Callable) -> None:
        """``closure()`` inside the registered contexts, entered in registration order."""
        with contextlib.ExitStack() as stack:
            for factory in list(self.contexts.values()):
                stack.enter_context(factory())
            closure()

    def _swap_targets(self, bucket, points):
        """What ``p.data`` points at during a swapped lookahead (``points``, a complex
        parameter's as complex; kept with the plan when they are the kept buffers), and the
        parameters' own storage kept to point back to."""
        if "storage" not in bucket.cache:
            bucket.cache["storage"] = [p.data for p in bucket.params]
        kept = points is bucket.cache.get("buffers")
        if kept and "swap_targets" in bucket.cache:
            return bucket.cache["swap_targets"]
        targets = [torch.view_as_complex(buf) if p.is_complex() else buf
                   for p, buf in zip(bucket.params, points)]
        if kept:
            bucket.cache["swap_targets"] = targets
        return targets

    def _buffers(self, bucket):
        """Per parameter of ``bucket``, a buffer like the tensor the kernels walk (kept in
        the bucket's cache while its plan is)."""
        if "buffers" in bucket.cache:
            return bucket.cache["buffers"]

        def fits(buf, t):
            return (buf.shape, buf.stride(), buf.dtype, buf.device) == \
                (t.shape, t.stride(), t.dtype, t.device)
        stale = [(p, t) for p, t in zip(bucket.params, bucket.tensors)
                 if p not in self.buffers or not fits(self.buffers[p], t)]
        if stale:  # (in one allocation: _plan.empty_like_together says why)
            fresh = _plan.empty_like_together([t for _, t in stale])
            self.buffers.update((p, buf) for (p, _), buf in zip(stale, fresh))
        out = bucket.cache["buffers"] = [self.buffers[p] for p in bucket.params]
        return out
