"""The streaming layer's pure logic: the WAL message format of a physical channel
(:mod:`.messages`), growing segments with MVCC and exact search (:mod:`.growing`,
:mod:`.search`) and the seal policy (:mod:`.policy`). The streaming-node role wires these to the
WAL and the network."""

from cluster.streaming.errors import (
    MalformedMessage,
    MessageError,
    SchemaMismatch,
    SegmentSealed,
    StreamingError,
    TimestampRegression,
    UnknownMessageType,
    UnsupportedMessageVersion,
)
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import (
    EncodedMessage,
    MessageHeader,
    MessageType,
    WalMessage,
    decode,
    decode_header,
    decode_parts,
    encode,
)
from cluster.streaming.policy import SealReason, SegmentPolicy, SegmentStats
from cluster.streaming.search import Metric, exact_search

__all__ = [
    "EncodedMessage",
    "GrowingSegment",
    "MalformedMessage",
    "MessageError",
    "MessageHeader",
    "MessageType",
    "Metric",
    "SchemaMismatch",
    "SealReason",
    "SegmentPolicy",
    "SegmentSealed",
    "SegmentStats",
    "StreamingError",
    "TimestampRegression",
    "UnknownMessageType",
    "UnsupportedMessageVersion",
    "WalMessage",
    "decode",
    "decode_header",
    "decode_parts",
    "encode",
    "exact_search",
]
