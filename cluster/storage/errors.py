"""Errors of the segment storage format, in Canopy's one error model (:mod:`woodpecker.errors`).

``SegmentNotFound`` and ``SegmentExists`` extend the object store's ``ObjectNotFound`` and
``PreconditionFailed``, so code that already handles those keeps working.
"""

from __future__ import annotations

from woodpecker.errors import CanopyError, ObjectNotFound, PreconditionFailed


class SegmentNotFound(ObjectNotFound):
    """No manifest at the segment's path: the segment does not exist (or is half-written, or
    being deleted). Files without a manifest are never a segment."""


class SegmentExists(PreconditionFailed):
    """A file or the manifest of the segment already exists; segment files are never
    overwritten, so the segment id must not be reused."""


class SegmentCorrupt(CanopyError):
    """A manifest, insert file or delta file failed its structural checks, or a file the
    manifest lists is missing. Nothing from the damaged file is returned."""
