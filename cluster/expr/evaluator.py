"""Runs a bound plan over one table: every predicate is a whole-column numpy / Arrow operation.

Each predicate yields ``(data, valid)`` bool arrays, Milvus' model (segcore's ColumnVector):
a comparison on a null value gives ``data = valid = False``; ``and`` / ``or`` combine ``data``
and OR the ``valid`` masks; ``not`` flips ``data`` and keeps only valid rows. The final answer is
``data``. So ``x != 1`` and ``not x == 1`` skip rows where ``x`` is null, while a JSON row that
lacks the key is valid (it matches ``!=`` and ``not in``), exactly as Milvus does; ``exists`` is
valid everywhere (Milvus does not mask ``not exists`` with the JSON column's nulls).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.expr import bound as b
from cluster.expr.context import MISSING, Context, Vals, and_masks, hash_key

__all__ = ["evaluate"]

Result = tuple[np.ndarray, np.ndarray | None]

_NP_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
_PC_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


def evaluate(pred: b.Pred, table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """The bool mask (one per row) of ``pred`` over ``table``."""
    ctx = Context(table)
    data, _ = _Eval(ctx).pred(pred)
    return data if data.flags.writeable else data.copy()


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow bool result as numpy, nulls as False."""
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _masked(data: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    return data if present is None else data & present


def _domain(kind: str) -> str:
    """The view domain of an element / value kind."""
    return "num" if kind in ("int", "float", "num") else kind


class _Eval:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.n = ctx.n

    # --- predicates -----------------------------------------------------------------------

    def pred(self, p: b.Pred) -> Result:
        match p:
            case b.Compare():
                return self.compare(p)
            case b.Logic(op=op, children=children):
                results = [self.pred(c) for c in children]
                data = results[0][0].copy()
                for d, _ in results[1:]:
                    if op == "and":
                        data &= d
                    else:
                        data |= d
                valids = [v for _, v in results]
                valid = None if any(v is None for v in valids) else np.logical_or.reduce(valids)
                return data, valid
            case b.Not(child=child):
                data, valid = self.pred(child)
                return _masked(~data, valid), valid
            case b.InList():
                return self.in_list(p)
            case b.Like():
                return self.like(p)
            case b.IsNull(operand=operand):
                return self.is_null(operand), None
            case b.Exists(path=path):  # valid everywhere: "not exists" holds for null rows
                vals = self.ctx.json_values(path.column, path.path)
                data = np.fromiter(
                    (v is not MISSING and v is not None and v != {} for v in vals), bool, self.n
                )
                return data, None
            case b.Contains():
                return self.contains(p)
            case b.Truthy(operand=operand):
                v = self.operand(operand, "bool")
                return _masked(np.asarray(v.data, bool), v.present), v.valid
            case b.BoolConst(value=value):
                return np.full(self.n, value), None
        raise AssertionError(p)

    def compare(self, p: b.Compare) -> Result:
        if p.domain == "json_eq":
            assert isinstance(p.left, b.JsonPath) and isinstance(p.right, b.Const)
            vals = self.ctx.json_values(p.left.column, p.left.path)
            want = hash_key(p.right.value)
            if want is not None:
                data = np.fromiter((hash_key(v) == want for v in vals), bool, self.n)
            else:
                data = np.fromiter((v == p.right.value for v in vals), bool, self.n)
            return data, self.ctx.validity(p.left.column)
        if p.domain == "array_eq":
            assert isinstance(p.left, b.ArrayColumn) and isinstance(p.right, b.Const)
            return self.array_equal(p.left, p.right.value)
        left = self.operand(p.left, p.domain)
        right = self.operand(p.right, p.domain)
        ld = left.data if isinstance(left, Vals) else left
        rd = right.data if isinstance(right, Vals) else right
        present = and_masks(*(x.present for x in (left, right) if isinstance(x, Vals)))
        valid = and_masks(*(x.valid for x in (left, right) if isinstance(x, Vals)))
        if p.domain == "str":
            data = _np_bool(_PC_CMP[p.op](ld, rd))
        else:
            data = np.asarray(_NP_CMP[p.op](ld, rd), dtype=bool)
            if data.ndim == 0:
                data = np.full(self.n, bool(data))
        return _masked(data, present), valid

    def in_list(self, p: b.InList) -> Result:
        if p.domain != "json":
            v = self.operand(p.operand, p.domain)
            assert isinstance(v, Vals)
            return _masked(self.isin(v.data, p.values, p.domain), v.present), v.valid
        assert isinstance(p.operand, b.JsonPath)
        path = p.operand
        groups: dict[str, list[Any]] = {"num": [], "str": [], "bool": [], "other": []}
        for x in p.values:
            t = type(x)
            kind = {bool: "bool", int: "num", float: "num", str: "str"}.get(t, "other")
            groups[kind].append(x)
        data = np.zeros(self.n, bool)
        for kind in ("num", "str", "bool"):
            if groups[kind]:
                view = self.ctx.json_view(path.column, path.path, kind)
                data |= _masked(self.isin(view.data, tuple(groups[kind]), kind), view.present)
        if groups["other"]:
            keys = {hash_key(x) for x in groups["other"]} - {None}
            vals = self.ctx.json_values(path.column, path.path)
            data |= np.fromiter(
                (type(v) in (list, dict) and hash_key(v) in keys for v in vals), bool, self.n
            )
        return data, self.ctx.validity(path.column)

    def isin(self, data: Any, values: tuple[Any, ...], domain: str) -> np.ndarray:
        if domain == "str":
            return _np_bool(pc.is_in(data, value_set=pa.array(values, pa.string())))
        if not values:
            return np.zeros(self.n, bool)
        arr = np.asarray(values, dtype=bool if domain == "bool" else None)
        if data.dtype == np.float32:  # compare as float32, like == on a FLOAT field
            arr = arr.astype(np.float32)
        return np.isin(data, arr)

    def like(self, p: b.Like) -> Result:
        v = self.operand(p.operand, "str")
        assert isinstance(v, Vals)
        arr = v.data
        if p.mode == "eq":
            out = pc.equal(arr, p.needle)
        elif p.mode == "prefix":
            out = pc.starts_with(arr, pattern=p.needle)
        elif p.mode == "suffix":
            out = pc.ends_with(arr, pattern=p.needle)
        elif p.mode == "infix":
            out = pc.match_substring(arr, pattern=p.needle)
        else:
            out = pc.match_substring_regex(arr, pattern=p.needle)
        return _masked(_np_bool(out), v.present), v.valid

    def is_null(self, operand: b.Value) -> np.ndarray:
        match operand:
            case b.Column(name=name) | b.ArrayColumn(name=name):
                valid = self.ctx.validity(name)
                return np.zeros(self.n, bool) if valid is None else ~valid
            case b.JsonPath(column=column):
                valid = self.ctx.validity(column)
                return np.zeros(self.n, bool) if valid is None else ~valid
            case b.Element():
                v = self.operand(operand, _domain(operand.kind))
                assert isinstance(v, Vals)
                return np.zeros(self.n, bool) if v.present is None else ~v.present
        raise AssertionError(operand)

    def contains(self, p: b.Contains) -> Result:
        operand = p.operand
        if isinstance(operand, b.JsonPath):
            vals = self.ctx.json_values(operand.column, operand.path)
            return self.json_contains(vals, p.mode, p.values), self.ctx.validity(operand.column)
        valid = self.ctx.validity(operand.name)
        flat = self.ctx.flat(operand.name)
        if flat is None:
            return np.zeros(self.n, bool), valid
        elements, parents = flat
        uniq = list({hash_key(x): x for x in p.values}.values())
        if p.mode == "all" and not uniq:
            return (np.ones(self.n, bool) if valid is None else valid.copy()), valid
        idx = _index_in(elements, uniq, operand.element)
        hit = idx >= 0
        if p.mode in ("one", "any"):
            data = np.zeros(self.n, bool)
            data[parents[hit]] = True
            return data, valid
        pairs = np.unique(parents[hit] * len(uniq) + idx[hit])
        counts = np.bincount(pairs // len(uniq), minlength=self.n)
        return counts == len(uniq), valid

    def json_contains(self, vals: list[Any], mode: str, values: tuple[Any, ...]) -> np.ndarray:
        keys = [hash_key(x) for x in values]
        if None not in keys:
            want = set(keys)
            if mode == "all":
                it = (type(v) is list and want.issubset(map(hash_key, v)) for v in vals)
            else:
                it = (type(v) is list and not want.isdisjoint(map(hash_key, v)) for v in vals)
            return np.fromiter(it, bool, self.n)

        def has(row: list[Any], x: Any) -> bool:
            return any(type(e) is type(x) and e == x for e in row)

        test = all if mode == "all" else any
        return np.fromiter(
            (type(v) is list and test(has(v, x) for x in values) for v in vals), bool, self.n
        )

    def array_equal(self, col: b.ArrayColumn, want: list[Any]) -> Result:
        valid = self.ctx.validity(col.name)
        length = self.operand(b.Length(col), "num")
        assert isinstance(length, Vals)
        data = _masked(length.data == len(want), length.present)
        for i, x in enumerate(want):
            if not data.any():
                break
            elem = self.ctx.element(col.name, i, _domain(col.element))
            if col.element == "str":
                eq = _np_bool(pc.equal(elem.data, x))
            else:
                eq = np.asarray(elem.data == x, dtype=bool)
            data &= _masked(eq, elem.present)
        return data, valid

    # --- values ---------------------------------------------------------------------------

    def operand(self, v: b.Value, domain: str) -> Vals | Any:
        """A value as a typed column (Vals) or a Python scalar (constants)."""
        match v:
            case b.Const(value=x):
                return x
            case b.Column(name=name):
                return self.ctx.scalar(name, domain)
            case b.Element(name=name, index=index):
                return self.ctx.element(name, index, domain)
            case b.JsonPath(column=column, path=path):
                return self.ctx.json_view(column, path, domain)
            case b.Length(operand=b.JsonPath(column=column, path=path)):
                return self.ctx.json_view(column, path, "len")
            case b.Length(operand=b.ArrayColumn(name=name)):
                arr = self.ctx.array(name)
                if arr is None:
                    absent = np.zeros(self.n, bool)
                    return Vals(np.zeros(self.n, np.int64), absent, absent)
                valid = self.ctx.validity(name)
                lengths = pc.fill_null(pc.list_value_length(arr), 0)
                return Vals(lengths.to_numpy().astype(np.int64), valid, valid)
            case b.Arith():
                return self.arith(v)
        raise AssertionError(v)

    def arith(self, v: b.Arith) -> Vals:
        left, right = self.operand(v.left, "num"), self.operand(v.right, "num")
        ld = left.data if isinstance(left, Vals) else left
        rd = right.data if isinstance(right, Vals) else right
        present = and_masks(*(x.present for x in (left, right) if isinstance(x, Vals)))
        valid = and_masks(*(x.valid for x in (left, right) if isinstance(x, Vals)))
        with np.errstate(all="ignore"):
            if v.op == "+":
                out = np.add(ld, rd)
            elif v.op == "-":
                out = np.subtract(ld, rd)
            elif v.op == "*":
                out = np.multiply(ld, rd)
            elif v.op == "**":
                out = np.power(np.asarray(ld, np.float64), np.asarray(rd, np.float64))
                present = and_masks(present, np.isfinite(out))
            else:  # "/" or "%": a zero divisor makes the row's value missing
                nonzero = np.asarray(rd != 0)
                safe = np.where(nonzero, rd, 1)
                present = and_masks(present, np.broadcast_to(nonzero, (self.n,)))
                ints = np.asarray(ld).dtype.kind in "iu" and np.asarray(safe).dtype.kind in "iu"
                if v.op == "%":
                    out = np.fmod(ld, safe)
                elif ints:  # C/Go truncating division
                    q = np.floor_divide(ld, safe)
                    fix = (np.remainder(ld, safe) != 0) & ((np.asarray(ld) < 0) != (safe < 0))
                    out = q + fix
                else:
                    out = np.true_divide(ld, safe)
        out = np.asarray(out)
        if out.ndim == 0:
            out = np.full(self.n, out)
        return Vals(out, present, valid)


def _index_in(elements: pa.Array, values: list[Any], kind: str) -> np.ndarray:
    """For each element, its index in ``values`` (deduplicated by JSON equality) or -1."""
    if kind in ("int", "float"):
        if pa.types.is_floating(elements.type):
            vtype = elements.type
            keep = [(i, float(x)) for i, x in enumerate(values)]
        else:
            elements = elements.cast(pa.int64())
            vtype = pa.int64()
            keep = [
                (i, int(x))
                for i, x in enumerate(values)
                if isinstance(x, int) or (x.is_integer() and abs(x) < 2**63)
            ]
    else:
        vtype = elements.type
        keep = list(enumerate(values))
    if not keep:
        return np.full(len(elements), -1, np.int64)
    value_set = pa.array([x for _, x in keep], vtype)
    pos = pc.fill_null(pc.index_in(elements, value_set=value_set), -1)
    pos_np = pos.to_numpy(zero_copy_only=False).astype(np.int64)
    back = np.asarray([i for i, _ in keep] + [-1], np.int64)
    return back[pos_np]
