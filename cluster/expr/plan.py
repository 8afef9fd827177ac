"""The compiled filter: :func:`compile_filter` -> :class:`FilterPlan`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from cluster.expr import bound as b
from cluster.expr.binder import Binder
from cluster.expr.evaluator import evaluate
from cluster.expr.parser import parse
from cluster.schema import CollectionSchema, DataType

__all__ = ["FilterPlan", "compile_filter"]


class FilterPlan:
    """A parsed, bound filter; immutable and safe to share between threads.

    ``fields``: the stored columns :meth:`evaluate` reads (``$meta`` for dynamic keys).
    ``always_true``: the expression was blank (every row matches).
    """

    __slots__ = ("_pk_values", "_pred", "always_true", "expr", "fields")

    def __init__(
        self, expr: str, pred: b.Pred | None, fields: frozenset[str], pk: str, pk_int: bool
    ) -> None:
        self.expr = expr
        self._pred = pred
        self.fields = fields
        self.always_true = pred is None
        self._pk_values = _pk_values(pred, pk, pk_int)

    def __repr__(self) -> str:
        return f"FilterPlan({self.expr!r})"

    def evaluate(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """One bool per row of ``table`` (columns by field name, see ``fields``): True where
        the row matches. Null, missing and wrongly typed values never match (Milvus rules);
        absent columns read as null (``$meta`` as ``{}``)."""
        if self._pred is None:
            return np.ones(table.num_rows, bool)
        return evaluate(self._pred, table)

    def pk_values(self) -> np.ndarray | list[str] | None:
        """The primary keys when the whole filter is ``pk in [...]`` / ``pk == v`` (or an
        ``or`` of those): an int64 array or a list of str, first occurrences in order; None for
        any other filter."""
        return self._pk_values


def compile_filter(
    expr: str, schema: CollectionSchema, templates: Mapping[str, Any] | None = None
) -> FilterPlan:
    """Parse and bind ``expr`` against ``schema`` with the ``{name}`` ``templates``.

    A blank ``expr`` is the always-true plan. Any problem with the expression (syntax, unknown
    field, type mismatch, missing template, ...) raises :class:`~cluster.expr.ExprError`.
    """
    pk = schema.primary_field
    pk_int = pk.dtype != DataType.VARCHAR
    if not expr.strip():
        return FilterPlan(expr, None, frozenset(), pk.name, pk_int)
    binder = Binder(expr, schema, templates)
    pred = binder.predicate(parse(expr))
    return FilterPlan(expr, pred, frozenset(binder.fields), pk.name, pk_int)


def _pk_values(pred: b.Pred | None, pk: str, pk_int: bool) -> np.ndarray | list[str] | None:
    keys: list[Any] = []
    stack = [pred]
    while stack:
        match stack.pop():
            case b.Logic(op="or", children=children):
                stack.extend(reversed(children))
            case b.InList(operand=b.Column(name=name), values=values) if name == pk:
                keys.extend(values)
            case b.Compare(op="==", left=b.Column(name=name), right=b.Const(value=v)) if name == pk:
                keys.append(v)
            case _:
                return None
    if pk_int:  # an int pk never equals a non-integral or out-of-range number
        if set(map(type, keys)) - {int}:
            keys = [int(k) for k in keys if type(k) is int or (k.is_integer() and abs(k) < 2**63)]
        return np.asarray(list(dict.fromkeys(keys)), dtype=np.int64)
    return list(dict.fromkeys(keys))
