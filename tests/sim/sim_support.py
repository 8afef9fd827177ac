"""Test doubles and views for the WAL simulation: seeded payloads, a meta store with latency and
faults, an object store that ignores conditional writes, and a synchronous raw view of both
stores below every wrapper (what the checker trusts)."""

from __future__ import annotations

import bisect
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from woodpecker.clock import ManualClock
from woodpecker.codec import Block, BlockKind, decode_block, decode_footer, index_items_contiguous
from woodpecker.errors import Unavailable
from woodpecker.message import MessageId
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore.memory import MemoryObjectStore
from woodpecker.records import (
    LogRecord,
    ReaderRecord,
    SegmentRecord,
    SegmentState,
    footer_object,
    log_key,
    reader_key,
    segment_object_prefix,
    segments_prefix,
)

T = TypeVar("T")

LOG_NAME = "sim"
NAMED_READER = "nr"


class SimFailure(AssertionError):
    """An invariant broke; the message names the seed and how to replay it."""


def replay_hint(seed: int, scenario: str = "main") -> str:
    if scenario == "main":
        return (
            f"replay: CANOPY_SIM_SEEDS={seed} python -m pytest tests/sim -m sim -q "
            f"-k test_wal_invariants"
        )
    return f"replay: CANOPY_SIM_SEEDS={seed} python -m pytest tests/sim -m sim -q -k {scenario}"


def make_payload(seq: int, pad: int) -> bytes:
    return b"seq=%09d;" % seq + bytes([97 + seq % 26]) * pad


def props_for(seq: int) -> dict[str, str] | None:
    """Every third entry carries properties (readers must return them unchanged)."""
    return {"seq": str(seq), "kind": "sim"} if seq % 3 == 0 else None


def props_ok(payload: bytes, properties: dict[str, str]) -> bool:
    return properties == (props_for(seq_of(payload)) or {})


def seq_of(payload: bytes) -> int:
    if not payload.startswith(b"seq=") or payload[13:14] != b";":
        raise ValueError(f"not a sim payload: {payload[:20]!r}")
    return int(payload[4:13])


