"""The QueryNode RPC's shard encoding (cluster/rpc/query.py): what the delegator knew of a
vchannel's memory survives the wire exactly -- segment ids, source, generation and every
buffered delete (keys of either type, partition or none, timestamp, WAL position)."""

from __future__ import annotations

import pyarrow as pa

from cluster.proto import canopy_pb2 as pb
from cluster.query.node import ShardRead
from cluster.rpc.query import decode_shards, encode_shards
from cluster.streaming.flushing import BufferedDelete
from cluster.streaming.sealed import SealedSnapshot
from woodpecker.message import MessageId


def test_shards_round_trip_through_protobuf_bytes() -> None:
    deletes = (
        BufferedDelete(9, None, "ch-0_v0", pa.array([1, 2, 3], pa.int64()), 77, MessageId(4, 5)),
        BufferedDelete(9, 12, "ch-0_v0", pa.array([8], pa.int64()), 80, MessageId(4, 9)),
    )
    string_keys = BufferedDelete(9, 12, "ch-1_v1", pa.array(["x", "y"]), 81, MessageId(1, 0))
    shards = [
        ShardRead(SealedSnapshot(9, "ch-0_v0", "tok-a", 3, deletes), (101, 102)),
        ShardRead(SealedSnapshot(9, "ch-1_v1", "tok-b", 0, (string_keys,)), (201,)),
        ShardRead(SealedSnapshot(9, "ch-2_v2", "tok-c", 7, ()), ()),
    ]
    request = pb.SealedSearchRequest(shards=encode_shards(shards), visible_ts=90)
    wire = pb.SealedSearchRequest.FromString(request.SerializeToString())
    decoded = decode_shards(9, wire.shards)
    assert len(decoded) == len(shards)
    for got, want in zip(decoded, shards, strict=True):
        assert got.segment_ids == want.segment_ids
        g, w = got.snapshot, want.snapshot
        assert (g.collection_id, g.vchannel, g.source, g.generation) == (
            w.collection_id, w.vchannel, w.source, w.generation,
        )  # fmt: skip
        assert len(g.deletes) == len(w.deletes)
        for gd, wd in zip(g.deletes, w.deletes, strict=True):
            assert (gd.collection_id, gd.partition_id, gd.vchannel, gd.ts, gd.message_id) == (
                wd.collection_id, wd.partition_id, wd.vchannel, wd.ts, wd.message_id,
            )  # fmt: skip
            assert gd.pks.equals(wd.pks)
