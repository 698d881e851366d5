"""Read (and, for tests, write) arrays in the idx format of MNIST and Fashion-MNIST.

An idx file is a header followed by the raw array, all big-endian:

- 2 zero bytes, then 1 byte dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
  0x0D float32, 0x0E float64), then 1 byte ``ndim``;
- ``ndim`` uint32 dimension sizes;
- ``prod(dims) * itemsize`` bytes of data, row-major.

Files may be gzip-compressed (recognised by their first two bytes, whatever their name).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from tailscope.errors import DataError

__all__ = ["read_idx", "write_idx"]

_DTYPE_OF_CODE = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in _DTYPE_OF_CODE.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (plain or gzip) into a native-endian array of shape ``dims``."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an idx file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPE_OF_CODE:
        raise DataError(f"{path}: unknown idx dtype code 0x{code:02X}")
    if ndim == 0:
        raise DataError(f"{path}: idx header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: idx header is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _DTYPE_OF_CODE[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        raise DataError(
            f"{path}: idx header declares shape {dims} ({expected} bytes of data) "
            f"but the file holds {actual} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an idx file; gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _CODE_OF_KIND or array.ndim == 0:
        raise DataError(f"array: idx cannot store dtype {array.dtype} with shape {array.shape}")
    code = _CODE_OF_KIND[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=_DTYPE_OF_CODE[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + body)
