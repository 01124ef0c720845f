"""Phase 2b: the rule's division on the device, one single-program launch.

Sums the first ``NUM_STATS`` columns of the partial table in float64 (a fixed order: the
same table gives the same bits), applies the rule and the safeguard exactly as
``reference.secant_alpha`` does, and writes the group state. Nothing leaves the device:
``update`` reads alpha and the skip flag from the state.
"""
from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from .. import _layout
from . import _state
from ._common import device_guard

RBLOCK = 256  # table rows summed per vector step


@triton.jit
def _finite(v):
    return tl.abs(v) < float("inf")  # False for inf and NaN


@triton.jit
def column_sums(table, n_rows, row_stride, col_stride, RBLOCK: tl.constexpr):
    """The four statistics columns of the partial table, summed in float64 in a fixed order
    (RBLOCK lanes over the rows, then the lanes): the same table gives the same bits."""
    rows = tl.arange(0, RBLOCK).to(tl.int64)
    acc_a = tl.zeros([RBLOCK], tl.float64)
    acc_b = tl.zeros([RBLOCK], tl.float64)
    acc_c = tl.zeros([RBLOCK], tl.float64)
    acc_g = tl.zeros([RBLOCK], tl.float64)
    for r0 in range(0, n_rows, RBLOCK):
        r = r0 + rows
        mask = r < n_rows
        base = table + r * row_stride
        acc_a += tl.load(base + _state.COL_DOT * col_stride, mask=mask, other=0).to(tl.float64)
        acc_b += tl.load(base + _state.COL_S_SQ * col_stride, mask=mask, other=0).to(tl.float64)
        acc_c += tl.load(base + _state.COL_Y_SQ * col_stride, mask=mask, other=0).to(tl.float64)
        acc_g += tl.load(base + _state.COL_G_SQ * col_stride, mask=mask, other=0).to(tl.float64)
    return tl.sum(acc_a), tl.sum(acc_b), tl.sum(acc_c), tl.sum(acc_g)


@triton.jit
def count_step(state, finite, g_sq):
    """The counters every step-size phase keeps (``reference._count_step``): the step, the
    steps taken and skipped, and ``|g|^2``; returns the steps taken, this one included."""
    tl.store(state + _state.STEP, tl.load(state + _state.STEP) + 1)
    taken = tl.load(state + _state.TAKEN) + finite.to(tl.float64)
    tl.store(state + _state.TAKEN, taken)
    tl.store(state + _state.SKIPPED, tl.load(state + _state.SKIPPED) + (~finite).to(tl.float64))
    tl.store(state + _state.LAST_SKIPPED, (~finite).to(tl.float64))
    tl.store(state + _state.G_SQ, g_sq)
    return taken


@triton.jit
def finish_step_size(state, g_sq, rate, taken):
    """The end every step-size phase shares (``reference._finish_step_size``): the applied
    step ``rate * lr * clip`` (torch's ``clip_grad_norm_`` coefficient, with the norm over
    the whole model: the other param groups' ``|g|^2`` added, 0 with one group) into
    ``STEP_SIZE``, and the averaged iterate's weight, 1 / steps taken floored, into
    ``AVG_WEIGHT``; returns the applied step."""
    eps = tl.full([], 1e-6, tl.float64)  # a bare literal would be an fp32 constant
    clip_g_sq = g_sq + tl.load(state + _state.CLIP_G_SQ_OTHERS)
    clip = tl.load(state + _state.MAX_GRAD_NORM) / (tl.sqrt(clip_g_sq) + eps)
    clip = tl.where(clip < 1.0, clip, 1.0)  # NaN (skipped step) and inf / inf give 1
    step = rate * tl.load(state + _state.LR) * clip
    tl.store(state + _state.STEP_SIZE, step)
    weight = tl.where(taken > 0, 1.0 / taken, 1.0)
    floor = tl.load(state + _state.AVG_FLOOR)
    tl.store(state + _state.AVG_WEIGHT, tl.where(weight > floor, weight, floor))
    return step


