"""Delivery without a broker: the write order, and a crash at every send changes nothing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.domain.batch import BatchResult, Record, fold_batch
from app.domain.events import ErasureRequest, encode
from app.streams import store
from app.streams.delivery import Delivery
from app.streams.tables import key_partition
from tests.unit.domain.factory import at, purchase, survey
from tests.unit.streams.batchkit import (
    ERASURE,
    LIMITS,
    NOW,
    PARTITIONS,
    SURVEYS,
    Metrics,
    Producer,
    SendFailedError,
    Table,
    View,
    policy,
    records,
)

ALERTS, DEAD = "alerts", "deadletter"
EVENTS = [
    purchase(5000, day=1, customer_id="c1"), survey(9, day=2, customer_id="c1"),
    survey(2, day=3, customer_id="c1", segment={"region": "eu"}),
    purchase(80, day=3, customer_id="c2"), survey(7, day=4, customer_id="c2"),
    survey(3, day=4, customer_id="c3", segment={"region": "us"}),
]  # fmt: skip
BAD = Record(SURVEYS, 0, 77, b"bad", b"{nope", 0.0)


class World:
    """The two tables and a producer; ``restore`` is a restart on a fresh state dir."""

    def __init__(self) -> None:
        self.customers, self.tallies = Table("customers"), Table("tallies")

    def delivery(self, producer: Producer) -> Delivery:
        return Delivery(producer, store.Rows(self.customers), store.Rows(self.tallies), topic_alerts=ALERTS,
                        topic_deadletter=DEAD, partitions_of=lambda topic: 4,
                        metrics=Metrics())  # fmt: skip

    def fold(self) -> BatchResult:
        view = View(self.customers, self.tallies, policy())
        return fold_batch([BAD, *records(EVENTS)], view, policy(), LIMITS, NOW)

    def run(self, producer: Producer) -> None:
        asyncio.run(self.delivery(producer).deliver(self.fold()))

    def restore(self, producer: Producer) -> None:
        for table in (self.customers, self.tallies):
            table.data.clear()
            table.data.update(producer.changelog(table.changelog_topic.get_topic_name()))

    def snapshot(self) -> tuple[dict[bytes, tuple[int, str | None, int | None]], dict[bytes, bytes]]:
        states = {}
        for key, raw in self.customers.data.items():
            s = store.load_state(raw)
            assert s is not None
            states[key] = (s.seq, s.band, s.score)
        return states, dict(self.tallies.data)


def clean() -> tuple[World, Producer]:
    world, producer = World(), Producer()
    world.run(producer)
    return world, producer


def test_write_order_alerts_and_tallies_then_states_with_dead_letters() -> None:
    _, producer = clean()
    topics = [t for t, *_ in producer.sent]
    order = ["alerts", "tallies-changelog", "customers-changelog"]
    firsts = [topics.index(t) for t in order]
    lasts = [len(topics) - 1 - topics[::-1].index(t) for t in order]
    # Alerts and tallies go together, both before the first customer state.
    assert max(lasts[0], lasts[1]) < firsts[2]
    # Dead letters are sent after the tallies and awaited with the customer states.
    assert lasts[1] < topics.index(DEAD) < lasts[2]


@dataclass
class HeldProducer(Producer):
    """Confirms nothing until ``release``: shows what is sent while earlier sends wait."""

    held: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: Any, headers: Any) -> asyncio.Future[Any]:  # fmt: skip
        done = await super().send(topic, key, value, partition, timestamp, headers)
        held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append((held, done))
        return held

    def release(self) -> None:
        for held, done in self.held:
            if not held.done():
                held.set_result(done.result())


def test_alerts_and_tallies_share_a_round_trip_and_states_wait_for_both() -> None:
    world, producer = World(), HeldProducer()
    result = world.fold()
    assert result.alerts and result.tallies and result.states

    async def run() -> tuple[set[str], set[str]]:
        task = asyncio.ensure_future(world.delivery(producer).deliver(result))
        for _ in range(20):  # let the delivery send all it can without confirmations
            await asyncio.sleep(0)
        before = {t for t, *_ in producer.sent}
        producer.release()
        for _ in range(20):
            await asyncio.sleep(0)
            producer.release()
        await asyncio.wait_for(task, timeout=5.0)
        return before, {t for t, *_ in producer.sent}

    before, after = asyncio.run(run())
    # Both were sent before either was confirmed, and no customer state was.
    assert {"alerts", "tallies-changelog"} <= before
    assert "customers-changelog" not in before
    assert "customers-changelog" in after


def test_each_alert_goes_to_its_keys_default_partition_in_order() -> None:
    """Where the producer's default partitioner puts the key, so an erasure's tombstone
    (sent without a partition) lands on the same partition of the alert topic."""
    events = [ev for i in range(8) for ev in (purchase(5000, day=1, customer_id=f"v{i}"),
                                              survey(2, day=2, customer_id=f"v{i}"))]  # fmt: skip
    world, producer = World(), Producer()
    result = fold_batch(records(events), View(world.customers, world.tallies, policy()),
                        policy(), LIMITS, NOW)  # fmt: skip
    decided = [(a.customer_id.encode(), a.alert_id) for a, _ in result.alerts]
    asyncio.run(world.delivery(producer).deliver(result))
    sent = [(key, partition, json.loads(value)["alert_id"])
            for topic, key, value, partition in producer.sent if topic == ALERTS]  # fmt: skip
    assert len({key_partition(k, PARTITIONS) for k, _ in decided}) > 1, "several partitions"
    assert sorted(a for _, _, a in sent) == sorted(a for _, a in decided)
    for part in range(PARTITIONS):
        on_it = [a for k, a in decided if key_partition(k, PARTITIONS) == part]
        assert [a for _, p, a in sent if p == part] == on_it  # in the fold's order


def test_the_local_store_holds_only_what_its_changelog_has() -> None:
    world, producer = clean()
    for table in (world.customers, world.tallies):
        assert dict(table.data) == producer.changelog(table.changelog_topic.get_topic_name())
        assert table.data.persisted  # where the store is up to date


def test_a_failed_send_leaves_the_store_untouched_for_that_table() -> None:
    n_alerts = len(World().fold().alerts)
    world, producer = World(), Producer(fail_at=n_alerts)  # the first tally record fails
    with pytest.raises(SendFailedError):
        world.run(producer)
    assert dict(world.tallies.data) == {} and dict(world.customers.data) == {}


def sends_in_a_clean_run() -> int:
    return len(clean()[1].sent)


@pytest.mark.parametrize("fresh_dir", [False, True], ids=["own state dir", "fresh state dir"])
def test_a_crash_at_any_send_then_a_replay_ends_where_a_clean_run_does(fresh_dir: bool) -> None:
    want, want_producer = clean()
    want_alerts = {json.loads(v)["alert_id"] for t, _, v, _ in want_producer.sent
                   if t == ALERTS and v}  # fmt: skip
    for k in range(sends_in_a_clean_run()):
        world, producer = World(), Producer(fail_at=k)
        with pytest.raises(SendFailedError):
            world.run(producer)
        if fresh_dir:
            world.restore(producer)
        world.run(producer)  # the restarted worker replays the batch
        assert world.snapshot() == want.snapshot(), f"crash at send {k}"
        got_alerts = {json.loads(v)["alert_id"] for t, _, v, _ in producer.sent
                      if t == ALERTS and v}  # fmt: skip
        assert got_alerts == want_alerts, f"crash at send {k}: alerts lost or invented"
        dead = [key for t, key, *_ in producer.sent if t == DEAD]
        assert dead and set(dead) == {b"bad"}, f"crash at send {k}"


def test_an_erasure_tombstones_the_state_and_the_alert_key() -> None:
    world, producer = clean()
    part = records(EVENTS)[0].partition
    request = ErasureRequest(event_type="erasure", event_id="x1", customer_id="c1",
                             occurred_at=at(days=5), schema_version=1)  # fmt: skip
    view = View(world.customers, world.tallies, policy())
    result = fold_batch([Record(ERASURE, part, 0, b"c1", encode(request), 0.0)], view,
                        policy(), LIMITS, NOW)  # fmt: skip
    asyncio.run(world.delivery(producer).deliver(result))
    assert b"c1" not in world.customers.data
    assert b"c1" not in producer.changelog("customers-changelog")
    assert (ALERTS, b"c1", None, None) in producer.sent
    assert store.load_marker(view.customers.data.get(
        next(k for k in world.customers.data if k.startswith(b"\x00erased|")))) == at(days=5)
