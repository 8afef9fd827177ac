"""cluster.streaming.growing: appends, MVCC visibility, deletes/deltas, query/take/to_table."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, FieldSchema
from cluster.streaming.errors import SchemaMismatch, SegmentSealed, TimestampRegression
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import (
    PK_FIELD,
    ROW_ID_FIELD,
    TS_FIELD,
    decode_parts,
    encode,
    insert_message,
    with_system_columns,
)
from woodpecker.clock import ManualClock
from woodpecker.message import MessageId

DIM = 4


def make_schema(pk_type: DataType = DataType.INT64) -> CollectionSchema:
    return CollectionSchema(
        "c",
        (
            FieldSchema(100, "id", pk_type, is_primary=True, max_length=64),
            FieldSchema(101, "vec", DataType.FLOAT_VECTOR, dim=DIM),
            FieldSchema(102, "n", DataType.INT32),
        ),
    )


INT_SCHEMA = make_schema()
STR_SCHEMA = make_schema(DataType.VARCHAR)


class Rows:
    """Builds insert batches; each row's ``n`` is a global sequence number (its offset)."""

    def __init__(self, schema: CollectionSchema = INT_SCHEMA, seed: int = 0) -> None:
        self.schema = schema
        self.rng = np.random.default_rng(seed)
        self.next_n = 0

    def batch(self, pks: list, ts: int) -> pa.Table:  # type: ignore[type-arg]
        m = len(pks)
        vectors = self.rng.standard_normal((m, DIM), dtype=np.float32)
        pk_type = pa.int64() if self.schema.primary_field.dtype == DataType.INT64 else pa.string()
        table = pa.Table.from_arrays(
            [
                pa.array(pks, pk_type),
                pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
                pa.array(np.arange(self.next_n, self.next_n + m, dtype=np.int32)),
            ],
            schema=arrow_schema(self.schema),
        )
        self.next_n += m
        return with_system_columns(table, np.arange(m) + 10_000, ts)


def visible_pks(seg: GrowingSegment, ts: int) -> list[tuple[object, int]]:
    """(pk, offset) of the rows visible at ts."""
    table = seg.query(ts, columns=["id", "n"])
    return list(zip(table.column("id").to_pylist(), table.column("n").to_pylist(), strict=True))


# --- MVCC -----------------------------------------------------------------------------------------


def test_mvcc_insert_upsert_delete_and_reinsert() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1, 2, 3], 10))  # offsets 0, 1, 2
    seg.append(rows.batch([2], 20))  # 3: upsert of 2
    assert seg.apply_delete([1], 30) == 1
    assert seg.apply_delete([9], 40) == 0  # nothing of 9 here yet
    seg.append(rows.batch([9], 50))  # 4: inserted after its delete: visible
    assert seg.apply_delete([2], 60) == 1
    seg.append(rows.batch([2], 70))  # 5
    expected = {
        0: [],
        9: [],
        10: [(1, 0), (2, 1), (3, 2)],
        15: [(1, 0), (2, 1), (3, 2)],
        20: [(1, 0), (3, 2), (2, 3)],
        29: [(1, 0), (3, 2), (2, 3)],
        30: [(3, 2), (2, 3)],
        45: [(3, 2), (2, 3)],
        50: [(3, 2), (2, 3), (9, 4)],
        60: [(3, 2), (9, 4)],
        69: [(3, 2), (9, 4)],
        70: [(3, 2), (9, 4), (2, 5)],
        10**9: [(3, 2), (9, 4), (2, 5)],
    }
    for ts, want in expected.items():
        assert visible_pks(seg, ts) == want, ts
        mask = seg.visible_mask(ts)
        assert mask.dtype == bool and len(mask) == 6
        assert list(np.flatnonzero(mask)) == [offset for _, offset in want]


def test_duplicate_keys_in_one_batch_last_one_wins() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1, 2, 1, 3, 1], 10))
    assert visible_pks(seg, 10) == [(2, 1), (3, 3), (1, 4)]
    seg.append(rows.batch([3, 3], 20))
    assert visible_pks(seg, 15) == [(2, 1), (3, 3), (1, 4)]
    assert visible_pks(seg, 20) == [(2, 1), (1, 4), (3, 6)]
    assert seg.apply_delete([1, 1], [30, 35]) == 1
    assert visible_pks(seg, 30) == [(2, 1), (3, 6)]


