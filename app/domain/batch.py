"""One batch of input records folded into new customer states, alerts and tallies: pure.

``fold_batch`` decides everything a batch does and performs nothing: no Faust, no
awaits, no writes. What it needs of stored state comes through a ``BatchView``
(reads of the tables and of the read model, the sweep's due customers and the
Pareto boundary); what it decided comes back as a ``BatchResult`` that the
streams layer delivers in a fixed order (app/streams/delivery.py). So the batch
logic is tested without a broker (tests/unit/domain/test_batch.py), and the
worker's agent reads like the design: fold the batch, deliver, flush.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from app.domain import churn_kpi, segments
from app.domain.alerts import Snapshot, evaluate, evaluate_time
from app.domain.customer import (
    CustomerState,
    Outcome,
    Policy,
    apply_action,
    fold,
    marks,
    refresh,
    sweep,
)
from app.domain.events import (
    Alert,
    AlertAction,
    AnyEvent,
    ErasureRequest,
    Purchase,
    SurveyResponse,
    decode_action,
    decode_erasure,
    decode_event,
)
from app.errors import InvalidEventError

# Stream time follows event time, capped at the wall clock plus this, so one event
# stamped years ahead cannot age a whole partition.
FUTURE_TOLERANCE = timedelta(hours=1)
_Keyed = TypeVar("_Keyed", ErasureRequest, AlertAction)


@dataclass(frozen=True, slots=True)
class Record:
    """What the batch needs of one Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # produce time, epoch seconds
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings the fold obeys."""

    max_event_bytes: int
    max_future_skew: timedelta
    sweep_limit: int
    topic_erasure: str
    topic_alert_actions: str


class BatchView(Protocol):
    """Stored state as the batch sees it (the streams layer implements it)."""

    def customer(self, key: bytes, partition: int) -> CustomerState | None:
        """The stored state of a customer; the caller may change the object it gets."""
        ...

    def tally(self, key: bytes, partition: int) -> list[int] | None: ...

    def erased_at(self, key: bytes, partition: int) -> datetime | None:
        """When the customer asked to be forgotten, if it did."""
        ...

    def watermark(
        self, partition: int, latest: Mapping[tuple[str, int], datetime]
    ) -> datetime | None:
        """The partition's stream time once the batch's newest event times per input topic
        (``latest``) are known: see ``watermark`` below."""
        ...

    def well_placed(self, record: Record, key: bytes) -> bool:
        """The record's key and partition are the ones its customer_id implies."""
        ...

    def due(self, partition: int, stream_time: datetime, limit: int) -> list[bytes]:
        """Customers of the partition whose risk may have moved by ``stream_time`` (taken)."""
        ...

    def repolicy(self, revenues: dict[int, dict[bytes, float]]) -> Policy:
        """The policy with the Pareto boundary recomputed including these revenues."""
        ...


@dataclass
class BatchResult:
    """What a batch decided, in the order it is delivered (see delivery.py)."""

    alerts: list[tuple[Alert, float]] = field(default_factory=list)  # with produce time
    tallies: dict[bytes, list[int]] = field(default_factory=dict)
    # key -> (partition, state): every customer to write (touched, acted on, or swept
    # with something worth storing)
    states: dict[bytes, tuple[int, CustomerState]] = field(default_factory=dict)
    # swept customers re-scored as of now with nothing worth storing (not written; the
    # read model takes their new risk and next check)
    rescored: dict[bytes, tuple[int, CustomerState]] = field(default_factory=dict)
    dead: list[tuple[Record, InvalidEventError]] = field(default_factory=list)
    reroute: list[tuple[Record, bytes]] = field(default_factory=list)
    erased: dict[bytes, tuple[int, datetime]] = field(default_factory=dict)
    # trailing revenue as of each changed customer's last event, per partition
    revenues: dict[int, dict[bytes, float]] = field(default_factory=dict)
    clock: dict[int, datetime] = field(default_factory=dict)  # stream time per partition
    # the newest event time per (input topic, partition) in this batch
    topic_clock: dict[tuple[str, int], datetime] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    won_back: int = 0
    lapses: int = 0
    erasures: int = 0
    swept: int = 0
    recovered: Counter[str] = field(default_factory=Counter)  # per metric group
    contacted: Counter[str] = field(default_factory=Counter)  # per metric group
    time_to_ack: list[float] = field(default_factory=list)
    time_to_contact: list[float] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (produced, occurred)

    def reject(self, record: Record, error: InvalidEventError) -> None:
        """Dead-letter ``record``, keeping ``error`` without its traceback and context.

        A caught exception's traceback holds the frame that caught it, and through each
        frame's caller (f_back) the agent's: kept here as it was, it made a reference
        cycle (error, traceback, fold_batch's frame, this result, error) that kept every
        batch with a dead letter (records, events, states, Faust's messages) alive until
        a collection found it. A worker at 100,000 customers held 200,000 dead batches'
        records that way and the collector stopped it for 5 s to free them (README,
        Benchmark). The reason, message and field are all a dead letter needs.
        """
        error.__traceback__ = None
        error.__context__ = None
        error.__cause__ = None
        self.dead.append((record, error))


