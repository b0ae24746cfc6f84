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
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP

from app.analysis.fit import fit_mbgnbd
from app.domain import segments, value
from app.domain.batch import BatchResult, Limits, Record, fold_batch, watermark
from app.domain.churn import ChurnModel
from app.domain.churn_kpi import Period
from app.domain.customer import CustomerState, Policy, iso, next_check, public_view, refresh
from app.domain.events import encode
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams import store
from app.streams.churnkpis import ChurnKpis
from app.streams.delivery import Delivery
from app.streams.pareto import ParetoMirror
from app.streams.readmodel import RISK_BUCKETS, ReadModel, risk_bucket
from app.streams.summaries import PartitionSummaries
from app.streams.tables import is_marker, key_partition

log = logging.getLogger(__name__)


def policy_from(
    settings: Settings, cutoffs: value.RevenueCutoffs | None = None,
    model: ChurnModel | None = None,
) -> Policy:  # fmt: skip
    """The domain policy the settings describe."""
    return Policy(
        churn_model=model or settings.churn_model(),
        lapse_p_alive=settings.lapse_p_alive,
        rules=settings.alert_rules,
        contact_sla=settings.case_contact_sla,
        rearm_after=settings.detractor_rearm_after,
        base_currency=settings.base_currency,
        fx_rates=dict(settings.fx_rates),
        value_policy=value.ValuePolicy(
            revenue_threshold=settings.high_value_revenue,
            top_share=settings.high_value_top_share,
            tiers=settings.high_value_tiers,
        ),
        cutoffs=cutoffs or value.RevenueCutoffs(),
        dedup_event_ids=settings.dedup_event_ids,
        realert_after=settings.detractor_realert_after,
    )


