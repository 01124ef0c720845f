"""What the phase launchers share: dtype codes, argument checks, the device guard, the
launch of a kernel with a program per chunk, and the jit helper that turns a pointer-table
entry into a typed pointer."""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import triton
import triton.language as tl

from . import _tables

Tensors = Sequence[torch.Tensor]

TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64,
             torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
BLOCK = 1024      # elements per vector step of a program (8 per thread with 4 warps)
NUM_WARPS = 4


def types_of(dtype: torch.dtype):
    """(element type, accumulation type) of a bucket: fp32 math, fp64 for fp64."""
    if dtype not in TL_DTYPES:
        raise TypeError(f"secant_ext triton kernels take float32, float64, bfloat16 or "
                        f"float16 tensors, got {dtype}")
    return TL_DTYPES[dtype], (tl.float64 if dtype == torch.float64 else tl.float32)


def _is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill ``numel`` consecutive slots of memory."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def check_lists(names: Sequence[str], lists: Sequence[Tensors]) -> None:
    """Host-side checks (sizes, strides, dtypes, devices); they never read device values."""
    base_name, base = names[0], lists[0]
    for name, lst in zip(names, lists):
        if len(lst) != len(base):
            raise ValueError(f"{name} has {len(lst)} tensors but {base_name} has {len(base)}")
    if not len(base):
        return
    dtype, device = base[0].dtype, base[0].device
    types_of(dtype)
    for i, t0 in enumerate(base):
        if not _is_dense(t0):
            raise ValueError(f"{base_name}[{i}] (shape {tuple(t0.shape)}, stride "
                             f"{t0.stride()}) is not dense; the kernels walk flat storage")
        for name, lst in zip(names, lists):
            t = lst[i]
            if t.dtype != dtype or t.device != device:
                raise ValueError(f"{name}[{i}] is {t.dtype} on {t.device}, expected {dtype} "
                                 f"on {device} like {base_name}[0]")
            if t.shape != t0.shape or (t.numel() > 1 and t.stride() != t0.stride()):
                raise ValueError(f"{name}[{i}] has shape {tuple(t.shape)} and stride "
                                 f"{t.stride()}, expected those of {base_name}[{i}]: "
                                 f"{tuple(t0.shape)}, {t0.stride()}")


def device_guard(device: torch.device):
    """Launch on the tensors' GPU, not the current one."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def launch_per_chunk(kernel, names: Sequence[str], lists: Sequence[Tensors], *, hyper=None,
                     state=None, **constexprs) -> None:
    """One launch of ``kernel``, a program per chunk, over the equal-length ``lists``
    (checked; nothing to do when they are empty). Its arguments: the pointer table, then
    the hyperparameters' table when ``hyper`` is given (``launch_tables``' momentum, weight
    decay and extra values), then ``state`` when given, then ``constexprs``."""
    check_lists(names, lists)
    x = lists[0]
    if not len(x):
        return
    tab = _tables.launch_tables(lists, x[0].device, *(hyper or ()))
    if tab.n_chunks == 0:
        return
    args = [tab.ptrs, tab.n_tensors, tab.numels, tab.first_chunk, tab.chunk_tensor]
    args += [tab.hyper] if hyper is not None else []
    args += [state] if state is not None else []
    with device_guard(x[0].device):
        kernel[(tab.n_chunks,)](*args, ALIGNED=tab.aligned, CHUNK=_tables.CHUNK, BLOCK=BLOCK,
                                num_warps=NUM_WARPS, **constexprs)


@triton.jit
def typed_ptr(ptrs, slot, n_tensors, t, DTYPE: tl.constexpr):
    """Pointer to the data of tensor ``t`` of list ``slot`` in the pointer table."""
    return tl.load(ptrs + slot * n_tensors + t).to(tl.pointer_type(DTYPE))


@triton.jit
def chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK: tl.constexpr):
    """(tensor, first element, end element) of chunk ``c`` (int64 throughout)."""
    t = tl.load(chunk_tensor + c)
    n = tl.load(numels + t)
    start = (c - tl.load(first_chunk + t)) * CHUNK
    end = tl.minimum(start + CHUNK, n)
    return t, start, end


@triton.jit
def _bf16_round_nearest_even(v):
    # The bit-level rounding PyTorch uses (c10::BFloat16), spelled out because the Triton
    # interpreter truncates on fp32 -> bf16 casts; the GPU gets the same few integer ops.
    u = v.to(tl.uint32, bitcast=True)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    quiet_nan = (u >> 16) | 0x40
    bits = tl.where(v != v, quiet_nan, rounded)
    return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def to_storage(v, DTYPE: tl.constexpr):
    """The one rounding of a value computed in fp32 (or fp64) to the tensor's dtype."""
    if DTYPE == tl.bfloat16:
        return _bf16_round_nearest_even(v)
    else:
        return v.to(DTYPE)


@triton.jit
def block_base(ptr, off, ALIGNED: tl.constexpr):
    """``ptr + off`` for a full block. ``ALIGNED`` (every data pointer of the launch 16-byte
    aligned, checked on the host) tells the compiler so: pointers read from a table carry
    no alignment, and without the hint every load is scalar instead of 16-byte wide."""
    q = ptr + off
    if ALIGNED:
        q = tl.multiple_of(q, 16)
    return q


@triton.jit
def load_block(base, lanes, n_left, MASKED: tl.constexpr, ACC: tl.constexpr):
    """One block as ``ACC``; masked lanes (past the end of the tensor) read as 0."""
    if MASKED:
        v = tl.load(base + lanes, mask=lanes < n_left, other=0.0)
    else:
        v = tl.load(base + lanes)
    return v.to(ACC)


@triton.jit
def store_block(base, lanes, n_left, v, MASKED: tl.constexpr, DTYPE: tl.constexpr):
    if MASKED:
        tl.store(base + lanes, to_storage(v, DTYPE), mask=lanes < n_left)
    else:
        tl.store(base + lanes, to_storage(v, DTYPE))


@triton.jit
def f64_from_bits(ptr):
    return tl.load(ptr).to(tl.float64, bitcast=True)
