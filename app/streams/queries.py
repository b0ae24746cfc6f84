"""The read side: what HTTP (web.views.Reads) and the sampled gauges read.

Nothing here writes customer state: views read the read model and the tables,
re-scoring a copy of a state as of its partition's stream time. The one write is
the expiry of segment tallies older than every window (``refresh_segments``).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from app.domain import segments
from app.domain.churn_kpi import Period
from app.domain.customer import CustomerState, copy_state, iso, public_view, refresh
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams.churnkpis import ChurnKpis
from app.streams.clock import StreamClock
from app.streams.ownership import Ownership
from app.streams.policy import LivePolicy
from app.streams.readmodel import RISK_BUCKETS, ReadModel
from app.streams.store import CUSTOMERS_TABLE, TALLIES_TABLE, CustomerStore
from app.streams.summaries import PartitionSummaries
from app.streams.tables import key_partition

CASE_AGES = ("under_1d", "1d_3d", "3d_7d", "over_7d")


def case_age(seconds: float) -> str:
    """The age bucket an open case is counted in."""
    days = seconds / 86400
    return "under_1d" if days < 1 else "1d_3d" if days < 3 else "3d_7d" if days < 7 else "over_7d"


class Queries:
    """Read-only views over this worker's share (others' partitions from their summaries)."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, customers: Any,
                 nps_tallies: Any, states: CustomerStore, readmodel: ReadModel,
                 ownership: Ownership, summaries: PartitionSummaries, kpis: ChurnKpis,
                 live: LivePolicy, clock: StreamClock) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics
        self.customers = customers  # web.views routes a customer's request by this table
        self.nps_tallies = nps_tallies
        self.states = states
        self.readmodel = readmodel
        self.ownership = ownership
        self.summaries = summaries
        self.kpis = kpis
        self.live = live
        self.clock = clock

    # -- HTTP ----------------------------------------------------------------------------

    def customer_view(self, state: CustomerState) -> dict[str, Any]:
        """One customer as of its partition's stream time (risk re-scored on read)."""
        key = state.customer_id.encode()
        now = self.readmodel.stream_time(key_partition(key, self.settings.partitions))
        self._to_now(state, now)
        return public_view(state, now, self.live.policy.churn_model.horizon_days)

    def segment_nps(self, window: str | None = None, segment: str | None = None) -> dict[str, Any]:
        """NPS per segment: owned partitions from the table, the others from their summaries."""
        items = list(self.ownership.local_tallies().items())
        for p, summary in self.summaries.remote.others(self.ownership.owned):
            items += [(f"{p}|{k}", v) for k, v in summary.get("nps", {}).items()]
        as_of = segments.latest_day(k for k, _ in items)
        windows = [window] if window else list(segments.WINDOWS)
        rows = []
        if as_of is not None:
            for w in windows:
                rows += [r.as_dict() for r in segments.summarize(items, w, as_of, segment)]
        return {"as_of": as_of.isoformat() if as_of else None, "segments": rows}

    def churn_report(self, period: Period, group: str | None) -> dict[str, Any]:
        """Churn per period over all workers' partitions (others as of their last summary)."""
        return self.kpis.report(period, self.ownership.owned, group)

    def at_risk(self, limit: int) -> list[dict[str, Any]]:
        """This worker's high-value customers by churn risk as of now, highest first.

        Candidates come from the read model (risk as of each customer's last look,
        at most one sweep step old); twice the limit are re-scored as of the stream
        time and re-ranked, so the list shows risk as of now.
        """
        states = []
        for row in self.readmodel.at_risk(2 * limit, self.ownership.owned_or_all()):
            state = self.states.get(row.customer_id.encode(), row.partition)
            if state is None:
                continue
            state = copy_state(state)  # the cache's copy stays as stored
            self._to_now(state, self.readmodel.stream_time(row.partition))
            states.append(state)
        states.sort(key=lambda s: (-s.churn_risk, s.customer_id))
        return [{
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
        } for state in states[:limit]]  # fmt: skip

    def cases(self, status: str | None, overdue: bool | None, limit: int) -> list[dict[str, Any]]:
        """This worker's open cases, oldest first, filtered by status and overdue."""
        out = []
        for row, (alert, rule, st, opened, due, contacted), now in self.readmodel.open_cases(
            self.ownership.owned_or_all()
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

    def indexed_partitions(self) -> int:
        """Input partitions whose customers are in the read model (sweep and views ready)."""
        return len(self.ownership.seeded)

    def _to_now(self, state: CustomerState, now: datetime | None) -> None:
        """Re-score a state read for display when its partition's stream time has moved on."""
        if now is not None and (state.churn_as_of is None or now > state.churn_as_of):
            refresh(state, self.live.policy, now)

    # -- sampled gauges ------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        """Table-wide gauges (from the read model) and consumer lag, sampled (not per event)."""
        m = self.metrics
        tiers, risks, lapsed = self.readmodel.counts()
        n = len(self.readmodel)
        m.customers.set(n)
        m.lapsed.set(lapsed)
        m.table_keys.labels(CUSTOMERS_TABLE).set(n)
        m.table_keys.labels(TALLIES_TABLE).set(len(self.nps_tallies))
        for t in ("A", "B", "C"):
            m.customers_by_tier.labels(t).set(tiers[t])
        for bucket in RISK_BUCKETS:
            m.customers_by_risk.labels(bucket).set(risks[bucket])
        m.sweep_pending.set(sum(self.readmodel.pending(p) for p in self.ownership.owned))
        m.sweep_due.set(sum(self.readmodel.due(p) for p in self.ownership.owned))
        ages: Counter[str] = Counter()
        overdue = 0
        for _, (_, _, _, opened, due, contacted), now in self.readmodel.open_cases():
            ages[case_age(now - opened)] += 1
            overdue += (not contacted) and now > due
        for bucket in CASE_AGES:
            m.cases_open.labels(bucket).set(ages[bucket])
        m.cases_overdue.set(overdue)
        for topic, partition, lag in self.clock.lags(self.settings.input_topics):
            m.consumer_lag.labels(topic, str(partition)).set(lag)

    def refresh_segments(self) -> None:
        """NPS gauges per segment and window; drop tallies older than every window."""
        report = self.segment_nps()
        for row in report["segments"]:
            labels = (row["segment"], row["window"])
            self.metrics.segment_responses.labels(*labels).set(row["n"])
            if row["nps"] is not None:
                self.metrics.segment_nps.labels(*labels).set(row["nps"])
        if report["as_of"] is not None:
            self.ownership.expire_tallies(datetime.fromisoformat(report["as_of"]).date())


def _iso_ts(ts: float) -> str | None:
    return iso(datetime.fromtimestamp(ts, UTC)) if ts else None
