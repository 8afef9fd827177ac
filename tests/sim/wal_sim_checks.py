"""The invariant checks of the WAL simulation (DESIGN.md §3, invariants 1-6), as a mixin of
:class:`wal_sim.Sim`: ``check_step`` after every step, ``check_final`` at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim_support import LOG_NAME, NAMED_READER, SimFailure, seq_of

from woodpecker.errors import CanopyError, Unavailable, WriterClosed, WriterFenced
from woodpecker.message import MessageId
from woodpecker.records import (
    SegmentState,
    WriterRecord,
    segment_object_prefix,
    writer_key,
)

if TYPE_CHECKING:
    from wal_sim import ReaderInc, WriterModel

_LEGAL = {
    SegmentState.ACTIVE: {SegmentState.ACTIVE, SegmentState.COMPLETED},
    SegmentState.COMPLETED: {SegmentState.COMPLETED, SegmentState.SEALED, SegmentState.TRUNCATED},
    SegmentState.SEALED: {SegmentState.SEALED, SegmentState.TRUNCATED},
    SegmentState.TRUNCATED: {SegmentState.TRUNCATED},
}


class Checks:
    """Reads the simulation's records (``self.writers``, ``self.readers``, ``self.captured``,
    ...) and the raw stores (``self.view``); reports through ``self.fail``."""

    # provided by Sim
    view: Any
    raw_meta: Any
    scenario: str
    writers: list[WriterModel]
    readers: list[ReaderInc]
    captured: dict[int, list[bytes]]
    states: dict[int, SegmentState]
    stamps: dict[int, tuple[Any, ...]]
    deleted: set[int]
    trunc_history: list[MessageId]
    acks: list[tuple[MessageId, int]]
    acks_checked: int
    open_attempts: list[list[int]]
    payloads: dict[int, bytes]
    owner: dict[int, tuple[WriterModel, int]]
    fail: Any
    note: Any
    count: Any

    def check_step(self) -> None:
        view = self.view
        segs = view.segments()
        trunc = view.truncation()
        if trunc is not None and (not self.trunc_history or self.trunc_history[-1] != trunc):
            if self.trunc_history and trunc < self.trunc_history[-1]:
                self.fail(f"the truncation point moved back: {self.trunc_history[-1]} -> {trunc}")
            self.trunc_history.append(trunc)
        ckpt = view.checkpoint(NAMED_READER)
        for sid, rec in segs.items():
            prev = self.states.get(sid)
            if prev is not None and rec.state not in _LEGAL[prev]:
                self.fail(f"segment {sid}: illegal transition {prev.value} -> {rec.state.value}")
            self.states[sid] = rec.state
            if rec.state in (SegmentState.COMPLETED, SegmentState.SEALED):
                stamp = (rec, view.fingerprint(segment_object_prefix(view.log_id, sid)))
                if self.stamps.get(sid) == stamp:
                    continue  # neither the record nor any object of the segment changed
                self.stamps[sid] = stamp
                try:
                    content = view.final_content(rec)
                except (SimFailure, CanopyError) as exc:
                    self.fail(f"segment {sid}: unreadable final segment: {exc}")
                    continue
                old = self.captured.get(sid)
                if old is None:
                    self.captured[sid] = content
                    self.note("captured", sid, rec.state.value, len(content))
                elif old != content:
                    self.fail(
                        f"segment {sid}: content changed after it became final "
                        f"({len(old)} -> {len(content)} entries, state {rec.state.value})"
                    )
        for sid in list(self.states):
            rec = segs.get(sid)
            gone = rec is None or rec.state is SegmentState.TRUNCATED
            if gone and sid not in self.deleted:
                self.deleted.add(sid)
                self.note("deleted", sid)
                if sid not in self.captured:
                    self.fail(f"segment {sid} was deleted before it was ever seen final")
                    continue
                # below the truncation point, and not the named reader's segment or later
                # (at (s, n) past the end of s the reader still needs s to resume)
                last = MessageId(sid, len(self.captured[sid]) - 1)
                if (
                    trunc is None
                    or not last < trunc
                    or (ckpt is not None and sid >= ckpt.segment_id)
                ):
                    self.fail(
                        f"inv6: segment {sid} (last entry {last}) was deleted although the "
                        f"truncation point is {trunc} and the named reader's checkpoint {ckpt}"
                    )
        self.acks_checked = len(self.acks)

    def final_log(self) -> list[tuple[MessageId, bytes]]:
        out = []
        for sid in sorted(self.captured):
            out.extend((MessageId(sid, e), p) for e, p in enumerate(self.captured[sid]))
        return out

    def check_final(self, final: list[tuple[MessageId, bytes]]) -> None:
        # every segment ever created was captured (ids are contiguous from 0)
        if self.captured and sorted(self.captured) != list(range(max(self.captured) + 1)):
            missing = set(range(max(self.captured) + 1)) - set(self.captured)
            self.fail(f"segments {sorted(missing)} were never seen final")
        index = {mid: i for i, (mid, _) in enumerate(final)}
        # invariants 3 and 4: no duplicates, nothing foreign, per writer an in-order prefix
        seen: dict[int, MessageId] = {}
        per_writer: dict[int, list[int]] = {}
        for mid, payload in final:
            try:
                seq = seq_of(payload)
            except ValueError:
                self.fail(f"inv4: {mid} holds a payload nobody appended: {payload[:20]!r}")
                continue
            if seq in seen:
                self.fail(f"inv3/4: seq {seq} appears twice: at {seen[seq]} and {mid}")
            seen[seq] = mid
            if self.payloads.get(seq) != payload:
                self.fail(f"inv4: {mid}: payload of seq {seq} is corrupted")
                continue
            model, idx = self.owner[seq]
            per_writer.setdefault(model.wid, []).append(idx)
        for model in self.writers:
            self.check_writer_failure(model)
            if not model.crashed:  # only a crashed process leaves appends unresolved
                pending = [
                    i
                    for i in range(len(model.acked), len(model.appended))
                    if i not in model.failures
                ]
                if pending:
                    self.fail(
                        f"w{model.wid} ({model.writer.state.value}) never resolved appends "
                        f"{pending[:5]} (of {len(pending)})"
                    )
            got = per_writer.get(model.wid, [])
            if got != list(range(len(got))):
                self.fail(
                    f"inv4: w{model.wid}'s entries in the log are not an in-order prefix of its "
                    f"appends (append indexes {got[:10]}...)"
                )
            for seq, mid in model.acked:
                if seen.get(seq) != mid:
                    self.fail(
                        f"inv4: w{model.wid} acknowledged seq {seq} at {mid}; the final log has "
                        f"it at {seen.get(seq)}"
                    )
            # invariant 2: a fenced writer's later appends fail as fenced
            if model.fenced_ev is not None and not model.failed_before_fence:
                for idx, ev in enumerate(model.append_ev):
                    if ev <= model.fenced_ev:
                        continue
                    err = model.failures.get(idx)
                    if err is None and not model.crashed:
                        self.fail(
                            f"inv2: w{model.wid}'s append #{idx} after it was fenced never failed"
                        )
                    elif err not in (None, WriterFenced.__name__, Unavailable.__name__) and not (
                        model.crashed and err == WriterClosed.__name__  # the crash settled it
                    ):
                        self.fail(
                            f"inv2: w{model.wid}'s append #{idx} after it was fenced failed "
                            f"with {err}, not WriterFenced"
                        )
                    if err == Unavailable.__name__:
                        self.count("fenced_writer_failed_unavailable")
        # invariant 5: readers
        trunc_final = self.view.truncation()
        for inc in self.readers:
            self.check_reader(inc, final, index, trunc_final)
        # the fresh EARLIEST reader sees exactly the live log
        fresh = [r for r in self.readers if r.kind == "final"]
        for inc in fresh:
            live_start = min(self.view.segments()) if self.view.segments() else None
            expect = [
                (mid, p)
                for mid, p in final
                if (live_start is None or mid.segment_id >= live_start)
                and (trunc_final is None or mid >= trunc_final)
            ]
            got = [(mid, p) for mid, p, _ in inc.delivered]
            if got != expect:
                self.fail(
                    f"inv5: a fresh EARLIEST reader read {len(got)} entries "
                    f"({got[0][0] if got else None}..), expected {len(expect)} "
                    f"({expect[0][0] if expect else None}..)"
                )
        # every reader: nothing appended after the open lies before its start (an entry
        # durable before the open may still be acknowledged after it: acks lag durability)
        for inc in self.readers:
            for model in self.writers:
                for seq, mid in model.acked:
                    if mid < inc.start and model.append_ev[self.owner[seq][1]] > inc.opened_ev:
                        self.fail(
                            f"inv5: reader {inc.rid} opened at {inc.kind}={inc.start}, yet "
                            f"seq {seq} appended after that was acknowledged at {mid}"
                        )
                        break

    def check_earliest_start(self, inc: ReaderInc) -> None:
        """EARLIEST is at or before the first entry of the first live segment (or the
        truncation point): both only move forward, so their values now bound it."""
        segs = self.view.segments()
        live = [sid for sid, rec in segs.items() if rec.state is not SegmentState.TRUNCATED]
        if live:
            first = MessageId(min(live), 0)
        else:
            kv = self.raw_meta._engine.get(writer_key(LOG_NAME))
            first = MessageId(WriterRecord.decode(kv.value).next_segment_id if kv else 0, 0)
        trunc = self.view.truncation()
        bound = max(first, trunc) if trunc is not None else first
        if inc.start > bound:
            self.fail(
                f"inv5: reader {inc.rid} opened at EARLIEST={inc.start}, past the first live "
                f"entry {bound}: it would skip entries"
            )

    def check_fenced_for_a_reason(self, model: WriterModel, exc: BaseException) -> None:
        """WriterFenced needs a newer epoch in meta, or a concurrent open_writer (a slower
        twin may recover, and so fence, the segment the newer writer just created)."""
        if "lease lost" in str(exc) and self.scenario == "no-conditional":
            return
        kv = self.raw_meta._engine.get(writer_key(LOG_NAME))
        epoch = WriterRecord.decode(kv.value).epoch if kv else 0
        if epoch > model.epoch:
            return
        opened = model.opened_ev
        if any(
            a[0] != model.start_ev and a[0] < opened and (a[1] == -1 or a[1] > model.start_ev)
            for a in self.open_attempts
        ):
            return
        self.fail(
            f"w{model.wid} (epoch {model.epoch}) failed as fenced although no newer writer "
            f"exists (meta epoch {epoch}): {exc}"
        )

    def check_writer_failure(self, model: WriterModel) -> None:
        """A writer dies only for a reason: fenced by a newer open, the store unavailable past
        the retries, or its own crash/close. Nothing else (no corruption, no stray 412)."""
        exc = model.writer._failure
        if exc is None:
            return
        if isinstance(exc, WriterFenced):
            if "lease lost" in str(exc) and self.scenario == "no-conditional":
                return
            rivals = [a for a in self.open_attempts if a[0] != model.start_ev]
            if not any(end == -1 or end > model.start_ev for _, end in rivals):
                self.fail(f"w{model.wid} was fenced, but no other writer opened after it: {exc}")
        elif isinstance(exc, Unavailable):
            self.count("writer_failed_unavailable")
        elif isinstance(exc, WriterClosed) and model.crashed:
            pass
        else:
            self.fail(f"w{model.wid} failed with {exc!r}")

    def check_reader(
        self,
        inc: ReaderInc,
        final: list[tuple[MessageId, bytes]],
        index: dict[MessageId, int],
        trunc_final: MessageId | None,
    ) -> None:
        # the first entry it owes: the first one at/after its start position
        pos = next((i for i, (mid, _) in enumerate(final) if mid >= inc.start), len(final))
        prev_mid: MessageId | None = None
        for mid, payload, trunc in inc.delivered:
            i = index.get(mid)
            if i is None:
                self.fail(f"inv5: reader {inc.rid} delivered {mid}, which is not in the log")
                return
            if final[i][1] != payload:
                self.fail(
                    f"inv5: reader {inc.rid} delivered {payload[:14]!r} at {mid}, the log holds "
                    f"{final[i][1][:14]!r}"
                )
                return
            if prev_mid is not None and mid <= prev_mid:
                self.fail(f"inv5: reader {inc.rid} delivered {mid} after {prev_mid}")
                return
            # skipping is allowed only over entries below the truncation point in force
            for j in range(pos, i):
                skipped = final[j][0]
                if trunc is None or not skipped < trunc:
                    self.fail(
                        f"inv5: reader {inc.rid} ({inc.kind}, from {inc.start}) skipped "
                        f"{skipped} (delivered {mid} after {prev_mid}; truncation {trunc})"
                    )
                    return
            pos = i + 1
            prev_mid = mid
