"""Churn rate and churn loss per period, overall, per value tier and per segment.

The source material (shared/DOMAIN.md) asks for: churn rate per division and
per tier and its change from period to period, key customers' churn tracked
separately, churn loss = revenue lost x margin, and a "safety line" (the
highest churn rate the business accepts) with a warning when it is crossed.

Definitions (written down because the source leaves them open):

- A customer is **lost** in a period when it *lapses* in it: its P(alive)
  falls below the lapse setting (see app/domain/customer.py). A lapsed
  customer who buys again is **won back** (counted in the period it buys).
- ``customers_at_start`` / ``customers_at_end``: customers first seen before
  the instant and not lapsed at it. ``new``: first seen within the period.
  So ``at_end = at_start + new - lost + won_back``, and the source's
  ``start - (end - new)`` equals ``lost - won_back`` (net loss).
- ``churn_rate`` is the source's ``lost / customers_at_end``;
  ``churn_rate_start`` the common ``lost / customers_at_start``.
- ``revenue_lost``: each lost customer's trailing 365-day revenue at the
  moment it lapsed; ``churn_loss = revenue_lost x margin``.
- A customer's tier and segment are its current ones.
- The safety line is set as an annual rate per tier (and ``overall``) and
  compared with the period's rate converted to a year,
  ``1 - (1 - rate) ** (365 / period days)``, so one setting serves months and
  quarters.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, Protocol

Period = Literal["month", "quarter", "year"]
PERIODS: tuple[Period, ...] = ("month", "quarter", "year")
SEGMENT_KEYS = ("tier", "region", "channel", "product")
# counts per (period label, group): at_start, new, lost, won_back, at_end, revenue_lost
Counts = dict[tuple[str, str], list[float]]


class Lifecycle(Protocol):
    """What the KPIs read of one customer (the read model's row has these)."""

    @property
    def first_seen(self) -> float: ...  # epoch seconds
    @property
    def lapses(self) -> tuple[tuple[float, float, float | None], ...]: ...  # at, revenue, won
    @property
    def tier(self) -> str: ...
    @property
    def segment(self) -> tuple[str | None, str | None, str | None, str | None]: ...


def bounds(kind: Period, as_of: datetime, count: int) -> list[tuple[str, datetime, datetime]]:
    """The ``count`` calendar periods (UTC) up to and including the one holding ``as_of``.

    >>> [b[0] for b in bounds("quarter", datetime(2026, 5, 2, tzinfo=UTC), 3)]
    ['2025-Q4', '2026-Q1', '2026-Q2']
    """
    months = {"month": 1, "quarter": 3, "year": 12}[kind]
    at = as_of.astimezone(UTC)
    index = at.year * 12 + (at.month - 1) // months * months
    out = []
    for k in range(count - 1, -1, -1):
        start_i = index - k * months
        start = datetime(start_i // 12, start_i % 12 + 1, 1, tzinfo=UTC)
        end_i = start_i + months
        end = datetime(end_i // 12, end_i % 12 + 1, 1, tzinfo=UTC)
        if kind == "month":
            label = f"{start.year}-{start.month:02d}"
        elif kind == "quarter":
            label = f"{start.year}-Q{(start.month - 1) // 3 + 1}"
        else:
            label = str(start.year)
        out.append((label, start, end))
    return out


def groups(tier: str, segment: tuple[str | None, ...]) -> list[str]:
    """The groups of a value tier and segment values (churn KPIs and case metrics)."""
    out = ["overall", f"tier:{tier}"]
    for key, val in zip(SEGMENT_KEYS, segment, strict=True):
        if val is not None:
            out.append(f"{'member_tier' if key == 'tier' else key}:{val}")
    return out


# Months per period of each kind: a period's index is the month index (year * 12 + month
# - 1, UTC) of its first month, divided by this.
MONTHS: dict[Period, int] = {"month": 1, "quarter": 3, "year": 12}
# Revenue lost is tallied in millionths, so taking a customer out of the tally gives back
# exactly what putting it in added (floats would drift with every change).
MICRO = 1_000_000


def month_index(at: float) -> int:
    """Months since year 0 of the UTC calendar month holding ``at`` (epoch seconds)."""
    t = time.gmtime(math.floor(at))
    return t.tm_year * 12 + t.tm_mon - 1


def _in_base(k: int, first: int, marks: Sequence[tuple[int, int | None, int]]) -> bool:
    """In the base at the start of period ``k``: first seen in an earlier period, and not
    inside a lapse then (lapsed in an earlier period, not won back in an earlier one)."""
    return first < k and not any(
        lapsed < k and (won is None or won >= k) for lapsed, won, _ in marks)


class Tally:
    """Churn counts per partition, period kind, group and period, kept current customer by
    customer, so a report costs a pass over groups and periods, not over customers.

    What a customer adds to period ``i``: ``new`` if first seen in it, ``lost`` (and its
    revenue) per lapse in it, ``won_back`` per win-back in it, and to ``at_start`` /
    ``at_end`` whether it is in the base at the start of ``i`` / of ``i + 1``. Being in
    the base is a step function of the period index that can only change at the period
    after first sighting, a lapse or a win-back, so it is stored as its changes and a
    report sums them up to each period. Adding a customer with ``sign=-1`` takes out
    exactly what it put in, so a changed customer is taken out as it was and put back
    as it is (the read model does that for the rows whose lifecycle changed). A full
    recount of every customer took seconds at 100,000 customers once most had lapsed,
    holding the worker's interpreter lock all that time (README, Benchmark).
    """

    def __init__(self) -> None:
        # partition -> kind -> group -> period index -> [base change, new, lost, won back,
        # revenue lost in MICRO]
        self._parts: dict[int, dict[Period, dict[str, dict[int, list[int]]]]] = {}

    def add(self, partition: int, c: Lifecycle, sign: int = 1) -> None:
        months = _months(c)
        names = _groups_of(c.tier, c.segment)
        for kind, by_group in self._kinds(partition).items():
            changes = _changes(months, MONTHS[kind])
            for name in names:
                _apply(by_group, name, changes, sign)

    def move(self, partition: int, old: Lifecycle, new: Lifecycle) -> None:
        """``add(old, -1)`` then ``add(new)``, touching only the cells that differ.

        Live, a row's lifecycle changes on about one write in five (its value tier
        moved, a lapse or a win-back; ``bench.live``), and taking it out of every group
        and back in cost a tenth of the worker's samples: a tier change only moves it
        between two groups, and a lapse changes a few cells of each.
        """
        months_old, months_new = _months(old), _months(new)
        names_old = _groups_of(old.tier, old.segment)
        names_new = _groups_of(new.tier, new.segment)
        for kind, by_group in self._kinds(partition).items():
            div = MONTHS[kind]
            before = _changes(months_old, div)
            after = before if months_new == months_old else _changes(months_new, div)
            diff: list[tuple[int, int, int]] = []
            if after is not before:
                net: dict[tuple[int, int], int] = {}
                for k, column, change in before:
                    net[(k, column)] = net.get((k, column), 0) - change
                for k, column, change in after:
                    net[(k, column)] = net.get((k, column), 0) + change
                diff = [(k, column, change) for (k, column), change in net.items() if change]
            for name in names_old:
                if name in names_new:
                    _apply(by_group, name, diff, 1)
                else:
                    _apply(by_group, name, before, -1)
            for name in names_new:
                if name not in names_old:
                    _apply(by_group, name, after, 1)

    def _kinds(self, partition: int) -> dict[Period, dict[str, dict[int, list[int]]]]:
        kinds = self._parts.get(partition)
        if kinds is None:
            kinds = self._parts[partition] = {kind: {} for kind in PERIODS}
        return kinds

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._parts.pop(p, None)

    def counts(self, partition: int, kind: Period, as_of: datetime, periods: int = 4) -> Counts:
        """Per (period, group) counts of one partition: the form ``count`` gives."""
        spans = bounds(kind, as_of, periods)
        out: Counts = {}
        if not spans:
            return out
        first = month_index(spans[0][1].timestamp()) // MONTHS[kind]
        for name, cells in self._parts.get(partition, {}).get(kind, {}).items():
            base = sum(cell[0] for k, cell in cells.items() if k <= first)
            for n, (label, _, _) in enumerate(spans):
                i = first + n
                if n:
                    base += cells[i][0] if i in cells else 0
                cell = cells.get(i)
                after = cells.get(i + 1)
                row = [float(base), 0.0, 0.0, 0.0, float(base + (after[0] if after else 0)), 0.0]
                if cell is not None:
                    row[1], row[2], row[3], row[5] = cell[1], cell[2], cell[3], cell[4] / MICRO
                if any(row):
                    out[(label, name)] = row
        return out


_Months = tuple[int, tuple[tuple[int, int | None, int], ...]]


def _months(c: Lifecycle) -> _Months:
    """First sighting and lapses as month indexes (revenue lost in MICRO)."""
    return month_index(c.first_seen), tuple(
        (month_index(lapsed), None if won is None else month_index(won), round(revenue * MICRO))
        for lapsed, revenue, won in c.lapses)  # fmt: skip


def _changes(months: _Months, div: int) -> list[tuple[int, int, int]]:
    """(period, column, change) a customer adds to each of its groups, periods of ``div``
    months. Columns: 0 base change, 1 new, 2 lost, 3 won back, 4 revenue lost."""
    first = months[0] // div
    if not months[1]:  # most customers: first seen, never lapsed
        return [(first, 1, 1), (first + 1, 0, 1)]
    marks = [(lapsed // div, None if won is None else won // div, micro)
             for lapsed, won, micro in months[1]]  # fmt: skip
    updates = [(first, 1, 1)]
    was = False
    for k in sorted({first + 1, *(lapsed + 1 for lapsed, _, _ in marks),
                     *(won + 1 for _, won, _ in marks if won is not None)}):  # fmt: skip
        now = _in_base(k, first, marks)
        if now != was:
            updates.append((k, 0, 1 if now else -1))
            was = now
    for lapsed, won, micro in marks:
        updates += [(lapsed, 2, 1), (lapsed, 4, micro)]
        if won is not None:
            updates.append((won, 3, 1))
    return updates


def _apply(by_group: dict[str, dict[int, list[int]]], name: str,
           changes: Sequence[tuple[int, int, int]], sign: int) -> None:  # fmt: skip
    cells = by_group.get(name)
    if cells is None:
        cells = by_group[name] = {}
    for k, column, change in changes:
        cell = cells.get(k)
        if cell is None:
            cell = cells[k] = [0, 0, 0, 0, 0]
        cell[column] += sign * change


@functools.lru_cache(maxsize=4096)
def _groups_of(tier: str, segment: tuple[str | None, ...]) -> tuple[str, ...]:
    return tuple(groups(tier, segment))


def count(customers: Iterable[Lifecycle], kind: Period, as_of: datetime, periods: int = 4
          ) -> Counts:  # fmt: skip
    """Per (period, group) counts of ``customers``; additive, so partitions and workers merge
    by summing (a Tally of these customers, read once)."""
    tally = Tally()
    for c in customers:
        tally.add(0, c)
    return tally.counts(0, kind, as_of, periods)


def merge(parts: Iterable[Mapping[tuple[str, str], Sequence[float]]]) -> Counts:
    out: Counts = {}
    for part in parts:
        for key, row in part.items():
            acc = out.setdefault(key, [0.0] * 6)
            for i, v in enumerate(row):
                acc[i] += v
    return out


@dataclass(frozen=True)
class PeriodRow:
    """One period of one group, as the report shows it."""

    period: str
    group: str
    customers_at_start: int
    new: int
    lost: int
    won_back: int
    customers_at_end: int
    churn_rate: float | None  # lost / customers_at_end (the source's convention)
    churn_rate_start: float | None  # lost / customers_at_start
    revenue_lost: Decimal
    churn_loss: Decimal
    change: float | None  # churn_rate minus the previous period's
    safety_line: float | None  # the line for this period length
    above_safety_line: bool

    def as_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["revenue_lost"], d["churn_loss"] = str(self.revenue_lost), str(self.churn_loss)
        return d


def period_line(annual: float, kind: Period, days: float) -> float:
    """An annual safety line as the rate it allows over ``days``."""
    allowed: float = 1 - (1 - annual) ** (days / 365.0)
    return allowed


def report(
    counts: Counts, kind: Period, as_of: datetime, periods: int, margin: Decimal,
    safety_lines: Mapping[str, float], group: str | None = None,
) -> list[PeriodRow]:  # fmt: skip
    """Rows per group and period, oldest period first; ``group`` keeps one group only."""
    spans = bounds(kind, as_of, periods)
    shown = sorted({g for _, g in counts} | {"overall"})
    if group is not None:
        shown = [g for g in shown if g == group]
    out = []
    for g in shown:
        previous: float | None = None
        tier = g.split(":", 1)[1] if g.startswith("tier:") else None
        annual = safety_lines.get(tier or "overall") if g == "overall" or tier else None
        for label, start, end in spans:
            at_start, new, lost, won, at_end, revenue = counts.get((label, g), [0.0] * 6)
            rate = lost / at_end if at_end else None
            line = period_line(annual, kind, (end - start).days) if annual is not None else None
            rev = Decimal(str(round(revenue, 2)))
            out.append(PeriodRow(
                label, g, int(at_start), int(new), int(lost), int(won), int(at_end), rate,
                lost / at_start if at_start else None, rev,
                (rev * margin).quantize(Decimal("0.01")),
                None if rate is None or previous is None else rate - previous,
                line, rate is not None and line is not None and rate > line,
            ))  # fmt: skip
            previous = rate
    return out
