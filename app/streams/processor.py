"""Batch glue between Faust and the pure domain: decode, route, fold, alert, write once.

Per batch each touched customer is read from the table once and written once;
alerts are delivered before the segment tallies, the tallies before the
customer states, and each changelog before its local store, so a crash can
repeat an alert (same alert_id) but never lose one, and never count a survey
response twice or not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP

from app.domain import segments, value
from app.domain.alerts import Snapshot, evaluate
from app.domain.customer import CustomerState, Outcome, Policy, fold, refresh
from app.domain.events import Alert, Purchase, SurveyResponse, decode_event, encode
from app.errors import InvalidEventError
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams.summaries import PartitionSummaries, weighted
from app.streams.tables import bind_event, key_partition

log = logging.getLogger(__name__)


def policy_from(settings: Settings, cutoffs: value.RevenueCutoffs | None = None) -> Policy:
    """The domain policy the settings describe."""
    return Policy(
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


def load_state(raw: bytes | None) -> CustomerState | None:
    return None if raw is None else CustomerState.model_validate_json(raw)


def dump_state(state: CustomerState) -> bytes:
    return state.model_dump_json().encode()


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
        self.policy = policy_from(settings)
        self._known_topics: set[str] = set()
        self._partition_counts: dict[str, int] = {}
        self._positions: dict[tuple[str, int], int] = {}
        # Trailing revenue of the customers of each partition this worker owns
        # (derived from the customers table, seeded on assignment, kept current
        # by the agent); other partitions' figures come from the summaries.
        self._revenues: dict[int, dict[bytes, float]] = {}
        self._owned: set[int] = set()
        self._revenues_dirty = False
        self._cutoffs_at = 0.0
        self._cache: OrderedDict[bytes, tuple[bytes, CustomerState]] = OrderedDict()

    def _load(self, key: bytes) -> CustomerState | None:
        """Read a customer, reusing the parsed state when the stored bytes are unchanged.

        The table stays the source of truth: the cache is only used when the
        bytes in the table are exactly the bytes that produced the cached
        object, so a rebalance, a restore or a crashed batch can never serve a
        stale state.
        """
        raw = self.customers.data.get(key)
        if raw is None:
            return None
        hit = self._cache.get(key)
        if hit is not None and hit[0] == raw:
            self._cache.move_to_end(key)
            return hit[1]
        return load_state(raw)

    def _remember(self, key: bytes, raw: bytes, state: CustomerState) -> None:
        self._cache[key] = (raw, state)
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.state_cache_size:
            self._cache.popitem(last=False)

    async def _ensure_metadata(self, topics: Sequence[str]) -> None:
        """aiokafka refuses an explicit partition of a topic whose metadata it has not loaded."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        for topic in topics:
            if topic not in self._known_topics:
                await producer.partitions_for(topic)
                self._known_topics.add(topic)

    async def handle(self, events: Sequence[Any]) -> None:
        """Process one batch of Faust events (acked by take_events after we return)."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        work: dict[bytes, CustomerState] = {}
        carrier: dict[bytes, Any] = {}
        last_event: dict[bytes, Any] = {}
        alerts: list[tuple[Alert, float]] = []
        sends: list[Awaitable[Any]] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        tallies: dict[bytes, list[int]] = {}
        await self._ensure_metadata(
            [
                *self.settings.input_topics,
                self.customers.changelog_topic.get_topic_name(),
                self.nps_tallies.changelog_topic.get_topic_name(),
                self.summaries.topic,
            ]
        )
        policy = self.policy
        max_bytes = self.settings.max_event_bytes
        # One event per input partition: RocksDB stores pick the partition database
        # from Faust's current event, and a changelog partition is its input partition.
        by_partition: dict[int, Any] = {}
        for ev in events:
            msg = ev.message
            by_partition[msg.partition] = ev
            self._positions[(msg.topic, msg.partition)] = msg.offset + 1
            try:
                event = decode_event(msg.value, max_bytes)
            except InvalidEventError as exc:
                sends.append(await self._dead_letter(msg, exc))
                continue
            key = event.customer_id.encode()
            if not self._well_placed(msg, key):
                sends.append(await self._reroute(msg, key))
                continue
            bind_event(ev)
            carrier[key] = ev
            state = work.get(key)
            if state is None:
                state = self._load(key)
                if state is None:
                    state = CustomerState(
                        customer_id=event.customer_id, currency=policy.base_currency
                    )
                work[key] = state
            before = Snapshot.of(state)
            try:
                outcome = fold(state, event, policy)
            except InvalidEventError as exc:
                sends.append(await self._dead_letter(msg, exc))
                continue
            mirror = self._revenues.setdefault(msg.partition, {})
            if isinstance(event, Purchase) or key not in mirror:
                mirror[key] = float(state.revenue_at(state.last_event_at or now))
                self._revenues_dirty = True
            last_event[key] = event
            outcomes[(event.event_type, outcome.value)] += 1
            if isinstance(event, SurveyResponse) and outcome is not Outcome.DUPLICATE:
                day = event.occurred_at.astimezone(UTC).date()
                for seg in segments.segments_of(event):
                    tkey = segments.tally_key(msg.partition, seg, day).encode()
                    tally = tallies.get(tkey)
                    if tally is None:
                        stored = self.nps_tallies.data.get(tkey)
                        tally = json.loads(stored) if stored else segments.new_tally()
                        tallies[tkey] = tally
                    segments.add(tally, event.score, msg.offset)
            wall = time.time()
            self.metrics.event_latency.observe(max(0.0, wall - msg.timestamp))
            self.metrics.event_time_lag.observe(max(0.0, wall - event.occurred_at.timestamp()))
            for alert in evaluate(before, state, event, policy, now):
                alerts.append((alert, msg.timestamp))
        pending = [k for k, st in work.items() if _alert_pending(st)]
        if pending and self._revenues_dirty:
            # Those alerts may hinge on the Pareto boundary: include this batch's revenue.
            policy = self._recompute_cutoffs()
            for key in pending:
                state = work[key]
                for alert in evaluate(Snapshot.of(state), state, last_event[key], policy, now):
                    alerts.append((alert, carrier[key].message.timestamp))
        # Alerts first and confirmed: the table write then records them as sent.
        if alerts:
            delivered = [
                await self.alerts_topic.send(key=a.customer_id.encode(), value=encode(a))
                for a, _ in alerts
            ]
            await asyncio.gather(*delivered)
            sent_at = time.time()
            for alert, produced_at in alerts:
                self.metrics.alerts.labels(alert.rule).inc()
                self.metrics.alert_latency.observe(max(0.0, sent_at - produced_at))
        # Then the segment tallies, delivered before any customer state: a replay after a
        # crash finds either the customer's state (a duplicate, not tallied again) or the
        # tally's offset watermark, never a tally short of a response its customer has.
        tally_writes = [
            (tkey, json.dumps(tally).encode(), int(tkey.split(b"|", 1)[0]))
            for tkey, tally in tallies.items()
        ]
        await self._write(self.nps_tallies, tally_writes, by_partition)
        # Each touched customer is written once, straight to its changelog partition and,
        # once delivered, to the local store. (Faust's per-key table write path costs
        # about 3x more per record; recovery reads the same changelog.)
        writes = []
        for key, state in work.items():
            refresh(state, policy)
            raw = dump_state(state)
            writes.append((key, raw, carrier[key].message.partition))
            self._remember(key, raw, state)
            self._revenues.setdefault(writes[-1][2], {})[key] = float(state.trailing_revenue)
        # Dead letters and re-routed records are delivered with them, before the batch is
        # acked; a failure crashes the agent and the batch is replayed (harmless: event_id
        # dedup and the tally watermarks).
        await self._write(self.customers, writes, by_partition, sends)
        for (event_type, result), n in outcomes.items():
            self.metrics.events.labels(event_type, result).inc(n)
        self.metrics.batch_size.observe(len(events))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _write(
        self,
        table: Any,
        records: list[tuple[bytes, bytes, int]],
        by_partition: dict[int, Any],
        also: Sequence[Awaitable[Any]] = (),
    ) -> None:
        """Deliver (key, value, partition) records to the table's changelog, then store them.

        The local store only ever holds what its changelog has, so a restart on the
        same state directory and one on a fresh directory see the same state.
        """
        changelog = table.changelog_topic.get_topic_name()
        send = self.app.producer.send
        futs: list[Any] = [
            await send(changelog, key, raw, part, None, None) for key, raw, part in records
        ]
        if futs or also:
            await asyncio.gather(*futs, *also)
        store = table.data
        last: dict[int, int] = {}
        for (key, raw, part), fut in zip(records, futs, strict=True):
            bind_event(by_partition[part])
            store[key] = raw
            last[part] = max(last.get(part, -1), fut.result().offset)
        for part, offset in last.items():
            # Where the local store is up to date: a restart reads only the tail.
            store.set_persisted_offset(TP(changelog, part), offset)

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

    async def _reroute(self, msg: Any, key: bytes) -> Awaitable[Any]:
        """Re-produce a wrongly keyed record under customer_id, onto its proper partition."""
        n = self._partitions(msg.topic)
        headers = list(msg.headers or []) + [
            ("feedback-rekeyed-from", f"{msg.topic}/{msg.partition}/{msg.offset}".encode())
        ]
        self.metrics.rekeyed.labels(msg.topic).inc()
        fut: Awaitable[Any] = await self.app.producer.send(
            msg.topic, key, msg.value, key_partition(key, n), None, headers
        )
        return fut

    async def _dead_letter(self, msg: Any, exc: InvalidEventError) -> Awaitable[Any]:
        """Original key, bytes and headers, plus why and where from, in headers."""
        headers = list(msg.headers or []) + [
            ("dlq.reason", exc.reason.encode()),
            ("dlq.detail", exc.detail.encode()[:1000]),
            ("dlq.field", (exc.field or "").encode()),
            ("dlq.topic", msg.topic.encode()),
            ("dlq.partition", str(msg.partition).encode()),
            ("dlq.offset", str(msg.offset).encode()),
            ("dlq.timestamp_ms", str(int(msg.timestamp * 1000)).encode()),
        ]
        self.metrics.dead_letters.labels(exc.reason, msg.topic).inc()
        log.warning("dead-lettered %s/%s@%s: %s", msg.topic, msg.partition, msg.offset, exc)
        fut: Awaitable[Any] = await self.app.producer.send(
            self.settings.topic_deadletter, msg.key, msg.value or b"", None, None, headers
        )
        return fut

    async def share_summaries(self) -> None:
        """Publish a summary of each owned partition; recompute the Pareto boundary."""
        owned = {tp.partition for tp in self.app.assignor.assigned_actives()
                 if tp.topic in self.settings.input_topics}  # fmt: skip
        recovered = self.app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if owned != self._owned or not recovered:
            for p in set(self._revenues) - owned:
                del self._revenues[p]
            self.summaries.forget(self._owned - owned)
            if recovered:
                self._seed_revenues(owned - self._owned)
                self._owned = owned
            else:
                return
        await self._ensure_metadata([self.summaries.topic])
        producer = self.app.producer
        tallies = self._local_tallies()
        for p in sorted(owned):
            summary = {
                "nps": {k.split("|", 1)[1]: v for k, v in tallies.items()
                        if k.startswith(f"{p}|")},
                "revenues": weighted(list(self._revenues.get(p, {}).values())),
                "customers": len(self._revenues.get(p, {})),
            }  # fmt: skip
            await self.summaries.publish(producer, p, summary)
        if self.settings.high_value_top_share > 0:
            self._recompute_cutoffs(force=True)

    def _seed_revenues(self, partitions: set[int]) -> None:
        """Read the trailing revenue of newly owned partitions' customers from the table."""
        if not partitions:
            return
        n = self.settings.partitions
        for key, raw in self.customers.items():
            k = key if isinstance(key, bytes) else str(key).encode()
            p = key_partition(k, n)
            if p in partitions:
                found = _REVENUE.search(raw)
                self._revenues.setdefault(p, {})[k] = float(found.group(1)) if found else 0.0
        self._revenues_dirty = True

    def _all_revenues(self) -> list[tuple[float, float]]:
        points: list[tuple[float, float]] = []
        for p, mirror in self._revenues.items():
            if p in self._owned or not self._owned:
                points += [(v, 1.0) for v in mirror.values()]
        for p, summary in self.summaries.remote.items():
            if p not in self._owned:
                points += [(float(v), float(w)) for v, w in summary.get("revenues", [])]
        return points

    def _recompute_cutoffs(self, force: bool = False) -> Policy:
        """New boundaries from the mirror; at most once a second for very large bases."""
        now = time.monotonic()
        points = self._all_revenues()
        if not force and len(points) > 50_000 and now - self._cutoffs_at < 1.0:
            return self.policy
        cutoffs = value.cutoffs_from_weighted(points, self.settings.high_value_top_share)
        self.policy = policy_from(self.settings, cutoffs)
        self._revenues_dirty = False
        self._cutoffs_at = now
        for tier, cut in (("A", cutoffs.a), ("B", cutoffs.b)):
            if cut is not None:
                self.metrics.pareto_cutoff.labels(tier).set(cut)
        return self.policy

    def refresh_gauges(self) -> None:
        """Table-wide gauges and consumer lag, sampled (not per event).

        Tier and risk are read from the stored JSON with a regex rather than
        a full parse, so a large table costs microseconds per customer.
        """
        tiers: Counter[str] = Counter()
        risks: Counter[str] = Counter()
        n = 0
        for raw in self.customers.values():
            n += 1
            tier = _TIER.search(raw)
            risk = _RISK.search(raw)
            tiers[tier.group(1).decode() if tier else "C"] += 1
            risks[risk_bucket(float(risk.group(1)) if risk else 0.0)] += 1
        self.metrics.customers.set(n)
        self.metrics.table_keys.labels("customer_state_by_customer").set(n)
        self.metrics.table_keys.labels("nps_tally_by_partition").set(len(self.nps_tallies))
        for t in ("A", "B", "C"):
            self.metrics.customers_by_tier.labels(t).set(tiers[t])
        for bucket in RISK_BUCKETS:
            self.metrics.customers_by_risk.labels(bucket).set(risks[bucket])
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
        for p, summary in self.summaries.remote.items():
            if p not in self._owned:
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
        out = {}
        for k, v in self.nps_tallies.items():
            key = _text(k)
            if not self._owned or int(key.split("|", 1)[0]) in self._owned:
                out[key] = json.loads(v)
        return out

    def at_risk(self, limit: int) -> list[dict[str, Any]]:
        """This worker's high-value customers by churn risk, highest first."""
        found = []
        for key in list(self.customers.keys()):
            state = self._load(key if isinstance(key, bytes) else str(key).encode())
            if state is not None and state.high_value and state.churn_risk > 0:
                found.append(state)
        found.sort(key=lambda s: (-s.churn_risk, s.customer_id))
        return [
            {
                "customer_id": s.customer_id,
                "churn_risk": s.churn_risk,
                "churn_reasons": s.churn_reasons,
                "trailing_revenue": str(s.trailing_revenue),
                "currency": s.currency,
                "band": s.band,
                "latest_score": s.score,
                "open_complaints": s.open_complaints,
                "value_tier": s.value_tier,
            }  # fmt: skip
            for s in found[:limit]
        ]

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
        owned = {tp.partition: True for tp in self.app.assignor.assigned_actives()
                 if tp.topic in self.settings.input_topics}  # fmt: skip
        as_of = datetime.fromisoformat(report["as_of"]).date()
        keys = {_text(k): k for k in self.nps_tallies.keys()}
        for key in segments.expired(list(keys), as_of, owned):
            del self.nps_tallies[keys[key]]


def _alert_pending(state: CustomerState) -> bool:
    episode = state.detractor_episode
    return state.band == "detractor" and (episode is None or not episode.alerted)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


RISK_BUCKETS = ("low", "medium", "high")
_TIER = re.compile(rb'"value_tier":"([ABC])"')
_RISK = re.compile(rb'"churn_risk":([0-9.eE+-]+)')
_REVENUE = re.compile(rb'"trailing_revenue":"(-?[0-9.]+)"')


def risk_bucket(risk: float) -> str:
    """Low below 0.3, high from 0.6: the bands an operator acts on."""
    return "low" if risk < 0.3 else "medium" if risk < 0.6 else "high"
