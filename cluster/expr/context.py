"""Per-evaluation column access: typed, null-aware views of the table's columns.

A :class:`Context` wraps one table (or record batch) for one :meth:`FilterPlan.evaluate` call
and caches everything it derives, so an expression touching a column or a JSON path several
times pays once:

* scalar columns -> numpy arrays (ints widened to int64, nulls filled) or Arrow string arrays,
  with a validity mask; a column missing from the table reads as all null (``$meta`` as ``{}``);
* JSON columns -> one ``orjson.loads`` per row (the only per-row Python work, see the package
  doc's cost model), then per path a list of Python values (:data:`MISSING` where absent), then
  per type a typed view (numbers -> int64 or float64 numpy, strings -> Arrow, bools -> numpy);
* ARRAY columns -> element ``i`` by offset arithmetic, lengths, flattened values + parent rows.

A view is a :class:`Vals`: ``data`` (numpy, or Arrow for strings), ``present`` (the row has a
value of that type) and ``valid`` (the row itself is not null; what ``not`` keeps), either mask
None meaning "every row".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cluster.schema import DYNAMIC_FIELD_NAME

__all__ = ["MISSING", "Context", "Vals", "and_masks", "hash_key"]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""Placeholder for an absent JSON value (missing key, index past the end, null row)."""

Mask = np.ndarray | None


@dataclass(slots=True)
class Vals:
    """A typed operand column (see module doc)."""

    data: Any
    present: Mask
    valid: Mask


def and_masks(*masks: Mask) -> Mask:
    """Element-wise AND of optional masks (None = all true)."""
    out: Mask = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def hash_key(v: Any) -> Any:
    """A hashable key with JSON equality (1 == 1.0, true != 1); None if not hashable."""
    t = type(v)
    if t is bool:
        return ("b", v)
    if t is int or t is float:
        return ("n", v)
    if t is str:
        return ("s", v)
    if t is list:
        keys = tuple(map(hash_key, v))
        return None if None in keys else ("l", keys)
    return None


def _loads(raw: Any) -> Any:
    if raw is None:
        return MISSING
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return MISSING


