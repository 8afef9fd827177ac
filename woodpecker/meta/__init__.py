"""Metadata storage: the MetaStore interface, its backends and ``open_meta_store``."""

from woodpecker.meta.base import (
    Compare,
    CompareTarget,
    Delete,
    DeletePrefix,
    EventType,
    KeyValue,
    Lease,
    MetaStore,
    Op,
    Put,
    TxnResult,
    Watch,
    WatchEvent,
)
from woodpecker.meta.engine import MAX_REQUEST_BYTES, MAX_TXN_OPS
from woodpecker.meta.etcd import EtcdMetaStore
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.meta.sqlite import SqliteMetaStore
from woodpecker.meta.uri import open_meta_store

__all__ = [
    "MAX_REQUEST_BYTES",
    "MAX_TXN_OPS",
    "Compare",
    "CompareTarget",
    "Delete",
    "DeletePrefix",
    "EtcdMetaStore",
    "EventType",
    "KeyValue",
    "Lease",
    "MemoryMetaStore",
    "MetaStore",
    "Op",
    "Put",
    "SqliteMetaStore",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "open_meta_store",
]