def test_delete_at_the_same_ts_as_an_insert() -> None:
    """An upsert written as delete + insert at one ts shows the new row; a delete never hides
    a row of its own ts."""
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1], 10))
    seg.apply_delete([1], 20)
    seg.append(rows.batch([1], 20))
    assert visible_pks(seg, 19) == [(1, 0)]
    assert visible_pks(seg, 20) == [(1, 1)]
    assert seg.apply_delete([1], 20) == 0
    assert visible_pks(seg, 25) == [(1, 1)]


def test_increasing_keys_skip_the_index_until_it_is_needed() -> None:
    """Auto-id style batches (keys ascending, above all earlier ones) build no pk dict; the
    first repeat or delete builds it from the rows so far."""
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1, 2, 3], 10))
    seg.append(rows.batch([7], 11))
    seg.append(rows.batch([8, 9], 12))
    assert seg._latest is None
    seg.append(rows.batch([9, 10], 13))  # 9 again: not fresh
    assert seg._latest is not None
    assert visible_pks(seg, 13) == [(1, 0), (2, 1), (3, 2), (7, 3), (8, 4), (9, 6), (10, 7)]
    seg2 = GrowingSegment(INT_SCHEMA, segment_id=2)
    seg2.append(rows.batch([1, 2], 10))
    assert seg2.apply_delete([2], 11) == 1
    seg2.append(rows.batch([3, 4], 12))
    seg2.append(rows.batch([1], 13))
    assert [pk for pk, _ in visible_pks(seg2, 13)] == [3, 4, 1]
    seg3 = GrowingSegment(INT_SCHEMA, segment_id=3)
    seg3.append(rows.batch([5, 4], 10))  # descending inside the batch
    seg3.append(rows.batch([4], 11))
    assert [pk for pk, _ in visible_pks(seg3, 11)] == [5, 4]


def _reference_visible(events: list[tuple], ts: int) -> list[int]:  # type: ignore[type-arg]
    """Offsets visible at ts, straight from the definition (quadratic, for tests)."""
    inserts = [e for e in events if e[0] == "insert"]
    deletes = [e for e in events if e[0] == "delete"]
    out = []
    for _, pk, t, offset in inserts:
        if t > ts:
            continue
        superseded = any(p == pk and o > offset and t2 <= ts for _, p, t2, o in inserts)
        deleted = any(p == pk and t < d <= ts for _, p, d in deletes)
        if not superseded and not deleted:
            out.append(offset)
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("schema", [INT_SCHEMA, STR_SCHEMA], ids=["int", "str"])
def test_mvcc_matches_reference_model(seed: int, schema: CollectionSchema) -> None:
    rnd = random.Random(seed)
    seg = GrowingSegment(schema, segment_id=1, merge_below_rows=8)
    rows = Rows(schema, seed)

    def key(i: int) -> object:
        return i if schema is INT_SCHEMA else f"k{i}"

    events: list[tuple] = []  # type: ignore[type-arg]
    ts = 1
    offset = 0
    for _ in range(60):
        ts += rnd.choice([0, 1, 1, 2, 5])
        if rnd.random() < 0.6:
            pks = [key(rnd.randrange(12)) for _ in range(rnd.randint(1, 6))]
            seg.append(rows.batch(pks, ts))
            for pk in pks:
                events.append(("insert", pk, ts, offset))
                offset += 1
        else:
            pks = [key(rnd.randrange(12)) for _ in range(rnd.randint(1, 3))]
            seg.apply_delete(pks, ts)
            events.extend(("delete", pk, ts) for pk in pks)
    assert seg.num_rows == offset
    for probe in range(0, ts + 3):
        assert list(np.flatnonzero(seg.visible_mask(probe))) == _reference_visible(events, probe), (
            probe
        )
    # the table view agrees with the mask, and `n` says rows kept their offsets through merges
    table = seg.to_table(visible_at=ts)
    assert table.column("n").to_pylist() == _reference_visible(events, ts)
    assert seg.to_table().column("n").to_pylist() == list(range(offset))


