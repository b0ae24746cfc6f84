"""Stream time of each input partition, from what this worker has read of every input topic.

Kept apart from the batch path because it reads the consumer's positions (fetch
high-waters, committed offsets): the pure rule is ``domain.batch.watermark``, and
this is its one caller that knows Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from faust.types import TP

from app.domain.batch import watermark
from app.streams.readmodel import ReadModel


class StreamClock:
    """Where this worker is in each input partition, and the stream time that follows."""

    def __init__(self, app: Any, event_topics: Sequence[str], readmodel: ReadModel) -> None:
        self.app = app
        self.event_topics = tuple(event_topics)
        self.readmodel = readmodel
        # next offset to process per (input topic, partition), from the records handled
        self.positions: dict[tuple[str, int], int] = {}
        # newest event time per (event topic, partition): stream time's inputs
        self._topic_clock: dict[tuple[str, int], datetime] = {}

    def processed(self, topic: str, partition: int, offset: int) -> None:
        self.positions[(topic, partition)] = offset + 1

    def watermark(
        self, partition: int, latest: Mapping[tuple[str, int], datetime]
    ) -> datetime | None:
        """Stream time of a partition after a batch (domain.batch.watermark)."""
        clock = self._topic_clock
        for tp, at in latest.items():
            if tp[1] == partition and (tp not in clock or at > clock[tp]):
                clock[tp] = at
        topics = self.event_topics
        times = {t: clock[(t, partition)] for t in topics if (t, partition) in clock}
        behind = {t for t in topics if self.behind(t, partition)}
        restored = self.readmodel.newest(partition)
        if not behind and restored is not None:
            # Everything read: as far as any event got, including those of the stored
            # customers (after a restart the topic clocks start empty).
            times["stored customers"] = restored
        return watermark(self.readmodel.stream_time(partition), times, behind)

    def behind(self, topic: str, partition: int) -> bool:
        """The topic's partition has records this worker has not read yet.

        Its end is known from the fetch responses; where this worker is in it, from
        the records it processed or else the group's committed offset. An end not known
        yet (no fetch response for it so far) counts as behind: at the start of a backfill
        one topic's first records can arrive before another topic was fetched at all.
        """
        tp = TP(topic, partition)
        consumer: Any = self.app.consumer  # app.streams.consumer.SafeOffsetConsumer
        end = consumer.highwater(tp)
        if end is None or end < 0:
            return True
        done = self.positions.get((topic, partition))
        if done is None:
            done = consumer.committed_offset(tp) or 0
        return bool(end > done)

    def lags(self, input_topics: Sequence[str]) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, records not yet processed) of the assigned input partitions.

        Until this worker processes a record of a partition its position is unknown
        here; the partition is then left out rather than guessed.
        """
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in input_topics:
                continue
            end = self.app.consumer.highwater(tp)
            done = self.positions.get((tp.topic, tp.partition))
            if end is not None and end >= 0 and done is not None:
                yield tp.topic, tp.partition, max(0, end - done)