class BatchProcessor:
    """Holds the agent's collaborators; the tables hold all state that must survive."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        metrics: ServiceMetrics,
        customers: Any,
        nps_tallies: Any,
        summaries: PartitionSummaries,
        alerts: Any,
        deadletter: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.customers = customers
        self.nps_tallies = nps_tallies
        self.summaries = summaries
        self.alerts_topic = alerts
        self.deadletter_topic = deadletter
        # Derived from the revenue figures of all partitions; a cache, not state.
        self.model = settings.churn_model()
        self.policy = policy_from(settings, model=self.model)
        self._rhythm_at = 0.0
        self._rhythm_fitting = False
        self._known_topics: set[str] = set()
        self._partition_counts: dict[str, int] = {}
        self._positions: dict[tuple[str, int], int] = {}
        # Trailing revenue of the customers of each partition this worker owns
        # (derived from the customers table, seeded on assignment, kept current
        # by the agent); other partitions' figures come from the summaries.
        self.pareto = ParetoMirror()
        # Parsed segment tallies of the owned partitions: partition -> segment|day -> tally
        # (a mirror of the tallies table, seeded on assignment, kept current by batches).
        self._tallies: dict[int, dict[str, list[int]]] = {}
        self._owned: set[int] = set()
        self.states = store.CustomerStore(customers, settings.state_cache_size)
        self.delivery = Delivery(
            app.producer, customers, nps_tallies, topic_alerts=settings.topic_alerts,
            topic_deadletter=settings.topic_deadletter, partitions_of=self._partitions,
            metrics=metrics, shadow=settings.shadow,
        )  # fmt: skip
        self.limits = Limits(
            max_event_bytes=settings.max_event_bytes, max_future_skew=settings.max_future_skew,
            sweep_limit=settings.sweep_batch_limit, topic_erasure=settings.topic_erasure,
            topic_alert_actions=settings.topic_alert_actions,
        )  # fmt: skip
        self.readmodel = ReadModel()
        self.kpis = ChurnKpis(settings, metrics, self.readmodel, summaries)
        self._seeded: set[int] = set()
        self._generation = -1  # the consumer group generation the mirrors were seeded in
        # newest event time per (event topic, partition): stream time's inputs
        self._topic_clock: dict[tuple[str, int], datetime] = {}
        self._event_topics = (settings.topic_surveys, settings.topic_purchases,
                              settings.topic_complaints)  # fmt: skip

    def _load(self, key: bytes) -> CustomerState | None:
        return self.states.get(key)

    async def _ensure_metadata(self, topics: Sequence[str]) -> None:
        """aiokafka refuses an explicit partition of a topic whose metadata it has not loaded."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        for topic in topics:
            if topic not in self._known_topics:
                await producer.partitions_for(topic)
                self._known_topics.add(topic)

    async def handle(self, events: Sequence[Any]) -> None:
        """One batch of Faust events: fold (pure), deliver (ordered), then update the caches.

        Faust's ``take_events`` acks the batch after this returns; everything the batch
        decided has reached the broker by then.
        """
        started = time.perf_counter()
        now = datetime.now(UTC)
        await self._ensure_metadata(
            [
                *self.settings.input_topics,
                self.customers.changelog_topic.get_topic_name(),
                self.nps_tallies.changelog_topic.get_topic_name(),
                self.summaries.topic,
            ]
        )
        # One event per input partition: RocksDB stores pick the partition database
        # from Faust's current event, and a changelog partition is its input partition.
        by_partition: dict[int, Any] = {}
        records: list[Record] = []
        for ev in events:
            msg = ev.message
            by_partition[msg.partition] = ev
            self._positions[(msg.topic, msg.partition)] = msg.offset + 1
            records.append(Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                  msg.timestamp, tuple(msg.headers or ())))  # fmt: skip
        bind = store.binder(by_partition)
        t0 = time.perf_counter()
        result = fold_batch(records, _View(self, bind, now), self.policy, self.limits, now)
        t1 = time.perf_counter()
        self.pareto.merge(result.revenues)
        raws = await self.delivery.deliver(result, bind)
        t2 = time.perf_counter()
        self._after(result, raws, now)
        phases = self.metrics.batch_phase_seconds
        phases.labels("fold").inc(t1 - t0)
        phases.labels("deliver").inc(t2 - t1)
        phases.labels("after").inc(time.perf_counter() - t2)
        self.metrics.batch_size.observe(len(events))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _after(self, result: BatchResult, raws: dict[bytes, bytes], now: datetime) -> None:
        """Caches and metrics, once the batch is delivered."""
        for part, at in result.clock.items():
            self.readmodel.advance(part, at, now)
        for tkey, tally in result.tallies.items():
            part, rest = segments.split_partition(tkey.decode())
            self._tallies.setdefault(part, {})[rest] = tally
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

    def watermark(
        self, partition: int, latest: Mapping[tuple[str, int], datetime]
    ) -> datetime | None:
        """Stream time of a partition after a batch (domain.batch.watermark)."""
        clock = self._topic_clock
        for tp, at in latest.items():
            if tp[1] == partition and (tp not in clock or at > clock[tp]):
                clock[tp] = at
        times = {t: clock[(t, partition)] for t in self._event_topics if (t, partition) in clock}
        behind = {t for t in self._event_topics if self._behind(t, partition)}
        restored = self.readmodel.newest(partition)
        if not behind and restored is not None:
            # Everything read: as far as any event got, including those of the stored
            # customers (after a restart the topic clocks start empty).
            times["stored customers"] = restored
        return watermark(self.readmodel.stream_time(partition), times, behind)

    def _behind(self, topic: str, partition: int) -> bool:
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
        done = self._positions.get((topic, partition))
        if done is None:
            done = consumer.committed_offset(tp) or 0
        return bool(end > done)

    def _partitions(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            n = self.app.consumer.topic_partitions(topic) or self.settings.partitions
            self._partition_counts[topic] = n
        return n

    def _well_placed(self, msg: Any, key: bytes) -> bool:
        """The record's key and partition are the ones customer_id implies."""
        if msg.key != key:
            return False
        return bool(key_partition(key, self._partitions(msg.topic)) == msg.partition)

    async def share_summaries(self) -> None:
        """Publish a summary of each owned partition; recompute the Pareto boundary."""
        owned = {tp.partition for tp in self.app.assignor.assigned_actives()
                 if tp.topic in self.settings.input_topics}  # fmt: skip
        recovered = self.app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        generation = self.app.consumer_generation_id
        if owned != self._owned or generation != self._generation or not recovered:
            # A rebalance: a partition may have been away and back, changed by another
            # worker meanwhile, so every mirror is rebuilt from the restored tables.
            self.summaries.forget(self._owned - owned)
            self.pareto.keep_only(())
            self._tallies.clear()
            self.readmodel.forget(self._owned | self._seeded)
            self._seeded.clear()
            self._owned = set()
            if not recovered:
                return
            await self._seed(owned)
            self._owned, self._generation = owned, generation
        wall = datetime.now(UTC)
        for p in owned:
            # Stream time moves once the topics that held it back are read, batch or not.
            at = self.watermark(p, {})
            if at is not None:
                self.readmodel.advance(p, at, wall)
        await self._ensure_metadata([self.summaries.topic])
        producer = self.app.producer
        for p in sorted(owned):
            revenues, customers = self.pareto.summary(p)
            summary = {
                "nps": dict(self._tallies.get(p, {})),
                "revenues": revenues,
                "customers": customers,
                "churn": self.kpis.shared(p),
            }  # fmt: skip
            await self.summaries.publish(producer, p, summary)
        if self.policy.value_policy.top_share > 0:
            self._recompute_cutoffs(force=True)
        await self._refit_rhythm()

    async def _refit_rhythm(self) -> None:
        """Fit the MBG/NBD population parameters on this worker's customers, now and then.

        In a thread (scipy releases the GIL for most of it) on at most 20,000
        customers, every ``churn_refit_interval`` seconds; until the first fit
        the shipped parameters are used.
        """
        due = time.monotonic() - self._rhythm_at >= self.settings.churn_refit_interval
        if not due or self._rhythm_fitting or len(self.readmodel) < 200:
            return
        self._rhythm_fitting = True
        try:
            rfm = self.readmodel.rfm(20_000)
            fitted = await asyncio.get_running_loop().run_in_executor(
                None, fit_mbgnbd, rfm, self.model.rhythm
            )
        finally:
            self._rhythm_fitting = False
            self._rhythm_at = time.monotonic()
        if fitted is not None:
            self.model = self.model.with_rhythm(fitted)
            self.policy = policy_from(self.settings, self.policy.cutoffs, self.model)
            log.info("churn: MBG/NBD refitted on %d customers: %s", len(rfm), fitted)

    async def _seed(self, partitions: set[int]) -> None:
        """Index newly owned partitions' customers: revenue mirror, read model, sweep schedule.

        Yields to the event loop every few thousand customers: at a million customers
        the pass takes tens of seconds, longer than a consumer-group session timeout.
        """
        if not partitions:
            return
        n = self.settings.partitions
        wall = datetime.now(UTC)
        for i, (key, raw) in enumerate(self.customers.items()):
            if i % 5000 == 4999:
                await asyncio.sleep(0)
            k = key if isinstance(key, bytes) else str(key).encode()
            if is_marker(k):
                continue
            p = key_partition(k, n)
            if p in partitions:
                self.pareto.put(p, k, self.readmodel.seed(k, p, raw, wall))
        for key, raw in self.nps_tallies.items():
            part, rest = segments.split_partition(_text(key))
            if part in partitions:
                self._tallies.setdefault(part, {})[rest] = store.load_tally(raw) or []
        self._seeded |= partitions
        self.pareto.dirty = True

    def _recompute_cutoffs(self, force: bool = False) -> Policy:
        """New Pareto boundaries into the policy (and the cutoff gauges)."""
        cutoffs = self.pareto.cutoffs(self.policy.value_policy.top_share, self._owned,
                                      self.summaries.remote, force)  # fmt: skip
        if cutoffs is None:
            return self.policy
        self.policy = policy_from(self.settings, cutoffs, self.model)
        for tier, cut in (("A", cutoffs.a), ("B", cutoffs.b)):
            if cut is not None:
                self.metrics.pareto_cutoff.labels(tier).set(cut)
        return self.policy

    def refresh_gauges(self) -> None:
        """Table-wide gauges (from the read model) and consumer lag, sampled (not per event)."""
        tiers, risks, lapsed = self.readmodel.counts()
        n = len(self.readmodel)
        self.metrics.customers.set(n)
        self.metrics.lapsed.set(lapsed)
        self.metrics.table_keys.labels("customer_state_by_customer").set(n)
        self.metrics.table_keys.labels("nps_tally_by_partition").set(len(self.nps_tallies))
        for t in ("A", "B", "C"):
            self.metrics.customers_by_tier.labels(t).set(tiers[t])
        for bucket in RISK_BUCKETS:
            self.metrics.customers_by_risk.labels(bucket).set(risks[bucket])
        pending = sum(self.readmodel.pending(p) for p in self._owned)
        self.metrics.sweep_pending.set(pending)
        ages: Counter[str] = Counter()
        overdue = 0
        for _, (_, _, _, opened, due, contacted), now in self.readmodel.open_cases():
            ages[case_age(now - opened)] += 1
            overdue += (not contacted) and now > due
        for bucket in CASE_AGES:
            self.metrics.cases_open.labels(bucket).set(ages[bucket])
        self.metrics.cases_overdue.set(overdue)
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in self.settings.input_topics:
                continue
            end = self.app.consumer.highwater(tp)
            done = self._positions.get((tp.topic, tp.partition))
            # Until this worker processes a record of a partition its position is
            # unknown here; the partition is then not reported rather than guessed.
            if end is not None and end >= 0 and done is not None:
                lag = max(0, end - done)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def segment_nps(self, window: str | None = None, segment: str | None = None) -> dict[str, Any]:
        """NPS per segment: owned partitions from the table, the others from their summaries."""
        items = list(self._local_tallies().items())
        for p, summary in self.summaries.remote.others(self._owned):
            items += [(f"{p}|{k}", v) for k, v in summary.get("nps", {}).items()]
        as_of = segments.latest_day(k for k, _ in items)
        windows = [window] if window else list(segments.WINDOWS)
        rows = []
        if as_of is not None:
            for w in windows:
                rows += [r.as_dict() for r in segments.summarize(items, w, as_of, segment)]
        return {"as_of": as_of.isoformat() if as_of else None, "segments": rows}

    def _local_tallies(self) -> dict[str, list[int]]:
        """Tallies of the partitions this worker owns (all it holds, before the first check)."""
        if not self._owned:
            return {_text(k): store.load_tally(v) or [] for k, v in self.nps_tallies.items()}
        return {f"{p}|{rest}": tally for p in self._owned
                for rest, tally in self._tallies.get(p, {}).items()}  # fmt: skip

    def at_risk(self, limit: int) -> list[dict[str, Any]]:
        """This worker's high-value customers by churn risk as of now, highest first.

        Candidates come from the read model (risk as of each customer's last look,
        at most one sweep step old); twice the limit are re-scored as of the stream
        time and re-ranked, so the list shows risk as of now.
        """
        states = []
        for row in self.readmodel.at_risk(2 * limit, self._owned or None):
            key = row.customer_id.encode()
            state = self._load(key)
            if state is None:
                continue
            state = state.model_copy(deep=True)  # the cache's copy stays as stored
            self._to_now(state, self.readmodel.stream_time(row.partition))
            states.append(state)
        states.sort(key=lambda s: (-s.churn_risk, s.customer_id))
        out = []
        for state in states[:limit]:
            out.append({
                "customer_id": state.customer_id,
                "churn_risk": state.churn_risk,
                "churn_reasons": state.churn_reasons,
                "churn_as_of": iso(state.churn_as_of),
                "p_alive": state.p_alive,
                "lapsed": state.lapsed_at is not None,
                "trailing_revenue": str(state.trailing_revenue),
                "currency": state.currency,
                "band": state.band,
                "latest_score": state.score,
                "open_complaints": state.open_complaints,
                "value_tier": state.value_tier,
            })  # fmt: skip
        return out

    def indexed_partitions(self) -> int:
        """Input partitions whose customers are in the read model (sweep and views ready)."""
        return len(self._seeded)

    async def refresh_churn_kpis(self) -> None:
        """Recount this worker's churn KPIs (shared with the next summaries) and set gauges.

        The recount is a pass over this worker's rows: it runs in a thread so the
        event loop (heartbeats, batches) keeps going at a million customers.
        """
        if self._owned and self._owned <= self._seeded:
            owned = set(self._owned)
            await asyncio.get_running_loop().run_in_executor(None, self.kpis.recount, owned)
            self.kpis.set_gauges(owned)
            if "churn_safety_line" in self.settings.alert_rules:
                alerts = self.kpis.safety_line_alerts(owned, datetime.now(UTC))
                futs = [await self.alerts_topic.send(key=a.customer_id.encode(), value=encode(a))
                        for a in alerts]  # fmt: skip
                await asyncio.gather(*futs)
                for a in alerts:
                    self.metrics.alerts.labels(a.rule).inc()

    def churn_report(self, period: Period, group: str | None) -> dict[str, Any]:
        """Churn per period over all workers' partitions (others as of their last summary)."""
        return self.kpis.report(period, self._owned, group)

    def cases(self, status: str | None, overdue: bool | None, limit: int) -> list[dict[str, Any]]:
        """This worker's open cases, oldest first, filtered by status and overdue."""
        out = []
        for row, (alert, rule, st, opened, due, contacted), now in self.readmodel.open_cases(
            self._owned or None
        ):
            late = (not contacted) and now > due
            if status not in (None, "open") and st != status:
                continue
            if overdue is not None and late != overdue:
                continue
            out.append({"customer_id": row.customer_id, "alert_id": alert, "rule": rule,
                        "status": st, "opened_at": _iso_ts(opened),
                        "contact_due_at": _iso_ts(due), "overdue": late,
                        "value_tier": row.tier})  # fmt: skip
            if len(out) >= limit:
                break
        return out

    def customer_view(self, state: CustomerState) -> dict[str, Any]:
        """One customer as of its partition's stream time (risk re-scored on read)."""
        key = state.customer_id.encode()
        now = self.readmodel.stream_time(key_partition(key, self.settings.partitions))
        self._to_now(state, now)
        return public_view(state, now, self.policy.churn_model.horizon_days)

    def _to_now(self, state: CustomerState, now: datetime | None) -> None:
        """Re-score a state read for display when its partition's stream time has moved on."""
        if now is not None and (state.churn_as_of is None or now > state.churn_as_of):
            refresh(state, self.policy, now)

    def refresh_segments(self) -> None:
        """NPS gauges per segment and window; drop tallies older than every window."""
        report = self.segment_nps()
        for row in report["segments"]:
            labels = (row["segment"], row["window"])
            self.metrics.segment_responses.labels(*labels).set(row["n"])
            if row["nps"] is not None:
                self.metrics.segment_nps.labels(*labels).set(row["nps"])
        if report["as_of"] is None:
            return
        # From the mirror of the owned partitions' tallies (a pass over the table's
        # keys in RocksDB every 10 s was a few percent of a busy worker's CPU).
        owned = dict.fromkeys(self._owned, True)
        as_of = datetime.fromisoformat(report["as_of"]).date()
        keys = [f"{p}|{rest}" for p in self._owned for rest in self._tallies.get(p, {})]
        for key in segments.expired(keys, as_of, owned):
            del self.nps_tallies[key.encode()]
            part, rest = segments.split_partition(key)
            self._tallies.get(part, {}).pop(rest, None)


CASE_AGES = ("under_1d", "1d_3d", "3d_7d", "over_7d")


def case_age(seconds: float) -> str:
    """The age bucket an open case is counted in."""
    days = seconds / 86400
    return "under_1d" if days < 1 else "1d_3d" if days < 3 else "3d_7d" if days < 7 else "over_7d"


def _iso_ts(ts: float) -> str | None:
    return iso(datetime.fromtimestamp(ts, UTC)) if ts else None


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


__all__ = ["RISK_BUCKETS", "BatchProcessor", "risk_bucket"]


class _View:
    """The stored state a batch folds against (domain.batch.BatchView) for one batch."""

    def __init__(self, proc: BatchProcessor, bind: store.Bind, now: datetime) -> None:
        self.proc, self.bind, self.now = proc, bind, now

    def customer(self, key: bytes, partition: int) -> CustomerState | None:
        self.bind(partition)
        return self.proc.states.get(key)

    def tally(self, key: bytes, partition: int) -> list[int] | None:
        self.bind(partition)
        return store.load_tally(self.proc.nps_tallies.data.get(key))

    def erased_at(self, key: bytes, partition: int) -> datetime | None:
        self.bind(partition)
        return self.proc.states.erased_at(key)

    def watermark(
        self, partition: int, latest: Mapping[tuple[str, int], datetime]
    ) -> datetime | None:
        return self.proc.watermark(partition, latest)

    def well_placed(self, record: Record, key: bytes) -> bool:
        return self.proc._well_placed(record, key)  # noqa: SLF001 - same module

    def due(self, partition: int, stream_time: datetime, limit: int) -> list[bytes]:
        if partition not in self.proc._seeded:  # noqa: SLF001 - not indexed yet
            return []
        self.proc.readmodel.advance(partition, stream_time, self.now)
        return self.proc.readmodel.take_due(partition, limit)

    def repolicy(self, revenues: dict[int, dict[bytes, float]]) -> Policy:
        proc = self.proc
        proc.pareto.merge(revenues)
        return proc._recompute_cutoffs() if proc.pareto.dirty else proc.policy  # noqa: SLF001
