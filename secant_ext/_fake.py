"""Fake (meta) kernels of the ``secant_ext`` ops, for ``torch.compile`` and ``opcheck``: one
for each op of ``_op_table``. An op without a result (``-> ()``) gets one that returns
None, from the table; the ops that return a tensor have theirs written here
(tests/test_op_table.py checks both).

Only ``secant_stats`` returns a tensor: the ``[P, K]`` table, whose row count P is each
backend's own choice (a function of the tensor sizes only). The C++ kernels cut all
elements of a call, end to end, into chunks of ``_layout.CHUNK_NUMEL`` elements, one row each;
the Triton kernels say theirs through ``secant_ext._triton.num_partial_rows``.

Importing this module registers the fake kernels, so the ops must exist:
``_ops.load_cpp()`` imports it once the extension has loaded (and its layout, chunk size
included, has been checked against ``_layout``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import _layout, _op_table


def _cpu_rows(numels: Sequence[int]) -> int:
    total = sum(numels)
    return torch.sym_max(1, (total + _layout.CHUNK_NUMEL - 1) // _layout.CHUNK_NUMEL)


def num_partial_rows(numels: Sequence[int], device: torch.device) -> int:
    """Rows of the stats table the kernels of ``device`` return for tensors of these sizes."""
    if device.type == "cpu":
        return _cpu_rows(numels)
    from . import _triton  # imported here: importing triton is slow and optional
    return _triton.num_partial_rows(list(numels))


@torch.library.register_fake("secant_ext::secant_stats")
def _secant_stats(s, g_plus, g, x, m, state, *, momentum, nesterov, weight_decay, sign_mode):
    dtype = torch.float64 if len(s) and s[0].dtype == torch.float64 else torch.float32
    device = s[0].device if len(s) else state.device
    rows = num_partial_rows([t.numel() for t in s], device)
    cols = _layout.NUM_STATS + (len(s) if sign_mode == _layout.SIGN_SCALED else 0)
    return state.new_empty((rows, cols), dtype=dtype, device=device)


@torch.library.register_fake("secant_ext::adam_stats")
def _adam_stats(u, g_plus, s, g, state):
    dtype = torch.float64 if len(s) and s[0].dtype == torch.float64 else torch.float32
    device = s[0].device if len(s) else state.device
    rows = num_partial_rows([t.numel() for t in s], device)
    return state.new_empty((rows, _layout.NUM_STATS), dtype=dtype, device=device)


def _no_result(*args, **kwargs) -> None:
    return None


for _op in _op_table.OPS:
    if _op.schema.endswith("-> ()"):
        torch.library.register_fake(f"secant_ext::{_op.name}")(_no_result)
