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
- each record is tracked (``Consumer.track_message``) when it is fetched, so a
  rebalance waits (``wait_empty``) for the batch being processed to be acked;
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
``suspend_flow``, ``diag``, ``consumer_stopped_errors`` and ``Monitor.stream_inbound_time``.
tests/unit/streams/test_batchpath.py pins them. (Tables are read and written beneath
Faust's store API too, without a current event: store.Rows.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Sequence
from time import monotonic
from typing import Any, ClassVar

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import Message

from app.streams.consumer import SafeOffsetConsumer

FEED_ATTR = "feedback_feed"


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

    def __len__(self) -> int:
        return self._size

    async def put(self, messages: list[Message]) -> None:
        """Queue one fetch's records once there is room (a fetch larger than the bound
        goes in alone)."""
        while self._size and self._size + len(messages) > self.max_records:
            self._room.clear()
            await self._room.wait()
        self._lists.append(messages)
        self._size += len(messages)
        self._ready.set()

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

    def clear(self) -> int:
        """Drop everything queued (never acked, so read again); returns how many."""
        dropped = self._size
        self._lists.clear()
        self._size = 0
        self._room.set()
        return dropped


class BatchConsumer(SafeOffsetConsumer):
    """SafeOffsetConsumer whose fetch loop hands input records to a Feed, one fetch at a time."""

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

    def stop_flow(self) -> None:
        super().stop_flow()
        if self.feed is not None:
            self.feed.clear()

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
        track = self.track_message
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
                            track(message)
                            handoff.append(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    if handoff and feed is not None and not self.suspend_flow.is_set():
                        # Dropped if the flow stops meanwhile: read again after the seek.
                        await self.wait_first(feed.put(handoff), self.suspend_flow.wait())
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


def install(app: Any, feed: Feed) -> None:
    """Make ``app`` use BatchConsumer feeding ``feed``; before its consumer is created."""
    app.transport = BatchTransport(app.conf.broker_consumer, app)
    setattr(app, FEED_ATTR, feed)

