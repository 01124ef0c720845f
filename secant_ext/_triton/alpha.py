"""Phase 2b: the rule's division on the device, one single-program launch.

Sums the first ``NUM_STATS`` columns of the partial table in float64 (a fixed order: the
same table gives the same bits), applies the rule and the safeguard exactly as
``reference.secant_alpha`` does, and writes the group state. Nothing leaves the device:
``update`` reads alpha and the skip flag from the state.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _layout as L
from ._common import device_guard

RBLOCK = 256  # table rows summed per vector step


@triton.jit
def _finite(v):
    return tl.abs(v) < float("inf")  # False for inf and NaN


@triton.jit
def _alpha_kernel(table, n_rows, row_stride, col_stride, state,
                  RULE: tl.constexpr, SAFEGUARD: tl.constexpr, RBLOCK: tl.constexpr):
    rows = tl.arange(0, RBLOCK).to(tl.int64)
    acc_a = tl.zeros([RBLOCK], tl.float64)
    acc_b = tl.zeros([RBLOCK], tl.float64)
    acc_c = tl.zeros([RBLOCK], tl.float64)
    acc_g = tl.zeros([RBLOCK], tl.float64)
    for r0 in range(0, n_rows, RBLOCK):
        r = r0 + rows
        mask = r < n_rows
        base = table + r * row_stride
        acc_a += tl.load(base + 0 * col_stride, mask=mask, other=0).to(tl.float64)
        acc_b += tl.load(base + 1 * col_stride, mask=mask, other=0).to(tl.float64)
        acc_c += tl.load(base + 2 * col_stride, mask=mask, other=0).to(tl.float64)
        acc_g += tl.load(base + 3 * col_stride, mask=mask, other=0).to(tl.float64)
    a = tl.sum(acc_a)
    b = tl.sum(acc_b)
    c = tl.sum(acc_c)
    g_sq = tl.sum(acc_g)
    finite = _finite(a) & _finite(b) & _finite(c) & _finite(g_sq)
    prev = tl.load(state + 0)   # ALPHA
    step = tl.load(state + 1)   # STEP
    taken = tl.load(state + 2)  # TAKEN
    skipped = tl.load(state + 3)
    n_clipped = tl.load(state + 4)
    if RULE == 0:    # secant: b / (a + b), curvature clipped at 0 by the safeguard
        clipped = (a < 0) & SAFEGUARD
        alpha = b / (tl.where(clipped, 0.0, a) + b)
        keep = b == 0
    elif RULE == 1:  # steffensen: b / a, the safeguard keeps alpha when a <= 0
        clipped = (a <= 0) & SAFEGUARD
        alpha = b / a
        keep = (b == 0) | clipped
    else:            # bb2: a / (c + b), the safeguard keeps alpha when a <= 0
        clipped = (a <= 0) & SAFEGUARD
        alpha = a / (c + b)
        keep = (b == 0) | clipped
    alpha = tl.where(keep, prev, alpha)
    clipped = clipped & finite & (b != 0)
    tl.store(state + 0, tl.where(finite, alpha, prev))
    tl.store(state + 1, step + 1)
    tl.store(state + 2, taken + finite.to(tl.float64))
    tl.store(state + 3, skipped + (~finite).to(tl.float64))
    tl.store(state + 4, n_clipped + clipped.to(tl.float64))
    tl.store(state + 5, (~finite).to(tl.float64))
    tl.store(state + 6, clipped.to(tl.float64))
    tl.store(state + 7, (taken >= 1).to(tl.float64))
    tl.store(state + 8, a)
    tl.store(state + 9, b)
    tl.store(state + 10, c)
    tl.store(state + 11, g_sq)


# The kernel spells the state fields as numbers; this keeps it honest if the layout moves.
assert (L.ALPHA, L.STEP, L.TAKEN, L.SKIPPED, L.CLIPPED, L.LAST_SKIPPED, L.LAST_CLIPPED,
        L.MOMENTUM_READY, L.DOT, L.S_SQ, L.Y_SQ, L.G_SQ, L.STATE_SIZE) == tuple(range(13))
assert (L.COL_DOT, L.COL_S_SQ, L.COL_Y_SQ, L.COL_G_SQ, L.NUM_STATS) == (0, 1, 2, 3, 4)


def secant_alpha(stats: torch.Tensor, state: torch.Tensor, rule: int, safeguard: bool) -> None:
    """Sum the table (float64), apply the rule, update ``state`` in place, on the device."""
    if rule not in L.RULES.values():
        raise ValueError(f"unknown rule code {rule}; expected one of {L.RULES}")
    if stats.dim() != 2 or stats.shape[1] < L.NUM_STATS or stats.shape[0] < 1:
        raise ValueError(f"stats must be a [P, K] table with P >= 1 and K >= {L.NUM_STATS}, "
                         f"got shape {tuple(stats.shape)}")
    if stats.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"stats must be float32 or float64, got {stats.dtype}")
    if state.dtype != torch.float64 or state.numel() != L.STATE_SIZE or \
            not state.is_contiguous():
        raise ValueError(f"state must be a contiguous float64 tensor of {L.STATE_SIZE} "
                         f"values, got {state.dtype} of shape {tuple(state.shape)}")
    if stats.device != state.device:
        raise ValueError(f"stats is on {stats.device} but state on {state.device}")
    with device_guard(state.device):
        _alpha_kernel[(1,)](stats, stats.shape[0], stats.stride(0), stats.stride(1), state,
                            RULE=rule, SAFEGUARD=bool(safeguard), RBLOCK=RBLOCK, num_warps=4)
