"""The batch path beneath Faust's stream: the feed, the fetch loop's hand-off, and pins of
the Faust internals app/streams/batchpath.py re-implements or touches."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP, Message
from prometheus_client import CollectorRegistry

from app.settings import Settings
from app.streams.app import create_app
from app.streams.batchpath import BatchConsumer, BatchMonitor, Feed, FetchingThread, taken

INPUT, CHANGELOG = "feedback.surveys.v1", "customer_state_by_customer-changelog"


def message(topic: str, offset: int, partition: int = 0) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, timestamp=0.0,
                   timestamp_type=0, headers=[], key=b"k", value=b"v", checksum=None,
                   tp=TP(topic, partition))  # fmt: skip


def batch(offsets: range, topic: str = INPUT) -> list[Message]:
    return [message(topic, o) for o in offsets]


def offsets(messages: list[Message]) -> list[int]:
    return [m.offset for m in messages]


# -- the feed ----------------------------------------------------------------------------


async def test_take_joins_queued_fetches_in_order() -> None:
    feed = Feed([INPUT], max_records=100)
    await feed.put(batch(range(0, 3)))
    await feed.put(batch(range(3, 5)))
    taken = await feed.take(max_records=5, within=10.0)  # full: no waiting
    assert offsets(taken) == [0, 1, 2, 3, 4] and len(feed) == 0


async def test_take_stops_at_the_batch_size_splitting_a_fetch() -> None:
    feed = Feed([INPUT], max_records=100)
    for start in (0, 3, 6):
        await feed.put(batch(range(start, start + 3)))
    assert offsets(await feed.take(max_records=4, within=0.0)) == [0, 1, 2, 3]
    assert offsets(await feed.take(max_records=4, within=0.0)) == [4, 5, 6, 7]
    assert offsets(await feed.take(max_records=4, within=0.0)) == [8] and len(feed) == 0


async def test_one_large_fetch_comes_out_in_batches() -> None:
    feed = Feed([INPUT], max_records=10)
    await feed.put(batch(range(0, 25)))
    sizes = [len(await feed.take(max_records=10, within=0.0)) for _ in range(3)]
    assert sizes == [10, 10, 5] and len(feed) == 0


async def test_take_waits_up_to_within_for_more_records() -> None:
    feed = Feed([INPUT], max_records=100)
    await feed.put(batch(range(0, 2)))

    async def later() -> None:
        await asyncio.sleep(0.01)
        await feed.put(batch(range(2, 4)))

    task = asyncio.create_task(later())
    taken = await feed.take(max_records=10, within=0.3)
    await task
    assert offsets(taken) == [0, 1, 2, 3]  # the second fetch came within the window


async def test_take_returns_a_partial_batch_once_within_has_passed() -> None:
    feed = Feed([INPUT], max_records=100)
    await feed.put(batch(range(0, 2)))
    taken = await asyncio.wait_for(feed.take(max_records=10, within=0.05), timeout=5.0)
    assert offsets(taken) == [0, 1]


async def test_put_waits_for_room_and_a_take_makes_it() -> None:
    feed = Feed([INPUT], max_records=4)
    await feed.put(batch(range(0, 3)))
    blocked = asyncio.create_task(feed.put(batch(range(3, 6))))
    await asyncio.sleep(0.01)
    assert not blocked.done() and len(feed) == 3  # 3 + 3 > 4: back-pressure
    assert offsets(await feed.take(3, 0.0)) == [0, 1, 2]
    await asyncio.wait_for(blocked, timeout=5.0)
    assert len(feed) == 3


async def test_a_fetch_larger_than_the_bound_goes_in_alone() -> None:
    feed = Feed([INPUT], max_records=2)
    await asyncio.wait_for(feed.put(batch(range(0, 5))), timeout=5.0)
    assert len(feed) == 5


async def test_clear_drops_what_is_queued_and_frees_a_waiting_put() -> None:
    feed = Feed([INPUT], max_records=3)
    await feed.put(batch(range(0, 3)))
    blocked = asyncio.create_task(feed.put(batch(range(3, 5))))
    await asyncio.sleep(0.01)
    assert offsets(feed.clear()) == [0, 1, 2]
    await asyncio.wait_for(blocked, timeout=5.0)
    assert offsets(await feed.take(10, 0.0)) == [3, 4]


async def test_a_stopped_feed_takes_nothing_until_started() -> None:
    feed = Feed([INPUT], max_records=3)
    await feed.put(batch(range(0, 2)))
    assert offsets(feed.stop()) == [0, 1]
    assert await feed.put(batch(range(2, 3))) is False and len(feed) == 0
    feed.start()
    assert await feed.put(batch(range(3, 4))) is True
    assert offsets(await feed.take(10, 0.0)) == [3]


async def test_a_put_waiting_for_room_gives_up_when_the_feed_stops() -> None:
    """Else it would queue its fetch after the stop had dropped the rest: processed while
    the partitions are being revoked."""
    feed = Feed([INPUT], max_records=3)
    await feed.put(batch(range(0, 3)))
    blocked = asyncio.create_task(feed.put(batch(range(3, 5))))
    await asyncio.sleep(0.01)
    feed.stop()
    assert await asyncio.wait_for(blocked, timeout=5.0) is False
    assert len(feed) == 0


# -- the consumer ------------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def consumer(tmp_path: Path, registry: CollectorRegistry) -> BatchConsumer:
    """Built in the test's event loop: Faust's services bind their events to it."""
    app = create_app(Settings(data_dir=tmp_path), registry)
    made = app.consumer
    assert isinstance(made, BatchConsumer) and made.feed is not None
    return made


class StopAfterOneFetch:
    """The Fetcher the loop is given: stopped once the one fetch has been read."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


