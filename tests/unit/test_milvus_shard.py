"""cluster.milvus.shard: Milvus' pk -> shard hashing, vectorised, stable across processes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pyarrow as pa
import pytest

from cluster.milvus.shard import (
    CRC_PREFIX_BYTES,
    crc32_strings,
    hash_pk_to_shard,
    hash_pks,
    murmur3_int64,
    rows_by_shard,
)


def murmur3_32_reference(data: bytes, seed: int = 0) -> int:
    """Plain-Python murmur3 x86_32 (the reference the vectorised version must match)."""

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    c1, c2, h, n = 0xCC9E2D51, 0x1B873593, seed, len(data)
    for i in range(0, n // 4 * 4, 4):
        (k,) = struct.unpack("<I", data[i : i + 4])
        k = rotl((k * c1) & 0xFFFFFFFF, 15) * c2 & 0xFFFFFFFF
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = data[n // 4 * 4 :]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= rotl((k * c1) & 0xFFFFFFFF, 15) * c2 & 0xFFFFFFFF
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_reference_murmur3_known_vectors() -> None:
    assert murmur3_32_reference(b"") == 0
    assert murmur3_32_reference(b"hello") == 0x248BFA47
    assert murmur3_32_reference(b"", 1) == 0x514E28B7


def test_int64_hash_matches_reference_and_fixed_values() -> None:
    keys = np.array([0, 1, -1, 2**63 - 1, -(2**63), 123456789], dtype=np.int64)
    want = [murmur3_32_reference(struct.pack("<q", int(k))) for k in keys]
    assert murmur3_int64(keys).tolist() == want
    # Pinned: Milvus Hash32Int64 = murmur3(LE bytes) & 0x7fffffff, shard = hash % n.
    assert hash_pks(keys).tolist() == [w & 0x7FFFFFFF for w in want]
    assert want == [0x63852AFC, 0x53075D44, 0x627564E8, 0x827144BF, 0x516FAF25, 0x2920FE31]
    assert hash_pk_to_shard(keys, 16).tolist() == [12, 4, 8, 15, 5, 1]


def test_string_hash_is_crc32_of_first_100_bytes() -> None:
    keys = ["", "a", "hello", "héllo", "key-123", "x" * 150, "y" * 100 + "z"]
    want = [zlib.crc32(k.encode()[:CRC_PREFIX_BYTES]) for k in keys]
    assert hash_pks(pa.array(keys)).tolist() == want
    assert hash_pks(keys).tolist() == want
    assert hash_pks(np.array(keys)).tolist() == want
    assert hash_pks(pa.array(keys, pa.large_string())).tolist() == want
    assert hash_pks(pa.array(keys).slice(2, 3)).tolist() == want[2:5]
    assert hash_pks(pa.chunked_array([keys[:3], keys[3:]])).tolist() == want
    assert hash_pks(["x" * 150])[0] == hash_pks(["x" * 100])[0]
    assert hash_pk_to_shard(["hello", "key-123"], 7).tolist() == [
        zlib.crc32(b"hello") % 7,
        zlib.crc32(b"key-123") % 7,
    ]


def test_random_unicode_strings_match_zlib() -> None:
    rng = np.random.default_rng(7)
    keys = [
        "".join(chr(c) for c in rng.integers(32, 0x3000, int(rng.integers(0, 140))))
        for _ in range(500)
    ]
    want = [zlib.crc32(k.encode()[:CRC_PREFIX_BYTES]) for k in keys]
    assert crc32_strings(pa.array(keys)).tolist() == want


def test_input_forms_agree() -> None:
    keys = np.arange(-50, 50, dtype=np.int64)
    base = hash_pk_to_shard(keys, 5)
    assert hash_pk_to_shard(pa.array(keys), 5).tolist() == base.tolist()
    assert hash_pk_to_shard(keys.tolist(), 5).tolist() == base.tolist()
    assert hash_pk_to_shard(keys.astype(np.int32), 5).tolist() == base.tolist()
    assert hash_pk_to_shard(np.array([], np.int64), 3).tolist() == []
    assert hash_pk_to_shard(pa.array([], pa.string()), 3).tolist() == []
    with pytest.raises(ValueError):
        hash_pk_to_shard(keys, 0)
    with pytest.raises(TypeError):
        hash_pks(pa.array([1.5]))


def test_stable_across_processes() -> None:
    code = (
        "import json; from cluster.milvus.shard import hash_pks; "
        "print(json.dumps([hash_pks([1, 2, 3]).tolist(), hash_pks(['a', 'bb']).tolist()]))"
    )
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        outs.add(out)
    assert len(outs) == 1
    ints, strs = json.loads(outs.pop())
    assert ints == hash_pks(np.array([1, 2, 3])).tolist()
    assert strs == [zlib.crc32(b"a"), zlib.crc32(b"bb")]


@pytest.mark.parametrize("num_shards", [2, 3, 16])
def test_distribution_is_even(num_shards: int) -> None:
    n = 100_000
    for keys in (np.arange(n, dtype=np.int64), pa.array([f"user-{i}" for i in range(n)])):
        counts = np.bincount(hash_pk_to_shard(keys, num_shards), minlength=num_shards)
        expected = n / num_shards
        assert np.all(np.abs(counts - expected) < 0.05 * expected), counts


def test_rows_by_shard() -> None:
    shards = np.array([2, 0, 2, 1, 0])
    parts = rows_by_shard(shards, 4)
    assert [p.tolist() for p in parts] == [[1, 4], [3], [0, 2], []]


def test_speed_5000_keys(capsys: pytest.CaptureFixture[str]) -> None:
    ints = np.random.default_rng(0).integers(-(2**62), 2**62, 5000)
    strs = pa.array([f"{i:08x}-4b1c-9a2e-{i * 7919:012x}" for i in range(5000)])  # uuid-sized

    def best(keys: object) -> float:
        times = []
        for _ in range(20):
            t = time.perf_counter()
            hash_pk_to_shard(keys, 16)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t)
        return min(times) * 1e3

    int_ms, str_ms = best(ints), best(strs)
    with capsys.disabled():
        print(f"\n[hash 5000 pks] int64 {int_ms:.3f} ms, 36-char varchar {str_ms:.3f} ms")
    assert int_ms < 5 and str_ms < 5
