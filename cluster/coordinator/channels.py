"""Assignment of physical channels (one WAL log each) to streaming nodes: a pure state machine.

:class:`ChannelAssignment` does no I/O and reads no clock: it takes events (nodes joining,
leaving, draining; a node's acknowledgement that it owns a channel; a periodic rebalance tick) and
returns the commands that carry them out (:class:`Assign`, :class:`Revoke`). The asyncio shell
that persists its records and feeds it events is ``cluster/coordinator/channel_manager.py``.

A channel's record is ``(node_id, epoch, state)``:

- ``unassigned``: no owner (``node_id`` None); the epoch is that of the last owner (0: never
  assigned).
- ``assigning``: ``node_id`` owns it at ``epoch`` and has not acknowledged yet (it is fencing the
  WAL and replaying it).
- ``assigned``: the owner has acknowledged ``epoch``.

Invariants (after every event; checked by :meth:`ChannelAssignment.violations`):

1. Each channel has at most one owner, and every owner is a live node (known, not departed).
   Commands of one event take a channel from its old owner (:class:`Revoke`) before giving it to
   a new one (:class:`Assign`).
2. A channel's epoch only grows: every :class:`Assign` carries the previous epoch + 1.
3. While any node is live, every channel is owned; with no live node, every channel is
   unassigned, and the first node to join gets them all.
4. When a node leaves, each of its channels goes (in channel order) to the live node with the
   fewest channels, ties to the smallest node id. Serving (not draining) nodes are preferred;
   draining nodes take channels only when no serving node is live.
5. A draining node keeps channels only while no serving node is live; they move as soon as one is.
6. Balancing happens only on :class:`RebalanceTick`, moves at most ``max_moves_per_tick``
   acknowledged channels, and only while the serving nodes' channel counts differ by more than
   one. Nothing else moves a channel whose owner is live and serving: no reshuffle on restart.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CHANNELS_PREFIX = "channels/"


def channel_key(channel: str) -> str:
    return f"{CHANNELS_PREFIX}{channel}"


class ChannelState(enum.StrEnum):
    UNASSIGNED = "unassigned"
    ASSIGNING = "assigning"
    ASSIGNED = "assigned"


@dataclass(frozen=True)
class ChannelRecord:
    """Who owns a channel, at which epoch, and whether the owner has acknowledged it."""

    node_id: int | None
    epoch: int
    state: ChannelState

    def encode(self) -> bytes:
        raw = {"node_id": self.node_id, "epoch": self.epoch, "state": self.state.value}
        return json.dumps(raw, sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> ChannelRecord:
        raw = json.loads(value)
        node = raw.get("node_id")
        return ChannelRecord(
            None if node is None else int(node), int(raw["epoch"]), ChannelState(raw["state"])
        )

    @property
    def owner(self) -> int | None:
        return None if self.state is ChannelState.UNASSIGNED else self.node_id


UNASSIGNED = ChannelRecord(None, 0, ChannelState.UNASSIGNED)


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodesSynced:
    """The complete set of live nodes (at start, or after re-reading the registry): nodes not in
    it have left; owners not in it lose their channels."""

    serving: frozenset[int]
    draining: frozenset[int] = frozenset()


@dataclass(frozen=True)
class NodeJoined:
    """A node is live and serving (also: it stopped draining)."""

    node_id: int


@dataclass(frozen=True)
class NodeLeft:
    """A node's session was closed or expired."""

    node_id: int


@dataclass(frozen=True)
class NodeDraining:
    """A node is shutting down gracefully: move its channels to serving nodes."""

    node_id: int


@dataclass(frozen=True)
class ChannelAcked:
    """``node_id`` owns ``channel`` at ``epoch`` (it has fenced the WAL and is serving)."""

    channel: str
    node_id: int
    epoch: int


@dataclass(frozen=True)
class RebalanceTick:
    """Time to even out channel counts (a bounded number of moves)."""


Event = NodesSynced | NodeJoined | NodeLeft | NodeDraining | ChannelAcked | RebalanceTick


# --- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    """``node_id`` owns ``channel`` from ``epoch`` on (the previous epoch + 1)."""

    channel: str
    node_id: int
    epoch: int


@dataclass(frozen=True)
class Revoke:
    """``node_id`` no longer owns ``channel`` (which it held at ``epoch``)."""

    channel: str
    node_id: int
    epoch: int


Command = Assign | Revoke


class NodeStatus(enum.StrEnum):
    SERVING = "serving"
    DRAINING = "draining"