async def drain(consumer: BatchConsumer, fetched: list[Message]) -> list[Message]:
    """Run the fetch loop over one fetch; returns what reached Faust's per-record callback."""
    fetcher = StopAfterOneFetch()
    delivered: list[Message] = []

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        for m in fetched:
            yield m.tp, m
        fetcher._stopped.set()

    async def callback(m: Message) -> None:
        delivered.append(m)

    consumer.getmany = getmany  # type: ignore[method-assign]
    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=10.0)  # noqa: SLF001
    return delivered


async def test_the_fetch_loop_hands_input_records_to_the_feed_and_tracks_them(
    consumer: BatchConsumer,
) -> None:
    fetched = [message(INPUT, 0), message(CHANGELOG, 7), message(INPUT, 1), message(INPUT, 2, 1)]
    delivered = await drain(consumer, fetched)
    assert delivered == [fetched[1]]  # a changelog record still takes Faust's path
    assert consumer.feed is not None
    assert await consumer.feed.take(10, 0.0) == [fetched[0], fetched[2], fetched[3]]
    # tracked, so a rebalance waits for their batch to be acked (Consumer.wait_empty)
    assert {m.offset for m in consumer.unacked if m.topic == INPUT} == {0, 1, 2}
    assert consumer._read_offset[TP(INPUT, 0)] == 1  # noqa: SLF001
    assert consumer._read_offset[TP(INPUT, 1)] == 2  # noqa: SLF001


async def test_the_fetch_loop_skips_what_it_read_before(consumer: BatchConsumer) -> None:
    consumer._read_offset[TP(INPUT, 0)] = 5  # noqa: SLF001
    await drain(consumer, [message(INPUT, 4), message(INPUT, 6)])
    assert consumer.feed is not None
    assert offsets(await consumer.feed.take(10, 0.0)) == [6]


async def test_a_stopped_flow_drops_the_fetch(consumer: BatchConsumer) -> None:
    consumer.stop_flow()
    await drain(consumer, [message(INPUT, 0)])
    assert consumer.feed is not None and len(consumer.feed) == 0


