"""Byte formats of WAL objects: blocks (data, fence, merged) and segment footers.

The layout is specified in ``woodpecker/FORMAT.md``; this module is its only implementation.
Every decode checks magic, version, lengths and CRC32C and raises ``CorruptBlock`` instead of
returning anything it cannot vouch for.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from crc32c import crc32c

from woodpecker.errors import CorruptBlock

FORMAT_VERSION = 1

BLOCK_MAGIC = b"WPBK"
BLOCK_END_MAGIC = b"WPBF"
FOOTER_MAGIC = b"WPSF"
FOOTER_END_MAGIC = b"WPSE"

_HEADER = struct.Struct("<4sHBBQQIIQ")  # magic, version, kind, flags, log, segment, block, 0, epoch
_BLOCK_FOOTER = struct.Struct("<QIII4s")  # first entry id, count, entries length, crc, end magic
_ENTRY_HEAD = struct.Struct("<II")  # body length, crc32c(body)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

HEADER_SIZE = _HEADER.size  # 40
BLOCK_FOOTER_SIZE = _BLOCK_FOOTER.size  # 24
ENTRY_OVERHEAD = _ENTRY_HEAD.size + _U16.size  # per entry without properties


class BlockKind(enum.IntEnum):
    DATA = 0
    FENCE = 1
    MERGED = 2


@dataclass(frozen=True, slots=True)
class Entry:
    payload: bytes
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    kind: BlockKind
    log_id: int
    segment_id: int
    block_no: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    first_entry_id: int
    entries: list[Entry]

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def is_fence(self) -> bool:
        return self.header.kind is BlockKind.FENCE


def encode_entry(payload: bytes | memoryview, properties: dict[str, str] | None) -> bytes:
    """One entry: ``u32 body_len, u32 crc32c(body), body``; body is the properties then the
    payload. The payload (any bytes-like object) is copied once, into the result."""
    if properties:
        parts = [_U16.pack(len(properties))]
        for key, value in properties.items():
            k, v = key.encode(), value.encode()
            if len(k) > 0xFFFF:
                raise ValueError("property keys are limited to 65535 bytes")
            parts += [_U16.pack(len(k)), k, _U32.pack(len(v)), v]
        props = b"".join(parts)
    else:
        props = b"\x00\x00"
    size = len(props) + memoryview(payload).nbytes
    # the CRC chained over both parts: one join, no intermediate body (a 5 MiB payload was
    # copied three times)
    return b"".join((_ENTRY_HEAD.pack(size, crc32c(payload, crc32c(props))), props, payload))


def encode_block(
    header: BlockHeader, first_entry_id: int, encoded_entries: Sequence[bytes]
) -> bytes:
    """A whole block from already-encoded entries (see ``encode_entry``)."""
    head = _HEADER.pack(
        BLOCK_MAGIC,
        FORMAT_VERSION,
        int(header.kind),
        0,
        header.log_id,
        header.segment_id,
        header.block_no,
        0,
        header.epoch,
    )
    # One join, the CRC chained over the entries (joining the entries first and then the whole
    # block allocated and copied every block twice).
    crc = crc32c(head)
    body_len = 0
    for entry in encoded_entries:
        crc = crc32c(entry, crc)
        body_len += len(entry)
    trailer = struct.pack("<QII", first_entry_id, len(encoded_entries), body_len)
    crc = crc32c(trailer, crc)
    return b"".join((head, *encoded_entries, trailer, _U32.pack(crc), BLOCK_END_MAGIC))


def encode_fence(log_id: int, segment_id: int, block_no: int, epoch: int) -> bytes:
    return encode_block(BlockHeader(BlockKind.FENCE, log_id, segment_id, block_no, epoch), 0, [])


def _corrupt(what: str, where: str) -> CorruptBlock:
    return CorruptBlock(f"{where}: {what}")


def decode_block_header(data: bytes | memoryview, where: str = "block") -> BlockHeader:
    if len(data) < HEADER_SIZE + BLOCK_FOOTER_SIZE:
        raise _corrupt(f"{len(data)} bytes is shorter than an empty block", where)
    magic, version, kind, _flags, log_id, seg, block_no, _r, epoch = _HEADER.unpack_from(data, 0)
    if magic != BLOCK_MAGIC:
        raise _corrupt(f"bad magic {magic!r}", where)
    if version != FORMAT_VERSION:
        raise _corrupt(f"unsupported format version {version} (this build reads 1)", where)
    try:
        block_kind = BlockKind(kind)
    except ValueError:
        raise _corrupt(f"unknown block kind {kind}", where) from None
    return BlockHeader(block_kind, log_id, seg, block_no, epoch)


def decode_block(data: bytes, where: str = "block") -> Block:
    """Decode and verify a block; raises ``CorruptBlock`` on any inconsistency."""
    header = decode_block_header(data, where)
    view = memoryview(data)
    end = len(data)
    first, count, entries_len, crc, end_magic = _BLOCK_FOOTER.unpack_from(
        data, end - BLOCK_FOOTER_SIZE
    )
    if end_magic != BLOCK_END_MAGIC:
        raise _corrupt("bad end magic (truncated block?)", where)
    if HEADER_SIZE + entries_len + BLOCK_FOOTER_SIZE != end:
        raise _corrupt(f"length mismatch: {entries_len} entry bytes in a {end}-byte block", where)
    if crc32c(view[: end - 8]) != crc:
        raise _corrupt("block checksum mismatch", where)
    entries: list[Entry] = []
    pos = HEADER_SIZE
    stop = HEADER_SIZE + entries_len
    while pos < stop:
        if pos + _ENTRY_HEAD.size > stop:
            raise _corrupt("entry header crosses the end of the entries", where)
        body_len, entry_crc = _ENTRY_HEAD.unpack_from(data, pos)
        pos += _ENTRY_HEAD.size
        if pos + body_len > stop or body_len < 2:
            raise _corrupt("entry body crosses the end of the entries", where)
        body = view[pos : pos + body_len]
        if crc32c(body) != entry_crc:
            raise _corrupt(f"entry {first + len(entries)} checksum mismatch", where)
        entries.append(_decode_body(body, where))
        pos += body_len
    if len(entries) != count:
        raise _corrupt(f"footer says {count} entries, found {len(entries)}", where)
    return Block(header, first, entries)


def _decode_body(body: memoryview, where: str) -> Entry:
    (nprops,) = _U16.unpack_from(body, 0)
    if nprops == 0:
        return Entry(bytes(body[2:]))
    pos = 2
    props: dict[str, str] = {}
    try:
        for _ in range(nprops):
            (klen,) = _U16.unpack_from(body, pos)
            key = bytes(body[pos + 2 : pos + 2 + klen]).decode()
            pos += 2 + klen
            (vlen,) = _U32.unpack_from(body, pos)
            props[key] = bytes(body[pos + 4 : pos + 4 + vlen]).decode()
            pos += 4 + vlen
    except (struct.error, UnicodeDecodeError) as exc:
        raise _corrupt(f"bad entry properties: {exc}", where) from None
    if pos > len(body):
        raise _corrupt("entry properties overrun the entry", where)
    return Entry(bytes(body[pos:]), props)


# --- segment footer --------------------------------------------------------------------------

_FOOTER_HEAD = struct.Struct("<4sHHQQQQI")  # magic, version, 0, log, segment, entries, bytes, n
_FOOTER_ITEM = struct.Struct("<BxxxIQIQ")  # kind, number, first entry, count, object size


@dataclass(frozen=True, slots=True)
class IndexItem:
    """One object of a segment: numbered block ``{n}.blk`` (DATA) or merged ``m_{n}.blk``."""

    kind: BlockKind
    number: int
    first_entry_id: int
    count: int
    size: int

    @property
    def object_name(self) -> str:
        return f"m_{self.number}.blk" if self.kind is BlockKind.MERGED else f"{self.number}.blk"


@dataclass(frozen=True, slots=True)
class SegmentFooter:
    log_id: int
    segment_id: int
    entry_count: int
    entry_bytes: int
    items: list[IndexItem]

    def locate(self, entry_id: int) -> int:
        """Index into ``items`` of the object holding ``entry_id`` (len(items) if past the end)."""
        lo, hi = 0, len(self.items)
        while lo < hi:
            mid = (lo + hi) // 2
            item = self.items[mid]
            if item.first_entry_id + item.count <= entry_id:
                lo = mid + 1
            else:
                hi = mid
        return lo


def encode_footer(footer: SegmentFooter) -> bytes:
    head = _FOOTER_HEAD.pack(
        FOOTER_MAGIC,
        FORMAT_VERSION,
        0,
        footer.log_id,
        footer.segment_id,
        footer.entry_count,
        footer.entry_bytes,
        len(footer.items),
    )
    items = b"".join(
        _FOOTER_ITEM.pack(int(i.kind), i.number, i.first_entry_id, i.count, i.size)
        for i in footer.items
    )
    body = head + items
    return body + _U32.pack(crc32c(body)) + FOOTER_END_MAGIC


def decode_footer(data: bytes, where: str = "footer") -> SegmentFooter:
    if len(data) < _FOOTER_HEAD.size + 8:
        raise _corrupt("too short for a segment footer", where)
    if data[-4:] != FOOTER_END_MAGIC:
        raise _corrupt("bad end magic", where)
    (crc,) = _U32.unpack_from(data, len(data) - 8)
    if crc32c(memoryview(data)[:-8]) != crc:
        raise _corrupt("footer checksum mismatch", where)
    magic, version, _r, log_id, seg, entries, nbytes, n = _FOOTER_HEAD.unpack_from(data, 0)
    if magic != FOOTER_MAGIC or version != FORMAT_VERSION:
        raise _corrupt(f"bad magic {magic!r} or version {version}", where)
    if _FOOTER_HEAD.size + n * _FOOTER_ITEM.size + 8 != len(data):
        raise _corrupt("item count does not match the footer length", where)
    items = []
    for k in range(n):
        kind, number, first, count, size = _FOOTER_ITEM.unpack_from(
            data, _FOOTER_HEAD.size + k * _FOOTER_ITEM.size
        )
        items.append(IndexItem(BlockKind(kind), number, first, count, size))
    return SegmentFooter(log_id, seg, entries, nbytes, items)


def index_items_contiguous(items: Iterable[IndexItem]) -> bool:
    """True if the items cover entry ids 0.. without gap or overlap."""
    expected = 0
    for item in items:
        if item.first_entry_id != expected:
            return False
        expected += item.count
    return True
