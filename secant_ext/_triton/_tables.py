"""Host-side metadata of a launch: how the tensors of a bucket are cut into chunks, and
the table of their data pointers, packed into one int64 device buffer.

Every launch covers all tensors of a call at once (apex's multi_tensor_apply, without its
limit on the number of tensors): the kernels read each tensor's data pointer from the
buffer and walk it as flat storage. Layout of the buffer, for T tensors, C chunks and L
lists of tensors::

    numels[T] | first_chunk[T + 1] | chunk_tensor[C] | hyper[2 + E] | ptrs[L * T]

``first_chunk`` is the exclusive prefix sum of each tensor's chunk count, so chunk ``c``
of tensor ``t = chunk_tensor[c]`` starts at element ``(c - first_chunk[t]) * CHUNK``.
``hyper`` holds momentum and weight decay, then the ``E`` values of ``extra`` (SecantAdam's
beta2 and eps), as float64 bit patterns (Triton passes Python floats as float32, which
would cost float64 buckets their precision).

Building the buffer reads only Python-side sizes and pointers, never device values, so it
never synchronizes. Buffers are cached by everything they encode (pointers, sizes,
hyperparameters): a tensor whose storage moves simply misses the cache and gets a new
buffer, so a stale table is never used. The parameters and momentum buffers keep their
storage across steps; gradients usually come back at the same addresses from the caching
allocator. On CUDA the copy to the device is from pinned memory and ``non_blocking``, so
a miss costs a small asynchronous copy, not a sync. The cache keeps the latest
``CACHE_SIZE`` buffers (each a few bytes a chunk: 0.5 MB for a billion parameters).

A CUDA graph that captured a launch reads that launch's buffer at every replay, so buffers
used during a capture are also kept in ``_captured`` and never evicted: a graph never reads
freed memory. ``clear_cache()`` drops them too; call it only when no such graph remains.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

CHUNK = 16384     # elements per chunk: one program of lookahead/update, a unit of stats
MAX_ROWS = 1024   # rows of the stats partial table, at most (programs of the stats launch);
                  # chosen, not measured: 8 programs an SM on an H200 at 2^26 elements
CACHE_SIZE = 64   # a few launches per bucket and step: plenty for stable addresses
# The pointer table's launch arguments as Triton's ahead-of-time compiler types them (``_aot``).
AOT_SIGNATURE = {"ptrs": "*i64", "n_tensors": "i32", "numels": "*i64", "first_chunk": "*i64",
                 "chunk_tensor": "*i64"}

Tensors = Sequence[torch.Tensor]


def num_chunks(numels: Sequence[int]) -> int:
    return sum(-(-int(n) // CHUNK) for n in numels)


def rows_and_span(numels: Sequence[int]) -> tuple[int, int]:
    """(rows P of the stats table, chunks per row): each stats program sums a contiguous
    run of chunks, so P stays at most MAX_ROWS whatever the sizes."""
    c = num_chunks(numels)
    if c == 0:
        return 1, 0
    span = -(-c // MAX_ROWS)
    return -(-c // span), span


def num_partial_rows(numels: Sequence[int]) -> int:
    """Rows of the ``[P, K]`` table ``secant_stats`` returns for tensors of these sizes."""
    return rows_and_span(numels)[0]


def _f64_bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


@dataclass
class Launch:
    """A device buffer and the views the kernels take (see the module docstring)."""
    buffer: torch.Tensor
    host: torch.Tensor          # kept alive: a pending async copy or a CUDA graph reads it
    numels: torch.Tensor
    first_chunk: torch.Tensor
    chunk_tensor: torch.Tensor
    hyper: torch.Tensor
    ptrs: torch.Tensor
    n_tensors: int
    n_chunks: int
    n_rows: int
    span: int
    aligned: bool               # every data pointer is 16-byte aligned (wide loads are safe)


_cache: "OrderedDict[tuple, Launch]" = OrderedDict()
_captured: "dict[tuple, Launch]" = {}


def clear_cache() -> None:
    _cache.clear()
    _captured.clear()


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _to_device(host: torch.Tensor, device: torch.device):
    """(device buffer, host tensor to keep alive)."""
    if device.type != "cuda":
        return host, host
    # Pinned + non_blocking: no sync. During CUDA graph capture a pageable non_blocking copy
    # is captured as a copy node that rereads ``host`` at replay, which the cache keeps.
    if not _capturing(device):
        host = host.pin_memory()
    return host.to(device, non_blocking=True), host


def launch_tables(lists: Sequence[Tensors], device: torch.device, momentum: float = 0.0,
                  weight_decay: float = 0.0, extra: Sequence[float] = ()) -> Launch:
    """The (cached) launch metadata of ``lists`` (equal-length lists of tensors on
    ``device``, tensor ``i`` of each list of the same size)."""
    first = lists[0]
    numels = tuple(t.numel() for t in first)
    ptrs = tuple(t.data_ptr() for lst in lists for t in lst)
    extra = tuple(float(v) for v in extra)
    key = (device, numels, ptrs, float(momentum), float(weight_decay), extra, CHUNK, MAX_ROWS)
    hit = _cache.get(key) or _captured.get(key)
    if hit is not None:
        if key in _cache:
            _cache.move_to_end(key)
        if _capturing(device):
            _captured[key] = hit
        return hit
    n_tensors = len(numels)
    first_chunk = [0]
    chunk_tensor = []
    for t, n in enumerate(numels):
        k = -(-n // CHUNK)
        first_chunk.append(first_chunk[-1] + k)
        chunk_tensor.extend([t] * k)
    values = [*numels, *first_chunk, *chunk_tensor, _f64_bits(momentum),
              _f64_bits(weight_decay), *map(_f64_bits, extra), *ptrs]
    host = torch.tensor(values, dtype=torch.int64)
    buffer, host = _to_device(host, device)
    a = n_tensors
    b = a + n_tensors + 1
    c = b + len(chunk_tensor)
    n_rows, span = rows_and_span(numels)
    launch = Launch(buffer=buffer, host=host, numels=buffer[:a], first_chunk=buffer[a:b],
                    chunk_tensor=buffer[b:c], hyper=buffer[c:c + 2 + len(extra)],
                    ptrs=buffer[c + 2 + len(extra):],
                    n_tensors=n_tensors, n_chunks=len(chunk_tensor), n_rows=n_rows, span=span,
                    aligned=all(p % 16 == 0 for p in ptrs))
    _cache[key] = launch
    if _capturing(device):
        _captured[key] = launch
    if len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return launch
