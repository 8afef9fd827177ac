"""Open an ObjectStore from a URI: ``s3://bucket/prefix?...``, ``file:///dir``, ``memory://[name]``."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from woodpecker.errors import InvalidArgument
from woodpecker.objectstore.base import ObjectStore

SCHEMES = ("s3://bucket/prefix?endpoint=..&region=..", "file:///absolute/dir", "memory://[name]")


def open_object_store(uri: str, **options: object) -> ObjectStore:
    """Return the backend ``uri`` names. ``options`` go to the backend's constructor (e.g.
    ``fsync=False`` for file://, credentials for s3://)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from woodpecker.objectstore.memory import MemoryObjectStore

        return MemoryObjectStore(parts.netloc + parts.path or None, **options)  # type: ignore[arg-type]
    if scheme == "file":
        from woodpecker.objectstore.file import FileObjectStore

        if parts.netloc not in ("", "localhost", "."):
            raise InvalidArgument(
                f"file URI {uri!r} has a host part {parts.netloc!r}; write file:///absolute/dir"
                " or file://./relative/dir"
            )
        path = unquote(("." if parts.netloc == "." else "") + parts.path)
        if not path:
            raise InvalidArgument(f"file URI {uri!r} names no directory")
        return FileObjectStore(path, **options)  # type: ignore[arg-type]
    if scheme == "s3":
        from woodpecker.objectstore.s3 import S3ObjectStore

        return S3ObjectStore.from_uri(uri, **options)  # type: ignore[arg-type]
    raise InvalidArgument(
        f"unsupported object store URI {uri!r}; use one of: " + ", ".join(SCHEMES)
    )
