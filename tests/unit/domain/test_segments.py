from datetime import date

from app.domain import segments

from .factory import survey


def test_segments_of_response() -> None:
    r = survey(9, segment={"tier": "gold", "region": "eu"})
    assert segments.segments_of(r) == ["overall", "tier:gold", "region:eu"]
    assert segments.segments_of(survey(3)) == ["overall"]


def test_windows_sum_days_and_partitions_once_each() -> None:
    tallies: dict[str, list[int]] = {}
    rows = [(0, 10, date(2026, 3, 1)), (1, 3, date(2026, 3, 1)), (2, 8, date(2026, 2, 20)),
            (0, 0, date(2026, 1, 1))]  # fmt: skip
    for partition, score, day in rows:
        key = segments.tally_key(partition, "overall", day)
        segments.add(tallies.setdefault(key, [0, 0, 0]), score)
    as_of = segments.latest_day(tallies)
    assert as_of == date(2026, 3, 1)
    (w7,) = segments.summarize(tallies.items(), "7d", as_of)
    assert (w7.n, w7.promoters, w7.detractors, w7.nps) == (2, 1, 1, 0.0)
    (w30,) = segments.summarize(tallies.items(), "30d", as_of)
    assert (w30.n, w30.passives) == (3, 1)
    (w90,) = segments.summarize(tallies.items(), "90d", as_of)
    assert w90.n == 4 and w90.nps == -25.0
    assert w90.ci95 is not None and w90.ci95[0] < -25 < w90.ci95[1]


def test_expired_only_for_owned_partitions() -> None:
    keys = [segments.tally_key(p, "overall", date(2025, 1, 1)) for p in (0, 1)]
    assert segments.expired(keys, date(2026, 1, 1), {0: True}) == [keys[0]]


def test_replayed_offsets_are_not_counted_twice() -> None:
    tally = segments.new_tally()
    assert segments.add(tally, 10, offset=5) and segments.add(tally, 3, offset=9)
    # After a crash the partition is replayed from its last committed offset.
    assert not segments.add(tally, 10, offset=5)
    assert not segments.add(tally, 3, offset=9)
    assert segments.add(tally, 7, offset=10)
    assert tally == [1, 1, 1, 10]
    (row,) = segments.summarize([(segments.tally_key(0, "overall", date(2026, 1, 1)), tally)],
                                "7d", date(2026, 1, 1))  # fmt: skip
    assert (row.n, row.nps) == (3, 0.0)


def test_tallies_written_before_watermarks_still_count() -> None:
    legacy = [2, 0, 1]
    assert segments.add(legacy, 9, offset=0)
    assert legacy == [3, 0, 1, 0]
