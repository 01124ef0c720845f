"""Phase 2a: the partial sums of the secant statistics, one launch, deterministic.

Program ``r`` of the launch sums a fixed, contiguous run of chunks (``_tables.rows_and_span``)
into row ``r`` of the ``[P, K]`` table: no atomics, so the same inputs give the same bits
on every run, and ``secant_alpha`` finishes the reduction in float64 in row order.

Columns: ``<s,y>, |s|^2, |y|^2, |g|^2`` (``y = g_plus - s``) and, for the sign variant,
``sum |v_i|`` of each tensor's direction ``v_i``. A row covers a contiguous run of chunks,
so each tensor it touches is one unbroken stretch: its column is written once when the
run moves on to the next tensor, and the columns of tensors the row does not touch are
written as zeros, so the table needs no zero-filling launch.
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
    device_guard, f64_from_bits, load_block, typed_ptr, types_of

TBLOCK = 128  # sign columns zero-filled per vector step


@triton.jit
def _stats_block(s_ptr, gp_ptr, g_ptr, x_ptr, m_ptr, off, lanes, n_left,
                 acc_dot, acc_ss, acc_yy, acc_gg, run, ready, mu, one_minus_mu, wd,
                 MASKED: tl.constexpr, ALIGNED: tl.constexpr, ACC: tl.constexpr,
                 HAS_G: tl.constexpr, SIGN: tl.constexpr, HAS_M: tl.constexpr,
                 NESTEROV: tl.constexpr, HAS_WD: tl.constexpr):
    s = load_block(block_base(s_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    y = load_block(block_base(gp_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC) - s
    acc_dot += s * y
    acc_ss += s * s
    acc_yy += y * y
    if HAS_G:
        g = load_block(block_base(g_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    else:
        g = s
    acc_gg += g * g
    if SIGN:  # |v| of the update's direction (masked lanes load 0 and add 0)
        v = g
        if HAS_WD:
            v = v + wd * load_block(block_base(x_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
        if HAS_M:
            m = load_block(block_base(m_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
            m_new = tl.where(ready, mu * m + one_minus_mu * v, v)
            if NESTEROV:
                v = mu * m_new + one_minus_mu * v
            else:
                v = m_new
        run += tl.abs(v)
    return acc_dot, acc_ss, acc_yy, acc_gg, run


@triton.jit
def _stats_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, hyper, n_chunks, span,
                  table, n_cols, state,
                  DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                  HAS_G: tl.constexpr, SIGN: tl.constexpr, HAS_M: tl.constexpr,
                  NESTEROV: tl.constexpr, HAS_WD: tl.constexpr, X_SLOT: tl.constexpr,
                  M_SLOT: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                  TBLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c_lo = row * span
    c_hi = tl.minimum(c_lo + span, n_chunks)
    out = table + row * n_cols
    lanes = tl.arange(0, BLOCK)
    acc_dot = tl.zeros([BLOCK], ACC)
    acc_ss = tl.zeros([BLOCK], ACC)
    acc_yy = tl.zeros([BLOCK], ACC)
    acc_gg = tl.zeros([BLOCK], ACC)
    # sign variant: sum |v| of the current tensor, and the direction's parameters (the
    # momentum readiness update() will see: the state before secant_alpha counts this step)
    run = tl.zeros([BLOCK], ACC)
    cur_t = tl.load(chunk_tensor + c_lo, mask=c_lo < c_hi, other=0)
    ready = tl.load(state + _state.TAKEN) >= 1
    mu64 = f64_from_bits(hyper)
    mu = mu64.to(ACC)
    one_minus_mu = (1.0 - mu64).to(ACC)
    wd = f64_from_bits(hyper + 1).to(ACC)
    for c in range(c_lo, c_hi):
        t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
        s_ptr = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
        gp_ptr = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
        g_ptr = typed_ptr(ptrs, 2 if HAS_G else 0, n_tensors, t, DTYPE)
        x_ptr = typed_ptr(ptrs, X_SLOT, n_tensors, t, DTYPE)
        m_ptr = typed_ptr(ptrs, M_SLOT, n_tensors, t, DTYPE)
        if SIGN:  # moved on to a new tensor: the previous one's sum is complete
            moved_on = t != cur_t
            tl.store(out + _state.NUM_STATS + cur_t, tl.sum(run).to(ACC), mask=moved_on)
            run = tl.where(moved_on, 0.0, run).to(ACC)
            cur_t = t
        full_end = start + (end - start) // BLOCK * BLOCK
        for off in range(start, full_end, BLOCK):
            acc_dot, acc_ss, acc_yy, acc_gg, run = _stats_block(
                s_ptr, gp_ptr, g_ptr, x_ptr, m_ptr, off, lanes, BLOCK,
                acc_dot, acc_ss, acc_yy, acc_gg, run, ready, mu, one_minus_mu, wd,
                False, ALIGNED, ACC, HAS_G, SIGN, HAS_M, NESTEROV, HAS_WD)
        for off in range(full_end, end, BLOCK):
            acc_dot, acc_ss, acc_yy, acc_gg, run = _stats_block(
                s_ptr, gp_ptr, g_ptr, x_ptr, m_ptr, off, lanes, end - off,
                acc_dot, acc_ss, acc_yy, acc_gg, run, ready, mu, one_minus_mu, wd,
                True, False, ACC, HAS_G, SIGN, HAS_M, NESTEROV, HAS_WD)
    tl.store(out + _state.COL_DOT, tl.sum(acc_dot))
    tl.store(out + _state.COL_S_SQ, tl.sum(acc_ss))
    tl.store(out + _state.COL_Y_SQ, tl.sum(acc_yy))
    tl.store(out + _state.COL_G_SQ, tl.sum(acc_gg))
    if SIGN:
        tl.store(out + _state.NUM_STATS + cur_t, tl.sum(run).to(ACC), mask=c_lo < c_hi)
        for j0 in range(0, n_tensors, TBLOCK):
            j = j0 + tl.arange(0, TBLOCK)
            in_range = j < n_tensors
            first = tl.load(first_chunk + j, mask=in_range, other=0)
            last = tl.load(first_chunk + j + 1, mask=in_range, other=0)
            touched = (first < last) & (first < c_hi) & (last > c_lo)
            tl.store(out + _state.NUM_STATS + j, tl.zeros([TBLOCK], ACC), mask=in_range & ~touched)


def secant_stats(s: Tensors, g_plus: Tensors, g: Tensors, x: Tensors, m: Tensors,
                 state: torch.Tensor, *, momentum: float, nesterov: bool,
                 weight_decay: float, sign_mode: int) -> torch.Tensor:
    """The ``[P, K]`` partial-sum table (``P = num_partial_rows``), float64 for float64
    tensors else float32. ``g`` empty means ``g = s``; ``m`` empty means no momentum; the
    ``sum |v_i|`` columns are there for ``sign_mode == SIGN_SCALED`` only."""
    check_sign_mode(sign_mode)
    sign = sign_mode == _layout.SIGN_SCALED
    has_g, has_m = len(g) > 0, len(m) > 0
    has_wd = weight_decay != 0
    names, lists = ["s", "g_plus"], [s, g_plus]
    if has_g:
        names.append("g"), lists.append(g)
    x_slot = m_slot = 0
    if sign and has_wd:
        x_slot = len(lists)
        names.append("x"), lists.append(x)
    if sign and has_m:
        m_slot = len(lists)
        names.append("m"), lists.append(m)
    check_lists(names, lists)
    if state.dtype != torch.float64 or state.numel() != _layout.STATE_SIZE:
        raise ValueError(f"state must be a float64 tensor of {_layout.STATE_SIZE} values, got "
                         f"{state.dtype} of shape {tuple(state.shape)}")
    device = s[0].device if len(s) else state.device
    dtype = s[0].dtype if len(s) else torch.float32
    elem, acc = types_of(dtype)
    tab = _tables.launch_tables(lists, device, momentum if sign else 0.0,
                                weight_decay if sign else 0.0)
    n_cols = _layout.NUM_STATS + (len(s) if sign else 0)
    table = torch.empty((tab.n_rows, n_cols), dtype=torch.float64 if acc == tl.float64
                        else torch.float32, device=device)
    with device_guard(device):
        _stats_kernel[(tab.n_rows,)](
            tab.ptrs, tab.n_tensors, tab.numels, tab.first_chunk, tab.chunk_tensor, tab.hyper,
            tab.n_chunks, tab.span, table, n_cols, state,
            DTYPE=elem, ACC=acc, ALIGNED=tab.aligned, HAS_G=has_g, SIGN=sign, HAS_M=sign and has_m,
            NESTEROV=bool(nesterov), HAS_WD=sign and has_wd, X_SLOT=x_slot, M_SLOT=m_slot,
            CHUNK=_tables.CHUNK, BLOCK=BLOCK, TBLOCK=TBLOCK, num_warps=NUM_WARPS)
    return table


def aot_variants(dtypes, full: bool):
    """The launches this file makes, for ``_aot``: (kernel, label, signature, constexprs).
    Without ``full``, the flags all on and all off."""
    flags = itertools.product([False, True], repeat=5) if full else [(True,) * 5, (False,) * 5]
    flags = [f for f in flags if f[1] or not any(f[2:])]  # m, nesterov, wd: sign variant only
    for dtype in dtypes:
        dt, acc = types_of(dtype)
        signature = {**_tables.AOT_SIGNATURE, "hyper": "*i64", "n_chunks": "i32", "span": "i32",
                     "table": "*fp64" if acc == tl.float64 else "*fp32", "n_cols": "i32",
                     "state": "*fp64"}
        for has_g, sign, has_m, nesterov, has_wd in flags:
            yield _stats_kernel, \
                f"{dt} g={has_g} sign={sign} m={has_m} nest={nesterov} wd={has_wd}", signature, \
                dict(DTYPE=dt, ACC=acc, ALIGNED=True, HAS_G=has_g, SIGN=sign, HAS_M=has_m,
                     NESTEROV=nesterov, HAS_WD=has_wd, X_SLOT=2 + has_g,
                     M_SLOT=2 + has_g + has_wd, CHUNK=_tables.CHUNK, BLOCK=BLOCK, TBLOCK=TBLOCK)
