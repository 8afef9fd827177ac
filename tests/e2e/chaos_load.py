"""The chaos suite's workload and oracle (``tests/e2e/test_chaos.py``).

Contract:

- The collection: INT64 pk ``pk`` (no auto_id), INT64 ``batch``, FLOAT_VECTOR ``vec`` (dim 8),
  HNSW/L2. Anchors (pks ``0..ANCHORS-1``) sit on a grid of spacing :data:`GRID` and are inserted
  and flushed before the chaos, so a Strong search with an anchor's own vector must answer that
  anchor first at distance ~0, and only anchors in its top :data:`TOP_K`. Workload rows (pks from
  :data:`WORKLOAD_PK0`) and probe rows (pks from :data:`PROBE_PK0`) lie ~1000 away from every
  anchor, so they never enter such an answer.
- :class:`Oracle` records what the cluster acknowledged: acknowledged inserts (pk -> batch),
  acknowledged deletes, and "maybe" inserts/deletes (the call raised: outcome unknown). Every
  successful read answer that contradicts it is appended to :attr:`Oracle.wrong`; every failed
  call to :attr:`Oracle.errors` with its time (expected during outages).
- Inserts are sent without pymilvus' transport retry (:func:`insert_once`): a retried insert the
  server had already applied would be stored twice, which the oracle could not tell apart from a
  server bug. Reads and deletes (idempotent) keep pymilvus' retries within their timeout.
- :class:`LoadThread` runs the seeded mixed load until stopped; :func:`probe` is one write plus
  one verified Strong search through one proxy; :func:`final_check` lists every violation of the
  oracle in the cluster's final state.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pymilvus import DataType, MilvusClient

COLLECTION = "chaos"
DIM = 8
ANCHORS = 48
GRID = 10.0  # anchor spacing: two anchors are at least GRID apart
FAR = 1000.0  # workload and probe rows: axis 0 offset from every anchor
WORKLOAD_PK0 = 100_000
PROBE_PK0 = 900_000
TOP_K = 3
OP_TIMEOUT = 8.0  # seconds per client call
SEARCH_PARAMS = {"metric_type": "L2", "params": {"ef": 64}}
QUERY_LIMIT = 16_384  # Milvus' max offset+limit of one query
PAGE_SPAN = 4_000  # pks per page of the final scan (far below QUERY_LIMIT, even with dups)


# --- schema and rows -----------------------------------------------------------------------------


def create_collection(client: MilvusClient) -> None:
    """Create the collection with its HNSW index and load it."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("batch", DataType.INT64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index(
        "vec", index_type="HNSW", metric_type="L2", params={"M": 16, "efConstruction": 64}
    )
    client.create_collection(
        COLLECTION, schema=schema, index_params=index, consistency_level="Strong"
    )


def anchor_vectors(seed: int) -> dict[int, list[float]]:
    """ANCHORS distinct points of the grid {0..3}^DIM * GRID, chosen by ``seed``."""
    rng = random.Random(seed)
    points: set[tuple[int, ...]] = set()
    while len(points) < ANCHORS:
        points.add(tuple(rng.randrange(4) for _ in range(DIM)))
    ordered = sorted(points)
    rng.shuffle(ordered)
    return {pk: [c * GRID for c in p] for pk, p in enumerate(ordered)}


def far_vector(rng: random.Random) -> list[float]:
    """A vector ~FAR from every anchor."""
    return [FAR + rng.random() * GRID] + [rng.random() * GRID for _ in range(DIM - 1)]


def insert_once(client: MilvusClient, rows: list[dict[str, Any]]) -> None:
    """Insert without pymilvus' retry: a ``timeout`` that is not an int/float makes pymilvus
    count retries (``retry_times=0``: none) while gRPC still gets the deadline."""
    client.insert(COLLECTION, rows, timeout=Fraction(int(OP_TIMEOUT)), retry_times=0)


def search_anchor(client: MilvusClient, vector: list[float]) -> list[dict[str, Any]]:
    hits = client.search(
        COLLECTION,
        [vector],
        limit=TOP_K,
        search_params=SEARCH_PARAMS,
        consistency_level="Strong",
        timeout=OP_TIMEOUT,
    )
    return list(hits[0])


# --- oracle --------------------------------------------------------------------------------------


