"""SecantAdam's three phases, one launch each, as ``reference.adam_stats``, ``adam_alpha``
and ``adam_update`` (docs/ALGORITHM.md, 'SecantAdam').

- ``adam_stats``: row ``r`` of the ``[P, NUM_STATS]`` table sums ``<u, y>, <u, s>, |y|^2,
  |g|^2`` (``y = g_plus - s``) over a fixed run of chunks, as ``stats`` does: no atomics.
- ``adam_alpha``: one program sums the table in float64 and writes the group state.
- ``adam_update``: one program per chunk: Adam's moments, the step and the averaged
  iterate (and ``u`` written out when asked: the tests' record of the update's step).
- ``adam_previous_step``: one program per chunk: the step ``u`` the last update took,
  recomputed from ``x``, ``m``, ``v`` and the state.

The update's fp32 divisions and square roots are the correctly rounded ``div_rn`` and
``sqrt_rn`` (Triton's fp32 ``/`` and ``sqrt`` are approximate on a GPU), as torch's are.
"""
from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from .. import _layout
from . import _state, _tables
from ._common import BLOCK, NUM_WARPS, Tensors, block_base, check_lists, chunk_bounds, \
    device_guard, f64_from_bits, launch_per_chunk, load_block, store_block, typed_ptr, types_of
from .alpha import RBLOCK, _finite, column_sums, count_step, finish_step_size


def _check_state(state: torch.Tensor) -> None:
    if state.dtype != torch.float64 or state.numel() != _layout.STATE_SIZE or \
            not state.is_contiguous():
        raise ValueError(f"state must be a contiguous float64 tensor of {_layout.STATE_SIZE} "
                         f"values, got {state.dtype} of shape {tuple(state.shape)}")


