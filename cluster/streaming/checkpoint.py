"""The per-channel checkpoint of a streaming node: where a takeover must start replaying the WAL.

Key ``streaming/checkpoints/{pchannel}`` (JSON, see ``cluster/coordinator/META.md``):

==================  ===========================================================================
field               meaning
==================  ===========================================================================
``position``        ``[segment_id, entry_id]`` of the first WAL message a replay must read, or
                    null (replay from the earliest entry). Every effect of the messages below it
                    is durable in object storage (segments written + registered, deletes in
                    delete logs); the WAL is truncated at it.
``flushed``         ``{segment_id: [seg, entry]}``: segments already written and registered
                    whose last message lies at or after ``position`` (another segment still
                    held the position back). A replay skips their inserts and flush messages.
``service_ts``      the last timestamp applied when the checkpoint was taken (informational).
``updated_at``      wall-clock seconds (injected clock).
==================  ===========================================================================

Contract: :meth:`CheckpointStore.save` only ever moves ``position`` forward. It is a CAS on the
key's version, and a save that would lower the position (a fenced, stale owner finishing a flush
after the new owner advanced) is dropped, so ``position`` never falls below the WAL truncation
point and a replay never meets a truncated entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from woodpecker.clock import Clock
from woodpecker.message import MessageId
from woodpecker.meta.base import MetaStore

__all__ = ["CHECKPOINTS_PREFIX", "Checkpoint", "CheckpointStore", "checkpoint_key"]

CHECKPOINTS_PREFIX = "streaming/checkpoints/"


def checkpoint_key(pchannel: str) -> str:
    return f"{CHECKPOINTS_PREFIX}{pchannel}"


@dataclass(frozen=True)
class Checkpoint:
    position: MessageId | None = None
    flushed: dict[int, MessageId] = field(default_factory=dict)
    service_ts: int = 0
    updated_at: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "position": self.position.to_list() if self.position is not None else None,
                "flushed": {str(k): v.to_list() for k, v in sorted(self.flushed.items())},
                "service_ts": self.service_ts,
                "updated_at": self.updated_at,
            },
            sort_keys=True,
        ).encode()

    @staticmethod
    def decode(value: bytes) -> Checkpoint:
        raw = json.loads(value)
        position = raw.get("position")
        return Checkpoint(
            position=MessageId.from_list(position) if position is not None else None,
            flushed={int(k): MessageId.from_list(v) for k, v in raw.get("flushed", {}).items()},
            service_ts=int(raw.get("service_ts", 0)),
            updated_at=float(raw.get("updated_at", 0.0)),
        )


class CheckpointStore:
    """Load and (monotonically) save the checkpoint of one physical channel."""

    def __init__(self, meta: MetaStore, pchannel: str, clock: Clock) -> None:
        self.meta = meta
        self.key = checkpoint_key(pchannel)
        self.clock = clock

    async def load(self) -> Checkpoint:
        kv = await self.meta.get(self.key)
        return Checkpoint.decode(kv.value) if kv is not None else Checkpoint()

    async def save(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store ``checkpoint`` unless the stored one is ahead; returns what is stored."""
        while True:
            kv = await self.meta.get(self.key)
            if kv is not None:
                current = Checkpoint.decode(kv.value)
                if current.position is not None and (
                    checkpoint.position is None or checkpoint.position < current.position
                ):
                    return current
            stamped = Checkpoint(
                checkpoint.position, checkpoint.flushed, checkpoint.service_ts, self.clock.now()
            )
            version = kv.version if kv is not None else 0
            if await self.meta.cas(self.key, stamped.encode(), expected_version=version):
                return stamped
