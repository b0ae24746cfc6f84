"""fold_batch without a broker: what one batch decides."""

from __future__ import annotations

import gc
from collections import Counter
from datetime import datetime

import pytest

from app.domain.batch import Record, fold_batch, sweep_batch, watermark
from app.domain.customer import Policy
from app.domain.events import ErasureRequest, encode
from app.streams import store
from app.streams.tables import key_partition
from tests.unit.domain.factory import at, complaint, purchase, survey
from tests.unit.streams.batchkit import (
    ERASURE,
    LIMITS,
    NOW,
    PARTITIONS,
    PURCHASES,
    SURVEYS,
    Table,
    View,
    policy,
    records,
)


def view(threshold: str = "1000") -> View:
    return View(Table("customers"), Table("tallies"), policy(threshold))


def store_result(v: View, result: object) -> None:
    """What delivery would leave in the local stores (no broker needed here)."""
    for key, (_, state) in result.states.items():  # type: ignore[attr-defined]
        v.customers.data[key] = store.dump_state(state)
    for key, tally in result.tallies.items():  # type: ignore[attr-defined]
        v.tallies.data[key] = store.dump_tally(tally)


def test_bad_records_are_dead_lettered_with_a_reason_and_the_rest_is_folded() -> None:
    good = records([survey(9, customer_id="c1"), survey(3, customer_id="c2")])
    bad = [Record(SURVEYS, 0, 90, b"x", b"{not json", 0.0), Record(SURVEYS, 0, 91, b"x", b"", 0.0)]
    result = fold_batch([bad[0], good[0], bad[1], good[1]], view(), policy(), LIMITS, NOW)
    assert [(r.offset, e.reason) for r, e in result.dead] == [(90, "not_json"), (91, "empty")]
    assert result.outcomes[("survey", "processed")] == 2
    assert set(result.states) == {b"c1", b"c2"}


def test_a_batch_with_dead_letters_is_freed_without_the_garbage_collector() -> None:
    """A kept exception's traceback reaches the frame that folded the batch: a cycle that
    held every such batch in memory until a collection (a 5 s stop at 100,000 customers)."""
    good = records([survey(9, customer_id="c1"), purchase("20", customer_id="c2")])
    bad = [Record(SURVEYS, 0, 90, b"x", b"{not json", 0.0),  # caught from the JSON parser
           Record(SURVEYS, 0, 91, b"x", b'{"event_type": "survey"}', 0.0),  # from validation
           Record(SURVEYS, 0, 92, b"x", b'{"schema_version": 1, "event_type": "survey"}', 0.0)]
    v = view()
    gc.collect()
    gc.disable()
    try:
        result = fold_batch([bad[0], good[0], bad[1], good[1], bad[2]], v, policy(), LIMITS, NOW)
        reasons = [e.reason for _, e in result.dead]
        bare = [e.__traceback__ is None and e.__context__ is None for _, e in result.dead]
        del result
        left_for_the_collector = gc.collect()
    finally:
        gc.enable()
    assert reasons == ["not_json", "schema_violation", "schema_violation"]
    assert bare == [True] * 3
    assert left_for_the_collector == 0


def test_a_misplaced_record_is_rerouted_under_its_customer_id() -> None:
    (rec,) = records([survey(9, customer_id="c1")])
    wrong = Record(rec.topic, rec.partition, rec.offset, b"someone-else", rec.value, 0.0)
    result = fold_batch([wrong], view(), policy(), LIMITS, NOW)
    assert result.reroute == [(wrong, b"c1")]
    assert result.states == {}


def test_a_repeated_event_counts_once_in_state_and_tally() -> None:
    ev = survey(3, customer_id="c1", segment={"region": "eu"})
    once = fold_batch(records([ev]), view(), policy(), LIMITS, NOW)
    twice = fold_batch(records([ev, ev]), view(), policy(), LIMITS, NOW)
    assert twice.outcomes[("survey", "duplicate")] == 1
    assert twice.tallies == once.tallies
    assert twice.states[b"c1"][1].seq == once.states[b"c1"][1].seq == 1


def test_replaying_a_delivered_batch_changes_nothing() -> None:
    events = [purchase(5000, day=1, customer_id="c1"), survey(9, day=2, customer_id="c1"),
              survey(2, day=3, customer_id="c1", segment={"region": "eu"}),
              survey(8, day=3, customer_id="c2")]  # fmt: skip
    v = view()
    first = fold_batch(records(events), v, policy(), LIMITS, NOW)
    assert [a.rule for a, _ in first.alerts] == ["detractor"]
    store_result(v, first)
    customers, tallies = dict(v.customers.data), dict(v.tallies.data)
    again = fold_batch(records(events), v, policy(), LIMITS, NOW)
    assert again.alerts == []
    assert again.outcomes[("survey", "duplicate")] == 3
    store_result(v, again)
    assert dict(v.tallies.data) == tallies
    for key in customers:
        before, after = store.load_state(customers[key]), store.load_state(v.customers.data[key])
        assert before is not None and after is not None
        assert after.seq == before.seq and after.score == before.score