async def test_stop_flow_drops_what_the_feed_holds(consumer: BatchConsumer) -> None:
    assert consumer.feed is not None
    await consumer.feed.put(batch(range(0, 3)))
    consumer.stop_flow()
    assert len(consumer.feed) == 0


async def test_records_dropped_by_a_stopped_flow_are_not_waited_for_while_still_referenced(
    consumer: BatchConsumer,
) -> None:
    """The two-worker hang: the fetch loop still referenced the last record of its last
    fetch (a local variable) while the rebalance's ``wait_empty`` waited for every tracked
    record to be acked or collected. A batch the processor took stays tracked: the
    rebalance must wait for its ack."""
    fetched = [message(INPUT, 0), message(INPUT, 1), message(INPUT, 2)]
    await drain(consumer, fetched)
    assert consumer.feed is not None
    in_flight = await consumer.feed.take(1, 0.0)  # the processor's batch
    consumer.stop_flow()
    pending = {m.offset for m in consumer.unacked if m.topic == INPUT}
    assert pending == {0}, "only the batch being processed holds the rebalance"
    assert in_flight == [fetched[0]] and len(fetched) == 3  # the others are still referenced
    consumer.resume_flow()
    assert consumer.feed is not None and await consumer.feed.put(batch(range(3, 4))) is True


async def test_a_fetch_the_flow_stopped_while_it_waited_for_room_is_not_waited_for(
    consumer: BatchConsumer,
) -> None:
    assert consumer.feed is not None
    await consumer.feed.put(batch(range(0, consumer.feed.max_records)))  # full
    fetched = [message(INPUT, 100), message(INPUT, 101)]
    loop_task = asyncio.create_task(drain(consumer, fetched))
    for _ in range(100):  # until the loop has tracked the fetch and waits for room
        if {m.offset for m in consumer.unacked} >= {100, 101}:
            break
        await asyncio.sleep(0.01)
    assert {m.offset for m in consumer.unacked} >= {100, 101}
    consumer.stop_flow()
    await asyncio.wait_for(loop_task, timeout=5.0)
    assert not [m for m in consumer.unacked if m.offset in (100, 101)]
    assert len(consumer.feed) == 0


async def test_an_acked_record_becomes_committable(consumer: BatchConsumer) -> None:
    tp = TP(INPUT, 0)
    m = message(INPUT, 0)
    consumer._committed_offset[tp] = 0  # noqa: SLF001
    consumer.app.topics._acking_topics.add(INPUT)  # noqa: SLF001 - the agent declares it
    consumer.track_message(m)
    assert consumer.ack(m) and consumer._acked[tp] == [0]  # noqa: SLF001
    assert m not in consumer.unacked


def faust_metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"faust_{name}", labels)


async def test_a_fetch_is_counted_per_partition_as_faust_counts_records(
    consumer: BatchConsumer, registry: CollectorRegistry
) -> None:
    fetched = [message(INPUT, 0), message(INPUT, 1), message(INPUT, 5, partition=1)]
    await drain(consumer, fetched)
    assert faust_metric(registry, "messages_received_total") == 3
    assert faust_metric(registry, "active_messages") == 3
    assert faust_metric(registry, "messages_received_per_topic_total", topic=INPUT) == 3
    # the newest offset read per partition, as Faust's per-record call leaves it
    per_tp = "messages_received_per_topics_partition"
    assert faust_metric(registry, per_tp, topic=INPUT, partition="0") == 1
    assert faust_metric(registry, per_tp, topic=INPUT, partition="1") == 5
    monitor = consumer.app.monitor
    assert isinstance(monitor, BatchMonitor)
    assert monitor.messages_received_by_topic[INPUT] == 3
    assert monitor.tp_read_offsets[TP(INPUT, 1)] == 5


