"""The phases of a step written with ``torch._foreach_*`` ops: the benchmarks' multi-tensor
baseline, the implementation a careful user would write in plain PyTorch.

Same signatures and same math as ``secant_ext.reference`` (checked by
``bench/test_bench.py``), for the variants the benchmarks run: A-SGD and A-SGDM, with or
without weight decay and Nesterov. The sign variant is not benchmarked and raises.

On CPU a host read costs nothing (there is no device queue to drain), so this baseline
reads alpha and the skip flag as Python numbers. That lets the update use the one-pass
``_foreach_add_(x, d, alpha=-a)`` that ``torch.optim.SGD(foreach=True)`` uses, and honour
a skipped step exactly with a Python branch: the fastest foreach formulation, a fair
opponent for the fused kernels. (The package's own step never syncs; on CUDA it must not.)

Passes over memory, fp32, N elements (the fused kernels' byte model is in brackets):
lookahead 8N + 12N = 20N [12N]; stats 12N (y) + 4N + 4N (|s|^2, |y|^2) + 12N + 4N (s*y, its sum)
= 36N [8N]; update 12N SGD [12N], 24N SGDM (lerp, then add) [20N].
"""
from __future__ import annotations

from typing import Sequence

import torch

from secant_ext import _layout
from secant_ext import reference as _reference

Tensors = Sequence[torch.Tensor]


def _acc_dtype(tensors: Tensors) -> torch.dtype:
    return torch.float64 if len(tensors) and tensors[0].dtype == torch.float64 \
        else torch.float32


def lookahead(x: Tensors, s: Tensors, out: Tensors) -> None:
    # Two passes: the out= variant of _foreach_add allocates a result and copies it into
    # ``out`` (measured 3-4x slower on CPU, fresh pages on every call).
    torch._foreach_copy_(list(out), list(x))
    torch._foreach_add_(list(out), list(s))


def secant_stats(s: Tensors, g_plus: Tensors, g: Tensors, x: Tensors, m: Tensors,
                 state: torch.Tensor, *, momentum: float, nesterov: bool,
                 weight_decay: float, sign_mode: int) -> torch.Tensor:
    _reference.check_sign_mode(sign_mode)
    if sign_mode == _layout.SIGN_SCALED:
        raise NotImplementedError("the foreach baseline covers A-SGD and A-SGDM only")
    s, g_plus = list(s), list(g_plus)
    acc = _acc_dtype(s)
    y = torch._foreach_sub(g_plus, s)
    s_sq = torch.stack(torch._foreach_powsum(s, 2, dtype=acc)).sum()
    y_sq = torch.stack(torch._foreach_powsum(y, 2, dtype=acc)).sum()
    # There is no foreach sum: the dot product is one reduction per tensor.
    dot = torch.stack([p.sum(dtype=acc) for p in torch._foreach_mul(s, y)]).sum()
    g_sq = torch.stack(torch._foreach_powsum(list(g), 2, dtype=acc)).sum() if len(g) \
        else s_sq
    return torch.stack([dot, s_sq, y_sq, g_sq]).unsqueeze(0)


# A 12-element computation on the group state: nothing for foreach ops to batch.
secant_alpha = _reference.secant_alpha


def update(x: Tensors, g: Tensors, m: Tensors, stats: torch.Tensor, state: torch.Tensor, *,
           momentum: float, nesterov: bool, weight_decay: float, sign_mode: int) -> None:
    _reference.check_sign_mode(sign_mode)
    if sign_mode != _layout.SIGN_NONE:
        raise NotImplementedError("the foreach baseline covers A-SGD and A-SGDM only")
    if state[_layout.LAST_SKIPPED].item() != 0:
        return
    alpha = state[_layout.ALPHA].item()
    x, d = list(x), list(g)
    if weight_decay != 0:
        d = torch._foreach_add(d, x, alpha=weight_decay)
    if len(m):
        m = list(m)
        if state[_layout.MOMENTUM_READY].item() != 0:
            torch._foreach_lerp_(m, d, 1 - momentum)  # m + (1 - mu)(d - m)
        else:
            torch._foreach_copy_(m, d)
        if nesterov:
            d = torch._foreach_lerp(m, d, 1 - momentum)
        else:
            d = m
    torch._foreach_add_(x, d, alpha=-alpha)
