"""NPS per segment (tier, region, channel, product, overall) over rolling event-time windows.

Responses are tallied per (segment, event day) so any window is a sum of
days. Each tally key also names the input partition it came from: a
partition is owned by exactly one worker, so every response is counted
exactly once however many workers share the work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from app.domain.events import SurveyResponse
from app.domain.nps import NpsCounts, band

DIMENSIONS = ("tier", "region", "channel", "product")
OVERALL = "overall"
WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
RETENTION_DAYS = max(WINDOWS.values())


def segments_of(response: SurveyResponse) -> list[str]:
    """Segment labels a response counts in: ``overall`` plus ``dim:value`` per known dimension."""
    labels = [OVERALL]
    seg = response.segment
    if seg is not None:
        for dim in DIMENSIONS:
            val = getattr(seg, dim)
            if val:
                labels.append(f"{dim}:{val}")
    return labels


def tally_key(partition: int, segment: str, day: date) -> str:
    return f"{partition}|{segment}|{day.isoformat()}"


def split_partition(key: str) -> tuple[int, str]:
    """A tally key as (its input partition, ``segment|day``)."""
    partition, rest = key.split("|", 1)
    return int(partition), rest


def parse_key(key: str) -> tuple[int, str, date]:
    partition, segment, day = key.split("|")
    return int(partition), segment, date.fromisoformat(day)


def new_tally() -> list[int]:
    """``[promoters, passives, detractors, last_offset]``; -1: no input offset counted yet."""
    return [0, 0, 0, -1]


def add(tally: list[int], score: int, offset: int | None = None) -> bool:
    """Count one response into ``[promoters, passives, detractors, last_offset]``.

    ``offset`` is the response's position in its (survey topic) input partition,
    the one the tally key names. Partitions are consumed in order, so a response
    at or below the tally's last counted offset is a replay after a crash (its
    count already reached the changelog) and is skipped: this makes the tally
    idempotent even when the customer's own state did not survive the crash.
    Returns whether it counted.
    """
    if len(tally) < 4:
        tally.append(-1)
    if offset is not None:
        if offset <= tally[3]:
            return False
        tally[3] = offset
    b = band(score)
    i = 0 if b == "promoter" else 1 if b == "passive" else 2
    tally[i] += 1
    return True


@dataclass(frozen=True)
class SegmentNps:
    """One segment's NPS over one window, with its 95% confidence interval."""

    segment: str
    window: str
    n: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    ci95: tuple[float, float] | None

    def as_dict(self) -> dict[str, object]:
        return {"segment": self.segment, "window": self.window, "n": self.n,
                "promoters": self.promoters, "passives": self.passives,
                "detractors": self.detractors, "nps": self.nps,
                "ci95": list(self.ci95) if self.ci95 else None}  # fmt: skip


def summarize(
    tallies: Iterable[tuple[str, list[int]]], window: str, as_of: date,
    segment: str | None = None,
) -> list[SegmentNps]:  # fmt: skip
    """NPS per segment over the ``window`` days ending on ``as_of`` (inclusive)."""
    days = WINDOWS[window]
    first = as_of - timedelta(days=days - 1)
    sums: dict[str, NpsCounts] = {}
    for key, counts in tallies:
        p, pa, d = counts[:3]
        _, seg, day = parse_key(key)
        if segment is not None and seg != segment:
            continue
        if first <= day <= as_of:
            c = sums.setdefault(seg, NpsCounts())
            c.promoters += p
            c.passives += pa
            c.detractors += d
    out = []
    for seg in sorted(sums, key=lambda s: (s != OVERALL, s)):
        c = sums[seg]
        out.append(SegmentNps(seg, window, c.n, c.promoters, c.passives, c.detractors,
                              c.result(), c.confidence_interval()))  # fmt: skip
    return out


def latest_day(keys: Iterable[str]) -> date | None:
    """The event-time clock: the newest day any response was tallied for."""
    newest: date | None = None
    for key in keys:
        day = parse_key(key)[2]
        if newest is None or day > newest:
            newest = day
    return newest


def expired(keys: Iterable[str], as_of: date, owned: Mapping[int, bool]) -> list[str]:
    """Tally keys of owned partitions older than any window: safe to delete."""
    horizon = as_of - timedelta(days=RETENTION_DAYS + 1)
    return [k for k in keys if owned.get(parse_key(k)[0]) and parse_key(k)[2] < horizon]