def test_timestamps_may_not_go_backwards() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1], 10))
    with pytest.raises(TimestampRegression):
        seg.append(rows.batch([2], 9))
    seg.apply_delete([1], 15)
    with pytest.raises(TimestampRegression):
        seg.apply_delete([1], 14)
    with pytest.raises(TimestampRegression):
        seg.append(rows.batch([3], 14))
    batch = rows.batch([4, 5], 20)
    backwards = batch.set_column(
        batch.schema.get_field_index(TS_FIELD),
        batch.schema.field(TS_FIELD),
        pa.array(np.array([21, 20], np.uint64)),
    )
    with pytest.raises(TimestampRegression):
        seg.append(backwards)
    assert seg.num_rows == 1


# --- deletes for the delete log -------------------------------------------------------------------


def test_deltas_are_the_deletes_that_hid_nothing_here() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.apply_delete([7], 5)  # before any row: targets an older segment
    seg.append(rows.batch([1, 2, 7], 10))
    seg.apply_delete([1, 8], 20)  # 1 hits here, 8 lives elsewhere
    # 1 lives here (already deleted): matched, though it hides nothing more
    assert seg.apply_delete(np.array([1]), 30) == 0
    deltas = seg.deltas()
    assert deltas.column_names == [PK_FIELD, TS_FIELD]
    assert list(zip(*deltas.to_pydict().values(), strict=True)) == [(7, 5), (8, 20)]
    everything = seg.deltas(include_matched=True)
    assert list(zip(*everything.to_pydict().values(), strict=True)) == [
        (7, 5),
        (1, 20),
        (8, 20),
        (1, 30),
    ]
    assert everything.column(PK_FIELD).type == pa.int64()
    assert everything.column(TS_FIELD).type == pa.uint64()
    assert seg.stats.deletes == 4


def test_deltas_of_a_varchar_segment_and_of_none() -> None:
    seg = GrowingSegment(STR_SCHEMA, segment_id=1)
    empty = seg.deltas()
    assert empty.num_rows == 0 and empty.column(PK_FIELD).type == pa.string()
    seg.append(Rows(STR_SCHEMA).batch(["a", "b"], 10))
    seg.apply_delete(pa.array(["b", "zz"]), 11)
    assert seg.deltas().to_pydict() == {PK_FIELD: ["zz"], TS_FIELD: [11]}
    assert visible_pks(seg, 11) == [("a", 0)]
    with pytest.raises(SchemaMismatch):
        seg.apply_delete([1, 2], 12)


# --- lifecycle, schema, stats ---------------------------------------------------------------------


def test_seal_stops_inserts_but_not_deletes() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1, 2], 10))
    stats = seg.seal()
    assert stats.sealed and seg.sealed
    with pytest.raises(SegmentSealed):
        seg.append(rows.batch([3], 11))
    assert seg.apply_delete([2], 12) == 1
    assert visible_pks(seg, 12) == [(1, 0)]


def test_schema_is_checked_and_columns_reordered() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    batch = Rows().batch([1, 2], 10)
    with pytest.raises(SchemaMismatch, match="_row_id"):
        seg.append(batch.drop_columns([ROW_ID_FIELD]))
    wrong = batch.set_column(2, "n", pa.array([1, 2], pa.int64()))
    with pytest.raises(SchemaMismatch, match="column n"):
        seg.append(wrong)
    shuffled = batch.select([TS_FIELD, "vec", "n", ROW_ID_FIELD, "id"])
    seg.append(shuffled.to_batches()[0])  # a RecordBatch, columns in any order
    assert seg.to_table().column_names == ["id", "vec", "n", ROW_ID_FIELD, TS_FIELD]
    assert seg.to_table().schema.field("id").metadata == {b"field_id": b"100"}


async def test_stats_cover_rows_bytes_ts_message_ids_and_write_times() -> None:
    clock = ManualClock()
    seg = GrowingSegment(INT_SCHEMA, segment_id=42, clock=clock)
    empty = seg.stats
    assert (empty.rows, empty.bytes, empty.min_ts, empty.first_message_id) == (0, 0, None, None)
    rows = Rows()
    seg.append(rows.batch([1, 2, 3], 10), MessageId(0, 5))
    t0 = clock.monotonic()
    await clock.advance(3)
    seg.apply_delete([1], 15, MessageId(0, 6))
    await clock.advance(4)
    seg.append(rows.batch([4], 20), MessageId(1, 0))
    stats = seg.stats
    assert stats.segment_id == 42
    assert stats.rows == 4 and stats.deletes == 1
    assert (stats.min_ts, stats.max_ts) == (10, 20)
    assert (stats.first_message_id, stats.last_message_id) == (MessageId(0, 5), MessageId(1, 0))
    assert (stats.first_write_at, stats.last_write_at) == (t0, t0 + 7)
    assert 4 * (8 + DIM * 4 + 4 + 8 + 8) <= stats.bytes < 4096


