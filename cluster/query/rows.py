"""Row bookkeeping of a loaded sealed segment: primary key -> offsets, and MVCC deletes.

Contracts:

* :class:`PkIndex` maps keys to every row holding them (a segment may hold several versions of a
  key, e.g. an upsert within one growing segment). Built once in ``O(n log n)`` (int64 keys:
  one sort; strings: dictionary-encode, then one dict over the distinct keys); a lookup of
  ``m`` keys costs ``O(m log n)``, never ``O(n)``.
* :class:`Deletes` keeps, per row, the earliest delete timestamp that hides it (a delete of key
  ``k`` at ``T`` hides the rows of ``k`` with ``_ts < T``; see ``cluster/storage/LAYOUT.md``).
  A row is visible at ``R`` iff ``_ts <= R`` and that timestamp is ``> R``. The bitmap of rows
  alive at the newest time is maintained on every delete, so a read at a timestamp at or above
  every insert and applied delete costs nothing; older reads cost one ``O(n)`` vectorised pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

NEVER = np.iinfo(np.uint64).max


def _as_keys(pks: Any, int_pk: bool) -> np.ndarray:
    """Keys as int64 or object (str) numpy array."""
    if isinstance(pks, pa.ChunkedArray):
        pks = pks.combine_chunks()
    if isinstance(pks, pa.Array):
        if int_pk:
            return pks.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return np.array(pks.to_pylist(), dtype=object)
    if isinstance(pks, int | str):
        pks = [pks]
    return np.asarray(pks, dtype=np.int64 if int_pk else object)


class PkIndex:
    """Primary key -> row offsets of one segment (int64 or string keys)."""

    def __init__(self, pks: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(pks, pa.ChunkedArray):
            pks = pks.combine_chunks()
        self.int_pk = pa.types.is_integer(pks.type)
        self.size = len(pks)
        if self.int_pk:
            codes = pks.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            self._codes: dict[str, int] | None = None
        else:
            enc = pks.dictionary_encode()
            codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            self._codes = {s: i for i, s in enumerate(enc.dictionary.to_pylist())}
        self._order = np.argsort(codes, kind="stable")
        self._sorted = codes[self._order]

    def lookup(self, pks: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(which, offsets)``: for every row holding one of ``pks``, the position of its key
        in ``pks`` and the row's offset (int64 arrays of equal length; unknown keys add none)."""
        keys = _as_keys(pks, self.int_pk)
        if self._codes is not None:
            get = self._codes.get
            codes = np.fromiter((get(k, -1) for k in keys), np.int64, len(keys))
        else:
            codes = keys
        lo = np.searchsorted(self._sorted, codes, "left")
        hi = np.searchsorted(self._sorted, codes, "right")
        counts = hi - lo
        total = int(counts.sum())
        which = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
        starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        return which, self._order[starts + np.arange(total)]

    def offsets(self, pks: Any) -> np.ndarray:
        """Every row offset holding one of ``pks`` (any order)."""
        return self.lookup(pks)[1]


class Deletes:
    """MVCC delete state of ``n`` rows with insert timestamps ``row_ts`` (uint64)."""

    def __init__(self, row_ts: np.ndarray) -> None:
        self.row_ts = np.ascontiguousarray(row_ts, dtype=np.uint64)
        self.max_row_ts = int(self.row_ts.max()) if len(self.row_ts) else 0
        self._hidden_at = np.full(len(self.row_ts), NEVER, np.uint64)
        self._alive = np.ones(len(self.row_ts), bool)
        self.max_delete_ts = 0
        self.deleted = 0  # rows hidden at the newest time

    def apply(self, offsets: np.ndarray, ts: np.ndarray) -> int:
        """Rows ``offsets`` deleted at ``ts`` (same length; each hides its row only if the row's
        ``_ts`` is lower). Idempotent; returns how many rows became hidden at the newest time."""
        offsets = np.asarray(offsets, np.int64)
        ts = np.asarray(ts, np.uint64)
        if len(offsets) == 0:
            return 0
        hits = ts > self.row_ts[offsets]
        offsets, ts = offsets[hits], ts[hits]
        if len(offsets) == 0:
            return 0
        np.minimum.at(self._hidden_at, offsets, ts)
        self.max_delete_ts = max(self.max_delete_ts, int(ts.max()))
        newly = offsets[self._alive[offsets]]
        newly = np.unique(newly)
        self._alive[newly] = False
        self.deleted += len(newly)
        return len(newly)

    def visible(self, ts: int | None) -> np.ndarray | None:
        """Bool per row visible at ``ts`` (None = the newest state), or None when every row is.
        The returned array may be shared: do not modify it."""
        if ts is None or (ts >= self.max_row_ts and ts >= self.max_delete_ts):
            return self._alive if self.deleted else None
        return (self.row_ts <= np.uint64(ts)) & (self._hidden_at > np.uint64(ts))