# --- adam_stats ---------------------------------------------------------------------------
@triton.jit
def _adam_stats_block(u_ptr, gp_ptr, s_ptr, g_ptr, off, lanes, n_left,
                      acc_uy, acc_us, acc_yy, acc_gg,
                      MASKED: tl.constexpr, ALIGNED: tl.constexpr, ACC: tl.constexpr,
                      MEASURE: tl.constexpr, HAS_G: tl.constexpr):
    s = load_block(block_base(s_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    if MEASURE:
        u = load_block(block_base(u_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
        y = load_block(block_base(gp_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC) - s
        acc_uy += u * y
        acc_us += u * s
        acc_yy += y * y
    if HAS_G:
        g = load_block(block_base(g_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    else:
        g = s
    acc_gg += g * g
    return acc_uy, acc_us, acc_yy, acc_gg


@triton.jit
def _adam_stats_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, n_chunks, span,
                       table, DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                       MEASURE: tl.constexpr, HAS_G: tl.constexpr, S_SLOT: tl.constexpr,
                       G_SLOT: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c_lo = row * span
    c_hi = tl.minimum(c_lo + span, n_chunks)
    out = table + row * _state.NUM_STATS
    lanes = tl.arange(0, BLOCK)
    acc_uy = tl.zeros([BLOCK], ACC)
    acc_us = tl.zeros([BLOCK], ACC)
    acc_yy = tl.zeros([BLOCK], ACC)
    acc_gg = tl.zeros([BLOCK], ACC)
    for c in range(c_lo, c_hi):
        t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
        u_ptr = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
        gp_ptr = typed_ptr(ptrs, 1 if MEASURE else 0, n_tensors, t, DTYPE)
        s_ptr = typed_ptr(ptrs, S_SLOT, n_tensors, t, DTYPE)
        g_ptr = typed_ptr(ptrs, G_SLOT, n_tensors, t, DTYPE)
        full_end = start + (end - start) // BLOCK * BLOCK
        for off in range(start, full_end, BLOCK):
            acc_uy, acc_us, acc_yy, acc_gg = _adam_stats_block(
                u_ptr, gp_ptr, s_ptr, g_ptr, off, lanes, BLOCK, acc_uy, acc_us, acc_yy,
                acc_gg, False, ALIGNED, ACC, MEASURE, HAS_G)
        for off in range(full_end, end, BLOCK):
            acc_uy, acc_us, acc_yy, acc_gg = _adam_stats_block(
                u_ptr, gp_ptr, s_ptr, g_ptr, off, lanes, end - off, acc_uy, acc_us, acc_yy,
                acc_gg, True, False, ACC, MEASURE, HAS_G)
    tl.store(out + _state.COL_UY, tl.sum(acc_uy))
    tl.store(out + _state.COL_US, tl.sum(acc_us))
    tl.store(out + _state.COL_Y_SQ, tl.sum(acc_yy))
    tl.store(out + _state.COL_G_SQ, tl.sum(acc_gg))


def adam_stats(u: Tensors, g_plus: Tensors, s: Tensors, g: Tensors,
               state: torch.Tensor) -> torch.Tensor:
    """The ``[P, NUM_STATS]`` table (``P = num_partial_rows``): ``<u, y>, <u, s>, |y|^2,
    |g|^2``. ``g`` empty means ``g = s``; ``u`` empty means only ``|g|^2``."""
    measure, has_g = len(u) > 0, len(g) > 0
    if len(u) != len(g_plus):
        raise ValueError(f"u and g_plus are given together or both empty, got {len(u)} and "
                         f"{len(g_plus)} tensors")
    names, lists = ["s"], [s]
    if measure:
        names, lists = ["u", "g_plus", "s"], [u, g_plus, s]
    s_slot = len(lists) - 1
    if has_g:
        names.append("g"), lists.append(g)
    check_lists(names, lists)
    _check_state(state)
    device = s[0].device if len(s) else state.device
    elem, acc = types_of(s[0].dtype if len(s) else torch.float32)
    tab = _tables.launch_tables(lists, device)
    table = torch.empty((tab.n_rows, _layout.NUM_STATS), dtype=torch.float64
                        if acc == tl.float64 else torch.float32, device=device)
    with device_guard(device):
        _adam_stats_kernel[(tab.n_rows,)](
            tab.ptrs, tab.n_tensors, tab.numels, tab.first_chunk, tab.chunk_tensor,
            tab.n_chunks, tab.span, table, DTYPE=elem, ACC=acc, ALIGNED=tab.aligned,
            MEASURE=measure, HAS_G=has_g, S_SLOT=s_slot,
            G_SLOT=s_slot + 1 if has_g else s_slot, CHUNK=_tables.CHUNK, BLOCK=BLOCK,
            num_warps=NUM_WARPS)
    return table


# --- adam_alpha ---------------------------------------------------------------------------
@triton.jit
def _adam_alpha_kernel(table, n_rows, row_stride, col_stride, state, beta1, beta2, ema,
                       growth, MEASURE: tl.constexpr, RECORD: tl.constexpr,
                       RBLOCK: tl.constexpr, REACH: tl.constexpr):
    uy, us, y_sq, g_sq = column_sums(table, n_rows, row_stride, col_stride, RBLOCK)
    b1 = f64_from_bits(beta1)
    b2 = f64_from_bits(beta2)
    w = f64_from_bits(ema)
    grow = f64_from_bits(growth)
    finite = _finite(uy) & _finite(us) & _finite(y_sq) & _finite(g_sq)
    scale = tl.load(state + _state.PREV_STEP_SCALE)
    valid = finite & (scale > 0) & MEASURE
    a = uy / (scale * scale)
    b = us / scale
    c = (uy + us) / scale
    n = (tl.abs(uy + us) + tl.abs(uy)) / scale
    some = n > 0
    n_or_one = tl.where(some, n, 1.0)  # (no 0 / 0 computed where n is 0)
    a_n = tl.where(some, a / n_or_one, 0.0)
    c_n = tl.where(some, c / n_or_one, 0.0)
    old_a = tl.load(state + _state.ADAM_A)
    old_c = tl.load(state + _state.ADAM_C)
    big_a = w * old_a + (1.0 - w) * a_n
    big_c = w * old_c + (1.0 - w) * c_n
    positive = (big_a > 0) & (big_c > 0)
    prev = tl.load(state + _state.ALPHA)
    grown = grow * prev
    ratio = REACH * big_c / big_a
    eta = tl.where(big_c > 0, tl.where(big_a > 0, tl.where(ratio < grown, ratio, grown), grown),
                   prev / grow)
    zero = tl.full([], 0.0, tl.float64)
    kept_eta = valid & ~positive
    taken = count_step(state, finite, g_sq)
    tl.store(state + _state.LAST_MEASURED, valid.to(tl.float64))
    tl.store(state + _state.LAST_GUARDED, kept_eta.to(tl.float64))
    tl.store(state + _state.GUARDED, tl.load(state + _state.GUARDED) + kept_eta.to(tl.float64))
    tl.store(state + _state.MEASURED, tl.load(state + _state.MEASURED) + valid.to(tl.float64))
    tl.store(state + _state.ADAM_LAST_A, tl.where(valid, a, tl.load(state + _state.ADAM_LAST_A)))
    tl.store(state + _state.ADAM_LAST_B, tl.where(valid, b, tl.load(state + _state.ADAM_LAST_B)))
    tl.store(state + _state.Y_SQ, tl.where(valid, y_sq, tl.load(state + _state.Y_SQ)))
    stalled = tl.load(state + _state.STALLED)
    tl.store(state + _state.STALLED, stalled + (valid & (y_sq == 0)).to(tl.float64))
    tl.store(state + _state.ADAM_A, tl.where(valid, big_a, old_a))
    tl.store(state + _state.ADAM_C, tl.where(valid, big_c, old_c))
    new_eta = tl.where(valid, eta, prev)
    tl.store(state + _state.ALPHA, new_eta)
    p1 = tl.load(state + _state.BETA1_POWER)
    p2 = tl.load(state + _state.BETA2_POWER)
    tl.store(state + _state.BETA1_POWER, tl.where(finite, p1 * b1, p1))
    tl.store(state + _state.BETA2_POWER, tl.where(finite, p2 * b2, p2))
    step = finish_step_size(state, g_sq, new_eta, taken)
    if RECORD:
        kept = step
    else:
        kept = zero
    prev_scale = tl.load(state + _state.PREV_STEP_SCALE)
    tl.store(state + _state.PREV_STEP_SCALE, tl.where(finite, kept, prev_scale))




_hyper_cache: dict = {}


def _f64_tensor(values, device) -> torch.Tensor:
    """Python floats as float64 bit patterns on ``device``, cached by value as the launch
    tables are (no copy per step; the host copy is kept alive for a pending transfer)."""
    key = (device, tuple(float(v) for v in values))
    hit = _hyper_cache.get(key)
    if hit is None:
        host = torch.tensor([_tables._f64_bits(v) for v in values], dtype=torch.int64)
        hit = _hyper_cache[key] = _tables._to_device(host, device)
    return hit[0]


def adam_alpha(stats: torch.Tensor, state: torch.Tensor, *, beta1: float, beta2: float,
               ema: float, growth: float, measure: bool, record: bool) -> None:
    """Sum the table (float64), apply SecantAdam's rule, update ``state``, on the device."""
    if stats.dim() != 2 or stats.shape[1] < _layout.NUM_STATS or stats.shape[0] < 1:
        raise ValueError(f"stats must be a [P, K] table with P >= 1 and "
                         f"K >= {_layout.NUM_STATS}, got shape {tuple(stats.shape)}")
    if stats.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"stats must be float32 or float64, got {stats.dtype}")
    _check_state(state)
    if stats.device != state.device:
        raise ValueError(f"stats is on {stats.device} but state on {state.device}")
    hyper = _f64_tensor((beta1, beta2, ema, growth), state.device)
    with device_guard(state.device):
        _adam_alpha_kernel[(1,)](stats, stats.shape[0], stats.stride(0), stats.stride(1),
                                 state, hyper, hyper[1:], hyper[2:], hyper[3:],
                                 MEASURE=bool(measure), RECORD=bool(record), RBLOCK=RBLOCK,
                                 num_warps=4, REACH=_layout.ADAM_REACH)


# --- adam_update --------------------------------------------------------------------------
@triton.jit
def _adam_direction(m, v, c1, c2, eps, ACC: tl.constexpr):
    """``(m c1) / (sqrt(v c2) + eps)``: adam_update's and adam_previous_step's direction in
    their one order of operations (before weight decay)."""
    if ACC == tl.float64:  # fp64 division and square root are correctly rounded as they are
        d = (m * c1) / (tl.sqrt(v * c2) + eps)
    else:
        d = tl.div_rn(m * c1, tl.sqrt_rn(v * c2) + eps)
    return d


@triton.jit
def _adam_update_block(x_ptr, g_ptr, m_ptr, v_ptr, u_ptr, avg_ptr, off, lanes, n_left, b1,
                       omb1, b2, omb2, c1, c2, eps, wd, step, w, MASKED: tl.constexpr,
                       ALIGNED: tl.constexpr, DTYPE: tl.constexpr, ACC: tl.constexpr,
                       HAS_WD: tl.constexpr, RECORD: tl.constexpr, AVERAGE: tl.constexpr):
    x_base = block_base(x_ptr, off, ALIGNED)
    m_base = block_base(m_ptr, off, ALIGNED)
    v_base = block_base(v_ptr, off, ALIGNED)
    x = load_block(x_base, lanes, n_left, MASKED, ACC)
    g = load_block(block_base(g_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    m = load_block(m_base, lanes, n_left, MASKED, ACC)
    v = load_block(v_base, lanes, n_left, MASKED, ACC)
    m = b1 * m + omb1 * g
    v = b2 * v + omb2 * (g * g)
    d = _adam_direction(m, v, c1, c2, eps, ACC)
    if HAS_WD:
        d = d + wd * x
    u = step * d
    x = x - u
    store_block(x_base, lanes, n_left, x, MASKED, DTYPE)
    store_block(m_base, lanes, n_left, m, MASKED, DTYPE)
    store_block(v_base, lanes, n_left, v, MASKED, DTYPE)
    if RECORD:
        store_block(block_base(u_ptr, off, ALIGNED), lanes, n_left, u, MASKED, DTYPE)
    if AVERAGE:  # the average kernel's arithmetic, on x as stored (rounded to DTYPE)
        a_base = block_base(avg_ptr, off, ALIGNED)
        a = load_block(a_base, lanes, n_left, MASKED, ACC)
        x = x.to(DTYPE).to(ACC)
        store_block(a_base, lanes, n_left, a + w * (x - a), MASKED, DTYPE)


@triton.jit
def _adam_update_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, hyper, state,
                        DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                        HAS_WD: tl.constexpr, RECORD: tl.constexpr, AVERAGE: tl.constexpr,
                        CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    skip = tl.load(state + _state.LAST_SKIPPED) != 0
    end = tl.where(skip, start, end)  # a skipped step reads and writes nothing
    # hyper: beta1, weight_decay, beta2, eps (float64 bits); (1 - beta) formed in float64
    b1_64 = f64_from_bits(hyper)
    wd = f64_from_bits(hyper + 1).to(ACC)
    b2_64 = f64_from_bits(hyper + 2)
    eps = f64_from_bits(hyper + 3).to(ACC)
    b1 = b1_64.to(ACC)
    omb1 = (1.0 - b1_64).to(ACC)
    b2 = b2_64.to(ACC)
    omb2 = (1.0 - b2_64).to(ACC)
    c1 = (1.0 / (1.0 - tl.load(state + _state.BETA1_POWER))).to(ACC)  # formed in float64
    c2 = (1.0 / (1.0 - tl.load(state + _state.BETA2_POWER))).to(ACC)
    step = tl.load(state + _state.STEP_SIZE).to(ACC)
    w = tl.load(state + _state.AVG_WEIGHT).to(ACC)
    x_ptr = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    g_ptr = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    m_ptr = typed_ptr(ptrs, 2, n_tensors, t, DTYPE)
    v_ptr = typed_ptr(ptrs, 3, n_tensors, t, DTYPE)
    u_ptr = typed_ptr(ptrs, 4 if RECORD else 0, n_tensors, t, DTYPE)
    # the lists are x, g, m, v, then u if recorded, then avg if averaged
    avg_ptr = typed_ptr(ptrs, (5 if RECORD else 4) if AVERAGE else 0, n_tensors, t, DTYPE)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):
        _adam_update_block(x_ptr, g_ptr, m_ptr, v_ptr, u_ptr, avg_ptr, off, lanes, BLOCK, b1,
                           omb1, b2, omb2, c1, c2, eps, wd, step, w, False, ALIGNED, DTYPE, ACC,
                           HAS_WD, RECORD, AVERAGE)
    for off in range(full_end, end, BLOCK):
        _adam_update_block(x_ptr, g_ptr, m_ptr, v_ptr, u_ptr, avg_ptr, off, lanes, end - off,
                           b1, omb1, b2, omb2, c1, c2, eps, wd, step, w, True, False, DTYPE, ACC,
                           HAS_WD, RECORD, AVERAGE)


def adam_update(x: Tensors, g: Tensors, m: Tensors, v: Tensors, u: Tensors, avg: Tensors,
                state: torch.Tensor, *, beta1: float, beta2: float, eps: float,
                weight_decay: float) -> None:
    """Adam's moments and ``x <- x - eta (d + weight_decay x)``, the step written to ``u``
    and the averaged iterate updated in ``avg`` when given; nothing changes when the state
    says the step was skipped."""
    record, average = len(u) > 0, len(avg) > 0
    names, lists = ["x", "g", "m", "v"], [x, g, m, v]
    if record:
        names.append("u"), lists.append(u)
    if average:
        names.append("avg"), lists.append(avg)
    _check_state(state)
    elem, acc = types_of(x[0].dtype) if len(x) else (None, None)
    launch_per_chunk(_adam_update_kernel, names, lists,
                     hyper=(beta1, weight_decay, (beta2, eps)), state=state, DTYPE=elem,
                     ACC=acc, HAS_WD=weight_decay != 0, RECORD=record, AVERAGE=average)


# --- adam_previous_step -------------------------------------------------------------------
@triton.jit
def _adam_previous_step_block(x_ptr, m_ptr, v_ptr, u_ptr, off, lanes, n_left, c1, c2, eps, wd,
                              step, r, MASKED: tl.constexpr, ALIGNED: tl.constexpr,
                              DTYPE: tl.constexpr, ACC: tl.constexpr, HAS_WD: tl.constexpr):
    m = load_block(block_base(m_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    v = load_block(block_base(v_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    d = _adam_direction(m, v, c1, c2, eps, ACC)
    if HAS_WD:
        d = d + wd * load_block(block_base(x_ptr, off, ALIGNED), lanes, n_left, MASKED, ACC)
    u = step * d
    if HAS_WD:
        u = u * r
    store_block(block_base(u_ptr, off, ALIGNED), lanes, n_left, u, MASKED, DTYPE)


@triton.jit
def _adam_previous_step_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor, hyper, state,
                               DTYPE: tl.constexpr, ACC: tl.constexpr, ALIGNED: tl.constexpr,
                               HAS_WD: tl.constexpr, CHUNK: tl.constexpr,
                               BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    # hyper: 0, weight_decay, eps (float64 bits)
    wd_64 = f64_from_bits(hyper + 1)
    eps = f64_from_bits(hyper + 2).to(ACC)
    scale = tl.load(state + _state.PREV_STEP_SCALE)
    c1 = (1.0 / (1.0 - tl.load(state + _state.BETA1_POWER))).to(ACC)  # formed in float64
    c2 = (1.0 / (1.0 - tl.load(state + _state.BETA2_POWER))).to(ACC)
    r = (1.0 / (1.0 - scale * wd_64)).to(ACC)
    wd = wd_64.to(ACC)
    step = scale.to(ACC)
    x_ptr = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    m_ptr = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    v_ptr = typed_ptr(ptrs, 2, n_tensors, t, DTYPE)
    u_ptr = typed_ptr(ptrs, 3, n_tensors, t, DTYPE)
    lanes = tl.arange(0, BLOCK)
    full_end = start + (end - start) // BLOCK * BLOCK
    for off in range(start, full_end, BLOCK):
        _adam_previous_step_block(x_ptr, m_ptr, v_ptr, u_ptr, off, lanes, BLOCK, c1, c2, eps,
                                  wd, step, r, False, ALIGNED, DTYPE, ACC, HAS_WD)
    for off in range(full_end, end, BLOCK):
        _adam_previous_step_block(x_ptr, m_ptr, v_ptr, u_ptr, off, lanes, end - off, c1, c2,
                                  eps, wd, step, r, True, False, DTYPE, ACC, HAS_WD)


def adam_previous_step(x: Tensors, m: Tensors, v: Tensors, u: Tensors, state: torch.Tensor, *,
                       eps: float, weight_decay: float) -> None:
    """``u``: the step the last ``adam_update`` took, from ``x``, ``m``, ``v`` and the state
    (``reference.adam_previous_step``)."""
    _check_state(state)
    elem, acc = types_of(x[0].dtype) if len(x) else (None, None)
    launch_per_chunk(_adam_previous_step_kernel, ("x", "m", "v", "u"), (x, m, v, u),
                     hyper=(0.0, weight_decay, (eps,)), state=state, DTYPE=elem, ACC=acc,
                     HAS_WD=weight_decay != 0)


# --- compile variants ---------------------------------------------------------------------
def aot_variants(dtypes, full: bool):
    """The launches this file makes, for ``_aot``: (kernel, label, signature, constexprs).
    Without ``full``, the flags all on and all off."""
    def flags(n):
        return itertools.product([False, True], repeat=n) if full else [(True,) * n,
                                                                        (False,) * n]
    for dtype in dtypes:
        dt, acc = types_of(dtype)
        base = dict(DTYPE=dt, ACC=acc, ALIGNED=True, CHUNK=_tables.CHUNK, BLOCK=BLOCK)
        table = _tables.AOT_SIGNATURE
        stats = {**table, "n_chunks": "i32", "span": "i32",
                 "table": "*fp64" if acc == tl.float64 else "*fp32"}
        for measure, has_g in flags(2):  # with or without a measurement, g apart or not
            s_slot = 2 if measure else 0
            yield _adam_stats_kernel, f"{dt} measure={measure} g={has_g}", stats, \
                dict(MEASURE=measure, HAS_G=has_g, S_SLOT=s_slot,
                     G_SLOT=s_slot + 1 if has_g else s_slot, **base)
        update = {**table, "hyper": "*i64", "state": "*fp64"}
        for has_wd, record, average in flags(3):
            yield _adam_update_kernel, f"{dt} wd={has_wd} record={record} avg={average}", \
                update, dict(HAS_WD=has_wd, RECORD=record, AVERAGE=average, **base)
        for has_wd in [False, True]:
            yield _adam_previous_step_kernel, f"{dt} wd={has_wd}", update, \
                dict(HAS_WD=has_wd, **base)
    alpha = {"table": "*fp64", "n_rows": "i32", "row_stride": "i32", "col_stride": "i32",
             "state": "*fp64", "beta1": "*i64", "beta2": "*i64", "ema": "*i64", "growth": "*i64"}
    for measure, record in itertools.product([True, False], repeat=2):
        yield _adam_alpha_kernel, f"measure={measure} record={record}", alpha, \
            dict(MEASURE=measure, RECORD=record, RBLOCK=RBLOCK, REACH=_layout.ADAM_REACH)
