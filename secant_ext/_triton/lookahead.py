"""Phase 1: ``out = x + s`` over every tensor of a bucket, one launch."""
from __future__ import annotations

import triton
import triton.language as tl

from . import _tables
from ._common import BLOCK, NUM_WARPS, Tensors, check_lists, chunk_bounds, device_guard, \
    to_storage, typed_ptr, types_of


@triton.jit
def _lookahead_kernel(ptrs, n_tensors, numels, first_chunk, chunk_tensor,
                      DTYPE: tl.constexpr, ACC: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    t, start, end = chunk_bounds(numels, first_chunk, chunk_tensor, c, CHUNK)
    x = typed_ptr(ptrs, 0, n_tensors, t, DTYPE)
    s = typed_ptr(ptrs, 1, n_tensors, t, DTYPE)
    out = typed_ptr(ptrs, 2, n_tensors, t, DTYPE)
    lanes = tl.arange(0, BLOCK)
    for off in range(start, end, BLOCK):
        idx = off + lanes
        mask = idx < end
        xv = tl.load(x + idx, mask=mask).to(ACC)
        sv = tl.load(s + idx, mask=mask).to(ACC)
        tl.store(out + idx, to_storage(xv + sv, DTYPE), mask=mask)


def lookahead(x: Tensors, s: Tensors, out: Tensors) -> None:
    """``out = x + s`` (``x`` untouched, so restoring it is exact)."""
    check_lists(("x", "s", "out"), (x, s, out))
    if not len(x):
        return
    dtype, acc = types_of(x[0].dtype)
    tab = _tables.launch_tables((x, s, out), x[0].device)
    if tab.n_chunks == 0:
        return
    with device_guard(x[0].device):
        _lookahead_kernel[(tab.n_chunks,)](
            tab.ptrs, tab.n_tensors, tab.numels, tab.first_chunk, tab.chunk_tensor,
            DTYPE=dtype, ACC=acc, CHUNK=_tables.CHUNK, BLOCK=BLOCK, num_warps=NUM_WARPS)
