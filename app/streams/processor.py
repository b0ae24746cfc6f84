"""Batch glue between Faust and the pure domain: decode, route, fold, alert, write once.

Per batch each touched customer is read from the table once and written once;
alerts are delivered before the segment tallies, the tallies before the
customer states, and each changelog before its local store, so a crash can
repeat an alert (same alert_id) but never lose one, and never count a survey
response twice or not at all.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from app.domain.batch import BatchResult, Limits, Record, fold_batch, sweep_batch
from app.domain.customer import CustomerState, Policy, next_check
from app.domain.events import encode
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams import collector, store
from app.streams.churnkpis import ChurnKpis
from app.streams.clock import StreamClock
from app.streams.delivery import Delivery
from app.streams.ownership import Ownership
from app.streams.pareto import ParetoMirror
from app.streams.policy import LivePolicy
from app.streams.producer import BatchingProducer
from app.streams.queries import Queries
from app.streams.readmodel import ReadModel
from app.streams.summaries import PartitionSummaries
from app.streams.tables import key_partition


class BatchProcessor:
    """The agent's batch path (fold, deliver, update caches) and the worker's periodic jobs.

    The pure decisions are in domain.batch, the ordered writes in delivery and store,
    the read side in queries; this class wires them to Faust.
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        metrics: ServiceMetrics,
        customers: Any,
        nps_tallies: Any,
        summaries: PartitionSummaries,
        alerts: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.customers = customers
        self.nps_tallies = nps_tallies
        self.summaries = summaries
        self.alerts_topic = alerts
        self.live = LivePolicy(settings, metrics)
        self._known_topics: set[str] = set()
        self._partition_counts: dict[str, int] = {}
        # Trailing revenue of the customers of each partition this worker owns
        # (derived from the customers table, seeded on assignment, kept current
        # by the agent); other partitions' figures come from the summaries.
        self.pareto = ParetoMirror()
        self.readmodel = ReadModel()
        self.ownership = Ownership(settings, customers, nps_tallies, self.readmodel,
                                   self.pareto, summaries, self._indexed)  # fmt: skip
        self.clock = StreamClock(app, (settings.topic_surveys, settings.topic_purchases,
                                       settings.topic_complaints), self.readmodel)  # fmt: skip
        self.customer_rows, self.tally_rows = store.Rows(customers), store.Rows(nps_tallies)
        self.states = store.CustomerStore(self.customer_rows, settings.state_cache_size)
        self.delivery = Delivery(
            BatchingProducer(app.producer), self.customer_rows, self.tally_rows,
            topic_alerts=settings.topic_alerts, topic_deadletter=settings.topic_deadletter,
            partitions_of=self._partitions,
            metrics=metrics, shadow=settings.shadow,
        )  # fmt: skip
        self.limits = Limits(
            max_event_bytes=settings.max_event_bytes, max_future_skew=settings.max_future_skew,
            sweep_limit=settings.sweep_batch_limit, topic_erasure=settings.topic_erasure,
            topic_alert_actions=settings.topic_alert_actions,
        )  # fmt: skip
        self.kpis = ChurnKpis(settings, metrics, self.readmodel, summaries)
        self.queries = Queries(settings, metrics, customers, nps_tallies, self.states,
                               self.readmodel, self.ownership, summaries, self.kpis,
                               self.live, self.clock)  # fmt: skip

    def _indexed(self, partitions: int) -> None:
        """An indexing pass built the read side of ``partitions``: count it, and exempt what
        it built from later garbage collections (collector.py)."""
        self.metrics.partitions_indexed.inc(partitions)
        collector.freeze()

    @property
    def policy(self) -> Policy:
        return self.live.policy

    async def ensure_metadata(self, topics: Sequence[str]) -> None:
        """aiokafka refuses an explicit partition of a topic whose metadata it has not loaded."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        for topic in topics:
            if topic not in self._known_topics:
                await producer.partitions_for(topic)
                self._known_topics.add(topic)

    async def handle(self, messages: Sequence[Message]) -> None:
        """One batch of input records: fold (pure), deliver (ordered), update the caches.

        The caller acks the batch after this returns (batchpath.py); everything the
        batch decided has reached the broker by then.
        """
        started = time.perf_counter()
        if not all(self.ownership.indexed(m.partition) for m in messages):
            await self.index()
        now = datetime.now(UTC)
        await self.ensure_metadata(
            [
                *self.settings.input_topics,
                self.customers.changelog_topic.get_topic_name(),
                self.nps_tallies.changelog_topic.get_topic_name(),
                self.summaries.topic,
            ]
        )
        records: list[Record] = []
        for msg in messages:
            self.clock.processed(msg.topic, msg.partition, msg.offset)
            headers = msg.headers
            pairs = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers or ())
            records.append(Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                  msg.timestamp, pairs))  # fmt: skip
        t0 = time.perf_counter()
        result = fold_batch(records, _View(self, now), self.policy, self.limits, now)
        t1 = time.perf_counter()
        self.pareto.merge(result.revenues)
        raws = await self.delivery.deliver(result)
        t2 = time.perf_counter()
        self._after(result, raws, now)
        phases = self.metrics.batch_phase_seconds
        phases.labels("fold").inc(t1 - t0)
        phases.labels("deliver").inc(t2 - t1)
        phases.labels("after").inc(time.perf_counter() - t2)
        self.metrics.batch_size.observe(len(messages))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def sweep_idle(self) -> int:
        """A chunk of the sweep while no records wait (domain.batch.sweep_batch): how many
        customers it re-scored, 0 when none of the owned, indexed partitions has one due."""
        if not self.ownership.ready():
            return 0
        parts = [p for p in self.ownership.owned
                 if self.ownership.indexed(p) and self.readmodel.has_due(p)]  # fmt: skip
        if not parts:
            return 0
        started = time.perf_counter()
        now = datetime.now(UTC)
        await self.ensure_metadata([self.customers.changelog_topic.get_topic_name()])
        result = sweep_batch(parts, _View(self, now), self.policy, self.limits.sweep_limit, now)
        raws = await self.delivery.deliver(result)
        self._after(result, raws, now)
        self.metrics.batch_phase_seconds.labels("idle_sweep").inc(time.perf_counter() - started)
        return result.swept

    def _after(self, result: BatchResult, raws: dict[bytes, bytes], now: datetime) -> None:
        """Caches and metrics, once the batch is delivered."""
        for part, at in result.clock.items():
            self.readmodel.advance(part, at, now)
        self.ownership.put_tallies(result.tallies)
        policy = self.policy
        for key, (part, state) in result.states.items():
            self.states.remember(key, raws[key], state)
            self.pareto.put(part, key, float(state.trailing_revenue))
        # Written or only re-scored by the sweep: the read model takes risk and next look.
        for key, (part, state) in itertools.chain(result.states.items(), result.rescored.items()):
            due = next_check(state, policy, state.churn_as_of or now)
            self.readmodel.record(key, part, state, due)
        for key, (part, _) in result.erased.items():
            if key not in result.states:
                self.states.forget(key)
                self.readmodel.drop(key)
                self.pareto.drop(part, key)
        self._count(result)

    def _count(self, result: BatchResult) -> None:
        """A batch's metrics, counted per batch rather than per event."""
        m = self.metrics
        wall = time.time()
        for alert, produced in result.alerts:
            m.alerts.labels(alert.rule).inc()
            m.alert_latency.observe(max(0.0, wall - produced))
        for produced, occurred in result.latencies:
            m.event_latency.observe(max(0.0, wall - produced))
            m.event_time_lag.observe(max(0.0, wall - occurred))
        for (event_type, outcome), n in result.outcomes.items():
            m.events.labels(event_type, outcome).inc(n)
        for group, n in result.recovered.items():
            m.recovered.labels(group).inc(n)
        for group, n in result.contacted.items():
            m.cases_contacted.labels(group).inc(n)
        for seconds in result.time_to_ack:
            m.case_time_to_ack.observe(seconds)
        for seconds in result.time_to_contact:
            m.case_time_to_contact.observe(seconds)
        for counter, n in ((m.won_back, result.won_back), (m.lapses, result.lapses),
                           (m.erasures, result.erasures), (m.swept, result.swept)):  # fmt: skip
            if n:
                counter.inc(n)

    def _partitions(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            n = self.app.consumer.topic_partitions(topic) or self.settings.partitions
            self._partition_counts[topic] = n
        return n

    def well_placed(self, record: Record, key: bytes) -> bool:
        """The record's key and partition are the ones customer_id implies."""
        if record.key != key:
            return False
        return bool(key_partition(key, self._partitions(record.topic)) == record.partition)

    def repolicy(self, revenues: dict[int, dict[bytes, float]]) -> Policy:
        """The policy after a batch's revenue changes (new Pareto boundaries if they moved)."""
        self.pareto.merge(revenues)
        if not self.pareto.dirty or not self.ownership.ready():
            # Not indexed yet (an assignment in progress): the mirror is partial, and a
            # boundary cut from it would make most customers high value.
            return self.policy
        return self.live.recut(self.pareto, self.ownership.owned, self.summaries.remote)

    # -- periodic jobs ---------------------------------------------------------------

    async def index(self) -> bool:
        """Match the read side (read model, sweep schedule, revenue mirror) to the assignment.

        Before a batch of a partition not indexed yet, as well as on the summaries timer: a
        batch folded against a partial revenue mirror (after a restart or a rebalance,
        before the timer's pass) cut the Pareto boundary from the few customers the mirror
        held and made most of the batch's customers high value. True once every owned
        partition is indexed.
        """
        owned = {tp.partition for tp in self.app.assignor.assigned_actives()
                 if tp.topic in self.settings.input_topics}  # fmt: skip
        recovered = self.app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        return await self.ownership.sync(owned, self.app.consumer_generation_id, recovered)

    async def share_summaries(self) -> None:
        """Publish a summary of each owned partition; recompute the Pareto boundary."""
        if not await self.index():
            return
        owned = set(self.ownership.owned)
        wall = datetime.now(UTC)
        for p in owned:
            # Stream time moves once the topics that held it back are read, batch or not.
            at = self.clock.watermark(p, {})
            if at is not None:
                self.readmodel.advance(p, at, wall)
        await self.ensure_metadata([self.summaries.topic])
        producer = self.app.producer
        for p in sorted(owned):
            revenues, customers = self.pareto.summary(p)
            summary = {
                "nps": dict(self.ownership.tallies.get(p, {})),
                "revenues": revenues,
                "customers": customers,
                "churn": self.kpis.shared(p),
            }  # fmt: skip
            await self.summaries.publish(producer, p, summary)
        if self.policy.value_policy.top_share > 0:
            self.live.recut(self.pareto, owned, self.summaries.remote)
        await self.live.refit_rhythm(self.readmodel)

    async def refresh_churn_kpis(self) -> None:
        """Recount this worker's churn KPIs (shared with the next summaries) and set gauges."""
        if not self.ownership.ready():
            return
        owned = set(self.ownership.owned)
        await self.kpis.recount(owned)
        self.kpis.set_gauges(owned)
        if "churn_safety_line" in self.settings.alert_rules:
            alerts = self.kpis.safety_line_alerts(owned, datetime.now(UTC))
            futs = [await self.alerts_topic.send(key=a.customer_id.encode(), value=encode(a))
                    for a in alerts]  # fmt: skip
            await asyncio.gather(*futs)
            for a in alerts:
                self.metrics.alerts.labels(a.rule).inc()


class _View:
    """The stored state a batch folds against (domain.batch.BatchView) for one batch."""

    def __init__(self, proc: BatchProcessor, now: datetime) -> None:
        self.proc, self.now = proc, now

    def customer(self, key: bytes, partition: int) -> CustomerState | None:
        return self.proc.states.get(key, partition)

    def tally(self, key: bytes, partition: int) -> list[int] | None:
        return store.load_tally(self.proc.tally_rows.get(key, partition))

    def erased_at(self, key: bytes, partition: int) -> datetime | None:
        return self.proc.states.erased_at(key, partition)

    def watermark(
        self, partition: int, latest: Mapping[tuple[str, int], datetime]
    ) -> datetime | None:
        return self.proc.clock.watermark(partition, latest)

    def well_placed(self, record: Record, key: bytes) -> bool:
        return self.proc.well_placed(record, key)

    def due(self, partition: int, stream_time: datetime, limit: int) -> list[bytes]:
        if not self.proc.ownership.indexed(partition):
            return []
        self.proc.readmodel.advance(partition, stream_time, self.now)
        return self.proc.readmodel.take_due(partition, limit)

    def repolicy(self, revenues: dict[int, dict[bytes, float]]) -> Policy:
        return self.proc.repolicy(revenues)
