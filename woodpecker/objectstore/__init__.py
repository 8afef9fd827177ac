"""Object storage: the ObjectStore interface, its backends and its wrappers."""

from woodpecker.objectstore.base import ListPage, ObjectInfo, ObjectStore
from woodpecker.objectstore.file import FileObjectStore
from woodpecker.objectstore.memory import MemoryObjectStore
from woodpecker.objectstore.uri import open_object_store
from woodpecker.objectstore.wrappers import FaultConfig, Faulty, Meter, Metered, OpStats, Retrying

__all__ = [
    "FaultConfig",
    "Faulty",
    "FileObjectStore",
    "ListPage",
    "MemoryObjectStore",
    "Meter",
    "Metered",
    "ObjectInfo",
    "ObjectStore",
    "OpStats",
    "Retrying",
    "open_object_store",
]
