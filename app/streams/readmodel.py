"""What HTTP and the gauges read, and the sweep's schedule: one compact row per customer.

Derived from the customers table (rebuilt by one scan when partitions are
assigned, then kept current by every write), so it is a cache, never state.
The schedule is a calendar queue per partition of when time next matters for each
customer (schedule.py): the sweep takes only what is due as stream time passes, so
re-scoring costs
in proportion to the customers whose risk can have changed, not the table.

Stream time of a partition (one clock per partition number: the inputs are
co-partitioned) is computed by ``domain.batch.watermark`` and kept here,
clamped to the wall clock plus ``FUTURE_TOLERANCE`` so one event stamped years
ahead cannot lapse everyone. Replays and simulations therefore age customers
exactly as live traffic does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import churn_kpi
from app.domain.batch import FUTURE_TOLERANCE
from app.domain.customer import CustomerState
from app.streams.schedule import Schedule

RISK_BUCKETS = ("low", "medium", "high")


def risk_bucket(risk: float) -> str:
    """Low below 0.3, high from 0.6: the bands an operator acts on."""
    return "low" if risk < 0.3 else "medium" if risk < 0.6 else "high"


CaseRow = tuple[str, str, str, float, float, bool]  # alert, rule, status, opened, due, contacted


@dataclass(slots=True)
class Row:
    """One customer as the read side needs it (about 200 bytes)."""

    partition: int
    customer_id: str
    risk: float
    high_value: bool
    tier: str
    revenue: float
    first_seen: float  # epoch seconds
    lapsed: bool
    lapses: tuple[tuple[float, float, float | None], ...]  # (at, revenue, won back at)
    segment: tuple[str | None, str | None, str | None, str | None]  # tier, region, ch., product
    rfm: tuple[int, float, float] | None  # MBG/NBD: repeat purchases, first and last (epoch s)
    # open cases: (alert_id, rule, status, opened, contact due, contacted) with epoch seconds
    cases: tuple[CaseRow, ...] = ()


def _ts(at: datetime | None) -> float:
    return at.timestamp() if at is not None else 0.0


class ReadModel:
    """Rows by key, the sweep's schedule and the stream clock of each partition."""

    def __init__(self) -> None:
        self.rows: dict[bytes, Row] = {}
        self._schedules: dict[int, Schedule] = {}  # a key's partition never changes
        self._clock: dict[int, datetime] = {}
        self._newest: dict[int, datetime] = {}
        # The churn KPIs' tally, and the rows whose lifecycle changed since it last took
        # them in: key -> the row as the tally has it (None: not in it). See kpi_sync.
        self.kpi = churn_kpi.Tally()
        self._kpi_dirty: dict[bytes, Row | None] = {}
        self._kpi_syncing: dict[bytes, Row | None] = {}

    # -- the stream clock ------------------------------------------------------------

    def advance(self, partition: int, occurred_at: datetime, wall: datetime) -> None:
        at = min(occurred_at, wall + FUTURE_TOLERANCE)
        if partition not in self._clock or at > self._clock[partition]:
            self._clock[partition] = at

    def stream_time(self, partition: int) -> datetime | None:
        return self._clock.get(partition)

    def newest(self, partition: int) -> datetime | None:
        """The newest event time among the stored customers of a partition (from seeding)."""
        return self._newest.get(partition)

    # -- rows and schedule -----------------------------------------------------------

    def record(self, key: bytes, partition: int, state: CustomerState, due: datetime) -> None:
        seg = state.segment
        self._put(key, Row(
            partition, state.customer_id, state.churn_risk, state.high_value, state.value_tier,
            float(state.trailing_revenue), _ts(state.first_seen_at or state.first_purchase_at
                                               or state.last_event_at),
            state.lapsed_at is not None,
            tuple((_ts(x.at), float(x.revenue), _ts(x.won_back_at) if x.won_back_at else None)
                  for x in state.lapses),
            _segment((seg.tier, seg.region, seg.channel, seg.product) if seg else _NO_SEGMENT),
            _rfm_of(state),
            tuple((c.alert_id, c.rule, c.status, c.opened_at.timestamp(),
                   c.contact_due_at.timestamp(), c.contacted_at is not None)
                  for c in state.cases if c.is_open),
        ))  # fmt: skip
        self.schedule(key, partition, due.timestamp())

    def _put(self, key: bytes, row: Row) -> None:
        old = self.rows.get(key)
        self.rows[key] = row
        if old is None or _lifecycle(old) != _lifecycle(row):
            self._kpi_changed(key, old)

    def _kpi_changed(self, key: bytes, old: Row | None) -> None:
        """Note that ``key``'s row no longer matches the tally (``old`` is what the tally
        has, unless the key is already noted or being taken in)."""
        if key not in self._kpi_dirty and key not in self._kpi_syncing:
            self._kpi_dirty[key] = old

    def kpi_sync(self, limit: int) -> bool:
        """Take up to ``limit`` changed rows into the KPI tally; True while some of the rows
        that had changed when this round began are left.

        A round takes the rows noted so far; rows that change meanwhile wait for the
        next round, except those of the round not taken in yet (taken in as they are
        then). Bounded steps, so the caller can give the event loop back in between.
        """
        syncing = self._kpi_syncing
        if not syncing:
            syncing = self._kpi_syncing = self._kpi_dirty
            self._kpi_dirty = {}
        for _ in range(min(limit, len(syncing))):
            key, before = syncing.popitem()
            row = self.rows.get(key)
            if before is not None and row is not None and before.partition == row.partition:
                self.kpi.move(row.partition, before, row)
                continue
            if before is not None:
                self.kpi.add(before.partition, before, -1)
            if row is not None:
                self.kpi.add(row.partition, row)
        return bool(syncing)

    def schedule(self, key: bytes, partition: int, due: float) -> None:
        """(Re)schedule ``key``: its entry moves to ``due`` (schedule.py: why not a heap)."""
        entries = self._schedules.get(partition)
        if entries is None:
            entries = self._schedules[partition] = Schedule()
        entries.move(key, due)

    def take_due(self, partition: int, limit: int) -> list[bytes]:
        """Keys whose next check is at or before the partition's stream time (at most limit),
        earliest first; they are no longer scheduled."""
        now = self._clock.get(partition)
        entries = self._schedules.get(partition)
        if now is None or entries is None or limit <= 0:
            return []
        return entries.take(now.timestamp(), limit)

    def has_due(self, partition: int) -> bool:
        """Some customer's next check is at or before the partition's stream time."""
        now = self._clock.get(partition)
        entries = self._schedules.get(partition)
        return entries is not None and now is not None and entries.any_due(now.timestamp())

    def pending(self, partition: int) -> int:
        """Customers of the partition with a scheduled re-score."""
        entries = self._schedules.get(partition)
        return len(entries) if entries is not None else 0

    def due(self, partition: int) -> int:
        """Customers whose next check is at or before the partition's stream time: the
        sweep's backlog (after stream time jumps, every customer at once). A pass over
        the partition's buckets: for the sampled gauges."""
        now = self._clock.get(partition)
        entries = self._schedules.get(partition)
        if now is None or entries is None:
            return 0
        return entries.count(now.timestamp())

    def drop(self, key: bytes) -> None:
        """An erased customer: its row and its schedule go."""
        row = self.rows.pop(key, None)
        if row is not None:
            self._kpi_changed(key, row)
        entries = self._schedules.get(row.partition) if row is not None else None
        if entries is not None:
            entries.remove(key)

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        if not gone:
            return
        for key in [k for k, r in self.rows.items() if r.partition in gone]:
            del self.rows[key]
        self.kpi.forget(gone)
        for noted in (self._kpi_dirty, self._kpi_syncing):
            for key, before in noted.items():
                if before is not None and before.partition in gone:
                    noted[key] = None  # its partition's tally is gone with it
        for p in gone:
            self._schedules.pop(p, None)
            self._clock.pop(p, None)
            self._newest.pop(p, None)

    def seed(self, key: bytes, partition: int, d: Mapping[str, Any], wall: datetime) -> float:
        """Index one stored state from its fields (``store.load_fields``, no full parse);
        returns its trailing revenue.

        States written before the churn fields existed get defaults. Its first check is
        due one day after it was last scored, so a restart spreads the re-scoring out.
        """
        last = _dt(d.get("last_event_at"))
        # Stream time comes back as the newest time a customer was scored at: that was
        # stream time then (domain.batch.watermark), where a customer's own newest event
        # may have been read ahead of another topic. (States from before churn_as_of: last.)
        scored_at = _dt(d.get("churn_as_of")) or last
        if scored_at is not None:
            self.advance(partition, scored_at, wall)
        if last is not None and (partition not in self._newest or last > self._newest[partition]):
            self._newest[partition] = last
        seg = d.get("segment") or {}
        revenue = float(d.get("trailing_revenue", 0) or 0)
        lapses = tuple((_ts(_dt(x["at"])), float(x["revenue"]),
                        _ts(_dt(x.get("won_back_at"))) if x.get("won_back_at") else None)
                       for x in d.get("lapses", []))  # fmt: skip
        first = _dt(d.get("first_seen_at")) or _dt(d.get("first_purchase_at")) or last
        self._put(key, Row(
            partition, d["customer_id"], float(d.get("churn_risk", 0.0)),
            bool(d.get("high_value", False)), str(d.get("value_tier", "C")), revenue,
            _ts(first), d.get("lapsed_at") is not None, lapses,
            _segment((seg.get("tier"), seg.get("region"), seg.get("channel"), seg.get("product"))),
            _rfm_seed(d),
            tuple((c["alert_id"], c["rule"], c["status"], _ts(_dt(c["opened_at"])),
                   _ts(_dt(c["contact_due_at"])), c.get("contacted_at") is not None)
                  for c in d.get("cases", []) if c["status"] not in ("resolved", "dismissed")),
        ))  # fmt: skip
        scored = _dt(d.get("churn_as_of")) or last or wall
        self.schedule(key, partition, (scored + timedelta(days=1)).timestamp())
        return revenue

    # -- reads -----------------------------------------------------------------------

    def at_risk(self, limit: int, partitions: set[int] | None = None) -> list[Row]:
        found = [r for r in self.rows.values() if r.high_value and r.risk > 0
                 and (partitions is None or r.partition in partitions)]  # fmt: skip
        found.sort(key=lambda r: (-r.risk, r.customer_id))
        return found[:limit]

    def counts(self) -> tuple[Counter[str], Counter[str], int]:
        tiers: Counter[str] = Counter()
        risks: Counter[str] = Counter()
        lapsed = 0
        for r in self.rows.values():
            tiers[r.tier] += 1
            risks[risk_bucket(r.risk)] += 1
            lapsed += r.lapsed
        return tiers, risks, lapsed

    def open_cases(self, partitions: set[int] | None = None) -> list[tuple[Row, CaseRow, float]]:
        """Open cases with their row and the partition's stream time (epoch s), oldest first."""
        out = []
        for r in self.rows.values():
            if not r.cases or (partitions is not None and r.partition not in partitions):
                continue
            clock = self._clock.get(r.partition)
            now = clock.timestamp() if clock else 0.0
            out += [(r, c, now) for c in r.cases]
        out.sort(key=lambda x: (x[1][3], x[0].customer_id))
        return out

    def rfm(self, limit: int) -> list[tuple[int, float, float]]:
        """MBG/NBD inputs (x, t_x, T in days) of up to ``limit`` customers, as of stream time."""
        out = []
        step = max(1, len(self.rows) // max(limit, 1))
        for i, r in enumerate(self.rows.values()):
            if r.rfm is None or i % step:
                continue
            now = self._clock.get(r.partition)
            if now is None:
                continue
            x, first, last = r.rfm
            end = now.timestamp()
            out.append((x, (last - first) / 86400, max(end - first, 0.0) / 86400))
        return out[:limit]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)


