"""Churn KPIs across workers: counted per owned partition, shared through the summaries topic.

Counts per (period, group) are additive (app/domain/churn_kpi.py), so a
report merges this worker's partitions (recounted from the read model every
``FEEDBACK_CHURN_KPI_INTERVAL`` seconds; a full pass over the rows, kept off
the per-event path) with the other partitions' latest summaries.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from app.domain import churn_kpi
from app.domain.alerts import period_alerts
from app.domain.churn_kpi import PERIODS, Counts, Period
from app.domain.events import Alert
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams.readmodel import ReadModel
from app.streams.summaries import PartitionSummaries

KPI_PERIODS = 5  # periods counted and shared: the current one and four before it
GAUGE_GROUPS = ("overall", "tier:A", "tier:B", "tier:C")
# A recount may take at most this share of the worker's time (see Pacer).
RECOUNT_SHARE = 0.05


class Pacer:
    """Spaces full recounts so they take at most ``share`` of the worker's time.

    The recount is a pure-Python pass over every row: in its thread it still holds
    the GIL, so while it runs the batches wait. At 100,000 customers in a backfill
    (where every customer is new within the periods, so none takes the cheap path)
    it took 13% of the worker's samples at one recount per 30 s (py-spy, README
    Benchmark). The KPIs count months and quarters, so a figure a little older is
    worth more than the events it would stall: after a recount that took ``t``
    seconds of CPU, the next one waits at least ``t * (1 / share - 1)``.
    """

    def __init__(self, share: float = RECOUNT_SHARE) -> None:
        self.share = share
        self.next_at = float("-inf")

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def took(self, now: float, seconds: float) -> None:
        self.next_at = now + seconds * (1.0 / self.share - 1.0)


class ChurnKpis:
    """This worker's partitions' churn counts, and reports that include everyone's."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, readmodel: ReadModel,
                 summaries: PartitionSummaries) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics
        self.readmodel = readmodel
        self.summaries = summaries
        self.local: dict[int, dict[Period, Counts]] = {}
        self.as_of: datetime | None = None
        self._alerted: set[str] = set()

    def recount(self, owned: set[int]) -> float:
        """Count the owned partitions' customers for every period kind; returns the CPU
        seconds it took (of the thread it ran in)."""
        started = time.thread_time()
        self._recount(owned)
        return time.thread_time() - started

    def _recount(self, owned: set[int]) -> None:
        clocks = [t for p in owned if (t := self.readmodel.stream_time(p)) is not None]
        if not clocks:
            self.local = {}
            return
        self.as_of = max(clocks)
        rows: dict[int, list[Any]] = defaultdict(list)
        for row in list(self.readmodel.rows.values()):  # a snapshot: the loop keeps writing
            if row.partition in owned:
                rows[row.partition].append(row)
        self.local = {p: {k: churn_kpi.count(rows.get(p, []), k, self.as_of, KPI_PERIODS)
                          for k in PERIODS} for p in owned}  # fmt: skip

    def shared(self, partition: int) -> dict[str, dict[str, list[float]]]:
        """The partition's counts in the summary's JSON form."""
        kinds = self.local.get(partition, {})
        return {kind: {f"{label}|{group}": row for (label, group), row in counts.items()}
                for kind, counts in kinds.items()}  # fmt: skip

    def counts(self, kind: Period, owned: set[int]) -> Counts:
        parts: list[Counts] = [self.local[p][kind] for p in owned if p in self.local]
        for _, summary in self.summaries.remote.others(owned):
            shared = summary.get("churn", {}).get(kind, {})
            parts.append({_key(k): v for k, v in shared.items()})
        return churn_kpi.merge(parts)

    def report(self, kind: Period, owned: set[int], group: str | None = None,
               periods: int = KPI_PERIODS) -> dict[str, Any]:  # fmt: skip
        rows = []
        if self.as_of is not None:
            rows = churn_kpi.report(
                self.counts(kind, owned), kind, self.as_of, min(periods, KPI_PERIODS),
                self.settings.churn_margin, self.settings.churn_safety_line, group,
            )  # fmt: skip
        return {
            "period": kind, "as_of": self.as_of.isoformat() if self.as_of else None,
            "margin": str(self.settings.churn_margin),
            "safety_line_annual": dict(self.settings.churn_safety_line),
            "lost_means": "lapsed within the period (P(alive) fell below "
                          f"{self.settings.lapse_p_alive})",
            "rows": [r.as_dict() for r in rows],
        }  # fmt: skip

    def safety_line_alerts(self, owned: set[int], now: datetime) -> list[Alert]:
        """Alerts for groups whose current month or quarter is above the line, not yet sent.

        Only the worker that owns input partition 0 raises them (one voice for
        the whole base), and only once every partition is counted (its own or
        another worker's summary), so a worker that just started does not judge
        the base on part of it.
        """
        covered = owned | set(self.summaries.remote)
        if self.as_of is None or 0 not in owned or len(covered) < self.settings.partitions:
            return []
        out = []
        for kind in ("month", "quarter"):
            rows = churn_kpi.report(
                self.counts(kind, owned), kind, self.as_of, 1, self.settings.churn_margin,
                self.settings.churn_safety_line,
            )  # fmt: skip
            for alert in period_alerts(kind, rows, self.as_of, self.settings.base_currency, now):
                if alert.alert_id not in self._alerted:
                    self._alerted.add(alert.alert_id)
                    out.append(alert)
        return out

    def set_gauges(self, owned: set[int]) -> None:
        if self.as_of is None:
            return
        for kind in ("month", "quarter"):
            rows = churn_kpi.report(
                self.counts(kind, owned), kind, self.as_of, 2, self.settings.churn_margin,
                self.settings.churn_safety_line,
            )  # fmt: skip
            for r in rows:
                if r.group not in GAUGE_GROUPS:
                    continue
                which = "current" if r is rows[-1] or r.period == rows[-1].period else "previous"
                labels = (kind, which, r.group)
                self.metrics.churn_rate.labels(*labels, "end").set(r.churn_rate or 0.0)
                self.metrics.churn_rate.labels(*labels, "start").set(r.churn_rate_start or 0.0)
                self.metrics.churn_lost.labels(*labels).set(r.lost)
                self.metrics.churn_revenue_lost.labels(*labels).set(float(r.revenue_lost))
                if r.safety_line is not None:
                    self.metrics.churn_safety_line.labels(kind, which, r.group).set(r.safety_line)
                    self.metrics.churn_above_line.labels(kind, which, r.group).set(
                        1 if r.above_safety_line else 0)  # fmt: skip


def _key(text: str) -> tuple[str, str]:
    label, _, group = text.partition("|")
    return label, group
