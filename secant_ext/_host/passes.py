"""The step's passes over the parameters' Python objects: ``p.grad`` moved out and put back,
``p.data`` pointed at the lookahead buffers and back.

Each function walks its lists once. They are written here in Python, which is their
specification and what runs without the compiled extension, or for parameters of any type
other than exactly ``torch.Tensor`` or ``torch.nn.Parameter`` (a subclass may override
``.grad`` or ``.data``). ``secant_ext._C`` has the same functions in C++
(``csrc/host_passes.cpp``), which the step uses for plain parameters: a Python pass pays
for the interpreter reaching each tensor's objects, which on many small tensors costs more
than the kernels' memory traffic; the C++ one is a pointer walk (numbers in
docs/PERFORMANCE.md, 'The step's fixed cost').
``for_params`` chooses; ``tests/test_host_passes.py`` holds the two to each other.
"""
from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import List, Optional, Sequence, Tuple

import torch

from .. import _ops

def move_grads_out(params: List[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    """Move the gradients out of ``p.grad`` (leaving ``None``), so a closure that zeroes
    gradients in place cannot clobber the ones already taken, and nothing is copied."""
    return copied_views(move_grads_out_raw(params))


def move_grads_out_raw(params: List[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    """``move_grads_out`` without the copy of bucket views."""
    grads = []
    for p in params:
        grads.append(p.grad)
        p.grad = None
    return grads


def copied_views(grads: List[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
    """DDP(gradient_as_bucket_view=True) leaves p.grad a view into its bucket, which the
    next backward overwrites in place: such a gradient is kept as a copy."""
    if not any(t is not None and t._is_view() for t in grads):
        return grads
    return [t.clone(memory_format=torch.preserve_format) if t is not None and t._is_view()
            else t for t in grads]


_PLAIN_TYPES = frozenset((torch.Tensor, torch.nn.Parameter))
_NAMES = ("take_grads", "set_data", "take_grads_and_set_data", "put_grads", "drop_left_grads")


def take_grads(params: Sequence[torch.Tensor], ptrs: Sequence[int]
               ) -> Optional[Tuple[List[torch.Tensor], bool]]:
    """Move every ``p.grad`` out (leaving None) while checking that the plan the parameters
    were bucketed by still fits: every parameter has a dense gradient and still has the
    storage at ``ptrs[i]`` (its ``data_ptr()`` when planned). None, with ``p.grad`` as it
    was, when one does not. ``fits``: no gradient is a view and each has its parameter's
    strides (the kernels then take them as they are)."""
    grads, fits = [], True
    for p, ptr in zip(params, ptrs):
        g = p.grad
        if g is None or g.is_sparse or p.data_ptr() != ptr:
            put_grads(params[:len(grads)], grads)
            return None
        if fits and (g._is_view() or g.stride() != p.stride()):
            fits = False
        grads.append(g)
        p.grad = None
    return grads, fits


def set_data(params: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> None:
    """``p.data = target`` for each."""
    for p, x in zip(params, targets):
        p.data = x


def take_grads_and_set_data(params: Sequence[torch.Tensor], storage: Sequence[torch.Tensor]
                            ) -> Tuple[List[Optional[torch.Tensor]], bool]:
    """After an evaluation at swapped storage: move every ``p.grad`` out (None where a
    parameter got no gradient) and point ``p.data`` back at ``storage[i]``, in one pass.
    ``fits``: every gradient is there, is not a view and has the strides of ``storage[i]``."""
    grads, fits = [], True
    for p, x in zip(params, storage):
        g = p.grad
        if fits and (g is None or g._is_view() or g.stride() != x.stride()):
            fits = False
        grads.append(g)
        p.grad = None
        p.data = x
    return grads, fits


def put_grads(params: Sequence[torch.Tensor], grads: Sequence[Optional[torch.Tensor]]
              ) -> List[Optional[int]]:
    """``p.grad = g`` for each (None clears it). Returns each gradient's version counter
    (None for None), by which the next step tells a gradient left here, unmodified, from a
    new one."""
    versions = []
    for p, g in zip(params, grads):
        p.grad = g
        versions.append(None if g is None else g._version)
    return versions


def drop_left_grads(params: Sequence[torch.Tensor], left_params: Sequence[torch.Tensor],
                    left_grads: Sequence[Optional[torch.Tensor]],
                    left_versions: Sequence[Optional[int]]) -> List[int]:
    """Before a step's closure: ``p.grad = None`` for each parameter whose gradient is the one
    the previous step left (``left_grads[j]`` of ``left_params[j] is p``: the same tensor, at
    the same version), and the indices of the parameters holding any other gradient (from
    earlier micro-batches), which the caller sets aside."""
    left = {id(p): (g, v) for p, g, v in zip(left_params, left_grads, left_versions)
            if g is not None}
    foreign = []
    for i, p in enumerate(params):
        g = p.grad
        if g is None:
            continue
        mine = left.get(id(p))
        if mine is not None and mine[0] is g and mine[1] == g._version:
            p.grad = None
        else:
            foreign.append(i)
    return foreign


PYTHON = SimpleNamespace(name="python", **{name: globals()[name] for name in _NAMES})


def _compiled_passes() -> Optional[SimpleNamespace]:
    """The C++ passes, or None without the extension (or with one built before them)."""
    global _COMPILED
    if _COMPILED is None:
        ext: Optional[ModuleType] = _ops.compiled()
        _COMPILED = SimpleNamespace(name="cpp", **{n: getattr(ext, n) for n in _NAMES}) \
            if ext is not None and all(hasattr(ext, n) for n in _NAMES) else False
    return _COMPILED or None


_COMPILED = None  # set on first use: the C++ passes, or False


def for_params(params: Sequence[torch.Tensor]) -> SimpleNamespace:
    """The passes for these parameters: the C++ ones when every parameter is exactly a
    ``torch.Tensor`` or ``torch.nn.Parameter`` and the extension has them, else Python's."""
    compiled = _compiled_passes()
    if compiled is not None and set(map(type, params)) <= _PLAIN_TYPES:
        return compiled
    return PYTHON