def test_a_replay_whose_state_was_lost_still_counts_no_response_twice() -> None:
    """The tally reached its changelog, the customer state did not (a crash in between)."""
    events = [survey(9, day=1, customer_id="c1"), survey(4, day=2, customer_id="c1")]
    v = view()
    first = fold_batch(records(events), v, policy(), LIMITS, NOW)
    for key, tally in first.tallies.items():
        v.tallies.data[key] = store.dump_tally(tally)
    again = fold_batch(records(events), v, policy(), LIMITS, NOW)
    assert again.tallies == first.tallies
    assert again.states[b"c1"][1].seq == 2


def test_the_second_alert_pass_fires_once_when_the_batch_moves_the_pareto_boundary() -> None:
    # 500 EUR is below the first policy's 1,000 threshold; the boundary the batch's own
    # revenue produces (repolicy) makes it high value.
    events = [purchase(500, day=1, customer_id="c1"), survey(2, day=2, customer_id="c1")]
    v = view()
    v.pol = policy("100")
    result = fold_batch(records(events), v, policy("1000"), LIMITS, NOW)
    assert v.repolicies == 1
    detractor = [a for a, _ in result.alerts if a.rule == "detractor"]
    assert [a.customer_id for a in detractor] == ["c1"]
    assert result.states[b"c1"][1].detractor_episode is not None


def test_no_second_pass_without_a_pending_detractor() -> None:
    v = view()
    fold_batch(records([purchase(500, customer_id="c1"), survey(9, customer_id="c1")]), v,
               policy(), LIMITS, NOW)  # fmt: skip
    assert v.repolicies == 0


def test_an_erasure_drops_the_customer_and_its_alerts_from_the_batch() -> None:
    events = [purchase(5000, day=1, customer_id="c1"), survey(2, day=2, customer_id="c1")]
    recs = records(events)
    request = ErasureRequest(event_type="erasure", event_id="x1", customer_id="c1",
                             occurred_at=at(days=3), schema_version=1)
    erase = Record(ERASURE, recs[0].partition, 0, b"c1", encode(request), 0.0)
    later = records([survey(9, day=4, customer_id="c1")], start=10)
    result = fold_batch([*recs, erase, *later], view(), policy(), LIMITS, NOW)
    assert result.alerts == []
    assert result.erased == {b"c1": (recs[0].partition, at(days=3))}
    # The customer starts again from nothing after the request: only the later answer.
    assert result.states[b"c1"][1].seq == 1 and result.states[b"c1"][1].score == 9


def test_stream_time_follows_event_time_capped_at_the_clock() -> None:
    result = fold_batch(records([survey(9, day=1, customer_id="c1")]), view(), policy(),
                        LIMITS, NOW)  # fmt: skip
    (part, clock), = result.clock.items()
    assert clock == at(days=1) and part == result.states[b"c1"][0]


@pytest.mark.parametrize(
    ("current", "latest", "behind", "want"),
    [
        (None, {"p": 5, "c": 90}, (), 90),  # all read to their end: the newest
        (None, {"p": 5, "c": 90}, ("p",), 5),  # purchases lag: as far as purchases got
        (None, {"p": 5, "c": 90, "s": 7}, ("p", "s"), 5),  # the oldest of the lagging
        (None, {"c": 90}, ("p",), None),  # purchases lag and have shown nothing yet
        (30, {"p": 5, "c": 90}, ("p",), 30),  # never backwards
        (30, {}, (), 30),
    ],
)
def test_watermark(current: int | None, latest: dict[str, int], behind: tuple[str, ...],
                   want: int | None) -> None:  # fmt: skip
    def day(n: int | None) -> datetime | None:
        return None if n is None else at(days=n)

    times = {t: at(days=n) for t, n in latest.items()}
    assert watermark(day(current), times, behind) == day(want)


def test_a_topic_read_ahead_does_not_age_customers_whose_topic_lags() -> None:
    """A backfill: complaints are read to May while purchases are still in January."""
    buys = [purchase(900, day=d, customer_id="c1") for d in range(0, 30, 5)]
    # Another customer of the same partition complains in May.
    home = key_partition(b"c1", PARTITIONS)
    other = next(c for c in (f"c{i}" for i in range(2, 99)) if key_partition(c.encode(), PARTITIONS) == home)
    (rec,) = records([complaint("k1", "opened", day=120, customer_id=other)])
    ahead = Record("complaints", rec.partition, 0, rec.key, rec.value, rec.timestamp)
    lagging = view()
    lagging.behind = frozenset({PURCHASES})
    result = fold_batch([ahead, *records(buys)], lagging, policy(), LIMITS, NOW)
    state = result.states[b"c1"][1]
    assert result.clock[rec.partition] == at(days=25)
    assert state.lapsed_at is None and state.p_alive is not None and state.p_alive > 0.5
    # Read to their ends, the same records put stream time in May: the customer is gone.
    caught_up = fold_batch([ahead, *records(buys)], view(), policy(), LIMITS, NOW)
    assert caught_up.clock[rec.partition] == at(days=120)
    assert caught_up.states[b"c1"][1].lapsed_at is not None


