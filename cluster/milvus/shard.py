"""Primary key -> shard (virtual channel) hashing, stable across processes and releases.

These are Milvus' own functions (``pkg/util/typeutil/hash.go``), so a key lands on the shard
Milvus would pick for the same number of shards:

* INT64: ``murmur3_32(little-endian 8 bytes of the key, seed 0) & 0x7fffffff``
* VARCHAR: ``crc32(IEEE)`` of the key's first 100 UTF-8 bytes

and ``shard = hash % num_shards``. Both are computed column-wise with numpy (no Python loop over
rows); never use Python's ``hash()``, which is salted per process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["CRC_PREFIX_BYTES", "hash_pk_to_shard", "hash_pks", "rows_by_shard"]

CRC_PREFIX_BYTES = 100
"""Milvus hashes only the first 100 bytes of a VARCHAR key."""

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)


def _crc32_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc32_table()


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def murmur3_int64(keys: np.ndarray) -> np.ndarray:
    """murmur3_32 (seed 0) of each int64's 8 little-endian bytes, as uint32."""
    words = np.ascontiguousarray(keys, dtype="<i8").view("<u4").reshape(-1, 2).astype(np.uint32)
    h = np.zeros(len(words), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in (0, 1):
            k = words[:, i] * _C1
            k = _rotl(k, 15) * _C2
            h ^= k
            h = _rotl(h, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        h ^= np.uint32(8)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def crc32_strings(values: pa.Array) -> np.ndarray:
    """crc32 (IEEE, as zlib) of each string's first :data:`CRC_PREFIX_BYTES` bytes, as uint32.

    Byte position ``j`` of every string is processed at once, so the Python loop runs over
    at most 100 positions, never over rows.
    """
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[
        values.offset : values.offset + n + 1
    ]
    data_buf = values.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    lengths = np.minimum(np.diff(offsets), CRC_PREFIX_BYTES)
    # Longest first: at byte position j the rows still running are a prefix [:active[j]].
    order = np.argsort(-lengths, kind="stable")
    lengths = lengths[order]
    width = int(lengths[0])
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    if width:
        # (width, n) byte matrix, row j = byte j of every string (clipped reads past the end
        # are never used: those rows are outside the active prefix).
        pos = offsets[:-1][order][None, :] + np.arange(width, dtype=np.int64)[:, None]
        np.minimum(pos, len(data) - 1, out=pos)
        matrix = data[pos].astype(np.uint32)
        active = n - np.searchsorted(lengths[::-1], np.arange(width), side="right")
        for j in range(width):
            m = int(active[j])
            c = crc[:m]
            crc[:m] = _CRC_TABLE[(c ^ matrix[j, :m]) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
    out = np.empty(n, dtype=np.uint32)
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def hash_pks(pks: np.ndarray | pa.Array | Sequence[int] | Sequence[str]) -> np.ndarray:
    """Milvus' 32-bit hash of each primary key (int64 keys: murmur3 & 0x7fffffff; strings: crc32).

    Accepts a numpy int64 array, an Arrow int64/string array (or chunked array) or a list.
    """
    if isinstance(pks, pa.ChunkedArray):
        pks = pks.combine_chunks()
    if isinstance(pks, pa.Array):
        if pa.types.is_integer(pks.type):
            return murmur3_int64(
                pks.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            ) & np.uint32(0x7FFFFFFF)
        if pa.types.is_string(pks.type) or pa.types.is_large_string(pks.type):
            return crc32_strings(pks)
        raise TypeError(f"primary keys must be int64 or strings, got {pks.type}")
    arr = np.asarray(pks)
    if arr.dtype.kind in "iu":
        return murmur3_int64(arr.astype(np.int64, copy=False)) & np.uint32(0x7FFFFFFF)
    if arr.dtype.kind in "UOS" or arr.size == 0:
        return crc32_strings(pa.array(list(arr) if arr.dtype.kind == "O" else arr, pa.string()))
    raise TypeError(f"primary keys must be int64 or strings, got {arr.dtype}")


def hash_pk_to_shard(
    pks: np.ndarray | pa.Array | Sequence[int] | Sequence[str], num_shards: int
) -> np.ndarray:
    """The shard (``0 <= shard < num_shards``, int64) of each primary key."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return (hash_pks(pks) % np.uint32(num_shards)).astype(np.int64)


def rows_by_shard(shards: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """Row indices of each shard (``result[s]``, ascending), from :func:`hash_pk_to_shard`."""
    order = np.argsort(shards, kind="stable")
    bounds = np.searchsorted(shards[order], np.arange(num_shards + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(num_shards)]
