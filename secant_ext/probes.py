"""Probe closures without writing a second closure.

A probe closure gives the gradient ``s`` the curvature is measured along; a small probe
batch makes the two extra evaluations of a step cheap (docs/ALGORITHM.md, 'The step').
``slice_probe`` takes it from the first rows of the training batch itself.
"""
from __future__ import annotations

from typing import Callable

import torch


def slice_probe(loss_of_batch: Callable[..., torch.Tensor], *batch: torch.Tensor,
                size: int = 16) -> Callable[[], torch.Tensor]:
    """A probe closure: ``loss_of_batch`` on the first ``size`` rows of each tensor of
    ``batch``, with ``backward()``. Pass it as ``probe_closure``::

        def loss_of(x, y):
            return loss_fn(model(x), y)
        probe = secant_ext.slice_probe(loss_of, x, y, size=16)
        opt.step(closure, probe_closure=probe)   # closure: the usual one on (x, y)

    The optimizer moves the gradients out of ``p.grad`` before each evaluation, so the
    probe needs no ``zero_grad()``. With ``size`` at least the batch's rows it is the
    training loss itself (then no probe closure is cheaper: the training gradient serves)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if not batch:
        raise ValueError("slice_probe needs at least one batch tensor to slice")
    rows = {t.shape[0] for t in batch if isinstance(t, torch.Tensor) and t.dim() > 0}
    if len(rows) > 1:
        raise ValueError(f"the batch tensors have different numbers of rows: {sorted(rows)}")
    sliced = tuple(t[:size] if isinstance(t, torch.Tensor) and t.dim() > 0 else t
                   for t in batch)

    def probe() -> torch.Tensor:
        loss = loss_of_batch(*sliced)
        loss.backward()
        return loss
    return probe
