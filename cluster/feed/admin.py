"""``Admin.ClusterInfo``: the cluster as the meta store and the WAL metadata describe it
(``cluster/FEED.md``, "Admin.ClusterInfo"). No node is asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cluster.coordinator.channels import CHANNELS_PREFIX, ChannelRecord
from cluster.coordinator.records import SETTINGS_KEY, CatalogSettings, CollectionInfo
from cluster.coordinator.service import SEGMENTS_PREFIX, SegmentRecord
from cluster.coordinator.sessions import SESSIONS_PREFIX, SessionInfo
from cluster.proto import feed_pb2
from cluster.streaming.checkpoint import CHECKPOINTS_PREFIX, Checkpoint
from woodpecker.errors import LogNotFound
from woodpecker.logstore import LogStore
from woodpecker.records import SegmentState
from woodpecker.segments import list_numbered_blocks

__all__ = ["LocalNode", "cluster_info", "standalone_node", "wal_info"]

MiB = 1 << 20
COLLECTIONS_PREFIX = "catalog/collections/"
STANDALONE_ROLES = ("coordinator", "proxy", "streaming", "data")

LocalNode = Callable[[], feed_pb2.NodeInfo]
"""The node of a process that registers no session (``canopy standalone``), asked per call."""


def standalone_node(address: Callable[[], str], started_at: float) -> LocalNode:
    """``canopy standalone``'s one node: every role, at ``address()`` (known once it listens)."""
    from cluster.coordinator.sessions import _software_version

    def node() -> feed_pb2.NodeInfo:
        return feed_pb2.NodeInfo(
            node_id=0,
            roles=list(STANDALONE_ROLES),
            address=address(),
            state="serving",
            started_at=started_at,
            version=_software_version(),
        )

    return node


async def wal_info(logs: LogStore, pchannel: str) -> feed_pb2.WalInfo:
    """The figures of one log: last id, truncation point, epoch, live segments, their bytes and
    objects (final segments from their records; the active one by one LIST)."""
    try:
        log_ = await logs.open_log(pchannel)
    except LogNotFound:
        return feed_pb2.WalInfo(exists=False)
    info = feed_pb2.WalInfo(exists=True)
    last = await log_.last_message_id()
    trunc = await log_.truncation_point()
    info.last_message_id = str(last) if last is not None else ""
    info.truncation_point = str(trunc) if trunc is not None else ""
    info.writer_epoch = (await logs.catalog.get_writer(pchannel)).record.epoch
    for seg in await log_.segments():
        if seg.state is SegmentState.TRUNCATED:
            continue
        info.segments += 1
        if seg.state is SegmentState.ACTIVE:
            sizes = await list_numbered_blocks(logs.objects, log_.log_id, seg.segment_id)
            info.objects += len(sizes)
            info.bytes += sum(sizes.values())
            continue
        blocks = seg.merged_count if seg.state is SegmentState.SEALED else seg.block_count
        info.objects += blocks + 1  # + footer.blk
        info.bytes += seg.size
    info.objects_per_mib = info.objects / (info.bytes / MiB) if info.bytes else 0.0
    return info


def _node(session: SessionInfo, roles: Sequence[str] | None = None) -> feed_pb2.NodeInfo:
    return feed_pb2.NodeInfo(
        node_id=session.node_id,
        roles=list(roles or [session.role]),
        address=session.address,
        state=session.state.value,
        started_at=session.started_at,
        version=session.version,
    )


async def _channels(logs: LogStore, local_owner: int | None = None) -> list[feed_pb2.ChannelInfo]:
    """Every pchannel; without a record it is unassigned, or ``local_owner``'s (standalone: its
    one streaming node owns every channel and writes no records)."""
    meta = logs.meta
    kv = await meta.get(SETTINGS_KEY)
    names: list[str] = []
    if kv is not None:
        settings = CatalogSettings.decode(kv.value)
        names = [settings.pchannel(i) for i in range(settings.num_physical_channels)]
    records = {
        k.key[len(CHANNELS_PREFIX) :]: ChannelRecord.decode(k.value)
        for k in await meta.range(CHANNELS_PREFIX)
    }
    checkpoints = {
        k.key[len(CHECKPOINTS_PREFIX) :]: Checkpoint.decode(k.value)
        for k in await meta.range(CHECKPOINTS_PREFIX)
    }
    out = []
    for name in sorted(set(names) | set(records)):
        ch = feed_pb2.ChannelInfo(pchannel=name, node_id=-1, state="unassigned")
        if local_owner is not None:
            ch.node_id, ch.state = local_owner, "assigned"
        record = records.get(name)
        if record is not None:
            owner = record.owner
            ch.node_id = owner if owner is not None else -1
            ch.epoch, ch.state = record.epoch, record.state.value
        cp = checkpoints.get(name)
        if cp is not None:
            ch.checkpoint = str(cp.position) if cp.position is not None else ""
            ch.service_ts = cp.service_ts
        ch.wal.CopyFrom(await wal_info(logs, name))
        out.append(ch)
    return out


async def _collections(logs: LogStore) -> list[feed_pb2.CollectionInfo]:
    meta = logs.meta
    segments: dict[int, list[SegmentRecord]] = {}
    for kv in await meta.range(SEGMENTS_PREFIX):
        seg = SegmentRecord.decode(kv.value)
        segments.setdefault(seg.collection_id, []).append(seg)
    out = []
    for kv in await meta.range(COLLECTIONS_PREFIX):
        info = CollectionInfo.decode(kv.value)
        names = {p.partition_id: p.name for p in info.partitions}
        item = feed_pb2.CollectionInfo(
            db_name=info.db,
            name=info.name,
            collection_id=info.collection_id,
            vchannels=list(info.vchannels),
            pchannels=list(info.pchannels),
        )
        for seg in sorted(segments.get(info.collection_id, []), key=lambda s: s.segment_id):
            item.segments.add(
                segment_id=seg.segment_id,
                partition_id=seg.partition_id,
                partition=names.get(seg.partition_id, ""),
                vchannel=seg.vchannel,
                rows=seg.rows,
                state=seg.state,
            )
        out.append(item)
    return out


async def cluster_info(
    logs: LogStore, *, local_node: LocalNode | None = None
) -> feed_pb2.ClusterInfoReply:
    """The reply of ``Admin.ClusterInfo``. ``local_node``: the one process of ``canopy
    standalone`` (which registers no sessions); the sessions otherwise."""
    reply = feed_pb2.ClusterInfoReply(mode="standalone" if local_node else "distributed")
    local = local_node() if local_node is not None else None
    if local is not None:
        reply.nodes.append(local)
    for kv in await logs.meta.range(SESSIONS_PREFIX):
        reply.nodes.append(_node(SessionInfo.decode(kv.value)))
    reply.channels.extend(await _channels(logs, local.node_id if local is not None else None))
    reply.collections.extend(await _collections(logs))
    return reply