async def test_an_acked_batch_leaves_flight(
    consumer: BatchConsumer, registry: CollectorRegistry
) -> None:
    fetched = [message(INPUT, 0), message(INPUT, 1), message(INPUT, 2)]
    await drain(consumer, fetched)
    consumer.app.topics._acking_topics.add(INPUT)  # noqa: SLF001 - the agent declares it
    assert consumer.feed is not None
    consumer.ack_batch(await consumer.feed.take(2, 0.0))
    assert faust_metric(registry, "active_messages") == 1
    assert {m.offset for m in consumer.unacked} == {2}


async def test_records_the_feed_drops_on_a_stopped_flow_leave_flight(
    consumer: BatchConsumer, registry: CollectorRegistry
) -> None:
    await drain(consumer, [message(INPUT, 0), message(INPUT, 1)])
    assert faust_metric(registry, "active_messages") == 2
    consumer.stop_flow()  # a rebalance: the feed's records are dropped, read again later
    assert faust_metric(registry, "active_messages") == 0


async def test_a_fetch_dropped_by_a_stopped_flow_is_neither_tracked_nor_counted(
    consumer: BatchConsumer, registry: CollectorRegistry
) -> None:
    consumer.stop_flow()
    await drain(consumer, [message(INPUT, 0)])
    assert not [m for m in consumer.unacked if m.topic == INPUT]
    assert faust_metric(registry, "messages_received_total") in (None, 0)


# -- pins of Faust internals ---------------------------------------------------------------

# sha256 of faust-streaming 0.15.3's Consumer._drain_messages, which BatchConsumer
# re-implements. If this fails, a Faust upgrade changed the loop: port the change.
DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_faust_fetch_loop_is_the_one_ported() -> None:
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)  # noqa: SLF001
    assert hashlib.sha256(source.encode()).hexdigest() == DRAIN_SHA256


def test_faust_internals_the_batch_path_uses() -> None:
    c = faust_consumer.Consumer
    for name in ("track_message", "ack", "wait_first", "stop_flow", "_add_gap", "commit"):
        assert callable(getattr(c, name)), name
    # BatchConsumer.track_fetch is track_message for a whole fetch: it must still be
    # only the pending set and the sensors' on_message_in.
    track = inspect.getsource(c.track_message)
    assert "self._unacked_messages.add(message)" in track
    assert "self._on_message_in(message.tp, message.offset, message)" in track
    # BatchMonitor sums what PrometheusMonitor counts per record.
    from faust.sensors.prometheus import PrometheusMonitor

    per_record = inspect.getsource(PrometheusMonitor.on_message_in)
    for line in ("messages_received.inc()", "active_messages.inc()",
                 "messages_received_per_topics.labels(topic=tp.topic).inc()",
                 "messages_received_per_topics_partition.labels("):  # fmt: skip
        assert line in per_record, line
    assert isinstance(faust_consumer.CONSUMER_FETCHING, str)
    # Dropped records leave the pending set by themselves: a cleared feed cannot make a
    # rebalance wait for records nobody will ack.
    init = inspect.getsource(c.__init__)
    assert "self._unacked_messages = WeakSet()" in init
    # BatchConsumer.aside: a rebalance waits through wait_empty, which it extends, after
    # stopping the flow, which it reads.
    import faust

    assert "consumer.wait_empty()" in inspect.getsource(faust.App._consumer_wait_empty)  # noqa: SLF001
    assert "self.flow_active = False" in inspect.getsource(c.stop_flow)


