"""Faust's aiokafka consumer, with two offset fixes so a killed worker loses nothing.

Why: a chaos soak (tests/integration/test_chaos_soak.py) lost events when a worker
was killed within a second or two of starting. Traced in faust-streaming 0.15.3:

1. After recovery, ``Recovery.on_recovery_completed`` resumes the input partitions,
   then calls ``Consumer.perform_seek``, then ``flow_control.resume()``, which clears
   the agents' buffers. Records fetched in between are dropped and Faust relies on
   the seek to read them again, but ``perform_seek`` only moves partitions that have
   a committed offset above 0 (aiokafka's ``seek_to_committed``). A partition that
   was never committed keeps its position, and the cleared records are never read.
2. ``Consumer._new_offset`` refuses to commit past a hole at the head of the acked
   offsets only when a committed offset is known and non-zero. For a partition never
   committed it commits the first consecutive run even when it starts after records
   that were dropped, so the next start skips them for good.

The fix: before the seek the flow is stopped (the fetch loop stops delivering the
records it holds), every input partition without a committed offset is sought to
the start of its log, and the commit check uses the start of the log as the base
when nothing was committed. Records read twice are absorbed downstream (event_id
de-duplication, the tally watermarks).

Private API touched: ``Consumer.perform_seek``, ``_new_offset``, ``_committed_offset``,
``_read_offset``, ``_acked``, ``_acked_index``, ``_gap`` and ``_is_changelog_tp``.
tests/unit/streams/test_consumer.py pins them. The worker's transport creates the
subclass of this consumer in batchpath.py (``App.transport``, a public setter).
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as driver
from faust.types import TP


def consecutive_run(offsets: list[int]) -> list[int]:
    """The first run of consecutive numbers in a sorted, non-empty list."""
    run = [offsets[0]]
    for offset in offsets[1:]:
        if offset != run[-1] + 1:
            break
        run.append(offset)
    return run


def committable(acked: list[int], base: int | None) -> int | None:
    """The offset to commit for a partition, or None when it is not safe to move.

    ``acked`` is sorted; ``base`` is the committed offset (the next record to read)
    or, for a partition never committed, the start of its log. A first acked offset
    more than one past the base means a record before it was not processed, so
    nothing is committed. (One past is tolerated as Faust does: a transaction marker
    can sit at the committed offset.) Without a known base nothing is committed.
    """
    if not acked or base is None or acked[0] - base > 1:
        return None
    return consecutive_run(acked)[-1] + 1


class SafeOffsetConsumer(driver.Consumer):
    """The aiokafka consumer Faust uses, with the seek and commit base fixed."""

    def _reset_state(self) -> None:
        super()._reset_state()
        self._log_start: dict[TP, int] = {}

    def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset of a partition (the next record to read), if any."""
        return self._committed_offset.get(tp)

    def _is_input(self, tp: TP) -> bool:
        return not self._is_changelog_tp(tp) and bool(self.app.topics.acks_enabled_for(tp.topic))

    async def perform_seek(self) -> None:
        """Seek every input partition to where processing must resume, committed or not."""
        # Stop delivering the records the fetch loop holds: they are read again below.
        self.stop_flow()
        await super().perform_seek()
        fresh = [
            tp for tp in self.assignment()
            if self._is_input(tp) and self._committed_offset.get(tp) is None
        ]  # fmt: skip
        if fresh:
            starts = await self.earliest_offsets(*fresh)
            for tp in fresh:
                start = int(starts.get(tp) or 0)
                self._log_start[tp] = start
                await self.seek(tp, start)
        for tp in fresh:
            # The fetch loop may have recorded a later read position meanwhile.
            self._read_offset[tp] = None
        # The recovery that called us resumes the flow (and clears the buffers).

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:
            # Offsets the fetch loop saw skipped (transaction markers, compaction) count
            # as processed, as in Faust.
            top = max(acked)
            spans = sorted(gaps.overlap(0, top), key=lambda iv: iv.begin)
            if spans:
                filled = [n for iv in spans for n in range(iv.begin, iv.end)]
                acked.extend(filled)
                gaps.chop(0, max(filled[-1], top + 1))
        acked.sort()
        committed = self._committed_offset.get(tp)
        base = committed if committed is not None else self._log_start.get(tp)
        offset = committable(acked, base)
        if offset is None:
            return None
        run = consecutive_run(acked)
        acked[: len(run)] = []
        self._acked_index[tp].difference_update(run)
        return offset