class ChannelAssignment:
    """The assignment state machine (see the module docstring). ``records`` restores persisted
    state (missing channels start unassigned; records of unknown channels are ignored); no node
    is live until :class:`NodesSynced` or :class:`NodeJoined`, so a restarted manager first feeds
    :class:`NodesSynced` with the registry's snapshot."""

    def __init__(
        self,
        channels: Sequence[str],
        *,
        records: Mapping[str, ChannelRecord] | None = None,
        max_moves_per_tick: int = 2,
    ) -> None:
        if not channels or len(set(channels)) != len(channels):
            raise ValueError("channels must be a non-empty list of distinct names")
        if max_moves_per_tick < 1:
            raise ValueError("max_moves_per_tick must be at least 1")
        self.channels = tuple(channels)
        self.max_moves_per_tick = max_moves_per_tick
        records = records or {}
        self.records: dict[str, ChannelRecord] = {}
        for channel in self.channels:
            record = records.get(channel, UNASSIGNED)
            if record.state is ChannelState.UNASSIGNED and record.node_id is not None:
                record = ChannelRecord(None, record.epoch, ChannelState.UNASSIGNED)
            self.records[channel] = record
        self.nodes: dict[int, NodeStatus] = {}

    # --- queries -------------------------------------------------------------------------------

    def owned(self, node_id: int) -> list[str]:
        """The channels ``node_id`` owns, in channel order."""
        return [c for c in self.channels if self.records[c].owner == node_id]

    def loads(self) -> dict[int, int]:
        """Channels per live node (0 for a node without any)."""
        counts = dict.fromkeys(self.nodes, 0)
        for record in self.records.values():
            if record.owner is not None and record.owner in counts:
                counts[record.owner] += 1
        return counts

    def violations(self) -> list[str]:
        """The invariants 1, 3 and 5 of the module docstring that do not hold (empty: all hold).
        Epoch growth and move bounds concern transitions; the property tests check those."""
        problems = []
        serving = [n for n, s in self.nodes.items() if s is NodeStatus.SERVING]
        for channel, record in self.records.items():
            if (record.state is ChannelState.UNASSIGNED) != (record.node_id is None):
                problems.append(f"{channel}: state {record.state} with node {record.node_id}")
            if record.owner is not None and record.owner not in self.nodes:
                problems.append(f"{channel}: owned by departed node {record.owner}")
            if self.nodes and record.owner is None:
                problems.append(f"{channel}: unassigned while nodes are live")
            if serving and record.owner is not None and record.owner not in serving:
                problems.append(f"{channel}: on draining node {record.owner} while others serve")
        return problems

    # --- events --------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        """Apply ``event``; returns the commands to carry out, in order."""
        out: list[Command] = []
        if isinstance(event, NodesSynced):
            self.nodes = {n: NodeStatus.SERVING for n in event.serving}
            self.nodes.update({n: NodeStatus.DRAINING for n in event.draining})
            for channel in self.channels:
                owner = self.records[channel].owner
                if owner is not None and owner not in self.nodes:
                    self._revoke(channel, out)
        elif isinstance(event, NodeJoined):
            self.nodes[event.node_id] = NodeStatus.SERVING
        elif isinstance(event, NodeLeft):
            self.nodes.pop(event.node_id, None)
            for channel in self.owned(event.node_id):
                self._revoke(channel, out)
        elif isinstance(event, NodeDraining):
            self.nodes[event.node_id] = NodeStatus.DRAINING
        elif isinstance(event, ChannelAcked):
            self._ack(event)
        elif isinstance(event, RebalanceTick):
            self._balance(out)
        else:
            raise TypeError(f"unknown event {event!r}")
        self._place_unassigned(out)
        self._evacuate_draining(out)
        return out

    def _ack(self, event: ChannelAcked) -> None:
        record = self.records.get(event.channel)
        if (
            record is not None
            and record.state is ChannelState.ASSIGNING
            and record.node_id == event.node_id
            and record.epoch == event.epoch
        ):
            self.records[event.channel] = ChannelRecord(
                event.node_id, event.epoch, ChannelState.ASSIGNED
            )
        # anything else is stale (an older epoch, a former owner) and changes nothing

    # --- placement -----------------------------------------------------------------------------

    def _revoke(self, channel: str, out: list[Command]) -> None:
        record = self.records[channel]
        assert record.node_id is not None
        out.append(Revoke(channel, record.node_id, record.epoch))
        self.records[channel] = ChannelRecord(None, record.epoch, ChannelState.UNASSIGNED)

    def _assign(self, channel: str, node_id: int, out: list[Command]) -> None:
        record = self.records[channel]
        if record.owner is not None:
            self._revoke(channel, out)
        epoch = record.epoch + 1
        out.append(Assign(channel, node_id, epoch))
        self.records[channel] = ChannelRecord(node_id, epoch, ChannelState.ASSIGNING)

    def _targets(self) -> list[int]:
        """Nodes that may take channels: serving ones, else (none serving) draining ones."""
        serving = [n for n, s in self.nodes.items() if s is NodeStatus.SERVING]
        return serving or list(self.nodes)

    def _least_loaded(self, candidates: Iterable[int], loads: Mapping[int, int]) -> int:
        return min(candidates, key=lambda n: (loads[n], n))

    def _place_unassigned(self, out: list[Command]) -> None:
        targets = self._targets()
        if not targets:
            return
        loads = self.loads()
        for channel in self.channels:
            if self.records[channel].owner is None:
                node = self._least_loaded(targets, loads)
                self._assign(channel, node, out)
                loads[node] += 1

    def _evacuate_draining(self, out: list[Command]) -> None:
        serving = [n for n, s in self.nodes.items() if s is NodeStatus.SERVING]
        if not serving:
            return
        loads = self.loads()
        for channel in self.channels:
            owner = self.records[channel].owner
            if owner is not None and self.nodes.get(owner) is NodeStatus.DRAINING:
                node = self._least_loaded(serving, loads)
                self._assign(channel, node, out)
                loads[node] += 1
                loads[owner] -= 1

    def _balance(self, out: list[Command]) -> None:
        serving = [n for n, s in self.nodes.items() if s is NodeStatus.SERVING]
        if len(serving) < 2:
            return
        loads = self.loads()
        for _ in range(self.max_moves_per_tick):
            donor = max(serving, key=lambda n: (loads[n], -n))
            taker = self._least_loaded(serving, loads)
            if loads[donor] - loads[taker] <= 1:
                return
            movable = [
                c for c in self.owned(donor) if self.records[c].state is ChannelState.ASSIGNED
            ]
            if not movable:  # everything it holds is still being taken over: wait
                return
            channel = movable[-1]
            self._assign(channel, taker, out)
            loads[donor] -= 1
            loads[taker] += 1