async def test_a_taken_batch_stamps_its_partitions_for_faust_liveness_check(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    inbound = app.monitor.stream_inbound_time
    assert TP(INPUT, 3) not in inbound
    taken(app, [message(INPUT, 0, partition=3), message(INPUT, 1, partition=3),
                message(INPUT, 0, partition=5)])  # fmt: skip
    assert {TP(INPUT, 3), TP(INPUT, 5)} <= set(inbound)
    assert TP(INPUT, 4) not in inbound
    # Faust's check reads that very mapping: a rename would bring the false ERRORs back.
    from faust.transport.drivers import aiokafka as driver

    check = inspect.getsource(driver.AIOKafkaConsumerThread.verify_event_path)
    assert "monitor.stream_inbound_time.get(tp)" in check


async def test_a_count_triggered_commit_does_not_hold_the_fetch_loop(
    consumer: BatchConsumer,
) -> None:
    release = asyncio.Event()
    commits: list[str] = []

    async def slow_commit(*_: Any, **__: Any) -> bool:
        commits.append("started")
        await release.wait()  # a commit in progress (the timer's, flushing the producer)
        return True

    consumer.commit = slow_commit  # type: ignore[method-assign]
    consumer._commit_every = 1  # noqa: SLF001
    consumer._n_acked = 5  # noqa: SLF001
    await drain(consumer, [message(INPUT, 0), message(INPUT, 1)])  # returns: not held
    assert consumer.feed is not None and offsets(await consumer.feed.take(10, 0.0)) == [0, 1]
    assert commits == ["started"]  # one commit at a time, in the background
    release.set()


async def test_wait_reports_records_without_taking_them() -> None:
    feed = Feed([INPUT], max_records=10)
    assert not await feed.wait(0.01)
    waiting = asyncio.create_task(feed.wait(5.0))
    await asyncio.sleep(0)  # the wait is parked on the empty feed
    assert not waiting.done()
    await feed.put(batch(range(0, 2)))
    assert await asyncio.wait_for(waiting, 5.0)
    assert len(feed) == 2 and await feed.wait(0.0)
    assert offsets(await feed.take(10, 0.0)) == [0, 1]


async def test_a_rebalance_waits_for_the_work_aside(consumer: BatchConsumer) -> None:
    """The idle sweep writes changelogs like a batch: wait_empty must wait for it."""
    release, steps = asyncio.Event(), []

    async def sweep() -> int:
        steps.append("sweep started")
        await release.wait()
        steps.append("sweep delivered")
        return 7

    running = asyncio.create_task(consumer.aside(sweep()))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(consumer.wait_empty())
    for _ in range(5):
        await asyncio.sleep(0)
    assert steps == ["sweep started"] and not waiting.done()
    release.set()
    assert await asyncio.wait_for(running, 5.0) == 7
    await asyncio.wait_for(waiting, 5.0)
    assert steps == ["sweep started", "sweep delivered"]


async def test_no_work_aside_while_the_flow_is_stopped(consumer: BatchConsumer) -> None:
    ran = []

    async def sweep() -> int:
        ran.append(1)
        return 1

    consumer.stop_flow()
    assert await consumer.aside(sweep()) is None and ran == []
    consumer.resume_flow()
    assert await consumer.aside(sweep()) == 1 and ran == [1]


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, (65_536, 25)),
    ({"fetch_min_kib": 0, "fetch_wait_ms": 1500}, (1, 1500)),  # as Faust left them
    ({"fetch_min_kib": 16, "fetch_wait_ms": 10}, (16_384, 10)),
])  # fmt: skip
async def test_the_consumer_asks_the_broker_to_wait_as_the_settings_say(
    tmp_path: Path, registry: CollectorRegistry, settings: dict[str, int],
    expected: tuple[int, int],
) -> None:  # fmt: skip
    from aiokafka import AIOKafkaConsumer

    app = create_app(Settings(data_dir=tmp_path, **settings), registry)
    thread = app.consumer._thread  # noqa: SLF001
    assert isinstance(thread, FetchingThread)
    made = thread._create_worker_consumer(app.transport)  # noqa: SLF001
    assert (made._fetch_min_bytes, made._fetch_max_wait_ms) == expected  # noqa: SLF001
    # aiokafka hands both to its Fetcher when the consumer starts.
    start = inspect.getsource(AIOKafkaConsumer.start)
    assert "fetch_min_bytes=self._fetch_min_bytes" in start
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start