_NO_SEGMENT: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)
_SEGMENTS: dict[tuple[str | None, ...], tuple[str | None, str | None, str | None, str | None]] = {}


def _segment(
    seg: tuple[str | None, str | None, str | None, str | None],
) -> tuple[str | None, str | None, str | None, str | None]:
    """One shared tuple per distinct segment (a million rows share a few dozen)."""
    if len(_SEGMENTS) > 100_000:  # segments are meant to be few; never grow without bound
        return seg
    return _SEGMENTS.setdefault(seg, seg)


def _lifecycle(row: Row) -> tuple[object, ...]:
    """What the churn KPIs count a row by (churn_kpi.Lifecycle)."""
    return row.partition, row.tier, row.segment, row.first_seen, row.lapses


def _rfm_of(state: CustomerState) -> tuple[int, float, float] | None:
    """MBG/NBD inputs for the population fit, from the state's counters (O(1) per write).

    ``purchase_count - 1`` stands for the repeat purchases: refunds and same-day
    orders make it a slight overcount, harmless for fitting population parameters.
    """
    if state.first_purchase_at is None or state.last_purchase_at is None:
        return None
    return (max(0, state.purchase_count - 1), state.first_purchase_at.timestamp(),
            state.last_purchase_at.timestamp())  # fmt: skip


def _rfm_seed(d: Mapping[str, Any]) -> tuple[int, float, float] | None:
    first, last = _dt(d.get("first_purchase_at")), _dt(d.get("last_purchase_at"))
    if first is None or last is None:
        return None
    return max(0, int(d.get("purchase_count", 1)) - 1), first.timestamp(), last.timestamp()


def _dt(text: str | None) -> datetime | None:
    if not text:
        return None
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)