def fold_batch(
    records: Sequence[Record], view: BatchView, policy: Policy, limits: Limits, now: datetime
) -> BatchResult:
    """Fold ``records`` (in partition order) into a BatchResult.

    Per record: decode (a bad record becomes a dead letter with its reason), check
    the key and partition (a misplaced record is re-routed), drop what an erasure
    covers, fold into the customer's state (each customer read once per batch),
    count survey responses into the segment tallies (with the input offset as a
    watermark, so a replay counts nothing twice) and evaluate the event's alerts.
    Then, once per batch: a second pass for detractor alerts that hinge on the Pareto
    boundary this batch's revenue moved, the sweep (customers due for a re-score as
    stream time moves), and every touched customer re-scored as of its partition's
    stream time, with the alerts that time raises.
    """
    out = BatchResult()
    work: dict[bytes, CustomerState] = {}
    part_of: dict[bytes, int] = {}
    produced: dict[bytes, float] = {}
    last_event: dict[bytes, AnyEvent] = {}
    last_produced: dict[int, float] = {}  # per partition: the newest record's produce time
    for rec in records:
        last_produced[rec.partition] = rec.timestamp
        if rec.topic == limits.topic_erasure:
            _erasure(rec, view, limits, work, out)
            continue
        if rec.topic == limits.topic_alert_actions:
            _action(rec, view, limits, work, part_of, produced, out)
            continue
        try:
            event = decode_event(rec.value, limits.max_event_bytes)
        except InvalidEventError as exc:
            out.reject(rec, exc)
            continue
        if event.occurred_at > now + limits.max_future_skew:
            # Folding it would age the customer years ahead and prune its history.
            out.reject(rec, InvalidEventError(
                "future_event", f"occurred_at {event.occurred_at.isoformat()} is more than "
                f"{limits.max_future_skew} ahead of the clock", "occurred_at"))  # fmt: skip
            continue
        key = event.customer_id.encode()
        if not view.well_placed(rec, key):
            out.reroute.append((rec, key))
            continue
        state = work.get(key)
        if state is None:
            if _erased_before(key, rec.partition, event.occurred_at, view, out):
                out.outcomes[(event.event_type, "erased")] += 1
                continue
            # After an erasure in this batch the customer starts again from nothing.
            state = None if key in out.erased else view.customer(key, rec.partition)
            if state is None:
                state = CustomerState(customer_id=event.customer_id, currency=policy.base_currency)
            work[key] = state
        part_of[key], produced[key] = rec.partition, rec.timestamp
        before = Snapshot.of(state)
        won_back, recovered = state.won_back, state.recovered
        try:
            outcome = fold(state, event, policy)
        except InvalidEventError as exc:
            out.reject(rec, exc)
            continue
        mirror = out.revenues.setdefault(rec.partition, {})
        if isinstance(event, Purchase) or key not in mirror:
            mirror[key] = float(state.revenue_at(state.last_event_at or now))
        out.won_back += state.won_back - won_back
        if state.recovered > recovered:
            for group in groups_of(state):
                out.recovered[group] += state.recovered - recovered
        last_event[key] = event
        at = min(event.occurred_at, now + FUTURE_TOLERANCE)
        tp = (rec.topic, rec.partition)
        if tp not in out.topic_clock or at > out.topic_clock[tp]:
            out.topic_clock[tp] = at
        out.outcomes[(event.event_type, outcome.value)] += 1
        if isinstance(event, SurveyResponse) and outcome is not Outcome.DUPLICATE:
            day = event.occurred_at.astimezone(UTC).date()
            for seg in segments.segments_of(event):
                tkey = segments.tally_key(rec.partition, seg, day).encode()
                tally = out.tallies.get(tkey)
                if tally is None:
                    tally = view.tally(tkey, rec.partition) or segments.new_tally()
                    out.tallies[tkey] = tally
                segments.add(tally, event.score, rec.offset)
        out.latencies.append((rec.timestamp, event.occurred_at.timestamp()))
        for alert in evaluate(before, state, event, policy, now):
            out.alerts.append((alert, rec.timestamp))
    # Every partition of the batch: a record that was dead-lettered still moved its topic
    # along, which can let stream time move.
    for part in {rec.partition for rec in records}:
        mark = view.watermark(part, out.topic_clock)
        if mark is not None:
            out.clock[part] = mark
    pending = [k for k, st in work.items() if k in last_event and alert_pending(st)]
    if pending and out.revenues:
        # Those alerts may hinge on the Pareto boundary: include this batch's revenue.
        policy = view.repolicy(out.revenues)
        for key in pending:
            state = work[key]
            for alert in evaluate(Snapshot.of(state), state, last_event[key], policy, now):
                out.alerts.append((alert, produced[key]))
    # Every touched customer as of now, and the alerts that time raises.
    for key, state in work.items():
        part = part_of[key]
        # Stream time unknown (a lagging topic has shown nothing yet): as of the customer's
        # last purchase rather than its newest event, which may be read ahead of them.
        stream_now = out.clock.get(part) or state.last_purchase_at or state.last_event_at or now
        was_lapsed = state.lapsed_at is not None
        refresh(state, policy, stream_now)
        if state.lapsed_at is not None and not was_lapsed:
            out.lapses += 1
        for alert in evaluate_time(state, policy, stream_now, now):
            out.alerts.append((alert, produced[key]))
        out.states[key] = (part, state)
    # One re-score per record, shared among the batch's partitions by their records.
    per_partition = Counter(rec.partition for rec in records)
    _sweep({part: n for part, n in per_partition.items()}, view, policy, now, out,
           last_produced)  # fmt: skip
    return out


