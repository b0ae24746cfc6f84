"""Deliver what a batch decided, in the one order that makes a crash harmless.

The write order, stated once:

1. alerts and segment tallies, sent together and both confirmed by the broker before
   any customer state: an alert before anything records it as sent, a tally so that a
   replay after a crash finds either the customer's state (a duplicate, not tallied
   again) or the tally's offset watermark, never a tally short of a response its
   customer has. Neither depends on the other (a replay re-sends an alert under the
   same alert_id and the watermark keeps a tally from counting twice), so they share
   one broker round trip instead of taking one each;
2. customer states, with dead letters and re-routed records delivered alongside;
3. erasures: tombstones, markers, and a tombstone on the alert topic.

Each changelog record reaches the broker before the local store is written
(store.write). Only then does the agent return and the batch's offsets become
committable, so a crash at any step replays the batch, and the replay changes
nothing that was already delivered (event_id de-duplication, tally watermarks,
deterministic alert ids).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from app.domain.batch import BatchResult, Record
from app.domain.events import Alert, encode
from app.errors import InvalidEventError
from app.streams import store
from app.streams.store import Rows
from app.streams.tables import erasure_marker_key, key_partition

log = logging.getLogger(__name__)


class Delivery:
    """Produces a BatchResult's records; counts what it sends."""

    def __init__(
        self, producer: Any, customers: Rows, tallies: Rows, *, topic_alerts: str,
        topic_deadletter: str, partitions_of: Any, metrics: Any, shadow: bool = False,
    ) -> None:  # fmt: skip
        self.producer = producer
        self.customers = customers
        self.tallies = tallies
        self.topic_alerts = topic_alerts
        self.topic_deadletter = topic_deadletter
        self.partitions_of = partitions_of
        self.metrics = metrics
        self.shadow = shadow

    async def deliver(self, result: BatchResult) -> dict[bytes, bytes]:
        """Deliver in the order above; returns the stored bytes of each customer written."""
        steps = self.metrics.delivery_step_seconds
        t0 = time.perf_counter()

        async def timed(step: str, write: Awaitable[Any]) -> None:
            await write
            steps.labels(step).inc(time.perf_counter() - t0)

        tallies = [(k, store.dump_tally(t), store.tally_partition(k))
                   for k, t in result.tallies.items()]  # fmt: skip
        await asyncio.gather(
            timed("alerts", self.alerts(result.alerts)),
            timed("tallies", store.write(self.producer, self.tallies, tallies)),
        )
        t2 = time.perf_counter()
        sends = [await self.dead_letter(rec, exc) for rec, exc in result.dead]
        sends += [await self.reroute(rec, key) for rec, key in result.reroute]
        raws = {key: store.dump_state(state) for key, (_, state) in result.states.items()}
        writes = [(key, raws[key], part) for key, (part, _) in result.states.items()]
        await store.write(self.producer, self.customers, writes, sends)
        t3 = time.perf_counter()
        if result.erased:
            await self.forget(result)
            steps.labels("erasures").inc(time.perf_counter() - t3)
        steps.labels("states").inc(t3 - t2)
        return raws

    async def alerts(self, alerts: list[tuple[Alert, float]]) -> None:
        """Each alert on its key's partition (the default partitioner's, as the erasure
        tombstones are sent), in order, as closed record batches (producer.py)."""
        if not alerts:
            return
        n = await self.producer.partition_count(self.topic_alerts)
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for a, _ in alerts:
            key = a.customer_id.encode()
            by_partition.setdefault(key_partition(key, n), []).append((key, encode(a)))
        futs = []
        for part, records in by_partition.items():
            sent = await self.producer.send_records(self.topic_alerts, part, records)
            futs += [fut for fut, _ in sent]
        await asyncio.gather(*futs)

    async def forget(self, result: BatchResult) -> None:
        """Tombstones for the customers' state and alerts, and a marker for each.

        The changelog tombstone is what makes it stick: compaction removes the
        customer and a restore (fresh or own state dir) never brings it back; the
        marker (a hash of the id and the request time) drops the customer's older
        events if they are replayed or arrive late. A customer with events after the
        request in this batch keeps only those (its new state was just written).
        """
        writes: list[tuple[bytes, bytes | None, int]] = []
        for key, (part, at) in result.erased.items():
            writes.append((erasure_marker_key(key), store.dump_marker(at), part))
            if key not in result.states:
                writes.append((key, None, part))
        tombstones = [await self.producer.send(self.topic_alerts, key, None, None, None, None)
                      for key in result.erased]  # fmt: skip
        await store.write(self.producer, self.customers, writes, tombstones)

    async def dead_letter(self, rec: Record, exc: InvalidEventError) -> Awaitable[Any]:
        """Original key, bytes and headers, plus why and where from, in headers."""
        headers = list(rec.headers) + [
            ("dlq.reason", exc.reason.encode()),
            ("dlq.detail", exc.detail.encode()[:1000]),
            ("dlq.field", (exc.field or "").encode()),
            ("dlq.topic", rec.topic.encode()),
            ("dlq.partition", str(rec.partition).encode()),
            ("dlq.offset", str(rec.offset).encode()),
            ("dlq.timestamp_ms", str(int(rec.timestamp * 1000)).encode()),
        ]
        self.metrics.dead_letters.labels(exc.reason, rec.topic).inc()
        log.warning("dead-lettered %s/%s@%s: %s", rec.topic, rec.partition, rec.offset, exc)
        fut: Awaitable[Any] = await self.producer.send(
            self.topic_deadletter, rec.key, rec.value or b"", None, None, headers
        )
        return fut

    async def reroute(self, rec: Record, key: bytes) -> Awaitable[Any]:
        """Re-produce a wrongly keyed record under customer_id, onto its proper partition."""
        if self.shadow:
            # A shadow never writes to production inputs: it reads the copy production made.
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        headers = list(rec.headers) + [
            ("feedback-rekeyed-from", f"{rec.topic}/{rec.partition}/{rec.offset}".encode())
        ]
        self.metrics.rekeyed.labels(rec.topic).inc()
        fut: Awaitable[Any] = await self.producer.send(
            rec.topic, key, rec.value, key_partition(key, self.partitions_of(rec.topic)),
            None, headers,
        )  # fmt: skip
        return fut
