"""Block and footer codec: round trips, and every corruption is CorruptBlock, never garbage."""

from __future__ import annotations

import random

import pytest

from woodpecker.codec import (
    BLOCK_FOOTER_SIZE,
    HEADER_SIZE,
    BlockHeader,
    BlockKind,
    IndexItem,
    SegmentFooter,
    decode_block,
    decode_block_header,
    decode_footer,
    encode_block,
    encode_entry,
    encode_fence,
    encode_footer,
)
from woodpecker.errors import CorruptBlock


def _block(entries: list[tuple[bytes, dict[str, str] | None]], first: int = 7) -> bytes:
    header = BlockHeader(BlockKind.DATA, log_id=3, segment_id=9, block_no=4, epoch=2)
    return encode_block(header, first, [encode_entry(p, props) for p, props in entries])


def test_block_round_trip_with_properties_and_binary_payloads() -> None:
    entries = [
        (b"", None),
        (bytes(range(256)), {"k": "v", "ü": "日本"}),
        (b"x" * 100_000, {"": ""}),
    ]
    block = decode_block(_block(entries))
    assert block.header == BlockHeader(BlockKind.DATA, 3, 9, 4, 2)
    assert block.first_entry_id == 7 and block.count == 3
    assert [e.payload for e in block.entries] == [p for p, _ in entries]
    assert [e.properties for e in block.entries] == [{}, entries[1][1], {"": ""}]


def test_fence_block_is_fixed_size_and_marked() -> None:
    data = encode_fence(1, 2, 3, epoch=5)
    assert len(data) == HEADER_SIZE + BLOCK_FOOTER_SIZE
    block = decode_block(data)
    assert block.is_fence and block.count == 0 and block.header.epoch == 5


def test_every_single_byte_flip_is_detected() -> None:
    data = bytearray(_block([(b"hello", {"a": "b"}), (b"world", None)]))
    for pos in range(len(data)):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x41
        with pytest.raises(CorruptBlock):
            decode_block(bytes(corrupted))


def test_truncated_and_extended_blocks_are_detected() -> None:
    data = _block([(b"payload-%d" % i, None) for i in range(20)])
    for cut in (0, 1, HEADER_SIZE, len(data) // 2, len(data) - 1):
        with pytest.raises(CorruptBlock):
            decode_block(data[:cut])
    with pytest.raises(CorruptBlock):
        decode_block(data + b"\x00")


def test_random_garbage_never_decodes() -> None:
    rng = random.Random(1)
    for _ in range(500):
        junk = rng.randbytes(rng.randint(0, 200))
        with pytest.raises(CorruptBlock):
            decode_block(junk)


def test_unknown_version_is_refused() -> None:
    data = bytearray(encode_fence(1, 2, 3, 4))
    data[4] = 9  # format version field
    with pytest.raises(CorruptBlock, match="version"):
        decode_block_header(bytes(data))


def test_footer_round_trip_and_locate() -> None:
    items = [
        IndexItem(BlockKind.DATA, 0, 0, 10, 1000),
        IndexItem(BlockKind.DATA, 1, 10, 5, 600),
        IndexItem(BlockKind.MERGED, 0, 15, 100, 9000),
    ]
    footer = SegmentFooter(log_id=1, segment_id=2, entry_count=115, entry_bytes=10600, items=items)
    decoded = decode_footer(encode_footer(footer))
    assert decoded == footer
    assert [decoded.locate(e) for e in (0, 9, 10, 14, 15, 114, 115)] == [0, 0, 1, 1, 2, 2, 3]
    assert items[2].object_name == "m_0.blk" and items[0].object_name == "0.blk"


def test_footer_corruption_is_detected() -> None:
    footer = SegmentFooter(1, 2, 1, 10, [IndexItem(BlockKind.DATA, 0, 0, 1, 10)])
    data = encode_footer(footer)
    for pos in range(len(data)):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x10
        with pytest.raises(CorruptBlock):
            decode_footer(bytes(corrupted))
