"""Table restore in bulk, beneath Faust's per-record recovery.

Why: Faust restores a table by passing every changelog record through its stream
machinery (the fetcher, ``on_message``, the changelog queue, ``_slurp_changelogs``
with a ``wait_for`` per record) before writing it. Measured on 2 cores it restored
6,500 to 7,800 records/s, so a worker on an empty state directory took 179 s to
restore a million customers (bench/throughput.py, README). Here each active
changelog partition is read with a plain aiokafka consumer in large fetches and
written with one RocksDB WriteBatch per fetch, followed by the offset it reached
(Faust's own ``Store.apply_changelog_batch``, so the store's format and persisted
offsets are Faust's). This runs where Faust works out where its recovery starts
(``Recovery._build_offsets``), so Faust then finds those partitions up to date and
reads only what arrived meanwhile. Standby partitions stay with Faust.

Order and safety: a partition's records are applied in offset order and its
persisted offset is written after the data, as Faust does; applying a record again
gives the same state, so a restore cut short (a deadline, a new rebalance, a broker
error, a crash) leaves a store that Faust, or the next start, carries on from. Faust
bounds the step by ``broker_request_timeout``; the bulk read stops well before it and
leaves the rest to Faust's own path.

Private API touched: ``Recovery._build_offsets`` (its signature and the "active"
title), ``Recovery.active_offsets`` / ``active_highwaters`` / ``tp_to_table``
(Faust's highwater is the last offset, one below Kafka's), ``TableManager._recovery``
behind the public ``recovery`` property, and what the RocksDB store's
``apply_changelog_batch`` reads of an event (``message.tp``, ``.partition``,
``.offset``, ``.key``, ``.value``). tests/unit/streams/test_restore.py pins them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.stores.rocksdb import Store as RocksStore
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from app.metrics import ServiceMetrics

# Of Faust's timeout for the step this runs in, the share the bulk read may use.
DEADLINE_SHARE = 0.75


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one changelog partition to read: ``start`` up to ``end`` (exclusive)."""

    start: int
    end: int


def span(persisted: int | None, earliest: int, end: int) -> Span | None:
    """What a partition still needs: from after the persisted offset (or the start of the
    log, whichever is later: the cleaner may have removed older records) to ``end``."""
    start = earliest if persisted is None or persisted < 0 else max(persisted + 1, earliest)
    return Span(start, end) if start < end else None


@dataclass(frozen=True, slots=True)
class _Message:
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Change:
    """One changelog record in the shape ``Store.apply_changelog_batch`` reads."""

    message: _Message


def changes(tp: TP, records: Iterable[Any], end: int) -> list[Change]:
    """The records before ``end`` as Changes (records past it belong to the next read)."""
    return [
        Change(_Message(tp, tp.partition, r.offset, r.key, r.value))
        for r in records
        if r.offset < end
    ]


async def read(
    client_kwargs: Mapping[str, Any],
    spans: Mapping[TP, Span],
    apply: Callable[[TP, list[Change]], None],
    deadline: float,
    fetch_bytes: int,
) -> dict[TP, int]:
    """Read every span in offset order, handing each fetch to ``apply``; stop at
    ``deadline`` (monotonic). Returns the last offset applied per partition."""
    if time.monotonic() >= deadline:
        return {}
    consumer = AIOKafkaConsumer(
        **client_kwargs, enable_auto_commit=False, group_id=None,
        max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=max(fetch_bytes, 64 * 1024**2),
    )  # fmt: skip
    done: dict[TP, int] = {}
    await consumer.start()
    try:
        parts = {TopicPartition(tp.topic, tp.partition): tp for tp in spans}
        consumer.assign(list(parts))
        for kafka_tp, tp in parts.items():
            consumer.seek(kafka_tp, spans[tp].start)
        todo = set(parts)
        while todo and time.monotonic() < deadline:
            fetched = await consumer.getmany(*todo, timeout_ms=500)
            for kafka_tp, records in fetched.items():
                tp = parts[kafka_tp]
                batch = changes(tp, records, spans[tp].end)
                if batch:
                    apply(tp, batch)
                    done[tp] = batch[-1].message.offset
            for kafka_tp in list(todo):
                # By position, not by the last offset seen: compaction leaves holes.
                if await consumer.position(kafka_tp) >= spans[parts[kafka_tp]].end:
                    todo.discard(kafka_tp)
    finally:
        await consumer.stop()
    return done


def _keep(value: Any) -> Any:
    return value


class BulkRecovery(Recovery):
    """Faust's Recovery, restoring active RocksDB partitions in bulk first."""

    client_kwargs: Mapping[str, Any] = {}
    fetch_bytes: int = 8 * 1024**2
    metrics: ServiceMetrics  # set by table_manager

    async def _build_offsets(
        self, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        if title == "active" and tps:
            await self._bulk(consumer, set(tps), destination)
        await super()._build_offsets(consumer, tps, destination, title)

    async def _bulk(self, consumer: Any, tps: set[TP], destination: Any) -> None:
        tables: Mapping[TP, Any] = self.tp_to_table
        tps = {tp for tp in tps if isinstance(tables[tp].data, RocksStore)}
        if not tps:
            return
        deadline = time.monotonic() + DEADLINE_SHARE * float(self.app.conf.broker_request_timeout)
        earliest = await consumer.earliest_offsets(*tps)
        spans: dict[TP, Span] = {}
        for tp in tps:
            # Faust's highwater is the last offset in the log, or -1 when it is empty.
            todo = span(destination.get(tp), int(earliest.get(tp) or 0),
                        self.active_highwaters[tp] + 1)  # fmt: skip
            if todo is not None:
                spans[tp] = todo
        if not spans:
            return

        applied = 0

        def apply(tp: TP, batch: list[Change]) -> None:
            nonlocal applied
            table = tables[tp]
            table.data.apply_changelog_batch(batch, to_key=_keep, to_value=_keep)
            # Where Faust's own recovery starts if this one stops early.
            destination[tp] = batch[-1].message.offset
            applied += len(batch)
            self.metrics.restored_records.labels(table.name).inc(len(batch))

        started = time.monotonic()
        try:
            await read(self.client_kwargs, spans, apply, deadline, self.fetch_bytes)
        except (KafkaError, OSError) as exc:
            # Faust's own recovery retries through the worker's consumer; it carries on
            # from what was written here.
            self.log.warning("Bulk restore stopped (%r); Faust's recovery reads the rest", exc)
        finally:
            self.metrics.restore_seconds.inc(time.monotonic() - started)
        reached = {tp: s.start - 1 if destination[tp] is None else destination[tp]
                   for tp, s in spans.items()}  # fmt: skip
        left = sum(self.active_highwaters[tp] - at for tp, at in reached.items())
        self.log.info(
            "Bulk restore: %d records of %d changelog partitions in %.1f s; %d offsets left "
            "to Faust's recovery", applied, len(spans), time.monotonic() - started, left,
        )  # fmt: skip


def table_manager(
    client_kwargs: Mapping[str, Any], fetch_bytes: int, metrics: ServiceMetrics
) -> type[TableManager]:
    """A TableManager whose recovery restores in bulk (``faust.App(TableManager=...)``)."""
    recovery = type("BulkRecovery", (BulkRecovery,), {
        "client_kwargs": dict(client_kwargs), "fetch_bytes": fetch_bytes,
        "metrics": metrics,
    })  # fmt: skip

    class Manager(TableManager):
        @property
        def recovery(self) -> Recovery:
            if self._recovery is None:
                self._recovery = recovery(self.app, self, beacon=self.beacon, loop=self.loop)
            return self._recovery

    return Manager
