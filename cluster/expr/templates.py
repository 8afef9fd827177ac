"""``expr_template_values`` (``schema_pb2.TemplateValue``, what pymilvus sends for
``expr_params``) -> plain Python values for :func:`~cluster.expr.compile_filter`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pymilvus.grpc_gen import schema_pb2

__all__ = ["templates_from_proto"]


def templates_from_proto(values: Mapping[str, schema_pb2.TemplateValue]) -> dict[str, Any]:
    """Each template as bool / int / float / str / bytes / list (nested lists; JSON array
    elements decoded). A value with nothing set becomes None, which the binder refuses with
    a message naming the template; an undecodable JSON element stays bytes (also refused)."""
    return {name: _value(v) for name, v in values.items()}


def _value(v: schema_pb2.TemplateValue) -> Any:
    which = v.WhichOneof("val")
    if which is None:
        return None
    if which == "array_val":
        return _array(v.array_val)
    return getattr(v, which)


def _array(a: schema_pb2.TemplateArrayValue) -> list[Any]:
    which = a.WhichOneof("data")
    if which is None:
        return []
    data = getattr(a, which).data
    if which == "array_data":
        return [_array(x) for x in data]
    if which == "json_data":
        return [_json(x) for x in data]
    return list(data)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