@dataclass
class Oracle:
    """What the cluster acknowledged, and what it answered wrongly. Thread-safe via ``lock``."""

    anchors: dict[int, list[float]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[int, int] = field(default_factory=dict)  # pk -> batch
    deleted: set[int] = field(default_factory=set)
    maybe_inserted: set[int] = field(default_factory=set)
    maybe_deleted: set[int] = field(default_factory=set)
    wrong: list[str] = field(default_factory=list)
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic, op, error)
    ops: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.acked.update({pk: -1 for pk in self.anchors})

    def error(self, op: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), op, f"{type(exc).__name__}: {exc}"[:300]))

    def wrong_answer(self, what: str) -> None:
        with self.lock:
            self.wrong.append(f"{time.strftime('%H:%M:%S')} {what}")

    def errors_between(self, start: float, end: float) -> Counter[str]:
        """Failed load calls (not probes) per op between two ``time.monotonic()`` instants."""
        with self.lock:
            return Counter(
                op for t, op, _ in self.errors if start <= t <= end and not op.startswith("probe")
            )

    def insert(self, client: MilvusClient, rows: list[dict[str, Any]], tag: str = "") -> bool:
        """Insert ``rows`` and record the outcome (acknowledged, or maybe)."""
        try:
            insert_once(client, rows)
        except Exception as exc:
            self.error(f"{tag}insert", exc)
            with self.lock:
                self.maybe_inserted.update(r["pk"] for r in rows)
            return False
        with self.lock:
            self.acked.update({r["pk"]: r["batch"] for r in rows})
            self.ops["insert"] += 1
        return True

    def delete(self, client: MilvusClient, pks: list[int]) -> bool:
        try:
            client.delete(COLLECTION, ids=pks, timeout=OP_TIMEOUT)
        except Exception as exc:
            self.error("delete", exc)
            with self.lock:
                self.maybe_deleted.update(pks)
            return False
        with self.lock:
            self.deleted.update(pks)
            self.ops["delete"] += 1
        return True

    def search(self, client: MilvusClient, anchor: int, tag: str = "") -> bool:
        """A Strong search with ``anchor``'s vector; a wrong successful answer is recorded."""
        try:
            hits = search_anchor(client, self.anchors[anchor])
        except Exception as exc:
            self.error(f"{tag}search", exc)
            return False
        self.ops["search"] += 1
        ids = [h["pk"] for h in hits]
        problem = None
        if len(ids) != TOP_K or len(set(ids)) != len(ids):
            problem = f"{len(ids)} hits, ids {ids}"
        elif ids[0] != anchor or abs(hits[0]["distance"]) > 1e-3:
            problem = f"top-1 {ids[0]} at {hits[0]['distance']}"
        elif not all(i in self.anchors for i in ids):
            problem = f"non-anchor ids {ids}"
        if problem:
            self.wrong_answer(f"search anchor {anchor}: {problem}")
        return True

    def check_pks(self, client: MilvusClient, pks: list[int]) -> bool:
        """A Strong query of ``pks`` (whose state is known); wrong answers are recorded."""
        with self.lock:
            live = {pk: self.acked[pk] for pk in pks if pk not in self.deleted}
            gone = {pk for pk in pks if pk in self.deleted}
        try:
            rows = client.query(
                COLLECTION,
                filter=f"pk in {sorted(pks)}",
                output_fields=["pk", "batch"],
                consistency_level="Strong",
                timeout=OP_TIMEOUT,
            )
        except Exception as exc:
            self.error("query", exc)
            return False
        self.ops["query"] += 1
        got = Counter(r["pk"] for r in rows)
        batches = {r["pk"]: r["batch"] for r in rows}
        problems = [f"missing {sorted(set(live) - set(got))}"] if set(live) - set(got) else []
        if dups := sorted(pk for pk, n in got.items() if n > 1):
            problems.append(f"duplicated {dups}")
        if back := sorted(gone & set(got)):
            problems.append(f"deleted but returned {back}")
        if extra := sorted(set(got) - set(pks)):
            problems.append(f"not asked for {extra}")
        if bad := sorted(pk for pk, b in live.items() if pk in batches and batches[pk] != b):
            problems.append(f"wrong batch for {bad}")
        if problems:
            self.wrong_answer(f"query {sorted(pks)}: {'; '.join(problems)}")
        return True


# --- load ----------------------------------------------------------------------------------------


