"""What Search and Query share in the proxy: load checks, consistency levels, partitions, output
fields, template values and the scatter to streaming nodes.

Contract:

* :meth:`ReadSupport.check_loaded`: Milvus refuses reads of a collection (or of named
  partitions) that is not loaded: ``collection not loaded`` (101) / ``partition not loaded``
  (201).
* :meth:`ReadSupport.guarantee_ts`: the consistency level is the collection's when the request
  has ``use_default_consistency`` (pymilvus sets it unless the call names a level), else the
  request's. Strong: a fresh TSO timestamp. Bounded: the physical part of a fresh timestamp
  minus ``bounded_staleness`` (5 s), logical 0. Session: the request's
  ``guarantee_timestamp`` (pymilvus sends the last write timestamp it saw; its markers 1
  and 2 for "eventually"/"bounded" mean no wait). Eventually: 0 (no wait). Customized: the
  request's ``guarantee_timestamp`` as given (markers excepted).
* :func:`resolve_partitions`: names -> ids (unknown: ``PartitionNotFound``, 200); none: every
  partition.
* :func:`resolve_outputs`: Milvus' output field rules -- ``*`` is every field (vectors and the
  dynamic ``$meta`` object included), a static name is that field, ``$meta`` the whole
  dynamic object, any other name a dynamic key (only with the dynamic field enabled; else
  ``field x not exist``, 1100). Reads fetch the stored columns; the encoder picks the keys.
* the scatter to streaming nodes is :func:`cluster.proxy.routing.scatter` (reads are
  idempotent, so redoing a refused group vchannel by vchannel is always safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pymilvus.grpc_gen import common_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.records import LoadState
from cluster.coordinator.tso import compose, physical_ms
from cluster.expr import templates_from_proto
from cluster.interfaces import CoordinatorService
from cluster.milvus.status import (
    CollectionNotLoaded,
    ParameterInvalid,
    PartitionNotFound,
    PartitionNotLoaded,
)
from cluster.proxy.collections import PARTITION_KEY_MANUAL, Collection
from cluster.schema import DYNAMIC_FIELD_NAME, CollectionSchema, FieldSchema

__all__ = [
    "BOUNDED_STALENESS",
    "Outputs",
    "ReadSupport",
    "resolve_outputs",
    "resolve_partitions",
    "template_values",
]

T = TypeVar("T")

BOUNDED_STALENESS = 5.0  # seconds (Milvus common.gracefulTime)
_CLIENT_TS_MARKERS = (0, 1, 2)  # pymilvus: unset, EVENTUALLY_TS, BOUNDED_TS
_Level = common_pb2.ConsistencyLevel


class ReadSupport:
    """Catalog and timestamp questions of a read."""

    def __init__(
        self,
        coordinator: CoordinatorService,
        catalog: Catalog,
        *,
        bounded_staleness: float = BOUNDED_STALENESS,
    ) -> None:
        self.coordinator = coordinator
        self.catalog = catalog
        self.bounded_staleness = bounded_staleness

    async def check_loaded(self, db: str, coll: Collection, partitions: Sequence[str]) -> None:
        """Raise unless the collection (or every named partition) is loaded."""
        name = coll.info.name
        if not partitions:
            state = await self.catalog.load_state(db, name)
            if state.state is not LoadState.LOADED:
                raise CollectionNotLoaded(name)
            return
        state = await self.catalog.load_state(db, name, list(partitions))
        if state.state is LoadState.LOADED:
            return
        for partition in partitions:
            one = await self.catalog.load_state(db, name, [partition])
            if one.state is not LoadState.LOADED:
                raise PartitionNotLoaded(partition)
        raise CollectionNotLoaded(name)

    async def guarantee_ts(
        self, coll: Collection, use_default: bool, level: int, requested: int
    ) -> int:
        """The guarantee timestamp of a read (see the module docstring)."""
        if use_default:
            level = coll.info.consistency_level
        if level == _Level.Strong:
            return await self.coordinator.allocate_timestamp()
        if level == _Level.Bounded:
            now = physical_ms(await self.coordinator.allocate_timestamp())
            return compose(max(now - int(self.bounded_staleness * 1000), 0), 0)
        if level in (_Level.Session, _Level.Customized):
            return 0 if requested in _CLIENT_TS_MARKERS else requested
        return 0  # Eventually


def resolve_partitions(coll: Collection, names: Sequence[str]) -> tuple[int, ...] | None:
    """Partition ids of the named partitions (None: every partition). A partition-key
    collection takes no partition names (Milvus: ``ParameterInvalid``)."""
    if not names:
        return None
    if coll.partition_key is not None:
        raise ParameterInvalid(PARTITION_KEY_MANUAL)
    ids = []
    for name in dict.fromkeys(names):
        found = coll.info.partition(name)
        if found is None:
            raise PartitionNotFound(name)
        ids.append(found.partition_id)
    return tuple(ids)


@dataclass(frozen=True)
class Outputs:
    """Resolved output fields: ``fields`` the static fields to return (``$meta`` among them
    means the whole dynamic object), ``dynamic_keys`` dynamic keys asked for by name,
    ``names`` the reply's ``output_fields``, ``stored`` the columns to read."""

    fields: tuple[FieldSchema, ...]
    dynamic_keys: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def stored(self) -> tuple[str, ...]:
        cols = [f.name for f in self.fields]
        if self.dynamic_keys and DYNAMIC_FIELD_NAME not in cols:
            cols.append(DYNAMIC_FIELD_NAME)
        return tuple(cols)


def resolve_outputs(
    schema: CollectionSchema, requested: Sequence[str], *, always: Sequence[str] = ()
) -> Outputs:
    """Milvus' output field rules (see the module docstring); ``always`` names fields every
    reply carries (Query: the primary key), first."""
    fields: dict[str, FieldSchema] = {}
    keys: dict[str, None] = {}
    names: dict[str, None] = {}
    dyn = schema.dynamic_field
    for name in always:
        fields[name] = schema.require_field(name)
        names[name] = None
    for raw in requested:
        name = raw.strip()
        if not name:
            raise ParameterInvalid("output field name cannot be empty")
        if name == "*":
            for f in schema.fields:
                fields.setdefault(f.name, f)
                names[f.name] = None
            continue
        f = schema.get_field(name)
        if f is not None:
            fields.setdefault(name, f)
            names[name] = None
        elif dyn is not None and name.isidentifier():
            keys[name] = None
            names[name] = None
        else:
            raise ParameterInvalid(f"field {name} not exist")
    return Outputs(tuple(fields.values()), tuple(keys), tuple(names))


def template_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A request's ``expr_template_values`` as plain values (``cluster.expr``)."""
    return templates_from_proto(values) if values else {}
