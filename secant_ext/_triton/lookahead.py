"""Phase 1: ``out = x + s`` over every tensor of a bucket, one launch; the in-place
lookahead (``backup = x; x = x + s``) with its restore copy; and the averaged iterate
(``avg <- avg + w (x - avg)``) of ``average=True``: the elementwise kernels."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _layout
from . import _state, _tables
from ._common import BLOCK, Tensors, block_base, chunk_bounds, launch_per_chunk, load_block, \
    store_block, typed_ptr, types_of


@triton.jit
def _lookahead_block(x, s, out, off, lanes, n_left, MASKED: tl.constexpr,
                     ALIGNED: tl.constexpr, DTYPE: tl.constexpr, ACC: tl.constexpr):
    xv = load_block(block_base(x, off, ALIGNED), lanes, n_left, MASKED, ACC)
    sv = load_block(block_base(s, off, ALIGNED), lanes, n_left, MASKED, ACC)
    store_block(block_base(out, off, ALIGNED), lanes, n_left, xv + sv, MASKED, DTYPE)


@triton.jit
def _lookahead_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor,
                      DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                      CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    x = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    s = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    out = typed_ptr(ptrs, 2, n_tensors, t, DTYPE)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):      # full blocks: unmasked, wide
        _lookahead_block(x, s, out, off, lanes, BLOCK, False, ALIGNED, DTYPE, ACC)
    for off in range(full_end, end, BLOCK):        # the tail of the tensor, if any
        _lookahead_block(x, s, out, off, lanes, end - off, True, False, DTYPE, ACC)


def lookahead(x: Tensors, s: Tensors, out: Tensors) -> None:
    """``out = x + s`` (``x`` untouched, so restoring it is exact)."""
    dtype, acc = types_of(x[0].dtype) if len(x) else (None, None)
    launch_per_chunk(_lookahead_kernel, ("x", "s", "out"), (x, s, out), DTYPE=dtype, ACC=acc)


# Same-width integer types: the backup and the restore copy bits, never values, so no
# conversion (and no interpreter rounding) can touch them.
_BITS = {torch.float32: tl.uint32, torch.float64: tl.uint64, torch.bfloat16: tl.uint16,
         torch.float16: tl.uint16}


@triton.jit
def _inplace_block(x, s, backup, off, lanes, n_left, MASKED: tl.constexpr,
                   ALIGNED: tl.constexpr, DTYPE: tl.constexpr, BITS: tl.constexpr,
                   ACC: tl.constexpr):
    xb = block_base(x, off, ALIGNED)
    mask = lanes < n_left
    if MASKED:
        raw = tl.load(xb.to(tl.pointer_type(BITS)) + lanes, mask=mask, other=0)
        tl.store(block_base(backup, off, ALIGNED) + lanes, raw, mask=mask)
    else:
        raw = tl.load(xb.to(tl.pointer_type(BITS)) + lanes)
        tl.store(block_base(backup, off, ALIGNED) + lanes, raw)
    xv = raw.to(DTYPE, bitcast=True).to(ACC)
    sv = load_block(block_base(s, off, ALIGNED), lanes, n_left, MASKED, ACC)
    store_block(xb, lanes, n_left, xv + sv, MASKED, DTYPE)


@triton.jit
def _lookahead_inplace_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor,
                              DTYPE: tl.constexpr, BITS: tl.constexpr, ACC: tl.constexpr,
                              ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
                              BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    x = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    s = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    backup = typed_ptr(ptrs, 2, n_tensors, t, BITS)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):
        _inplace_block(x, s, backup, off, lanes, BLOCK, False, ALIGNED, DTYPE, BITS, ACC)
    for off in range(full_end, end, BLOCK):
        _inplace_block(x, s, backup, off, lanes, end - off, True, False, DTYPE, BITS, ACC)


@triton.jit
def _restore_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, BITS: tl.constexpr,
                    ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    x = typed_ptr(ptrs, 0, n_tensors, t, BITS)
    backup = typed_ptr(ptrs, 1, n_tensors, t, BITS)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):
        tl.store(block_base(x, off, ALIGNED) + lanes,
                 tl.load(block_base(backup, off, ALIGNED) + lanes))
    for off in range(full_end, end, BLOCK):
        mask = lanes < end - off
        tl.store(x + off + lanes, tl.load(backup + off + lanes, mask=mask), mask=mask)


def lookahead_inplace(x: Tensors, s: Tensors, backup: Tensors) -> None:
    """``backup = x`` (bits), then ``x = x + s`` in place, in one pass."""
    dtype, acc = types_of(x[0].dtype) if len(x) else (None, None)
    launch_per_chunk(_lookahead_inplace_kernel, ("x", "s", "backup"), (x, s, backup),
                     DTYPE=dtype, ACC=acc, BITS=_BITS.get(x[0].dtype) if len(x) else None)


def restore(x: Tensors, backup: Tensors) -> None:
    """``x = backup``, bit for bit."""
    launch_per_chunk(_restore_kernel, ("x", "backup"), (x, backup),
                     BITS=_BITS.get(x[0].dtype) if len(x) else None)


@triton.jit
def _average_block(avg, x, off, lanes, n_left, w, MASKED: tl.constexpr, ALIGNED: tl.constexpr,
                   DTYPE: tl.constexpr, ACC: tl.constexpr):
    a_base = block_base(avg, off, ALIGNED)
    a = load_block(a_base, lanes, n_left, MASKED, ACC)
    xv = load_block(block_base(x, off, ALIGNED), lanes, n_left, MASKED, ACC)
    store_block(a_base, lanes, n_left, a + w * (xv - a), MASKED, DTYPE)


@triton.jit
def _average_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, state,
                    DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                    CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    end = tl.where(tl.load(state + _state.LAST_SKIPPED) != 0, start, end)  # skipped: nothing
    w = tl.load(state + _state.AVG_WEIGHT).to(ACC)
    avg = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    x = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):
        _average_block(avg, x, off, lanes, BLOCK, w, False, ALIGNED, DTYPE, ACC)
    for off in range(full_end, end, BLOCK):
        _average_block(avg, x, off, lanes, end - off, w, True, False, DTYPE, ACC)


def average(avg: Tensors, x: Tensors, state: torch.Tensor) -> None:
    """``avg <- avg + w (x - avg)``, ``w = state[AVG_WEIGHT]``; nothing on a skipped step."""
    if state.dtype != torch.float64 or state.numel() != _layout.STATE_SIZE:
        raise ValueError(f"state must be a float64 tensor of {_layout.STATE_SIZE} values, got "
                         f"{state.dtype} of shape {tuple(state.shape)}")
    dtype, acc = types_of(avg[0].dtype) if len(avg) else (None, None)
    launch_per_chunk(_average_kernel, ("avg", "x"), (avg, x), state=state, DTYPE=dtype, ACC=acc)


def aot_variants(dtypes, full: bool):
    """The launches this file makes, for ``_aot``: (kernel, label, signature, constexprs)."""
    table = _tables.AOT_SIGNATURE
    for dtype in dtypes:
        dt, acc = types_of(dtype)
        base = dict(ALIGNED=True, CHUNK=_tables.CHUNK, BLOCK=BLOCK)
        yield _lookahead_kernel, f"{dt}", table, dict(DTYPE=dt, ACC=acc, **base)
        yield _lookahead_inplace_kernel, f"{dt}", table, dict(DTYPE=dt, BITS=_BITS[dtype],
                                                              ACC=acc, **base)
        yield _restore_kernel, f"{dt}", table, dict(BITS=_BITS[dtype], **base)
        yield _average_kernel, f"{dt}", {**table, "state": "*fp64"}, dict(DTYPE=dt, ACC=acc,
                                                                            **base)
