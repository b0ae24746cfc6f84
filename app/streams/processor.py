"""Batch glue between Faust and the pure domain: decode, route, fold, alert, write once.

Per batch each touched customer is read from the table once and written once;
alerts are delivered before the segment tallies, the tallies before the
customer states, and each changelog before its local store, so a crash can
repeat an alert (same alert_id) but never lose one, and never count a survey
response twice or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP

from app.analysis.fit import fit_mbgnbd
from app.domain import churn_kpi, segments, value
from app.domain.alerts import Snapshot, evaluate, evaluate_time
from app.domain.churn import ChurnModel
from app.domain.churn_kpi import Period
from app.domain.customer import (
    CustomerState,
    Outcome,
    Policy,
    apply_action,
    fold,
    iso,
    next_check,
    public_view,
    refresh,
)
from app.domain.events import (
    Alert,
    Purchase,
    SurveyResponse,
    decode_action,
    decode_erasure,
    decode_event,
    encode,
)
from app.errors import InvalidEventError
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams.churnkpis import ChurnKpis
from app.streams.readmodel import RISK_BUCKETS, ReadModel, risk_bucket
from app.streams.summaries import PartitionSummaries, weighted
from app.streams.tables import bind_event, erasure_marker_key, is_marker, key_partition

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
        self._revenues: dict[int, dict[bytes, float]] = {}
        self._owned: set[int] = set()
        self._revenues_dirty = False
        self._cutoffs_at = 0.0
        self._cache: OrderedDict[bytes, tuple[bytes, CustomerState]] = OrderedDict()
        self.readmodel = ReadModel()
        self.kpis = ChurnKpis(settings, metrics, self.readmodel, summaries)
        self._seeded: set[int] = set()

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
        swept = 0
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
        # customers forgotten in this batch -> (partition, time of the request)
        erased: dict[bytes, tuple[int, datetime]] = {}
        for ev in events:
            msg = ev.message
            by_partition[msg.partition] = ev
            self._positions[(msg.topic, msg.partition)] = msg.offset + 1
            if msg.topic == self.settings.topic_erasure:
                sends.extend(await self._erasure(msg, work, alerts, erased))
                continue
            if msg.topic == self.settings.topic_alert_actions:
                sends.extend(await self._action(ev, work, carrier, erased, outcomes))
                continue
            try:
                event = decode_event(msg.value, max_bytes)
            except InvalidEventError as exc:
                sends.append(await self._dead_letter(msg, exc))
                continue
            if event.occurred_at > now + self.settings.max_future_skew:
                # Folding it would age the customer years ahead and prune its history.
                sends.append(await self._dead_letter(msg, InvalidEventError(
                    "future_event", f"occurred_at {event.occurred_at.isoformat()} is more than "
                    f"{self.settings.max_future_skew} ahead of the clock", "occurred_at")))
                continue
            key = event.customer_id.encode()
            if not self._well_placed(msg, key):
                sends.append(await self._reroute(msg, key))
                continue
            bind_event(ev)
            state = work.get(key)
            if state is None:
                if self._erased_before(key, event.occurred_at, erased):
                    outcomes[(event.event_type, "erased")] += 1
                    continue
                # After an erasure in this batch the customer starts again from nothing.
                state = None if key in erased else self._load(key)
                if state is None:
                    state = CustomerState(
                        customer_id=event.customer_id, currency=policy.base_currency
                    )
                work[key] = state
            carrier[key] = ev
            before = Snapshot.of(state)
            won_back, recovered = state.won_back, state.recovered
            try:
                outcome = fold(state, event, policy)
            except InvalidEventError as exc:
                sends.append(await self._dead_letter(msg, exc))
                continue
            mirror = self._revenues.setdefault(msg.partition, {})
            if isinstance(event, Purchase) or key not in mirror:
                mirror[key] = float(state.revenue_at(state.last_event_at or now))
                self._revenues_dirty = True
            if state.won_back > won_back:
                self.metrics.won_back.inc()
            if state.recovered > recovered:
                for group in _groups(state):
                    self.metrics.recovered.labels(group).inc(state.recovered - recovered)
            last_event[key] = event
            self.readmodel.advance(msg.partition, event.occurred_at, now)
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
        # The sweep: customers whose risk can have changed because stream time moved on.
        for part, ev in by_partition.items():
            if part not in self._seeded:
                continue
            for key in self.readmodel.take_due(part, self.settings.sweep_batch_limit):
                if key in work or key in erased:
                    continue
                bind_event(ev)
                state = self._load(key)
                if state is not None:
                    work[key], carrier[key] = state, ev
                    swept += 1
        # Every touched customer as of now, and the alerts that time raises.
        for key, state in work.items():
            msg = carrier[key].message
            stream_now = self.readmodel.stream_time(msg.partition) or state.last_event_at or now
            was_lapsed = state.lapsed_at is not None
            refresh(state, policy, stream_now)
            if state.lapsed_at is not None and not was_lapsed:
                self.metrics.lapses.inc()
            for alert in evaluate_time(state, policy, stream_now, now):
                alerts.append((alert, msg.timestamp))
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
            raw = dump_state(state)
            part = carrier[key].message.partition
            writes.append((key, raw, part))
            self._remember(key, raw, state)
            self._revenues.setdefault(part, {})[key] = float(state.trailing_revenue)
            stream_now = state.churn_as_of or now
            self.readmodel.record(key, part, state, next_check(state, policy, stream_now))
        # Dead letters and re-routed records are delivered with them, before the batch is
        # acked; a failure crashes the agent and the batch is replayed (harmless: event_id
        # dedup and the tally watermarks).
        await self._write(self.customers, writes, by_partition, sends)
        if erased:
            await self._forget(erased, work, by_partition)
        for (event_type, result), n in outcomes.items():
            self.metrics.events.labels(event_type, result).inc(n)
        self.metrics.batch_size.observe(len(events))
        if swept:
            self.metrics.swept.inc(swept)
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

    async def _erasure(
        self, msg: Any, work: dict[bytes, CustomerState], alerts: list[tuple[Alert, float]],
        erased: dict[bytes, tuple[int, datetime]],
    ) -> list[Awaitable[Any]]:  # fmt: skip
        """Note an erasure request: what the batch knew of the customer is dropped too."""
        try:
            request = decode_erasure(msg.value, self.settings.max_event_bytes)
        except InvalidEventError as exc:
            return [await self._dead_letter(msg, exc)]
        key = request.customer_id.encode()
        if not self._well_placed(msg, key):
            return [await self._reroute(msg, key)]
        work.pop(key, None)
        alerts[:] = [a for a in alerts if a[0].customer_id != request.customer_id]
        previous = erased.get(key)
        at = request.occurred_at if previous is None else max(previous[1], request.occurred_at)
        erased[key] = (msg.partition, at)
        self.metrics.erasures.inc()
        return []

    async def _action(
        self, ev: Any, work: dict[bytes, CustomerState], carrier: dict[bytes, Any],
        erased: dict[bytes, tuple[int, datetime]], outcomes: Counter[tuple[str, str]],
    ) -> list[Awaitable[Any]]:  # fmt: skip
        """Fold a CRM action into its case; an action for an unknown alert is dead-lettered."""
        msg = ev.message
        try:
            action = decode_action(msg.value, self.settings.max_event_bytes)
        except InvalidEventError as exc:
            return [await self._dead_letter(msg, exc)]
        key = action.customer_id.encode()
        if not self._well_placed(msg, key):
            return [await self._reroute(msg, key)]
        bind_event(ev)
        state = work.get(key)
        if state is None and key not in erased:
            state = self._load(key)
        if state is None:
            unknown = InvalidEventError("unknown_alert", "no such customer", "customer_id")
            return [await self._dead_letter(msg, unknown)]
        known = {c.alert_id: (c.acknowledged_at, c.contacted_at) for c in state.cases}
        try:
            outcome = apply_action(state, action)
        except InvalidEventError as exc:
            return [await self._dead_letter(msg, exc)]
        work[key], carrier[key] = state, ev
        outcomes[("alert_action", outcome.value)] += 1
        case = next((c for c in state.cases if c.alert_id == action.alert_id), None)
        if case is not None and action.alert_id in known:
            acked, contacted = known[action.alert_id]
            if acked is None and case.acknowledged_at is not None:
                self.metrics.case_time_to_ack.observe(
                    max(0.0, (case.acknowledged_at - case.opened_at).total_seconds()))
            if contacted is None and case.contacted_at is not None:
                self.metrics.case_time_to_contact.observe(
                    max(0.0, (case.contacted_at - case.opened_at).total_seconds()))
                for group in _groups(state):
                    self.metrics.cases_contacted.labels(group).inc()
        return []

    def _erased_before(self, key: bytes, at: datetime,
                       erased: dict[bytes, tuple[int, datetime]]) -> bool:  # fmt: skip
        """The customer asked to be forgotten after this event happened: drop the event."""
        if key in erased:
            return at <= erased[key][1]
        raw = self.customers.data.get(erasure_marker_key(key))
        return raw is not None and at <= datetime.fromisoformat(json.loads(raw)["erased_at"])

    async def _forget(
        self, erased: dict[bytes, tuple[int, datetime]], work: dict[bytes, CustomerState],
        by_partition: dict[int, Any],
    ) -> None:  # fmt: skip
        """Tombstones for the customers' state and alerts, a marker, then the local copies go.

        The changelog tombstone is what makes it stick: compaction removes the
        customer and a restore (fresh or own state dir) never brings it back; the
        marker (a hash of the id and the request time) drops the customer's older
        events if they are replayed or arrive late. A customer with events after
        the request in this batch keeps only those (its new state was just written).
        """
        changelog = self.customers.changelog_topic.get_topic_name()
        send = self.app.producer.send
        writes: list[tuple[bytes, bytes | None, int]] = []
        for key, (part, at) in erased.items():
            marker = json.dumps({"erased_at": at.astimezone(UTC).isoformat()}).encode()
            writes.append((erasure_marker_key(key), marker, part))
            if key not in work:
                writes.append((key, None, part))
        futs: list[Any] = [await send(changelog, k, v, p, None, None) for k, v, p in writes]
        futs += [await send(self.settings.topic_alerts, key, None, None, None, None)
                 for key in erased]  # fmt: skip
        await asyncio.gather(*futs)
        store = self.customers.data
        last: dict[int, int] = {}
        for (key, raw, part), fut in zip(writes, futs, strict=False):
            bind_event(by_partition[part])
            if raw is not None:
                store[key] = raw
            else:
                with contextlib.suppress(KeyError):
                    del store[key]
                self._cache.pop(key, None)
                self.readmodel.drop(key)
                self._revenues.get(part, {}).pop(key, None)
            last[part] = max(last.get(part, -1), fut.result().offset)
        for part, offset in last.items():
            store.set_persisted_offset(TP(changelog, part), offset)
        self._revenues_dirty = True

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
        if self.settings.shadow:
            # A shadow never writes to production inputs: it reads the copy production made.
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
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
            self.readmodel.forget(self._owned - owned)
            self._seeded -= self._owned - owned
            if recovered:
                await self._seed(owned - self._owned)
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
                "churn": self.kpis.shared(p),
            }  # fmt: skip
            await self.summaries.publish(producer, p, summary)
        if self.settings.high_value_top_share > 0:
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
                self._revenues.setdefault(p, {})[k] = self.readmodel.seed(k, p, raw, wall)
        self._seeded |= partitions
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
        self.policy = policy_from(self.settings, cutoffs, self.model)
        self._revenues_dirty = False
        self._cutoffs_at = now
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
        owned = {tp.partition: True for tp in self.app.assignor.assigned_actives()
                 if tp.topic in self.settings.input_topics}  # fmt: skip
        as_of = datetime.fromisoformat(report["as_of"]).date()
        keys = {_text(k): k for k in self.nps_tallies.keys()}
        for key in segments.expired(list(keys), as_of, owned):
            del self.nps_tallies[keys[key]]


CASE_AGES = ("under_1d", "1d_3d", "3d_7d", "over_7d")


def case_age(seconds: float) -> str:
    """The age bucket an open case is counted in."""
    days = seconds / 86400
    return "under_1d" if days < 1 else "1d_3d" if days < 3 else "3d_7d" if days < 7 else "over_7d"


def _iso_ts(ts: float) -> str | None:
    return iso(datetime.fromtimestamp(ts, UTC)) if ts else None


def _groups(state: CustomerState) -> list[str]:
    """Metric groups of a customer: overall, its value tier and its segment values."""
    seg = state.segment
    values = (seg.tier, seg.region, seg.channel, seg.product) if seg else (None,) * 4
    return churn_kpi.groups(state.value_tier, values)


def _alert_pending(state: CustomerState) -> bool:
    episode = state.detractor_episode
    return state.band == "detractor" and (episode is None or not episode.alerted)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


__all__ = ["RISK_BUCKETS", "BatchProcessor", "risk_bucket"]
