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


class SegmentDropped(SegmentNotFound):
    """The segment's manifest says ``dropped`` (compacted away, or its partition dropped): it
    takes no more deletes. A delete-log writer re-lists the registry and writes to the segments
    that replaced it."""


class SegmentFenced(CanopyError):
    """A compaction is committing the segment (manifest property ``compaction.fence``): it takes
    no deletes until the compaction commits (the segment is then dropped) or is abandoned (the
    fence is lifted). Retryable: try again later, keeping the deletes buffered meanwhile."""

    retryable = True