def test_append_from_a_decoded_wal_payload() -> None:
    rows = Rows()
    msg = insert_message(
        rows.batch([1, 2], 10), ts=10, vchannel="v", collection_id=1, partition_id=1
    )
    enc = encode(msg)
    decoded = decode_parts(bytes(enc.payload), enc.properties)
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    assert decoded.table is not None
    assert seg.append(decoded.table, MessageId(0, 0)) == (0, 2)
    assert seg.to_table().equals(msg.table)


# --- storage --------------------------------------------------------------------------------------


def test_big_batches_are_not_copied() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1, merge_below_rows=16)
    batch = Rows().batch(list(range(100)), 10)
    seg.append(batch)
    chunk = seg._chunks[0]
    values = batch.column("vec").chunk(0).flatten()
    assert chunk.vectors["vec"].__array_interface__["data"][0] == values.buffers()[1].address


def test_sliced_batches_keep_their_own_rows() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    batch = Rows().batch(list(range(10)), 10)
    seg.append(batch.slice(3, 4))
    assert seg.to_table().column("id").to_pylist() == [3, 4, 5, 6]
    want = batch.column("vec").combine_chunks().flatten().to_numpy()[12:28].reshape(4, DIM)
    assert np.array_equal(seg._chunks[0].vectors["vec"], want)
    ids, dist = seg.search(want[2], "vec", 1, "L2", visible_ts=10)
    assert ids.tolist() == [[5]] and dist[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_small_batches_merge_into_few_chunks_and_keep_order() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1, merge_below_rows=256)
    rows = Rows()
    for i in range(1000):
        seg.append(rows.batch([i], 10 + i))
    chunk_rows = [c.rows for c in seg._chunks]
    assert sum(chunk_rows) == 1000
    assert len(chunk_rows) <= 1000 // 256 + 2 * 9, chunk_rows
    starts = [c.start for c in seg._chunks]
    assert starts == [0, *np.cumsum(chunk_rows)[:-1].tolist()]
    table = seg.to_table()
    assert table.column("n").to_pylist() == list(range(1000))
    assert table.column("id").to_pylist() == list(range(1000))
    # vector views still match the table after merges
    matrix = np.concatenate([c.vectors["vec"] for c in seg._chunks])
    flat = table.column("vec").combine_chunks().flatten().to_numpy()
    assert np.array_equal(matrix.ravel(), flat)


def test_query_take_and_to_table() -> None:
    seg = GrowingSegment(INT_SCHEMA, segment_id=1)
    rows = Rows()
    seg.append(rows.batch([1, 2, 3, 4], 10))
    seg.apply_delete([2], 11)
    seg.append(rows.batch([5], 12))
    q = seg.query(12, mask=np.array([True, True, False, True, True]), columns=["id"])
    assert q.column_names == ["id"] and q.column("id").to_pylist() == [1, 4, 5]
    short = seg.query(12, mask=np.array([True, True, True]))  # rows 3.. left out
    assert short.column("id").to_pylist() == [1, 3]
    assert short.column_names == ["id", "vec", "n", ROW_ID_FIELD, TS_FIELD]
    with pytest.raises(ValueError):
        seg.query(12, mask=np.ones(9, bool))
    with pytest.raises(KeyError):
        seg.query(12, columns=["nope"])
    assert seg.take(np.array([[4, 0]]), ["id", "n"]).to_pydict() == {"id": [5, 1], "n": [4, 0]}
    assert seg.to_table().num_rows == 5
    assert seg.to_table(visible_at=11).column("id").to_pylist() == [1, 3, 4]
    empty = GrowingSegment(INT_SCHEMA, segment_id=2)
    assert empty.to_table().num_rows == 0
    assert empty.query(5).schema.equals(empty.arrow_schema)
    assert empty.visible_mask(5).shape == (0,)