def _neighbour(customer: str) -> str:
    """Another customer id on the same partition."""
    home = key_partition(customer.encode(), PARTITIONS)
    return next(c for c in (f"n{i}" for i in range(999))
                if key_partition(c.encode(), PARTITIONS) == home)  # fmt: skip


def test_a_swept_customer_is_rescored_and_written_only_when_a_fact_changed() -> None:
    """Time moves on through a neighbour's purchases; c1 sends nothing more."""
    silent_on = Policy(value_policy=policy().value_policy, rules=frozenset({"silent"}))
    v = View(Table("customers"), Table("tallies"), silent_on)
    buys = [purchase(900, day=d, customer_id="c1") for d in range(0, 30, 5)]
    store_result(v, fold_batch(records(buys), v, silent_on, LIMITS, NOW))
    stored = dict(v.customers.data)
    other = _neighbour("c1")

    v.due_keys = [b"c1"]
    soon = fold_batch(records([purchase(10, day=32, customer_id=other)], start=10), v,
                      silent_on, LIMITS, NOW)  # fmt: skip
    assert soon.swept == 1 and b"c1" not in soon.states, "nothing worth storing changed"
    rescored = soon.rescored[b"c1"][1]
    assert rescored.churn_as_of == at(days=32) and rescored.lapsed_at is None
    store_result(v, soon)
    assert v.customers.data[b"c1"] == stored[b"c1"]

    v.due_keys = [b"c1"]
    late = fold_batch(records([purchase(10, day=140, customer_id=other)], start=20), v,
                      silent_on, LIMITS, NOW)  # fmt: skip
    assert late.swept == 1 and b"c1" not in late.rescored
    lapsed = late.states[b"c1"][1]
    assert lapsed.lapsed_at == at(days=140) and late.lapses == 1
    assert [(a.rule, a.customer_id) for a, _ in late.alerts] == [("silent", "c1")]
    assert lapsed.seq == len(buys), "a re-score is not an event"


def _stored_on_one_partition(v: View, n: int) -> list[str]:
    """``n`` customers of c1's partition, stored (each bought on day 1)."""
    home = key_partition(b"c1", PARTITIONS)
    ids = [c for c in (f"s{i}" for i in range(5000)) if key_partition(c.encode(), PARTITIONS) == home]
    store_result(v, fold_batch(records([purchase(10, day=1, customer_id=c) for c in ids[:n]]),
                               v, policy(), LIMITS, NOW))  # fmt: skip
    return ids[:n]


def test_a_batch_sweeps_one_customer_per_record() -> None:
    """A backfill's pace; the backlog of a jump of stream time waits for idle chunks."""
    v = view()
    ids = _stored_on_one_partition(v, 150)
    v.due_keys = [c.encode() for c in ids]
    two = records([purchase(10, day=20, customer_id="c1"), survey(9, day=20, customer_id="c1")],
                  start=500)  # fmt: skip
    result = fold_batch(two, v, policy(), LIMITS, NOW)
    assert result.swept == 2 and len(v.due_keys) == 148, "the rest wait, earliest first"
    assert set(result.rescored) | set(result.states) == {c.encode() for c in ids[:2]} | {b"c1"}


def test_an_idle_chunk_sweeps_at_most_its_limit_as_of_stream_time() -> None:
    v = view()
    ids = _stored_on_one_partition(v, 150)
    home = key_partition(b"c1", PARTITIONS)
    v.clock[home] = at(days=40)
    v.due_keys = [c.encode() for c in ids]
    chunk = sweep_batch([home], v, policy(), 100, NOW)
    assert chunk.swept == 100 and len(v.due_keys) == 50
    assert chunk.clock == {home: at(days=40)}
    swept = {**chunk.rescored, **chunk.states}
    assert set(swept) == {c.encode() for c in ids[:100]}
    assert {st.churn_as_of for _, st in swept.values()} == {at(days=40)}
    assert all(part == home for part, _ in swept.values())


def test_an_idle_chunk_shares_its_limit_among_the_partitions() -> None:
    v = view()
    ids = [f"p{i}" for i in range(400)]
    store_result(v, fold_batch(records([purchase(10, day=1, customer_id=c) for c in ids]),
                               v, policy(), LIMITS, NOW))  # fmt: skip
    for part in range(PARTITIONS):
        v.clock[part] = at(days=40)
    v.due_keys = [c.encode() for c in ids]
    chunk = sweep_batch(range(PARTITIONS), v, policy(), 40, NOW)
    per_partition = Counter(part for part, _ in {**chunk.rescored, **chunk.states}.values())
    assert per_partition == dict.fromkeys(range(PARTITIONS), 10)


def test_an_idle_chunk_without_stream_time_sweeps_nothing() -> None:
    v = view()
    ids = _stored_on_one_partition(v, 5)
    v.clock.clear()  # as after a restart, before any record or timer moved it
    v.due_keys = [c.encode() for c in ids]
    chunk = sweep_batch([key_partition(b"c1", PARTITIONS)], v, policy(), 100, NOW)
    assert chunk.swept == 0 and len(v.due_keys) == 5 and not chunk.states
