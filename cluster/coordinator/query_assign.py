"""Which query node serves each sealed segment: the records, and the coordinator's balancer.

Keys (see ``cluster/READ_PATH.md``):

* ``query/assign/{collection_id:020d}/{segment_id:020d}``: a :class:`SegmentAssignment`,
  written only by the coordinator (:class:`SegmentBalancer`), each write a CAS on the key's
  version. ``node_id`` is the node that should serve the segment; ``previous`` (0: none) the
  node that served it before a move, kept until ``node_id`` has loaded it, so a move never
  leaves a moment where nobody has it.
* ``query/loaded/{node_id:020d}/{collection_id:020d}/{segment_id:020d}``: written by a query
  node once the segment (and its indexes) are loaded, under the node's session lease: the key
  disappears with the node.

Contract of :class:`SegmentBalancer` (one per coordinator), re-evaluated on every change of the
inputs and at least every ``interval`` seconds:

1. **Wanted**: a segment is wanted when it is registered (``segments/``, state ``flushed``)
   and its collection's load record (``catalog/loads/``) loads its partition. An assignment of
   a segment no longer wanted (released, dropped, compacted away) is deleted; its node releases
   it.
2. **Assigned**: a wanted segment without an assignment, or whose node's session is gone, is
   assigned to the live query node (session not draining) with the fewest assigned rows;
   when its ``previous`` node is still live and has it loaded, that node takes it back
   instead. With no live query node the assignment is deleted: the segment's streaming node
   serves it (the delegator's fallback).
3. **Moves** finish: once ``node_id`` has loaded the segment (or ``previous`` died),
   ``previous`` is cleared and the old node releases it.
4. **Balanced**: while the most loaded live node has more assigned rows than the least loaded
   one by more than a segment it could give, that segment is moved (``previous`` = the old
   node), at most ``max_moves`` at a time (moves in flight count).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from cluster.coordinator.records import LOADS_PREFIX, LoadInfo
from cluster.coordinator.sessions import NodeState, SessionInfo, role_prefix
from cluster.coordinator.watching import PrefixMirror
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import Compare, Delete, KeyValue, MetaStore, Put

__all__ = [
    "ASSIGN_PREFIX",
    "LOADED_PREFIX",
    "QUERY",
    "SegmentAssignment",
    "SegmentBalancer",
    "assign_key",
    "loaded_key",
    "parse_loaded_key",
    "query_load_progress",
]

log = logging.getLogger(__name__)

QUERY = "query"  # the session role of query nodes
ASSIGN_PREFIX = "query/assign/"
LOADED_PREFIX = "query/loaded/"
SEGMENTS_PREFIX = "segments/"  # the segment registry (coordinator/service.py): read here


def assign_key(collection_id: int, segment_id: int) -> str:
    return f"{ASSIGN_PREFIX}{collection_id:020d}/{segment_id:020d}"


def loaded_key(node_id: int, collection_id: int, segment_id: int) -> str:
    return f"{LOADED_PREFIX}{node_id:020d}/{collection_id:020d}/{segment_id:020d}"


def parse_loaded_key(key: str) -> tuple[int, int, int] | None:
    """``(node_id, collection_id, segment_id)`` of a loaded key (None: not one)."""
    parts = key[len(LOADED_PREFIX) :].split("/")
    if not key.startswith(LOADED_PREFIX) or len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True, slots=True)
class SegmentAssignment:
    """The value of an assignment key (see the module docstring)."""

    collection_id: int
    partition_id: int
    segment_id: int
    vchannel: str
    rows: int
    node_id: int
    previous: int = 0

    def nodes(self) -> tuple[int, ...]:
        """The nodes that may serve the segment, preferred first."""
        return (self.node_id, self.previous) if self.previous else (self.node_id,)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> SegmentAssignment:
        raw = json.loads(value)
        return SegmentAssignment(
            collection_id=int(raw["collection_id"]),
            partition_id=int(raw["partition_id"]),
            segment_id=int(raw["segment_id"]),
            vchannel=str(raw["vchannel"]),
            rows=int(raw["rows"]),
            node_id=int(raw["node_id"]),
            previous=int(raw.get("previous", 0)),
        )


@dataclass(frozen=True, slots=True)
class _Wanted:
    collection_id: int
    partition_id: int
    segment_id: int
    vchannel: str
    rows: int


def _wanted(segments: dict[str, KeyValue], loads: dict[str, KeyValue]) -> dict[str, _Wanted]:
    """Assignment key -> the segment, for every registered segment its collection loads."""
    load_by_cid: dict[int, LoadInfo] = {}
    for kv in loads.values():
        with contextlib.suppress(ValueError, KeyError):
            info = LoadInfo.decode(kv.value)
            load_by_cid[info.collection_id] = info
    out: dict[str, _Wanted] = {}
    for kv in segments.values():
        try:
            raw = json.loads(kv.value)
            seg = _Wanted(
                int(raw["collection_id"]),
                int(raw["partition_id"]),
                int(raw["segment_id"]),
                str(raw["vchannel"]),
                int(raw["rows"]),
            )
            state = str(raw.get("state", "flushed"))
        except (ValueError, KeyError):
            log.warning("ignoring an unreadable segment record %s", kv.key)
            continue
        load = load_by_cid.get(seg.collection_id)
        if state == "flushed" and load is not None and load.loads(seg.partition_id):
            out[assign_key(seg.collection_id, seg.segment_id)] = seg
    return out


class SegmentBalancer:
    """See the module docstring. ``start()`` reads the inputs and starts the loop; ``close()``
    stops it. :meth:`reconcile` runs one round (tests call it directly)."""

    def __init__(
        self,
        meta: MetaStore,
        clock: Clock,
        *,
        interval: float = 1.0,
        max_moves: int = 4,
    ) -> None:
        self.meta = meta
        self.clock = clock
        self.interval = interval
        self.max_moves = max_moves
        self._mirrors = {
            "segments": PrefixMirror(meta, SEGMENTS_PREFIX, clock),
            "loads": PrefixMirror(meta, LOADS_PREFIX, clock),
            "sessions": PrefixMirror(meta, role_prefix(QUERY), clock),
            "assign": PrefixMirror(meta, ASSIGN_PREFIX, clock),
            "loaded": PrefixMirror(meta, LOADED_PREFIX, clock),
        }
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._done = asyncio.Event()

    async def start(self) -> None:
        for mirror in self._mirrors.values():
            await mirror.start()
        loop = asyncio.get_running_loop()
        for name, mirror in self._mirrors.items():
            self._tasks.append(loop.create_task(self._follow(mirror), name=f"balancer-{name}"))
        self._tasks.append(loop.create_task(self._run(), name="segment-balancer"))
        self._dirty.set()

    async def _follow(self, mirror: PrefixMirror) -> None:
        async for _ in mirror:
            self._dirty.set()

    async def _run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._dirty.wait()
                self._dirty.clear()
                try:
                    await self.reconcile()
                except CanopyError as exc:
                    if not exc.retryable:
                        raise
                    log.info("segment balancing deferred: %s", exc)
                    await self.clock.sleep(min(self.interval, 0.5))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
            log.exception("the segment balancer crashed")
            raise
        finally:
            self._done.set()

    async def wait(self) -> None:
        """Return (raising its error) when the loop crashed; else wait until closed."""
        await self._done.wait()
        if self._failure is not None:
            raise self._failure

    def live_nodes(self) -> dict[int, SessionInfo]:
        out = {}
        for kv in self._mirrors["sessions"].kvs.values():
            with contextlib.suppress(ValueError, KeyError):
                info = SessionInfo.decode(kv.value)
                if info.state is not NodeState.DRAINING:
                    out[info.node_id] = info
        return out

    def assignments(self) -> dict[str, tuple[SegmentAssignment, KeyValue]]:
        out = {}
        for key, kv in self._mirrors["assign"].kvs.items():
            with contextlib.suppress(ValueError, KeyError):
                out[key] = (SegmentAssignment.decode(kv.value), kv)
        return out

    def _loaded(self) -> set[tuple[int, int, int]]:
        return {p for k in self._mirrors["loaded"].kvs if (p := parse_loaded_key(k)) is not None}

    async def reconcile(self) -> int:
        """One round of the rules in the module docstring; returns how many records it
        changed (a write that lost a race is skipped: the next round sees the new state)."""
        wanted = _wanted(self._mirrors["segments"].kvs, self._mirrors["loads"].kvs)
        live = self.live_nodes()
        loaded = self._loaded()
        current = self.assignments()
        plan: dict[str, SegmentAssignment | None] = {}
        rows = {n: 0 for n in live}

        def least() -> int:
            return min(rows, key=lambda n: (rows[n], n))

        for key in current:
            if key not in wanted:
                plan[key] = None
        for key, seg in sorted(wanted.items()):
            entry = current.get(key)
            asg = entry[0] if entry is not None else None
            new = asg
            if asg is not None and asg.node_id not in live:
                prev = asg.previous
                if prev in live and (prev, seg.collection_id, seg.segment_id) in loaded:
                    new = replace(asg, node_id=prev, previous=0)
                else:
                    new = None  # (re)assigned below
            elif (
                asg is not None
                and asg.previous
                and (
                    asg.previous not in live
                    or (asg.node_id, seg.collection_id, seg.segment_id) in loaded
                )
            ):
                new = replace(asg, previous=0)
            if new is None:
                if not live:
                    if asg is not None:
                        plan[key] = None
                    continue
                new = SegmentAssignment(
                    seg.collection_id, seg.partition_id, seg.segment_id, seg.vchannel,
                    seg.rows, least(),
                )  # fmt: skip
            rows[new.node_id] = rows.get(new.node_id, 0) + new.rows
            if new != asg:
                plan[key] = new
        self._plan_moves(plan, current, wanted, rows)
        return await self._write(plan, current)

    def _plan_moves(
        self,
        plan: dict[str, SegmentAssignment | None],
        current: dict[str, tuple[SegmentAssignment, KeyValue]],
        wanted: dict[str, _Wanted],
        rows: dict[int, int],
    ) -> None:
        if len(rows) < 2:
            return
        state = {k: plan.get(k, current[k][0] if k in current else None) for k in wanted}
        moving = sum(1 for a in state.values() if a is not None and a.previous)
        while moving < self.max_moves:
            hi = max(rows, key=lambda n: (rows[n], -n))
            lo = min(rows, key=lambda n: (rows[n], n))
            gap = rows[hi] - rows[lo]
            candidates = [
                (a.rows, k)
                for k, a in state.items()
                if a is not None and a.node_id == hi and not a.previous and 0 < a.rows < gap
            ]
            if not candidates:
                return
            _, key = max(candidates)
            asg = state[key]
            assert asg is not None
            moved = replace(asg, node_id=lo, previous=hi)
            state[key] = plan[key] = moved
            rows[hi] -= asg.rows
            rows[lo] += asg.rows
            moving += 1

    async def _write(
        self,
        plan: dict[str, SegmentAssignment | None],
        current: dict[str, tuple[SegmentAssignment, KeyValue]],
    ) -> int:
        changed = 0
        for key, new in plan.items():
            entry = current.get(key)
            guard = (
                Compare.mod_revision(key, entry[1].mod_revision) if entry else Compare.absent(key)
            )
            if new is None:
                if entry is None:
                    continue
                op: Put | Delete = Delete(key)
            else:
                op = Put(key, new.encode())
            result = await self.meta.txn([guard], [op])
            if result.succeeded:
                changed += 1
                log.info(
                    "segment %s -> %s",
                    key[len(ASSIGN_PREFIX) :],
                    "released"
                    if new is None
                    else f"node {new.node_id}"
                    + (f" (moving from {new.previous})" if new.previous else ""),
                )
        return changed

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for mirror in self._mirrors.values():
            with contextlib.suppress(CanopyError):
                await mirror.close()
        self._done.set()


async def query_load_progress(
    meta: MetaStore, collection_id: int, partition_ids: Sequence[int] | None = None
) -> int:
    """Percent (0-100, rounded down) of the collection's flushed segments (of
    ``partition_ids``; None: all) that a live query node has announced loaded; 100 when it has
    none or no query node is live (the streaming nodes serve the segments then)."""
    live = set()
    for kv in await meta.range(role_prefix(QUERY)):
        with contextlib.suppress(ValueError, KeyError):
            live.add(SessionInfo.decode(kv.value).node_id)
    if not live:
        return 100
    wanted = set()
    for kv in await meta.range(f"{SEGMENTS_PREFIX}{collection_id:020d}/"):
        with contextlib.suppress(ValueError, KeyError):
            raw = json.loads(kv.value)
            if raw.get("state", "flushed") == "flushed" and (
                partition_ids is None or int(raw["partition_id"]) in partition_ids
            ):
                wanted.add(int(raw["segment_id"]))
    if not wanted:
        return 100
    held = set()
    for kv in await meta.range(LOADED_PREFIX):
        parsed = parse_loaded_key(kv.key)
        if parsed is not None and parsed[0] in live and parsed[1] == collection_id:
            held.add(parsed[2])
    return len(wanted & held) * 100 // len(wanted)
