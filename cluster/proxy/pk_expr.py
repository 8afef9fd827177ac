"""The one filter form the write path understands before the read path exists: ``pk in [..]``.

pymilvus turns ``delete(ids=[...])`` into ``<pk> in [1,2,3]`` (int64 keys) or
``<pk> in ['a','b']`` (VARCHAR keys, single quotes, no escaping). :func:`parse_pk_list` parses
exactly that shape -- also with double quotes, backslash escapes, ``IN``, spaces and a trailing
comma -- and returns the keys. It returns None for any other expression (a filter), so the
caller can answer "not supported yet" instead of guessing. A list of the wrong type for the
primary key, or an int64 out of range, is an invalid request (ParameterInvalid, 1100).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from cluster.milvus.status import ParameterInvalid
from cluster.schema import DataType, FieldSchema

__all__ = ["parse_pk_list"]

_HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s+(?:in|IN)\s*\[(.*)\]\s*\Z", re.DOTALL)
_ITEM = re.compile(
    r"""\s*(?:(?P<int>[+-]?[0-9]+)|'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)")\s*(?P<sep>,|\Z)""",
    re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_INT64 = (-(2**63), 2**63 - 1)


def parse_pk_list(expr: str, pk: FieldSchema) -> np.ndarray | pa.Array | None:
    """The keys of ``expr`` if it is ``<pk> in [literal, ...]``: an int64 numpy array or an
    Arrow string array (by the primary key's type); None for anything else."""
    head = _HEAD.match(expr)
    if head is None or head.group(1) != pk.name:
        return None
    body = head.group(2)
    ints: list[int] = []
    strs: list[str] = []
    pos = 0
    if body.strip():
        while pos < len(body):
            item = _ITEM.match(body, pos)
            if item is None:
                return None
            if item.group("int") is not None:
                ints.append(int(item.group("int")))
            else:
                raw = item.group("sq") if item.group("sq") is not None else item.group("dq")
                strs.append(_ESCAPE.sub(r"\1", raw))
            pos = item.end()
            if item.group("sep") == "," and not body[pos:].strip():
                break  # trailing comma
    if pk.dtype == DataType.INT64:
        if strs:
            raise ParameterInvalid(
                f"cannot parse expression: {expr}, error: value '{strs[0]}' in list cannot be "
                f"casted to {pk.dtype.milvus_name}"
            )
        bad = next((v for v in ints if not _INT64[0] <= v <= _INT64[1]), None)
        if bad is not None:
            raise ParameterInvalid(
                f"cannot parse expression: {expr}, error: value {bad} out of range of Int64"
            )
        return np.asarray(ints, dtype=np.int64)
    if ints:
        raise ParameterInvalid(
            f"cannot parse expression: {expr}, error: value '{ints[0]}' in list cannot be "
            f"casted to {pk.dtype.milvus_name}"
        )
    return pa.array(strs, pa.string())
