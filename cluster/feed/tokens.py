"""Resume tokens of the change feed (``cluster/FEED.md``, "Resume tokens").

A token is URL-safe base64 (no padding) of a JSON object, format version 1::

    {"v": 1, "c": collection_id, "p": {pchannel: [segment_id, entry_id]}, "k": [ts, pchannel,
     segment_id, entry_id] | null, "f": floor_ts | null}

``p`` is, per pchannel, the position of the next unconsumed message; ``k`` the order key of the
last consumed one (null before the first); ``f`` the start's timestamp floor (a watch from a
timestamp or from now delivers only ``ts > f``; it matters for a token taken before the first
message above the floor was consumed). Clients treat tokens as opaque strings.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from woodpecker.errors import InvalidArgument
from woodpecker.message import MessageId

__all__ = ["OrderKey", "ResumeToken", "TokenError"]

TOKEN_VERSION = 1

OrderKey = tuple[int, str, int, int]
"""``(ts, pchannel, segment_id, entry_id)``: the total order of the feed."""


class TokenError(InvalidArgument):
    """A resume token that cannot be decoded, or that belongs to another collection."""


@dataclass(frozen=True)
class ResumeToken:
    collection_id: int
    positions: dict[str, MessageId]
    last_key: OrderKey | None = None
    floor_ts: int | None = None

    def encode(self) -> str:
        raw = {
            "v": TOKEN_VERSION,
            "c": self.collection_id,
            "p": {ch: mid.to_list() for ch, mid in sorted(self.positions.items())},
            "k": list(self.last_key) if self.last_key is not None else None,
            "f": self.floor_ts,
        }
        text = json.dumps(raw, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).rstrip(b"=").decode()

    @staticmethod
    def decode(token: str) -> ResumeToken:
        """Raises :class:`TokenError` for anything that is not a token of this format."""
        try:
            padded = token.strip() + "=" * (-len(token.strip()) % 4)
            raw = json.loads(base64.urlsafe_b64decode(padded.encode()))
            if raw.get("v") != TOKEN_VERSION:
                raise TokenError(f"resume token of unknown format version {raw.get('v')!r}")
            positions = {str(ch): MessageId.from_list(mid) for ch, mid in raw["p"].items()}
            if any(m.segment_id < 0 or m.entry_id < 0 for m in positions.values()):
                raise ValueError("negative position")
            key = raw.get("k")
            last = None if key is None else (int(key[0]), str(key[1]), int(key[2]), int(key[3]))
            floor = raw.get("f")
            return ResumeToken(
                int(raw["c"]), positions, last, None if floor is None else int(floor)
            )
        except TokenError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, binascii.Error):
            raise TokenError(f"not a change feed resume token: {token[:40]!r}") from None
