"""Broker-free doubles for the batch layer: records, a view over dict stores, a producer.

In the spirit of quix-streams' checkpoint tests: the fold is pure and the delivery
talks to a producer and tables, so both run here with fakes that record every send
and can fail at a chosen one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.domain.batch import Limits, Record
from app.domain.customer import CustomerState, Policy
from app.domain.events import encode
from app.domain.value import ValuePolicy
from app.streams import store
from app.streams.tables import key_partition

PARTITIONS = 4
SURVEYS, PURCHASES, ERASURE, ACTIONS = "surveys", "purchases", "erasure", "actions"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
LIMITS = Limits(max_event_bytes=65536, max_future_skew=timedelta(hours=1), sweep_limit=100,
                topic_erasure=ERASURE, topic_alert_actions=ACTIONS)  # fmt: skip


def policy(threshold: str = "1000") -> Policy:
    return Policy(value_policy=ValuePolicy(Decimal(threshold), 0.0, frozenset()),
                  rules=frozenset({"detractor"}))  # fmt: skip


def records(events: list[Any], start: int = 0) -> list[Record]:
    """Correctly keyed records, offsets counting per (topic, partition) from ``start``."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for ev in events:
        topic = SURVEYS if ev.event_type == "survey" else PURCHASES
        key = ev.customer_id.encode()
        part = key_partition(key, PARTITIONS)
        off = offsets.get((topic, part), start)
        offsets[(topic, part)] = off + 1
        out.append(Record(topic, part, off, key, encode(ev), NOW.timestamp() - 5))
    return out


class Store(dict[bytes, bytes]):
    """A table's local store: a dict that remembers where its changelog was read up to."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class Changelog:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class Table:
    def __init__(self, name: str) -> None:
        self.data = Store()
        self.changelog_topic = Changelog(f"{name}-changelog")


@dataclass
class Metadata:
    topic: str
    partition: int
    offset: int


class SendFailedError(Exception):
    """The fake broker refused a record."""


@dataclass
class Producer:
    """Records every send in order; the ``fail_at``-th send (0-based) fails."""

    fail_at: int | None = None
    sent: list[tuple[str, bytes | None, bytes | None, int | None]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: Any, headers: Any) -> asyncio.Future[Any]:  # fmt: skip
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_at is not None and len(self.sent) >= self.fail_at:
            fut.set_exception(SendFailedError(f"send {len(self.sent)} refused"))
            self.fail_at = None  # one failure, like one crash
            return fut
        part = partition if partition is not None else 0
        off = self.offsets.get((topic, part), 0)
        self.offsets[(topic, part)] = off + 1
        self.sent.append((topic, key, value, partition))
        fut.set_result(Metadata(topic, part, off))
        return fut

    async def send_records(self, topic: str, partition: int,
                           records: list[tuple[bytes, bytes | None]]) -> list[tuple[Any, int]]:  # fmt: skip
        """As producer.BatchingProducer: in order, one record per batch here."""
        return [(await self.send(topic, key, value, partition, None, None), 1)
                for key, value in records]  # fmt: skip

    async def partition_count(self, topic: str) -> int:
        return PARTITIONS

    def changelog(self, topic: str) -> dict[bytes, bytes]:
        """The compacted changelog: the last value per key, tombstones removing it."""
        out: dict[bytes, bytes] = {}
        for t, key, value, _ in self.sent:
            if t == topic and key is not None:
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = value
        return out


class Metrics:
    """Counts dead letters and re-routes the way ServiceMetrics' labelled counters do."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = {}

    def __getattr__(self, name: str) -> Any:
        metrics = self

        class Labelled:
            def labels(self, *labels: str) -> Any:
                key = (name, *labels)

                class Counter:
                    def inc(self, n: float = 1) -> None:
                        metrics.counts[key] = metrics.counts.get(key, 0) + n

                return Counter()

        return Labelled()


@dataclass
class View:
    """domain.batch.BatchView over the fake tables."""

    customers: Table
    tallies: Table
    pol: Policy
    clock: dict[int, datetime] = field(default_factory=dict)
    repolicies: int = 0
    behind: frozenset[str] = frozenset()  # topics with records still to read
    due_keys: list[bytes] = field(default_factory=list)  # what the sweep is handed (once)

    def customer(self, key: bytes, partition: int) -> CustomerState | None:
        return store.load_state(self.customers.data.get(key))

    def tally(self, key: bytes, partition: int) -> list[int] | None:
        return store.load_tally(self.tallies.data.get(key))

    def erased_at(self, key: bytes, partition: int) -> datetime | None:
        from app.streams.tables import erasure_marker_key

        return store.load_marker(self.customers.data.get(erasure_marker_key(key)))

    def watermark(self, partition: int, latest: Mapping[tuple[str, int], datetime]) -> datetime | None:
        """Stream time from the batch's newest event times, ``behind`` naming lagging topics."""
        from app.domain.batch import watermark

        times = {t: at for (t, p), at in latest.items() if p == partition}
        at = watermark(self.clock.get(partition), times, self.behind)
        if at is not None:
            self.clock[partition] = at
        return at

    def well_placed(self, record: Record, key: bytes) -> bool:
        return record.key == key and key_partition(key, PARTITIONS) == record.partition

    def due(self, partition: int, stream_time: datetime, limit: int) -> list[bytes]:
        mine = [k for k in self.due_keys if key_partition(k, PARTITIONS) == partition][:limit]
        self.due_keys = [k for k in self.due_keys if k not in mine]
        return mine

    def repolicy(self, revenues: dict[int, dict[bytes, float]]) -> Policy:
        self.repolicies += 1
        return self.pol