def sweep_batch(
    partitions: Collection[int], view: BatchView, policy: Policy, limit: int, now: datetime
) -> BatchResult:
    """The sweep on its own, while no records wait: at most ``limit`` customers due at
    their partition's stream time, shared evenly among ``partitions``.

    A batch sweeps one customer per record, which keeps pace with a backfill (about as
    many customers fall due as events arrive) but not with a jump of stream time: live
    traffic after a replayed history makes every customer due at once. That backlog is
    worked off here, in chunks the size of a small batch, whenever the worker has
    nothing else to do, so it neither waits for traffic nor delays an event by more
    than one chunk. Alerts it raises carry ``now`` as their produce time.
    """
    out = BatchResult()
    parts = sorted(partitions)
    for part in parts:
        mark = view.watermark(part, {})
        if mark is not None:
            out.clock[part] = mark
    if parts and limit > 0:
        share = -(-limit // len(parts))  # rounded up
        wall = now.timestamp()
        _sweep(dict.fromkeys(parts, share), view, policy, now, out, dict.fromkeys(parts, wall))
    return out


def _sweep(
    shares: Mapping[int, int], view: BatchView, policy: Policy, now: datetime,
    out: BatchResult, last_produced: Mapping[int, float],
) -> None:  # fmt: skip
    """Re-score the customers whose risk can have changed because stream time moved on.

    At most ``shares[partition]`` customers of each partition, earliest due first, as of
    its stream time: the sweep's work stays in proportion to what calls it (a batch's
    records, or an idle chunk: sweep_batch), so a jump of stream time cannot stall a
    batch's events behind a pass over every customer, and a customer due several times
    while the sweep was behind is re-scored once. In a backfill there are about as
    many due customers as events, so a swept customer is only written when the
    re-score changed a fact (a lapse, the tier, a reply breach) or raised an alert;
    otherwise it goes to ``rescored``, for the read model.
    """
    for part in sorted(shares):
        stream_at = out.clock.get(part)
        if stream_at is None:
            continue
        for key in view.due(part, stream_at, shares[part]):
            if key in out.states or key in out.erased:
                continue
            state = view.customer(key, part)
            if state is None:
                continue
            out.swept += 1
            was_lapsed = state.lapsed_at is not None
            alerts, write = sweep_one(state, policy, stream_at, now)
            if state.lapsed_at is not None and not was_lapsed:
                out.lapses += 1
            out.alerts += [(alert, last_produced[part]) for alert in alerts]
            if write:
                out.states[key] = (part, state)
            else:
                out.rescored[key] = (part, state)


def sweep_one(
    state: CustomerState, policy: Policy, stream_at: datetime, now: datetime
) -> tuple[list[Alert], bool]:
    """Re-score one swept customer as of ``stream_at``: the alerts that time raises, and
    whether the state must be written (a fact changed or it alerted)."""
    before = marks(state)
    sweep(state, policy, stream_at)
    alerts = evaluate_time(state, policy, stream_at, now)
    return alerts, bool(alerts) or marks(state) != before


def watermark(
    current: datetime | None, latest: Mapping[str, datetime], behind: Collection[str]
) -> datetime | None:
    """Stream time of a partition: how far event time has got on all its input topics.

    The topics (surveys, purchases, complaints) are fetched independently, so one of
    them can be read far ahead of another: in a backfill the small complaints topic
    is read to its end while purchases are months behind. Taking the newest event
    time over all topics would then re-score every customer as of months later than
    its own events, lapse it and alert on it. So stream time is the oldest of the
    newest event times of the topics that still have records to read (``behind``);
    a topic read to its end does not hold it back. It never goes backwards, and it
    does not move while a topic that is behind has not delivered anything yet.

    ``latest``: topic -> newest event time seen on this partition of it.
    """
    lagging = [t for t in behind if t in latest]
    if len(lagging) < len(behind):
        return current  # a topic with records to read has shown no event time yet
    times = [latest[t] for t in lagging] if lagging else list(latest.values())
    if not times:
        return current
    candidate = min(times) if lagging else max(times)
    return candidate if current is None or candidate > current else current


def _erased_before(
    key: bytes, partition: int, at: datetime, view: BatchView, out: BatchResult
) -> bool:
    """The customer asked to be forgotten after this event happened: drop the event."""
    if key in out.erased:
        return at <= out.erased[key][1]
    erased_at = view.erased_at(key, partition)
    return erased_at is not None and at <= erased_at


def _admit(
    rec: Record, decode: Callable[[bytes | None, int], _Keyed], view: BatchView,
    limits: Limits, out: BatchResult,
) -> tuple[_Keyed, bytes] | None:  # fmt: skip
    """Decode a control record and check its placement; else dead-letter or re-route it."""
    try:
        decoded = decode(rec.value, limits.max_event_bytes)
    except InvalidEventError as exc:
        out.reject(rec, exc)
        return None
    key = decoded.customer_id.encode()
    if not view.well_placed(rec, key):
        out.reroute.append((rec, key))
        return None
    return decoded, key


def _erasure(
    rec: Record, view: BatchView, limits: Limits, work: dict[bytes, CustomerState],
    out: BatchResult,
) -> None:  # fmt: skip
    """Note an erasure request: what the batch knew of the customer is dropped too."""
    admitted = _admit(rec, decode_erasure, view, limits, out)
    if admitted is None:
        return
    request, key = admitted
    work.pop(key, None)
    out.alerts[:] = [a for a in out.alerts if a[0].customer_id != request.customer_id]
    previous = out.erased.get(key)
    at = request.occurred_at if previous is None else max(previous[1], request.occurred_at)
    out.erased[key] = (rec.partition, at)
    out.erasures += 1


def _action(
    rec: Record, view: BatchView, limits: Limits, work: dict[bytes, CustomerState],
    part_of: dict[bytes, int], produced: dict[bytes, float], out: BatchResult,
) -> None:  # fmt: skip
    """Fold a CRM action into its case; an action for an unknown alert is dead-lettered."""
    admitted = _admit(rec, decode_action, view, limits, out)
    if admitted is None:
        return
    action, key = admitted
    state = work.get(key)
    if state is None and key not in out.erased:
        state = view.customer(key, rec.partition)
    if state is None:
        out.reject(rec, InvalidEventError("unknown_alert", "no such customer", "customer_id"))
        return
    known = {c.alert_id: (c.acknowledged_at, c.contacted_at) for c in state.cases}
    try:
        outcome = apply_action(state, action)
    except InvalidEventError as exc:
        out.reject(rec, exc)
        return
    work[key], part_of[key], produced[key] = state, rec.partition, rec.timestamp
    out.outcomes[("alert_action", outcome.value)] += 1
    case = next((c for c in state.cases if c.alert_id == action.alert_id), None)
    if case is not None and action.alert_id in known:
        acked, contacted = known[action.alert_id]
        if acked is None and case.acknowledged_at is not None:
            waited = (case.acknowledged_at - case.opened_at).total_seconds()
            out.time_to_ack.append(max(0.0, waited))
        if contacted is None and case.contacted_at is not None:
            out.time_to_contact.append(
                max(0.0, (case.contacted_at - case.opened_at).total_seconds()))
            for group in groups_of(state):
                out.contacted[group] += 1


def groups_of(state: CustomerState) -> list[str]:
    """Metric groups of a customer: overall, its value tier and its segment values."""
    seg = state.segment
    values = (seg.tier, seg.region, seg.channel, seg.product) if seg else (None,) * 4
    return churn_kpi.groups(state.value_tier, values)


def alert_pending(state: CustomerState) -> bool:
    """A detractor not yet alerted in this episode: the Pareto boundary may still make it one."""
    episode = state.detractor_episode
    return state.band == "detractor" and (episode is None or not episode.alerted)