@triton.jit
def _alpha_kernel(table, n_rows, row_stride, col_stride, state,
                  RULE: tl.constexpr, SAFEGUARD: tl.constexpr, RBLOCK: tl.constexpr,
                  RULE_SECANT: tl.constexpr, RULE_STEFFENSEN: tl.constexpr, MEASURE: tl.constexpr):
    a, b, c, g_sq = column_sums(table, n_rows, row_stride, col_stride, RBLOCK)
    finite = _finite(a) & _finite(b) & _finite(c) & _finite(g_sq)
    prev = tl.load(state + _state.ALPHA)
    taken = tl.load(state + _state.TAKEN)
    n_clipped = tl.load(state + _state.CLIPPED)
    if RULE == RULE_SECANT:        # b / (a + b), curvature clipped at 0 by the safeguard
        clipped = (a < 0) & SAFEGUARD
        alpha = b / (tl.where(clipped, 0.0, a) + b)
        keep = b == 0
    elif RULE == RULE_STEFFENSEN:  # b / a, the safeguard keeps alpha when a <= 0
        clipped = (a <= 0) & SAFEGUARD
        alpha = b / a
        keep = (b == 0) | clipped
    else:                          # bb2: a / (c + b), the safeguard keeps alpha when a <= 0
        clipped = (a <= 0) & SAFEGUARD
        alpha = a / (c + b)
        keep = (b == 0) | clipped
    alpha = tl.where(keep, prev, alpha)
    clipped = clipped & finite & (b != 0) & MEASURE
    taken_now = count_step(state, finite, g_sq)
    tl.store(state + _state.LAST_CLIPPED, clipped.to(tl.float64))
    tl.store(state + _state.LAST_MEASURED, tl.full([], 1.0 if MEASURE else 0.0, tl.float64))
    tl.store(state + _state.MOMENTUM_READY, (taken >= 1).to(tl.float64))
    if MEASURE:
        new_alpha = tl.where(finite, alpha, prev)
        tl.store(state + _state.ALPHA, new_alpha)
        tl.store(state + _state.CLIPPED, n_clipped + clipped.to(tl.float64))
        tl.store(state + _state.DOT, a)
        tl.store(state + _state.S_SQ, b)
        tl.store(state + _state.Y_SQ, c)
        n_stalled = tl.load(state + _state.STALLED)  # the lookahead never saw x + s: b > 0, c == 0
        tl.store(state + _state.STALLED, n_stalled + ((b > 0) & (c == 0)).to(tl.float64))
        beta = tl.load(state + _state.CARRY_BETA)    # the carry for the steps that do not measure
        ema = tl.load(state + _state.ALPHA_EMA)
        power = tl.load(state + _state.BETA_POWER)
        n_measured = tl.load(state + _state.MEASURED)
        ema_new = beta * ema + (1.0 - beta) * new_alpha
        tl.store(state + _state.ALPHA_EMA, tl.where(finite, ema_new, ema))
        tl.store(state + _state.BETA_POWER, tl.where(finite, power * beta, power))
        tl.store(state + _state.MEASURED, n_measured + finite.to(tl.float64))
        applied = new_alpha
    else:  # no lookahead: the bias-corrected EMA of the measured alphas
        carry = tl.load(state + _state.ALPHA_EMA) / (1.0 - tl.load(state + _state.BETA_POWER))
        applied = tl.where(tl.load(state + _state.MEASURED) > 0, carry, prev)
    finish_step_size(state, g_sq, applied, taken_now)


# The rule codes _alpha_kernel compares with (the layout it reads from _state).
RULE_CODES = dict(RULE_SECANT=_layout.RULES["secant"],
                  RULE_STEFFENSEN=_layout.RULES["steffensen"])


def secant_alpha(stats: torch.Tensor, state: torch.Tensor, *, rule: int,
                 safeguard: bool, measure: bool = True) -> None:
    """Sum the table (float64), apply the rule, update ``state`` in place, on the device."""
    if rule not in _layout.RULES.values():
        raise ValueError(f"unknown rule code {rule}; expected one of {_layout.RULES}")
    if stats.dim() != 2 or stats.shape[1] < _layout.NUM_STATS or stats.shape[0] < 1:
        raise ValueError(f"stats must be a [P, K] table with P >= 1 and "
                         f"K >= {_layout.NUM_STATS}, got shape {tuple(stats.shape)}")
    if stats.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"stats must be float32 or float64, got {stats.dtype}")
    if state.dtype != torch.float64 or state.numel() != _layout.STATE_SIZE or \
            not state.is_contiguous():
        raise ValueError(f"state must be a contiguous float64 tensor of {_layout.STATE_SIZE} "
                         f"values, got {state.dtype} of shape {tuple(state.shape)}")
    if stats.device != state.device:
        raise ValueError(f"stats is on {stats.device} but state on {state.device}")
    with device_guard(state.device):
        _alpha_kernel[(1,)](stats, stats.shape[0], stats.stride(0), stats.stride(1), state,
                            RULE=rule, SAFEGUARD=bool(safeguard), MEASURE=bool(measure),
                            RBLOCK=RBLOCK, num_warps=4,
                            **RULE_CODES)


def aot_variants(dtypes, full: bool):
    """The launches this file makes, for ``_aot``: (kernel, label, signature, constexprs);
    one launch per step, whatever the parameters' dtype."""
    signature = {"table": "*fp64", "n_rows": "i32", "row_stride": "i32", "col_stride": "i32",
                 "state": "*fp64"}
    for rule, safeguard, measure in itertools.product(_layout.RULES.values(), [False, True],
                                                      [True, False]):
        yield _alpha_kernel, f"rule={rule} safeguard={safeguard} measure={measure}", signature, \
            dict(RULE=rule, SAFEGUARD=safeguard, MEASURE=measure, RBLOCK=RBLOCK, **RULE_CODES)
