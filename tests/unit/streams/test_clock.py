"""Stream time from the consumer's positions: a topic with records left holds it back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from faust.types import TP

from app.streams.clock import StreamClock
from app.streams.readmodel import ReadModel

SURVEYS, PURCHASES = "surveys", "purchases"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Consumer:
    """Fetch high-waters and committed offsets, as SafeOffsetConsumer reports them."""

    ends: dict[TP, int] = field(default_factory=dict)
    committed: dict[TP, int] = field(default_factory=dict)

    def highwater(self, tp: TP) -> int | None:
        return self.ends.get(tp)

    def committed_offset(self, tp: TP) -> int | None:
        return self.committed.get(tp)


@dataclass
class Assignor:
    actives: set[TP] = field(default_factory=set)

    def assigned_actives(self) -> set[TP]:
        return self.actives


@dataclass
class App:
    consumer: Consumer = field(default_factory=Consumer)
    assignor: Assignor = field(default_factory=Assignor)


def clock(app: App) -> StreamClock:
    return StreamClock(app, (SURVEYS, PURCHASES), ReadModel())


def test_a_partition_whose_end_is_not_known_yet_counts_as_behind() -> None:
    c = clock(App())
    assert c.behind(SURVEYS, 0)


def test_behind_until_the_processed_position_reaches_the_end() -> None:
    app = App()
    app.consumer.ends[TP(SURVEYS, 0)] = 10
    c = clock(app)
    c.processed(SURVEYS, 0, 8)
    assert c.behind(SURVEYS, 0)
    c.processed(SURVEYS, 0, 9)
    assert not c.behind(SURVEYS, 0)


def test_without_a_processed_record_the_committed_offset_is_the_position() -> None:
    app = App()
    app.consumer.ends[TP(SURVEYS, 0)] = 10
    app.consumer.committed[TP(SURVEYS, 0)] = 10
    assert not clock(app).behind(SURVEYS, 0)


def test_stream_time_is_held_by_the_topic_still_behind() -> None:
    """Purchases read to their end (day 30) do not pull stream time past surveys (day 5)."""
    app = App()
    app.consumer.ends.update({TP(SURVEYS, 0): 100, TP(PURCHASES, 0): 50})
    c = clock(app)
    c.processed(SURVEYS, 0, 10)
    c.processed(PURCHASES, 0, 49)
    day5, day30 = T0 + timedelta(days=5), T0 + timedelta(days=30)
    at = c.watermark(0, {(SURVEYS, 0): day5, (PURCHASES, 0): day30})
    assert at == day5
    c.processed(SURVEYS, 0, 99)
    assert c.watermark(0, {}) == day30


def test_lag_is_reported_only_for_assigned_input_partitions_with_a_position() -> None:
    app = App()
    app.assignor.actives = {TP(SURVEYS, 0), TP(SURVEYS, 1), TP("changelog", 0)}
    app.consumer.ends.update({TP(SURVEYS, 0): 100, TP(SURVEYS, 1): 7, TP("changelog", 0): 9})
    c = clock(app)
    c.processed(SURVEYS, 0, 59)
    assert list(c.lags((SURVEYS, PURCHASES))) == [(SURVEYS, 0, 40)]
