"""Whole fetched batches of input records to the customer processor, beneath Faust's stream.

Why: Faust hands a consumed record to an agent one at a time. Per record its fetch
loop (``Consumer._drain_messages``) awaits ``wait_first`` (two tasks and an
``asyncio.wait``), the conductor takes a lock and routes it, the channel decodes it
into an Event and queues it, the stream dequeues it, and the sensors run four times.
At 200,000 events that path took about a fifth of the worker's samples (py-spy,
README Benchmark), more than the fold of the events itself. Our processor works in
batches anyway (domain.batch.fold_batch), so records of the input topics skip that
path: the fetch loop hands each fetch's input records to a ``Feed`` in one step, and
the processor task takes them from it in batches.

What Faust still does: group membership and assignment, fetching, offsets and
commits (the records are acked with ``Consumer.ack`` once their batch is delivered,
exactly as the agent did), table recovery (changelog records still take Faust's
path), rebalances and the web server. The input topic stays declared by the agent,
so Faust subscribes to it and its acks stay enabled; that agent receives nothing.

Guarantees, as on Faust's path:
- each fetch's records are tracked as pending (what ``Consumer.track_message`` does, for
  the whole fetch: ``track_fetch``) before they are handed over, so a rebalance waits
  (``wait_empty``) for the batch being processed to be acked;
- ``stop_flow`` (a rebalance, the seek after recovery) drops what the feed holds,
  as Faust clears its stream buffers; those records are not acked, so they are read
  again from the committed offset;
- a batch whose processing raised is never acked, so it is never committed.

Faust's liveness check (``verify_event_path``) reads ``Monitor.stream_inbound_time``,
which its stream stamps per event; the processor stamps it per batch (``taken``), or the
check logs "Stream has not started processing" for every partition with a backlog
once ``stream_processing_timeout`` passes.

Private API touched: ``Consumer._drain_messages`` (re-implemented below from
faust-streaming 0.15.3, with the hand-off in place of the per-record callback and the
count-triggered commit in the background),
``_read_offset``, ``_add_gap``, ``_commit_every``, ``_n_acked``, ``wait_first``,
``suspend_flow``, ``diag``, ``consumer_stopped_errors``, ``_unacked_messages``,
``_on_message_in``, ``Monitor.stream_inbound_time`` and the Prometheus monitor's
``_metrics`` (BatchMonitor).
tests/unit/streams/test_batchpath.py pins them. (Tables are read and written beneath
Faust's store API too, without a current event: store.Rows.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Coroutine, Sequence
from time import monotonic
from typing import Any, ClassVar, TypeVar

from faust.sensors.prometheus import PrometheusMonitor, setup_prometheus_sensors
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from prometheus_client import CollectorRegistry

from app.streams.consumer import SafeOffsetConsumer

FEED_ATTR = "feedback_feed"
FETCH_ATTR = "feedback_fetch"  # (fetch_min_bytes, fetch_max_wait_ms) for the consumer
_T = TypeVar("_T")


class Feed:
    """Fetched input records waiting for the processor, bounded in records.

    One list per fetch goes in; ``take`` joins or splits them into batches. The bound is
    back-pressure: the fetch loop waits (or drops the fetch when the flow stops)
    while the processor is this far behind.
    """

    def __init__(self, topics: Collection[str], max_records: int) -> None:
        self.topics = frozenset(topics)
        self.max_records = max_records
        self._lists: deque[list[Message]] = deque()
        self._size = 0
        self._ready = asyncio.Event()  # something to take
        self._room = asyncio.Event()  # room to put
        self._room.set()
        self._stopped = False  # the flow is stopped: nothing goes in until start()

    def __len__(self) -> int:
        return self._size

    async def put(self, messages: list[Message]) -> bool:
        """Queue one fetch's records once there is room (a fetch larger than the bound
        goes in alone); False, queueing nothing, if the feed is or gets stopped first."""
        while not self._stopped and self._size and self._size + len(messages) > self.max_records:
            self._room.clear()
            await self._room.wait()
        if self._stopped:
            return False
        self._lists.append(messages)
        self._size += len(messages)
        self._ready.set()
        return True

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for records; whether there are any. Takes nothing,
        so it can be given up on (a ``take`` cancelled after it popped would lose records
        that are tracked as pending, and a rebalance would wait for their ack)."""
        if self._lists:
            return True
        self._ready.clear()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            pass
        return bool(self._lists)

    async def take(self, max_records: int, within: float) -> list[Message]:
        """The next batch of at most ``max_records``, in fetch order, waiting up to
        ``within`` seconds after the first record for it to fill.

        A fetch is split across batches when it is larger: one fetch can hold every
        partition's fetch size of records (tens of thousands), and a batch that large
        would hold the event loop (heartbeats, HTTP) for seconds.
        """
        while not self._lists:
            self._ready.clear()
            await self._ready.wait()
        batch = self._pop(max_records)
        deadline = asyncio.get_running_loop().time() + within
        while len(batch) < max_records:
            if not self._lists:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), left)
                except TimeoutError:
                    break
                continue
            batch += self._pop(max_records - len(batch))
        return batch

    def _pop(self, limit: int) -> list[Message]:
        head = self._lists[0]
        if len(head) <= limit:
            taken = self._lists.popleft()
        else:
            taken, self._lists[0] = head[:limit], head[limit:]
        self._size -= len(taken)
        self._room.set()
        return taken

    def clear(self) -> list[Message]:
        """Drop everything queued (never acked, so read again); returns what it dropped."""
        dropped = [m for fetched in self._lists for m in fetched]
        self._lists.clear()
        self._size = 0
        self._room.set()
        return dropped

    def stop(self) -> list[Message]:
        """The flow stopped: drop what is queued and take nothing more (a put waiting for
        room gives up) until ``start``; returns what it dropped."""
        self._stopped = True
        return self.clear()

    def start(self) -> None:
        self._stopped = False


class FetchingThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the broker asked to wait for a fetch's worth of records.

    Why: Faust builds its aiokafka consumer with aiokafka's ``fetch_min_bytes`` of 1, so
    under live traffic the broker answers each fetch as soon as one record is there and
    the consumer thread sends the next at once: hundreds of small fetches a second, each
    about 0.8 ms of CPU in Python. bench.live (2026-12-06) measured the worker's threads
    other than the event loop at 0.20-0.28 of a core under 1,500-3,000 events/s (184 and
    67 us an event); with 64 KiB or 25 ms, 26 us an event at 3,000/s. FEEDBACK_FETCH_MIN_KIB
    and FEEDBACK_FETCH_WAIT_MS set what the broker waits for (whichever comes first); the
    wait bounds the latency it adds.

    Private API touched: ``AIOKafkaConsumerThread._create_worker_consumer`` (Faust) and
    the aiokafka consumer's ``_fetch_min_bytes`` / ``_fetch_max_wait_ms``, which it hands
    to its Fetcher on start. tests/unit/streams/test_batchpath.py pins them.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        fetch = getattr(self.app, FETCH_ATTR, None)
        if fetch is not None:
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = fetch
        return consumer


class BatchConsumer(SafeOffsetConsumer):
    """SafeOffsetConsumer whose fetch loop hands input records to a Feed, one fetch at a time."""

    def _new_consumer_thread(self) -> FetchingThread:
        return FetchingThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def feed(self) -> Feed | None:
        feed: Feed | None = getattr(self.app, FEED_ATTR, None)
        return feed

    _background_commit: asyncio.Task[bool] | None = None

    def _commit_behind(self) -> None:
        """Commit after ``broker_commit_every`` acks without stopping the fetch loop.

        Faust's loop awaits that commit, and a commit waits for the one in progress
        (the commit timer's), which flushes the producer first: under load that held
        the fetch, and every event behind it, for seconds (the worker log's "Timer
        commit is overlapping (runtime=10.2)"). The commit timer keeps committing.
        """
        if self._background_commit is None or self._background_commit.done():
            self._background_commit = asyncio.ensure_future(self.commit())

    @property
    def _batch_monitor(self) -> BatchMonitor | None:
        monitor = self.app.monitor
        return monitor if isinstance(monitor, BatchMonitor) else None

    def _left_flight(self, count: int) -> None:
        """Records acked or dropped: no longer in flight for the monitor."""
        monitor = self._batch_monitor
        if monitor is not None:
            monitor.on_acked(count)

    def track_fetch(self, messages: Sequence[Message]) -> None:
        """``Consumer.track_message`` for a whole fetch: pending ack, counted once per partition.

        Per record, Faust's tracking calls every sensor, and its Prometheus monitor
        updates three metrics (two with labels): about 6% of a backfilling worker's
        samples (py-spy, README Benchmark), for counts that are the same summed per fetch.
        Tracked before the hand-off, so a rebalance waits (``wait_empty``) for them.
        """
        pending = self._unacked_messages  # a WeakSet (pinned in the unit tests)
        for m in messages:
            pending.add(m)
        monitor = self._batch_monitor
        if monitor is not None:
            monitor.on_fetched(messages)
        else:  # another monitor (none in this service): Faust's per-record call
            on_message_in = self._on_message_in
            for m in messages:
                on_message_in(m.tp, m.offset, m)

    _aside: asyncio.Future[Any] | None = None

    async def aside(self, work: Coroutine[Any, Any, _T]) -> _T | None:
        """Run processor work that belongs to no fetched record (the idle sweep) so that a
        rebalance waits for it as for a batch: ``wait_empty`` waits for acks only, and a
        sweep writing a revoked partition's changelog after its new owner started could
        overwrite that owner's newer state. Not run (None) while the flow is stopped."""
        if not self.flow_active:
            work.close()
            return None
        task = asyncio.ensure_future(work)
        self._aside = task
        try:
            return await task
        finally:
            self._aside = None

    async def wait_empty(self) -> None:
        """Faust's wait for the batches in flight, after the work ``aside`` runs."""
        task = self._aside
        if task is not None and not task.done():
            await asyncio.wait([task])
        await super().wait_empty()

    def ack_batch(self, messages: Sequence[Message]) -> None:
        """Ack a delivered batch, and tell the monitor they are no longer in flight."""
        ack = self.ack
        for message in messages:
            ack(message)
        self._left_flight(len(messages))

    def _untrack(self, messages: Sequence[Message]) -> None:
        """Records the processor will never see (dropped, or never queued): not pending an
        ack any more, so a rebalance does not wait for them; not acked either, so they
        are not committed, and are read again after the seek."""
        pending = self._unacked_messages
        gone = [m for m in messages if m in pending]
        for m in gone:
            pending.discard(m)
        self._left_flight(len(gone))

    def stop_flow(self) -> None:
        """Faust's, and the feed drops what it holds and takes nothing more until the flow
        resumes.

        Dropped records used to stay tracked until garbage: the fetch loop still held
        the last record of its last fetch in a local variable while it waited on a
        fetcher stopped for the rebalance, so ``wait_empty`` waited for that one record
        for ever and the worker was put out of its group (two workers joining one after
        the other, ``bench.throughput --workers 2``: one of them stuck in revocation,
        "wait_empty: Waiting for tasks" every 10 s). A put that got into the feed after
        the stop would have been processed during the rebalance.
        """
        super().stop_flow()
        if self.feed is not None:
            self._untrack(self.feed.stop())

    def resume_flow(self) -> None:
        if self.feed is not None:
            self.feed.start()
        super().resume_flow()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - a broker loop
        """Faust 0.15.3's loop (see the module docstring), with one change: records of
        the feed's topics are tracked and handed over per fetch instead of delivered one
        by one through the conductor."""
        feed = self.feed
        feed_topics = feed.topics if feed is not None else frozenset()
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                handoff: list[Message] = []
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)  # a fetch can hold tens of thousands of records
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # read before: Faust drops it too
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            self._commit_behind()
                        if tp.topic in feed_topics:
                            handoff.append(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    if handoff and feed is not None and not self.suspend_flow.is_set():
                        self.track_fetch(handoff)
                        if not await feed.put(handoff):
                            # The flow stopped first: read again after the seek.
                            self._untrack(handoff)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class BatchMonitor(PrometheusMonitor):
    """Faust's Prometheus monitor, told about input records once per fetch and per batch.

    The figures are Faust's own (``faust_messages_received``, per topic and partition,
    ``faust_active_messages``), summed: a fetch counts its records per partition in one
    step. In flight means fetched and not yet acked: Faust decrements that in its
    stream (``on_message_out``), which the batch path does not use, so without
    ``on_acked`` the gauge only grew. ``Message.time_in`` is not stamped: only
    ``on_message_out`` reads it, and it is never called for these records.
    """

    def on_fetched(self, messages: Sequence[Message]) -> None:
        per_tp: dict[TP, list[int]] = {}
        for m in messages:
            seen = per_tp.get(m.tp)
            if seen is None:
                per_tp[m.tp] = [1, m.offset]
            else:
                seen[0] += 1
                seen[1] = m.offset
        metrics, n = self._metrics, len(messages)
        self.messages_received_total += n
        self.messages_active += n
        metrics.messages_received.inc(n)
        metrics.active_messages.inc(n)
        for tp, (count, offset) in per_tp.items():
            self.messages_received_by_topic[tp.topic] += count
            self.tp_read_offsets[tp] = offset
            metrics.messages_received_per_topics.labels(topic=tp.topic).inc(count)
            metrics.messages_received_per_topics_partition.labels(
                topic=tp.topic, partition=tp.partition).set(offset)  # fmt: skip

    def on_acked(self, count: int) -> None:
        self.messages_active -= count
        self._metrics.active_messages.dec(count)


class BatchTransport(driver.Transport):
    """Faust's aiokafka transport, creating BatchConsumer."""

    Consumer: ClassVar[Any] = BatchConsumer


def taken(app: Any, messages: Sequence[Message]) -> None:
    """Stamp the partitions of a batch the processor took, as Faust's stream does per event.

    Without it Faust's liveness check saw no stream activity on the input partitions and,
    five minutes into any backfill (``stream_processing_timeout``), logged an ERROR every
    10 s for each partition with a backlog: 422 lines in one run at a million customers
    (bench.throughput, 2026-12-02), while the worker was busy processing them.
    """
    inbound: dict[Any, float] = app.monitor.stream_inbound_time
    now = monotonic()
    for tp in {m.tp for m in messages}:
        inbound[tp] = now


def install(app: Any, feed: Feed, registry: CollectorRegistry,
            fetch: tuple[int, int] | None = None) -> None:  # fmt: skip
    """Make ``app`` use BatchConsumer feeding ``feed`` and BatchMonitor with Faust's metrics on
    ``registry`` (and /metrics serving it); before its consumer is created. ``fetch``:
    (fetch_min_bytes, fetch_max_wait_ms) for its aiokafka consumer (FetchingThread)."""
    app.transport = BatchTransport(app.conf.broker_consumer, app)
    setattr(app, FEED_ATTR, feed)
    setattr(app, FETCH_ATTR, fetch)
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    app.monitor = BatchMonitor(metrics=app.monitor._metrics)