class LoadThread(threading.Thread):
    """Mixed insert/delete/search/query/flush load over ``clients`` (one per proxy), seeded."""

    def __init__(self, clients: list[MilvusClient], oracle: Oracle, seed: int) -> None:
        super().__init__(name="chaos-load", daemon=True)
        self.clients = clients
        self.oracle = oracle
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.next_pk = WORKLOAD_PK0
        self.batches = itertools.count()
        self.failure: BaseException | None = None

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), "the load thread did not stop"
        if self.failure is not None:
            raise self.failure

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.step()
                self.stop_event.wait(0.02)
        except BaseException as exc:  # a bug in the load itself: surfaced by stop()
            self.failure = exc

    def step(self) -> None:
        client = self.rng.choice(self.clients)
        roll = self.rng.random()
        if roll < 0.40:
            self.insert(client)
        elif roll < 0.55:
            self.delete(client)
        elif roll < 0.78:
            self.oracle.search(client, self.rng.randrange(ANCHORS))
        elif roll < 0.98:
            self.query(client)
        else:
            try:
                client.flush(COLLECTION, timeout=OP_TIMEOUT)
            except Exception as exc:
                self.oracle.error("flush", exc)

    def insert(self, client: MilvusClient) -> None:
        batch = next(self.batches)
        n = self.rng.randint(1, 8)
        rows = [
            {"pk": self.next_pk + i, "batch": batch, "vec": far_vector(self.rng)} for i in range(n)
        ]
        self.next_pk += n
        self.oracle.insert(client, rows)

    def _known(self) -> list[int]:
        """Acknowledged workload pks whose state is certain (no maybe-delete), oldest first."""
        with self.oracle.lock:
            return [
                pk
                for pk in self.oracle.acked
                if WORKLOAD_PK0 <= pk < PROBE_PK0 and pk not in self.oracle.maybe_deleted
            ]

    def delete(self, client: MilvusClient) -> None:
        with self.oracle.lock:
            candidates = [
                pk
                for pk in list(self.oracle.acked)[-400:]
                if WORKLOAD_PK0 <= pk < PROBE_PK0
                and pk not in self.oracle.deleted
                and pk not in self.oracle.maybe_deleted
            ]
        if candidates:
            self.oracle.delete(client, self.rng.sample(candidates, min(3, len(candidates))))

    def query(self, client: MilvusClient) -> None:
        known = self._known()[-300:]
        if known:
            self.oracle.check_pks(client, self.rng.sample(known, min(12, len(known))))


def probe(client: MilvusClient, oracle: Oracle, pk: int, rng: random.Random) -> bool:
    """One acknowledged insert and one successful Strong anchor search through ``client``."""
    if not oracle.insert(client, [{"pk": pk, "batch": -2, "vec": far_vector(rng)}], "probe-"):
        return False
    return oracle.search(client, rng.randrange(ANCHORS), "probe-")


# --- final state ---------------------------------------------------------------------------------


def scan_ranges(next_workload: int, next_probe: int) -> list[tuple[int | None, int | None]]:
    """[lo, hi) pk ranges covering every int64 pk, pages of at most PAGE_SPAN where rows are."""
    bounds: list[tuple[int | None, int | None]] = [(None, WORKLOAD_PK0)]
    for lo in range(WORKLOAD_PK0, max(next_workload, WORKLOAD_PK0 + 1), PAGE_SPAN):
        bounds.append((lo, min(lo + PAGE_SPAN, max(next_workload, WORKLOAD_PK0 + 1))))
    bounds.append((bounds[-1][1], PROBE_PK0))
    for lo in range(PROBE_PK0, max(next_probe, PROBE_PK0 + 1), PAGE_SPAN):
        bounds.append((lo, min(lo + PAGE_SPAN, max(next_probe, PROBE_PK0 + 1))))
    bounds.append((bounds[-1][1], None))
    return bounds


def read_all(client: MilvusClient, ranges: list[tuple[int | None, int | None]]) -> Counter[int]:
    """pk -> how many rows a Strong query returns for it, over ``ranges``."""
    seen: Counter[int] = Counter()
    for lo, hi in ranges:
        terms = ([f"pk >= {lo}"] if lo is not None else []) + (
            [f"pk < {hi}"] if hi is not None else []
        )
        rows = client.query(
            COLLECTION,
            filter=" and ".join(terms),
            output_fields=["pk"],
            limit=QUERY_LIMIT,
            consistency_level="Strong",
            timeout=30,
        )
        assert len(rows) < QUERY_LIMIT, f"range [{lo}, {hi}) hit the query limit"
        seen.update(r["pk"] for r in rows)
    return seen


def final_violations(oracle: Oracle, seen: Counter[int], issued: set[int]) -> list[str]:
    """Every way the final state ``seen`` (pk -> rows) contradicts the oracle."""
    problems: list[str] = []
    live = set(oracle.acked) - oracle.deleted - oracle.maybe_deleted
    if missing := sorted(live - set(seen)):
        problems.append(f"{len(missing)} acknowledged pks missing: {missing[:20]}")
    if dups := sorted(pk for pk, n in seen.items() if n > 1):
        problems.append(f"{len(dups)} pks stored more than once: {dups[:20]}")
    if back := sorted(oracle.deleted & set(seen)):
        problems.append(f"{len(back)} deleted pks present: {back[:20]}")
    if unknown := sorted(set(seen) - issued):
        problems.append(f"{len(unknown)} pks never written: {unknown[:20]}")
    return problems
