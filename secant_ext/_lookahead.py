"""The lookahead evaluation: the closure's gradient at ``x_t + s``, with ``x_t`` restored
exactly (docs/ALGORITHM.md, 'The step').

The parameters are pointed (``p.data``) at a buffer holding ``x_t + s`` while the closure
runs, then pointed back at their own, untouched storage: restoring is a pointer swap,
exact in every dtype. The closure replays the random-number state of the evaluation it
pairs with, so dropout masks match and ``y = g_plus - s`` measures curvature, not noise.
Context managers registered by the user (``frozen_batchnorm``) wrap the evaluation.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Iterator

import torch
from torch.nn.modules.batchnorm import _NormBase
from torch.utils.hooks import RemovableHandle

from . import _backends


class RngState:
    """The CPU and CUDA generator states, to replay an evaluation's random numbers."""

    def __init__(self, devices: Iterable[torch.device]):
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


class Lookahead:
    """Runs a closure at ``x_t + s`` and restores ``x_t`` exactly.

    Holds one scratch buffer per parameter for the lookahead point (rebuilt when a
    parameter's shape, dtype, device or strides change) and the registered contexts.
    ``active`` is True while the closure runs (``SecantOptimizer.in_lookahead``)."""

    def __init__(self):
        self.buffers: Dict[torch.Tensor, torch.Tensor] = {}
        self.contexts: "OrderedDict[int, Callable]" = OrderedDict()
        self.active = False

    def register_context(self, factory: Callable) -> RemovableHandle:
        handle = RemovableHandle(self.contexts)
        self.contexts[handle.id] = factory
        return handle

    def evaluate(self, buckets, closure: Callable, rng: RngState) -> None:
        """Fill each bucket's ``lookahead_grads`` with ``closure``'s gradient at
        ``params + probes`` (the probes already have the parameters' strides). The
        parameters are back at ``x_t`` (and ``p.grad`` is None) when this returns or
        raises."""
        for b in buckets:
            b.backend.lookahead(b.params, b.probes, [self._buffer(p) for p in b.params])
        params = [p for b in buckets for p in b.params]
        saved = [p.data for p in params]
        for p in params:
            p.data = self.buffers[p]
        try:
            rng.restore()
            self.active = True
            with torch.enable_grad(), contextlib.ExitStack() as stack:
                for factory in list(self.contexts.values()):
                    stack.enter_context(factory())
                closure()
            for b in buckets:
                b.lookahead_grads = b.take_grads()
        finally:
            self.active = False
            for p, x in zip(params, saved):
                p.data = x
                p.grad = None

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or \
                buf.device != p.device or buf.stride() != p.stride():
            buf = torch.empty_like(p, memory_format=torch.preserve_format)
            self.buffers[p] = buf
        return buf


@contextlib.contextmanager
def frozen_batchnorm(model: torch.nn.Module) -> Iterator[None]:
    """Keep the running statistics (mean, var, batch count) of every BatchNorm /
    InstanceNorm module of ``model`` as they were on entry. Exact: buffers are restored
    with ``copy_``. The lookahead forward pass runs the model at ``x + s``, a point the
    optimizer never steps to; statistics updated there would describe the wrong weights.
    Register it with the optimizer so it wraps each lookahead evaluation::

        opt.register_lookahead_context(lambda: secant_ext.frozen_batchnorm(model))
    """
    saved = []
    for module in model.modules():
        if isinstance(module, _NormBase) and module.track_running_stats:
            buffers = [b for b in (module.running_mean, module.running_var,
                                   module.num_batches_tracked) if b is not None]
            saved.append((buffers, [b.clone() for b in buffers]))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffers, copies in saved:
                for b, c in zip(buffers, copies):
                    b.copy_(c)
