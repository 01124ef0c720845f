"""What the benchmarks run: parameter layouts, the byte model, and the tensors of a step.

Byte model of docs/ALGORITHM.md, per element, fp32; bf16 moves half of it. Reads and writes
of the large tensors only (the group state and the stats table are a few bytes):

    lookahead     out = x + s                      read x, s; write out      12 bytes
    secant_stats  a, b, c from s and g_plus        read s, g_plus             8 bytes
    secant_alpha  the rule on the summed table     O(1)                       0
    update SGD    x -= alpha g                     read x, g; write x        12 bytes
    update SGDM   m = lerp(m, g), x -= alpha m     read x, g, m; write x, m  20 bytes
    step          the four phases                  A-SGD 32, A-SGDM 40 bytes

Without a probe closure ``s`` is the training gradient ``g`` (the same tensor), so the
stats pass takes ``|g|^2`` from ``|s|^2`` and reads nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from secant_ext import _layout

FP32_BYTES_PER_ELEMENT = {
    "lookahead": 12, "secant_stats": 8, "secant_alpha": 0,
    "update": {"sgd": 12, "sgdm": 20}, "step": {"sgd": 32, "sgdm": 40},
}
MOMENTUM = {"sgd": 0.0, "sgdm": 0.9}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bytes_moved(phase: str, method: str, numel: int, dtype: torch.dtype) -> int:
    per = FP32_BYTES_PER_ELEMENT[phase]
    if isinstance(per, dict):
        per = per[method]
    return per * numel * torch.finfo(dtype).bits // 32


def transformer_shapes(total: int, blocks: int = 12, context: int = 1024) -> List[Tuple[int, ...]]:
    """The parameter shapes of a GPT-like model with exactly ``total`` elements.

    ``blocks`` transformer blocks of 12 tensors each (two layernorms, qkv and output
    projections, a 4x MLP, with biases), a position embedding, a final layernorm and a
    token embedding whose vocabulary size absorbs the remainder: 4 + 12 * blocks tensors
    (148 by default) of sizes from ``d`` to ``vocab * d``.
    """
    for d in (1024, 512, 256, 128, 64, 32, 16):
        block = [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,),
                 (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        fixed = blocks * sum(_numel(s) for s in block) + context * d + 2 * d
        rest = total - fixed
        # Every term is a multiple of d (a power of two dividing total): vocab is exact.
        if rest >= 4 * context * d and rest % d == 0:
            shapes = [(rest // d, d), (context, d)]
            for _ in range(blocks):
                shapes += block
            return shapes + [(d,), (d,)]
    raise ValueError(f"no transformer-like layout of {total} elements with {blocks} blocks; "
                     f"use a power of two of at least 2**18")


def _numel(shape) -> int:
    n = 1
    for k in shape:
        n *= k
    return n


def layout_shapes(layout: str, total: int) -> List[Tuple[int, ...]]:
    if layout == "flat":
        return [(total,)]
    if layout == "model":
        return transformer_shapes(total)
    raise ValueError(f"layout must be 'flat' or 'model', got {layout!r}")


@dataclass
class StepTensors:
    """The tensors one step touches, for one layout, size and dtype.

    ``x`` parameters, ``g`` the training gradient (also the probe gradient ``s``),
    ``g_plus`` the gradient at the lookahead point, ``out`` the lookahead storage,
    ``m`` momentum buffers. Separate tensors per parameter, as in a model."""
    x: List[torch.Tensor]
    g: List[torch.Tensor]
    g_plus: List[torch.Tensor]
    out: List[torch.Tensor]
    m: List[torch.Tensor]
    states: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self.x)

    @property
    def dtype(self) -> torch.dtype:
        return self.x[0].dtype

    def state(self, key: str) -> torch.Tensor:
        """A group state per (implementation, method), so that runs do not share alpha."""
        if key not in self.states:
            self.states[key] = torch.tensor(_layout.initial_state_values(), dtype=torch.float64)
        return self.states[key]


def make_tensors(layout: str, total: int, dtype: torch.dtype, seed: int = 0) -> StepTensors:
    """Gradients of unit scale, ``g_plus`` a perturbation of ``g`` (positive curvature)
    and parameters large enough that thousands of steps stay finite."""
    gen = torch.Generator().manual_seed(seed)
    shapes = layout_shapes(layout, total)

    def randn(shape, scale=1.0):
        return (torch.randn(shape, generator=gen) * scale).to(dtype)
    x = [randn(s, 10.0) for s in shapes]
    g = [randn(s, 1e-3) for s in shapes]
    g_plus = [(gi.float() * 1.5 + randn(s, 1e-4).float()).to(dtype) for gi, s in zip(g, shapes)]
    out = [torch.zeros_like(t) for t in x]  # zeros_like, not empty_like: pages touched now
    m = [torch.zeros_like(t) for t in x]
    return StepTensors(x, g, g_plus, out, m)
