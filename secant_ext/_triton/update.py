"""Phase 3: ``x <- x - alpha * d`` (or the sign step) and the momentum buffer, one launch.

Alpha, the skip flag and momentum readiness are read from the group state on the device;
a skipped step turns every program's loop into zero iterations, so nothing is read or
written. The scaled sign step reads its tensor's ``sum |v|`` column of the stats table
(summed over the table's rows in float64, at most ``MAX_ROWS`` of them).
"""
from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from .. import _layout
from ..reference import check_sign_mode  # the one sign_mode check of every backend
from . import _state, _tables
from ._common import BLOCK, NUM_WARPS, Tensors, block_base, check_lists, chunk_bounds, \
    device_guard, f64_from_bits, load_block, store_block, typed_ptr, types_of

RBLOCK = 128  # table rows summed per vector step (scaled sign only)


@triton.jit
def _sign(d):
    one = tl.full(d.shape, 1.0, d.dtype)
    s = tl.where(d > 0, one, tl.where(d < 0, -one, 0.0 * one))
    return tl.where(d != d, d, s)  # torch.sign(nan) is nan


@triton.jit
def _update_block(x_ptr, g_ptr, m_ptr, off, lanes, n_left, coef, ready, mu, one_minus_mu, wd,
                  MASKED: tl.constexpr, ALIGNED: tl.constexpr, DTYPE: tl.constexpr,
                  ACC: tl.constexpr, HAS_M: tl.constexpr, NESTEROV: tl.constexpr,
                  HAS_WD: tl.constexpr, SIGN_MODE: tl.constexpr, SIGN_NONE: tl.constexpr):
    x_base = block_base(x_ptr, off, ALIGNED)
    x = load_block(x_base, lanes, n_left, MASKED, ACC)
    d = load_block(block_base(g_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    if HAS_WD:
        d = d + wd * x
    if HAS_M:
        m_base = block_base(m_ptr, off, ALIGNED)
        m = load_block(m_base, lanes, n_left, MASKED, ACC)
        m_new = tl.where(ready, mu * m + one_minus_mu * d, d)
        store_block(m_base, lanes, n_left, m_new, MASKED, DTYPE)
        if NESTEROV:
            d = mu * m_new + one_minus_mu * d
        else:
            d = m_new
    if SIGN_MODE == SIGN_NONE:
        step = coef * d
    else:
        step = coef * _sign(d)
    store_block(x_base, lanes, n_left, x - step, MASKED, DTYPE)


@triton.jit
def _update_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, hyper,
                   table, n_rows, row_stride, col_stride, state,
                   DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                   HAS_M: tl.constexpr, NESTEROV: tl.constexpr, HAS_WD: tl.constexpr,
                   SIGN_MODE: tl.constexpr, SIGN_NONE: tl.constexpr, SIGN_SCALED: tl.constexpr,
                   CHUNK: tl.constexpr, BLOCK: tl.constexpr, RBLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    skip = tl.load(state + _state.LAST_SKIPPED) != 0
    end = tl.where(skip, start, end)  # a skipped step reads and writes nothing
    ready = tl.load(state + _state.MOMENTUM_READY) != 0
    alpha = tl.load(state + _state.STEP_SIZE).to(ACC)  # the applied step: lr * alpha * clip
    mu64 = f64_from_bits(hyper)
    mu = mu64.to(ACC)
    one_minus_mu = (1.0 - mu64).to(ACC)
    wd = f64_from_bits(hyper + 1).to(ACC)
    coef = alpha
    if SIGN_MODE == SIGN_SCALED:  # alpha * mean(|v|): the column sum over the rows, in fp64
        rows = tl.arange(0, RBLOCK).to(tl.int64)
        total = tl.zeros([RBLOCK], tl.float64)
        for r0 in range(0, n_rows, RBLOCK):
            r = r0 + rows
            total += tl.load(table + r * row_stride + (_state.NUM_STATS + t) * col_stride,
                             mask=r < n_rows, other=0).to(tl.float64)
        n = tl.maximum(tl.load(numels + t), 1).to(tl.float64)
        coef = alpha * (tl.sum(total) / n).to(ACC)
    x_ptr = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    g_ptr = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    m_ptr = typed_ptr(ptrs, 2 if HAS_M else 0, n_tensors, t, DTYPE)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):
        _update_block(x_ptr, g_ptr, m_ptr, off, lanes, BLOCK, coef, ready, mu, one_minus_mu,
                      wd, False, ALIGNED, DTYPE, ACC, HAS_M, NESTEROV, HAS_WD, SIGN_MODE,
                      SIGN_NONE)
    for off in range(full_end, end, BLOCK):
        _update_block(x_ptr, g_ptr, m_ptr, off, lanes, end - off, coef, ready, mu,
                      one_minus_mu, wd, True, False, DTYPE, ACC, HAS_M, NESTEROV, HAS_WD,
                      SIGN_MODE, SIGN_NONE)


def update(x: Tensors, g: Tensors, m: Tensors, stats: torch.Tensor, state: torch.Tensor, *,
           momentum: float, nesterov: bool, weight_decay: float, sign_mode: int) -> None:
    """``x <- x - alpha * d`` (or the sign step), momentum written back; nothing changes
    when the state says the step was skipped."""
    has_m = len(m) > 0
    names, lists = ["x", "g"], [x, g]
    if has_m:
        names.append("m"), lists.append(m)
    check_lists(names, lists)
    check_sign_mode(sign_mode)
    if state.dtype != torch.float64 or state.numel() != _layout.STATE_SIZE:
        raise ValueError(f"state must be a float64 tensor of {_layout.STATE_SIZE} values, got "
                         f"{state.dtype} of shape {tuple(state.shape)}")
    if sign_mode == _layout.SIGN_SCALED and (stats.dim() != 2 or
                                             stats.shape[1] < _layout.NUM_STATS + len(x)):
        raise ValueError(f"the scaled sign step needs a stats table with {_layout.NUM_STATS} + "
                         f"{len(x)} columns (one per tensor), got shape {tuple(stats.shape)}")
    if not len(x):
        return
    elem, acc = types_of(x[0].dtype)
    tab = _tables.launch_tables(lists, x[0].device, momentum, weight_decay)
    if tab.n_chunks == 0:
        return
    with device_guard(x[0].device):
        _update_kernel[(tab.n_chunks,)](
            tab.ptrs, tab.n_tensors, tab.numels, tab.first_chunk, tab.chunk_tensor, tab.hyper,
            stats, stats.shape[0], stats.stride(0), stats.stride(1) if stats.dim() == 2 else 1,
            state, DTYPE=elem, ACC=acc, ALIGNED=tab.aligned, HAS_M=has_m,
            NESTEROV=bool(nesterov) and has_m, HAS_WD=weight_decay != 0, SIGN_MODE=sign_mode,
            SIGN_NONE=_layout.SIGN_NONE, SIGN_SCALED=_layout.SIGN_SCALED, CHUNK=_tables.CHUNK,
            BLOCK=BLOCK, RBLOCK=RBLOCK, num_warps=NUM_WARPS)


def aot_variants(dtypes, full: bool):
    """The launches this file makes, for ``_aot``: (kernel, label, signature, constexprs).
    Without ``full``, the flags all on (scaled sign) and all off."""
    signs = [_layout.SIGN_NONE, _layout.SIGN_SCALED, _layout.SIGN_UNSCALED]
    modes = [(m, n, w, s) for m, n, w, s in itertools.product(
        [False, True], [False, True], [False, True], signs) if m or not n] if full \
        else [(True, True, True, _layout.SIGN_SCALED), (False, False, False, _layout.SIGN_NONE)]
    for dtype in dtypes:
        dt, acc = types_of(dtype)
        signature = {**_tables.AOT_SIGNATURE, "hyper": "*i64",
                     "table": "*fp64" if acc == tl.float64 else "*fp32", "n_rows": "i32",
                     "row_stride": "i32", "col_stride": "i32", "state": "*fp64"}
        for has_m, nesterov, has_wd, sign_mode in modes:
            yield _update_kernel, f"{dt} m={has_m} nest={nesterov} wd={has_wd} sign={sign_mode}", \
                signature, dict(DTYPE=dt, ACC=acc, ALIGNED=True, HAS_M=has_m, NESTEROV=nesterov,
                                HAS_WD=has_wd, SIGN_MODE=sign_mode, SIGN_NONE=_layout.SIGN_NONE,
                                SIGN_SCALED=_layout.SIGN_SCALED, CHUNK=_tables.CHUNK,
                                BLOCK=BLOCK, RBLOCK=RBLOCK)