class SimMeta:
    """``MemoryMetaStore`` with seeded latency (before and after each call) and, optionally,
    injected failures: ``unavailable`` (not applied) and ``lost_reply`` (applied, then the
    caller sees ``Unavailable``)."""

    def __init__(
        self,
        inner: MemoryMetaStore,
        clock: ManualClock,
        rng: random.Random,
        *,
        latency: float,
        unavailable: float = 0.0,
        lost_reply: float = 0.0,
    ) -> None:
        self.inner = inner
        self._clock = clock
        self._rng = rng
        self.latency = latency
        self.unavailable = unavailable
        self.lost_reply = lost_reply
        self.injected = 0

    @property
    def uri(self) -> str:
        return self.inner.uri

    async def _lag(self) -> None:
        if self.latency > 0:
            await self._clock.sleep(self.latency * self._rng.random())

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        await self._lag()
        roll = self._rng.random()
        if roll < self.unavailable:
            self.injected += 1
            raise Unavailable("injected meta unavailable")
        result = await call()
        await self._lag()
        if roll < self.unavailable + self.lost_reply:
            self.injected += 1
            raise Unavailable("injected meta lost reply", outcome_unknown=True)
        return result

    async def get(self, key: str) -> Any:
        return await self._call(lambda: self.inner.get(key))

    async def range(self, prefix: str, *, limit: int | None = None) -> Any:
        return await self._call(lambda: self.inner.range(prefix, limit=limit))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return await self._call(lambda: self.inner.put(key, value, lease=lease))

    async def delete(self, key: str) -> bool:
        return await self._call(lambda: self.inner.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        return await self._call(lambda: self.inner.delete_prefix(prefix))

    async def txn(self, compares: Any, success: Any, failure: Any = None) -> Any:
        return await self._call(lambda: self.inner.txn(compares, success, failure))

    async def cas(self, key: str, value: bytes, *, expected_version: int, lease: int = 0) -> bool:
        return await self._call(
            lambda: self.inner.cas(key, value, expected_version=expected_version, lease=lease)
        )

    async def revision(self) -> int:
        return await self._call(self.inner.revision)

    async def grant_lease(self, ttl: float) -> Any:
        return await self._call(lambda: self.inner.grant_lease(ttl))

    def watch(self, prefix: str, *, start_revision: int | None = None) -> Any:
        return self.inner.watch(prefix, start_revision=start_revision)

    async def close(self) -> None:
        await self.inner.close()


class IgnoresConditions:
    """An object store that silently ignores ``if_none_match`` (like some S3-compatible
    servers): drives the LogStore onto its lease-lock fallback."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def uri(self) -> str:
        return self.inner.uri

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> Any:
        return await self.inner.put(key, data, if_match=if_match)

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return await self.inner.get(key, offset=offset, length=length)

    async def head(self, key: str) -> Any:
        return await self.inner.head(key)

    async def list_page(self, prefix: str = "", **kw: Any) -> Any:
        return await self.inner.list_page(prefix, **kw)

    def list(self, prefix: str = "", **kw: Any) -> Any:
        from woodpecker.objectstore.base import iterate_pages

        return iterate_pages(self, prefix, kw.get("start_after"), kw.get("page_size", 1000))

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()


class RawView:
    """Reads the memory object store and the meta engine directly: no faults, no latency, no
    suspension, so the checker sees one consistent instant."""

    def __init__(self, objects: MemoryObjectStore, meta: MemoryMetaStore, log_id: int) -> None:
        self._bucket = objects._bucket
        self._engine = meta._engine
        self.log_id = log_id
        self._decoded: dict[str, tuple[str, Block]] = {}
        self._records: dict[str, tuple[int, SegmentRecord]] = {}
        self._log_record: tuple[int, MessageId | None] | None = None

    def data(self, key: str) -> bytes | None:
        obj = self._bucket.objects.get(key)
        return obj.data if obj is not None else None

    def block(self, key: str) -> Block | None:
        obj = self._bucket.objects.get(key)
        if obj is None:
            return None
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == obj.info.etag:
            return cached[1]
        block = decode_block(obj.data, key)
        self._decoded[key] = (obj.info.etag, block)
        return block

    def keys(self, prefix: str) -> list[str]:
        keys = self._bucket.sorted_keys
        out = []
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            if not keys[i].startswith(prefix):
                break
            out.append(keys[i])
        return out

    def fingerprint(self, prefix: str) -> tuple[tuple[str, str], ...]:
        """The objects under ``prefix`` and their etags: unchanged means unchanged content."""
        objects = self._bucket.objects
        return tuple((k, objects[k].info.etag) for k in self.keys(prefix))

    def segments(self) -> dict[int, SegmentRecord]:
        out = {}
        for kv in self._engine.range(segments_prefix(LOG_NAME), None):
            cached = self._records.get(kv.key)
            if cached is None or cached[0] != kv.mod_revision:
                cached = (kv.mod_revision, SegmentRecord.decode(kv.value))
                self._records[kv.key] = cached
            out[cached[1].segment_id] = cached[1]
        return out

    def truncation(self) -> MessageId | None:
        kv = self._engine.get(log_key(LOG_NAME))
        if kv is None:
            return None
        if self._log_record is None or self._log_record[0] != kv.mod_revision:
            self._log_record = (kv.mod_revision, LogRecord.decode(kv.value).truncation_point)
        return self._log_record[1]

    def checkpoint(self, name: str) -> MessageId | None:
        kv = self._engine.get(reader_key(LOG_NAME, name))
        return MessageId.from_list(ReaderRecord.decode(kv.value).position) if kv else None

    def lookup(self, mid: MessageId) -> bytes | None:
        """The payload at ``mid`` as a reader can reach it: numbered blocks from 0 up to the
        first gap or fence, else merged objects."""
        prefix = segment_object_prefix(self.log_id, mid.segment_id)
        n = 0
        while True:
            block = self.block(f"{prefix}{n}.blk")
            if block is None or block.header.kind is not BlockKind.DATA:
                break
            if block.first_entry_id <= mid.entry_id < block.first_entry_id + block.count:
                return block.entries[mid.entry_id - block.first_entry_id].payload
            n += 1
        for key in self.keys(prefix + "m_"):
            block = self.block(key)
            assert block is not None
            if block.first_entry_id <= mid.entry_id < block.first_entry_id + block.count:
                return block.entries[mid.entry_id - block.first_entry_id].payload
        return None

    def final_content(self, rec: SegmentRecord) -> list[bytes]:
        """Payloads 0..n-1 of a final segment, read through its footer; raises ``SimFailure``
        on any inconsistency between the record, the footer and the objects."""
        seg = rec.segment_id
        where = f"segment {seg} ({rec.state.value})"
        raw = self.data(footer_object(self.log_id, seg))
        if raw is None:
            raise SimFailure(f"{where}: final but has no footer.blk")
        footer = decode_footer(raw, where)
        if not index_items_contiguous(footer.items):
            raise SimFailure(f"{where}: footer items are not contiguous from entry 0")
        if footer.entry_count != rec.entry_count:
            raise SimFailure(
                f"{where}: footer has {footer.entry_count} entries, record {rec.entry_count}"
            )
        numbered = all(i.kind is BlockKind.DATA for i in footer.items)
        if (
            rec.state is SegmentState.COMPLETED
            and numbered
            and rec.block_count != len(footer.items)
        ):
            raise SimFailure(f"{where}: record block_count {rec.block_count} != footer")
        payloads: list[bytes] = []
        prefix = segment_object_prefix(self.log_id, seg)
        for item in footer.items:
            block = self.block(prefix + item.object_name)
            if block is None:
                raise SimFailure(f"{where}: footer names {item.object_name}, which is missing")
            if block.first_entry_id != item.first_entry_id or block.count != item.count:
                raise SimFailure(f"{where}: {item.object_name} does not match its footer item")
            if block.header.kind is BlockKind.FENCE:
                raise SimFailure(f"{where}: footer indexes a fence")
            for e in block.entries:
                if not props_ok(e.payload, e.properties):
                    raise SimFailure(f"{where}: {e.payload[:14]!r} has properties {e.properties}")
                payloads.append(e.payload)
        return payloads


def parse_seeds(text: str) -> list[int]:
    """``"1000-1500"`` (inclusive), ``"3,5,8"``, or a mix."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return seeds
