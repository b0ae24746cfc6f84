"""The read model's stream time after a restart."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.customer import CustomerState
from app.streams import store
from app.streams.readmodel import ReadModel

JAN, MAY = datetime(2025, 1, 20, tzinfo=UTC), datetime(2025, 5, 22, tzinfo=UTC)
WALL = datetime(2026, 11, 23, tzinfo=UTC)


def test_stream_time_resumes_from_when_customers_were_scored_not_their_newest_event() -> None:
    """A complaint read ahead of the purchases is a customer's newest event (May), but stream
    time had only reached January when it was scored."""
    state = CustomerState(customer_id="c1", last_event_at=MAY, churn_as_of=JAN)
    model = ReadModel()
    model.seed(b"c1", 0, store.load_fields(store.dump_state(state)), WALL)
    assert model.stream_time(0) == JAN


def test_states_from_before_churn_as_of_resume_from_their_newest_event() -> None:
    state = CustomerState(customer_id="c1", last_event_at=MAY)
    model = ReadModel()
    model.seed(b"c1", 0, store.load_fields(store.dump_state(state)), WALL)
    assert model.stream_time(0) == MAY


def test_due_counts_the_sweeps_backlog_as_of_stream_time() -> None:
    model = ReadModel()
    for i, due in enumerate((JAN, MAY, MAY, WALL)):
        model.record(f"c{i}".encode(), 0, CustomerState(customer_id=f"c{i}"), due)
    assert model.due(0) == 0  # no stream time yet
    model.advance(0, MAY, WALL)
    assert model.due(0) == 3  # January and the two in May
    model.record(b"c1", 0, CustomerState(customer_id="c1"), WALL)  # re-scheduled later
    assert model.due(0) == 2 and model.pending(0) == 4  # c1's old time no longer counts
    assert len(model.take_due(0, 10)) == 2 and model.due(0) == 0
    assert model.pending(0) == 2  # c1 (re-scheduled to WALL) and c3 are still scheduled


def test_a_schedule_rewritten_many_times_stays_as_small_as_its_customers() -> None:
    """Live, a busy customer is re-scheduled at every write: the schedule holds its
    current time only (the heap it replaced kept every superseded entry until its time)."""
    model = ReadModel()
    start = WALL.timestamp()
    for i in range(20_000):
        model.schedule(b"busy", 0, start + 60.0 * (i + 1))  # each write moves its next look
    model.schedule(b"quiet", 0, start + 30.0)
    entries = model._schedules[0]  # noqa: SLF001 - the size is what this test is about
    assert len(entries) == 2 and sum(map(len, entries._buckets.values())) == 2  # noqa: SLF001
    assert model.pending(0) == 2
    later = datetime.fromtimestamp(start + 60.0 * 30_000, UTC)
    model.advance(0, later, later)
    assert model.take_due(0, 100) == [b"quiet", b"busy"]  # earliest first
    assert model.take_due(0, 100) == [] and model.pending(0) == 0


def test_a_dropped_customer_is_no_longer_scheduled() -> None:
    model = ReadModel()
    for key in (b"a", b"b"):
        model.record(key, 3, CustomerState(customer_id=key.decode()), MAY)
    model.drop(b"a")
    assert model.pending(3) == 1
    model.advance(3, WALL, WALL)
    assert model.take_due(3, 10) == [b"b"] and model.pending(3) == 0


def test_has_due_sees_the_backlog_past_superseded_entries() -> None:
    model = ReadModel()
    model.record(b"c1", 0, CustomerState(customer_id="c1"), JAN)
    assert not model.has_due(0), "no stream time yet"
    model.advance(0, MAY, WALL)
    assert model.has_due(0) and not model.has_due(1)
    model.record(b"c1", 0, CustomerState(customer_id="c1"), WALL)  # January's entry superseded
    assert not model.has_due(0)
    assert model.pending(0) == 1 and model.take_due(0, 10) == []
    model.advance(0, WALL, WALL)
    assert model.has_due(0) and model.take_due(0, 10) == [b"c1"]
    assert not model.has_due(0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["schedule", "drop", "take"]),
                          st.integers(0, 7), st.integers(0, 40), st.integers(1, 5)),
                max_size=80))  # fmt: skip
def test_the_schedule_takes_exactly_what_a_plain_dict_of_due_times_says(
    steps: list[tuple[str, int, int, int]],
) -> None:
    """Against the rule itself: each customer has at most one due time; take_due gives
    the due ones earliest first (ties by key), up to the limit, and unschedules them.
    Times 1,000 s apart around a stream time mid-hour, so several of the schedule's
    hour buckets are due, one partly."""
    model, due = ReadModel(), {}
    cutoff = WALL.timestamp() + 20_500
    model.advance(0, datetime.fromtimestamp(cutoff, UTC), datetime.fromtimestamp(cutoff, UTC))
    for op, k, t, limit in steps:
        key = f"c{k}".encode()
        if op == "schedule":
            at = WALL.timestamp() + t * 1000
            model.record(key, 0, CustomerState(customer_id=key.decode()),
                         datetime.fromtimestamp(at, UTC))  # fmt: skip
            due[key] = at
        elif op == "drop":
            model.drop(key)
            due.pop(key, None)
        else:
            ready = sorted((at, k) for k, at in due.items() if at <= cutoff)
            expected = [k for _, k in ready[:limit]]
            assert model.take_due(0, limit) == expected
            for k in expected:
                del due[k]
        assert model.pending(0) == len(due)
        assert model.due(0) == sum(at <= cutoff for at in due.values())
        assert model.has_due(0) == any(at <= cutoff for at in due.values())
