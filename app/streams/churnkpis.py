"""Churn KPIs across workers: counted per owned partition, shared through the summaries topic.

Counts per (period, group) are additive (app/domain/churn_kpi.py), so a
report merges this worker's partitions (read every ``FEEDBACK_CHURN_KPI_INTERVAL``
seconds from the read model's tally, which takes in the customers whose lifecycle
changed since the last time) with the other partitions' latest summaries.
"""

from __future__ import annotations

import asyncio
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
# Changed rows taken into the KPI tally per step of a recount: each step holds the event
# loop for about 10-20 ms (two Tally.add calls a row), then gives it back to the batches.
SYNC_CHUNK = 500


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

    async def recount(self, owned: set[int]) -> None:
        """Take the rows whose lifecycle changed since the last recount into the tally
        (ReadModel.kpi_sync), a chunk at a time, then read the owned partitions' counts.

        Its cost follows the customers that were first seen, lapsed, won back or changed
        tier or segment, not the table: the full pass over every row it replaces held
        the interpreter lock for seconds at 100,000 customers once most had lapsed, and
        every batch waited (README, Benchmark).
        """
        while self.readmodel.kpi_sync(SYNC_CHUNK):
            await asyncio.sleep(0)
        clocks = [t for p in owned if (t := self.readmodel.stream_time(p)) is not None]
        if not clocks:
            self.local = {}
            return
        self.as_of = as_of = max(clocks)
        tally = self.readmodel.kpi
        self.local = {p: {k: tally.counts(p, k, as_of, KPI_PERIODS) for k in PERIODS}
                      for p in owned}  # fmt: skip

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
