"""Woodpecker: a zero-disk write-ahead log whose blocks live directly in object storage.

Usable on its own (it never imports ``cluster``)::

    store = await LogStore.open(object_store="file:///tmp/wal", meta="sqlite:///tmp/wal.db")
    log = await store.create_log("events")
    writer = await log.open_writer()
    mid = await writer.append(b"hello")
    reader = await log.open_reader(MessageId.EARLIEST)
    msg = await reader.read_next()
"""

from woodpecker.config import WalConfig
from woodpecker.errors import (
    CanopyError,
    CorruptBlock,
    LogExists,
    LogNotFound,
    LogTruncated,
    Unavailable,
    WriterClosed,
    WriterFenced,
)
from woodpecker.logstore import Log, LogStore
from woodpecker.message import Message, MessageId
from woodpecker.reader import LogReader
from woodpecker.writer import LogWriter, WriterState

__all__ = [
    "CanopyError",
    "CorruptBlock",
    "Log",
    "LogExists",
    "LogNotFound",
    "LogReader",
    "LogStore",
    "LogTruncated",
    "LogWriter",
    "Message",
    "MessageId",
    "Unavailable",
    "WalConfig",
    "WriterClosed",
    "WriterFenced",
    "WriterState",
]
