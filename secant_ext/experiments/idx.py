"""Reader for the IDX format of the MNIST files, gzip-compressed or plain.

Layout (big-endian): two zero bytes, a type code, the number of dimensions ``n``, then
``n`` int32 sizes, then the values in row-major order.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file or directory is missing or unreadable; the message names the path."""


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if raw[:2] == _GZIP_MAGIC:  # by content, not by name: a renamed file still reads
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"corrupt gzip data in {path}: {exc}") from exc
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file at ``path`` (gzip or plain), in native byte order."""
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than the "
                        "4-byte header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file: header bytes {raw[:4].hex()} (expected "
                        f"00 00, a type code in {sorted(hex(c) for c in _IDX_DTYPES)}, ndim)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions "
                        f"need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX data of shape {shape} and type {dtype.str} needs "
                        f"{expected} bytes, the file has {len(raw)} (truncated or corrupt)")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))