class Context:
    """Column views of one table for one evaluation (not thread-safe; one per call)."""

    def __init__(self, table: pa.Table | pa.RecordBatch) -> None:
        self.table = table
        self.n = table.num_rows
        self._arrays: dict[str, pa.Array | None] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}

    # --- raw columns --------------------------------------------------------------------------

    def array(self, name: str) -> pa.Array | None:
        """The column as one Arrow array, or None when the table has no such column."""
        if name not in self._arrays:
            if self.table.schema.get_field_index(name) < 0:
                self._arrays[name] = None
            else:
                col = self.table.column(name)
                if isinstance(col, pa.ChunkedArray):
                    col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
                self._arrays[name] = col
        return self._arrays[name]

    def validity(self, name: str) -> Mask:
        """Row validity of a column (None: no nulls); a missing column is all null."""
        arr = self.array(name)
        if arr is None:
            return None if name == DYNAMIC_FIELD_NAME else np.zeros(self.n, bool)
        if arr.null_count == 0:
            return None
        return arr.is_valid().to_numpy(zero_copy_only=False)

    def _none(self) -> Vals:
        absent = np.zeros(self.n, bool)
        return Vals(np.zeros(self.n, np.int64), absent, absent)

    def scalar(self, name: str, kind: str) -> Vals:
        """A scalar column: numpy for ``num``/``bool`` (int64 / float), Arrow for ``str``."""
        key = ("col", name, kind)
        if key in self._cache:
            return self._cache[key]
        arr = self.array(name)
        if arr is None:
            out = self._none()
            if kind == "str":
                out.data = pa.nulls(self.n, pa.string())
        else:
            valid = self.validity(name)
            if kind == "str":
                out = Vals(arr, valid, valid)
            else:
                if arr.null_count:
                    arr = pc.fill_null(arr, False if kind == "bool" else 0)
                data = arr.to_numpy(zero_copy_only=False)
                if data.dtype.kind in "iu":
                    data = data.astype(np.int64, copy=False)
                out = Vals(data, valid, valid)
        self._cache[key] = out
        return out

    # --- JSON ---------------------------------------------------------------------------------

    def json_docs(self, column: str) -> list[Any]:
        """Every row's decoded JSON document (MISSING for null rows and bad JSON)."""
        key = ("docs", column)
        if key in self._cache:
            return self._cache[key]
        arr = self.array(column)
        if arr is None:
            docs: list[Any] = [{} if column == DYNAMIC_FIELD_NAME else MISSING] * self.n
        else:
            raw = arr.to_pylist()
            docs = []
            if arr.null_count == 0:
                try:
                    docs = list(map(orjson.loads, raw))
                except (orjson.JSONDecodeError, TypeError):
                    docs = []
            if len(docs) != len(raw):
                docs = list(map(_loads, raw))
        self._cache[key] = docs
        return docs

    def json_values(self, column: str, path: tuple[str | int, ...]) -> list[Any]:
        """The value at ``path`` in every row (MISSING where absent); prefixes are cached."""
        key = ("path", column, path)
        if key in self._cache:
            return self._cache[key]
        if not path:
            return self.json_docs(column)
        parent = self.json_values(column, path[:-1])
        k = path[-1]
        if isinstance(k, str):
            vals = [v.get(k, MISSING) if type(v) is dict else MISSING for v in parent]
        else:
            sk = str(k)  # a JSON pointer step "/0" also names the object key "0"
            vals = [
                (v[k] if k < len(v) else MISSING)
                if type(v) is list
                else (v.get(sk, MISSING) if type(v) is dict else MISSING)
                for v in parent
            ]
        self._cache[key] = vals
        return vals

    def json_view(self, column: str, path: tuple[str | int, ...], kind: str) -> Vals:
        """Typed view of a JSON path: ``num`` (int64, or float64 if any row holds a float),
        ``str`` (Arrow), ``bool``, ``len`` (list lengths, int64)."""
        key = ("view", column, path, kind)
        if key in self._cache:
            return self._cache[key]
        vals = self.json_values(column, path)
        valid = self.validity(column)
        if kind == "str":
            arr = pa.array([v if type(v) is str else None for v in vals], pa.string())
            out = Vals(arr, _present(arr), valid)
        else:
            if kind == "num":
                picked = [v if (t := type(v)) is int or t is float else None for v in vals]
                arr = _number_array(picked)
            elif kind == "bool":
                arr = pa.array([v if type(v) is bool else None for v in vals], pa.bool_())
            else:  # "len"
                arr = pa.array([len(v) if type(v) is list else None for v in vals], pa.int64())
            present = _present(arr)
            if kind == "len":  # not a list: unknown, so "not" does not match it (Milvus #50979)
                valid = present
            if arr.null_count:
                arr = pc.fill_null(arr, False if kind == "bool" else 0)
            out = Vals(arr.to_numpy(zero_copy_only=False), present, valid)
        self._cache[key] = out
        return out

    # --- ARRAY --------------------------------------------------------------------------------

    def element(self, name: str, index: int, kind: str) -> Vals:
        """``name[index]`` per row: numpy for ``num``/``bool``, Arrow for ``str``."""
        key = ("elem", name, index, kind)
        if key in self._cache:
            return self._cache[key]
        arr = self.array(name)
        if arr is None:
            out = self._none()
            if kind == "str":
                out.data = pa.nulls(self.n, pa.string())
        else:
            valid = self.validity(name)
            offsets = arr.offsets.to_numpy(zero_copy_only=False)
            present = np.diff(offsets) > index
            if valid is not None:
                present &= valid
            values = arr.values
            if len(values) == 0:
                taken = pa.nulls(self.n, values.type)
            else:
                taken = values.take(pa.array(np.where(present, offsets[:-1] + index, 0)))
            if kind == "str":
                out = Vals(taken, present, valid)
            else:
                if taken.null_count:
                    taken = pc.fill_null(taken, False if kind == "bool" else 0)
                data = taken.to_numpy(zero_copy_only=False)
                if data.dtype.kind in "iu":
                    data = data.astype(np.int64, copy=False)
                out = Vals(data, present, valid)
        self._cache[key] = out
        return out

    def flat(self, name: str) -> tuple[pa.Array, np.ndarray] | None:
        """(flattened elements, each element's row) of an ARRAY column; None if missing."""
        key = ("flat", name)
        if key in self._cache:
            return self._cache[key]
        arr = self.array(name)
        out = None
        if arr is not None:
            parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
            out = (pc.list_flatten(arr), parents.astype(np.int64, copy=False))
        self._cache[key] = out
        return out


def _present(arr: pa.Array) -> Mask:
    if arr.null_count == 0:
        return None
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _number_array(picked: list[Any]) -> pa.Array:
    """int64 if every number is an int64, else float64; nulls elsewhere."""
    try:
        arr = pa.array(picked)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = pa.array([None if v is None else float(v) for v in picked], pa.float64())
    if pa.types.is_null(arr.type):
        return pa.nulls(len(picked), pa.int64())
    if not (pa.types.is_int64(arr.type) or pa.types.is_float64(arr.type)):
        arr = pc.cast(arr, pa.float64())
    return arr
