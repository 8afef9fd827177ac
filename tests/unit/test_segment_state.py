"""The segment lifecycle state machine and record encoding."""

from __future__ import annotations

import pytest

from woodpecker.errors import InvalidArgument
from woodpecker.message import MessageId
from woodpecker.records import IllegalTransition, SegmentRecord, SegmentState, check_log_name

S = SegmentState


def _record(state: SegmentState) -> SegmentRecord:
    return SegmentRecord(segment_id=4, state=state, epoch=1, created_at=1.0)


@pytest.mark.parametrize(
    ("start", "allowed"),
    [
        (S.ACTIVE, {S.COMPLETED}),
        (S.COMPLETED, {S.SEALED, S.TRUNCATED}),
        (S.SEALED, {S.TRUNCATED}),
        (S.TRUNCATED, set()),
    ],
)
def test_only_lifecycle_transitions_are_allowed(start: SegmentState, allowed: set) -> None:  # type: ignore[type-arg]
    for target in SegmentState:
        if target in allowed:
            assert _record(start).transition(target).state is target
        else:
            with pytest.raises(IllegalTransition):
                _record(start).transition(target)


def test_transition_carries_changes_and_encoding_round_trips() -> None:
    done = _record(S.ACTIVE).transition(S.COMPLETED, block_count=3, last_entry_id=41, size=99)
    assert (done.block_count, done.last_entry_id, done.entry_count, done.is_final) == (
        3,
        41,
        42,
        True,
    )
    assert SegmentRecord.decode(done.encode()) == done


def test_message_id_order_and_parse() -> None:
    ids = [MessageId(1, 5), MessageId(0, 9), MessageId(1, 0), MessageId(0, 0)]
    assert sorted(ids) == [MessageId(0, 0), MessageId(0, 9), MessageId(1, 0), MessageId(1, 5)]
    assert MessageId.EARLIEST < MessageId(0, 0) < MessageId.LATEST
    assert MessageId.parse("3:14") == MessageId(3, 14)
    assert MessageId.parse("earliest") is MessageId.EARLIEST
    assert str(MessageId(3, 14)) == "3:14"
    with pytest.raises(ValueError, match="SEGMENT:ENTRY"):
        MessageId.parse("3-14")


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "-x", "x" * 300, "sp ace"])
def test_bad_log_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid log name"):
        check_log_name(bad)
