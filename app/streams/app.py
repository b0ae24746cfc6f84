"""Build the one Faust app, its topics, tables, agent, timers and web views from Settings."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.types import Message
from prometheus_client import CollectorRegistry

from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams import batchpath, collector, restore, store
from app.streams.processor import BatchProcessor
from app.streams.summaries import PartitionSummaries
from app.streams.tables import (
    KeyPartitionedTable,
    PartitionPrefixedTable,
    QuietWorker,
)

_ATTR = "feedback_processor"
# The event-loop probe sleeps this long between looks (20 wake-ups a second cost nothing
# measurable). A hold of the loop shows as the part of it past the probe's wake-up time,
# so the figure is at most the hold, never more.
LOOP_PROBE_S = 0.05


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """One faust.App per process; importing app.domain never builds it."""
    registry = registry if registry is not None else CollectorRegistry()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    credentials: Any = None
    if settings.sasl_mechanism and settings.sasl_password is not None:
        credentials = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=settings.ssl_context() if settings.kafka_tls else None,
        )
    elif settings.kafka_tls:
        credentials = settings.ssl_context()
    metrics = ServiceMetrics.create(registry)
    app = faust.App(
        settings.app_id,
        broker_credentials=credentials,
        broker=settings.broker,
        store=settings.store,
        datadir=str(settings.data_dir / "faust"),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_bind,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Offsets commit after the producer has flushed; every commit stalls the
        # stream briefly, so commit by time. A crash replays at most this much,
        # which the per-customer event_id dedup absorbs.
        broker_commit_every=50_000,
        broker_commit_interval=settings.commit_interval,
        producer_linger=0.01,
        # Per partition and fetch; Faust's default of 1 MiB held a changelog restore to
        # 3,520 records/s here, 8 MiB gave 5,402 (bench/throughput.py, README).
        consumer_max_fetch_size=settings.fetch_mib * 1024**2,
        producer_max_batch_size=256 * 1024,
        stream_buffer_maxsize=settings.batch_size * 4,
        # Records per fetch handed over (Faust's default: everything aiokafka buffered). A
        # backfill fetch held about 190,000 parsed messages at once, which every young
        # collection of the garbage collector walked; the rest stays in aiokafka's buffers.
        broker_max_poll_records=settings.batch_size,
        broker_session_timeout=settings.session_timeout,
        table_standby_replicas=settings.standby_replicas,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        topic_allow_declare=True,
        web_in_thread=False,
        autodiscover=False,
        Table=KeyPartitionedTable,
        Worker=QuietWorker,
        TableManager=restore.table_manager(
            settings.client_kwargs(), settings.fetch_mib * 1024**2, metrics
        ),
    )
    # Before anything creates the transport. The feed holds up to four batches.
    feed = batchpath.Feed(settings.input_topics, 4 * settings.batch_size)
    batchpath.install(app, feed, registry,
                      (settings.fetch_min_kib * 1024 or 1, settings.fetch_wait_ms))  # fmt: skip

    def topic(name: str, **kw: Any) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, partitions=settings.partitions,
            replicas=settings.replication_factor, **kw,
        )  # fmt: skip

    inputs = app.topic(
        *settings.input_topics, key_type=bytes, value_type=bytes,
        partitions=settings.partitions, replicas=settings.replication_factor,
    )  # fmt: skip
    alerts = topic(settings.topic_alerts)
    # Keys are customer_id bytes; each changelog record goes to the partition
    # number its (correctly keyed) input records are on: co-partitioning.
    store_options = rocksdb_options(settings)
    customers = app.Table(
        store.CUSTOMERS_TABLE, partitions=settings.partitions,
        key_type=bytes, value_type=bytes, options=dict(store_options),
    )  # fmt: skip
    # Segment tallies per input partition (small: segments x days x partitions), in the
    # configured store. (Faust ignores a per-table "memory://": yarl's URL of it is falsy.)
    nps_tallies = app.tables.add(
        PartitionPrefixedTable(
            app, name=store.TALLIES_TABLE, beacon=app.tables.beacon,
            partitions=settings.partitions, key_type=bytes, value_type=bytes,
            options=dict(store_options),
        )
    )  # fmt: skip
    summaries = PartitionSummaries(settings)
    processor = BatchProcessor(app, settings, metrics, customers, nps_tallies, summaries, alerts)
    setattr(app, _ATTR, processor)

    @app.agent(inputs, name="customer_agent")
    async def customer_agent(stream: faust.StreamT[bytes]) -> None:
        """Declares the input topics (Faust subscribes to them and tracks their acks);
        their records reach customer_batches through the feed, never this stream."""
        async for _ in stream:
            pass

    @app.task  # type: ignore[untyped-decorator]
    async def customer_batches() -> None:
        """Fold, deliver and ack the input records batch by batch (batchpath.py)."""
        while not app.should_stop:
            consumer = app.consumer
            assert isinstance(consumer, batchpath.BatchConsumer)
            messages: list[Message] = []
            try:
                if not len(feed):
                    # Nothing waiting: a chunk of the sweep's backlog, else wait for records
                    # (or a second, for a timer to move stream time).
                    if await consumer.aside(processor.sweep_idle()) or not await feed.wait(1.0):
                        continue
                messages = await feed.take(settings.batch_size, settings.batch_within)
                batchpath.taken(app, messages)
                await processor.handle(messages)
            except asyncio.CancelledError:
                processor.states.clear()  # the batch is not acked: read again on restart
                raise
            except BaseException as exc:
                # Not acked, but the fetch loop carries on past it and Faust's commit
                # allows a one-offset gap: stop; a restart resumes from the commits.
                await app.crash(exc)
                raise
            consumer.ack_batch(messages)

    @app.task  # type: ignore[untyped-decorator]
    async def watch_collector() -> None:
        """Garbage-collector pauses on /metrics; a task, so only a running worker watches."""
        collector.watch(metrics.gc_pause)

    @app.task  # type: ignore[untyped-decorator]
    async def watch_event_loop() -> None:
        """How long the event loop is held at a time (feedback_event_loop_lag_seconds): a
        record or request that arrives meanwhile waits that long, whatever held it."""
        loop = asyncio.get_running_loop()
        while not app.should_stop:
            slept = loop.time()
            await asyncio.sleep(LOOP_PROBE_S)
            metrics.loop_lag.observe(max(0.0, loop.time() - slept - LOOP_PROBE_S))

    @app.task  # type: ignore[untyped-decorator]
    async def warm_producer_metadata() -> None:
        """The HTTP router hashes keys with the producer, which must know the changelog."""
        await processor.ensure_metadata(
            [customers.changelog_topic.get_topic_name(), settings.topic_alerts]
        )

    @app.task  # type: ignore[untyped-decorator]
    async def follow_summaries() -> None:
        await summaries.follow()

    @app.timer(interval=2.0, on_leader=False)  # type: ignore[untyped-decorator]
    async def share_summaries() -> None:
        await processor.share_summaries()

    @app.timer(interval=10.0, on_leader=False)  # type: ignore[untyped-decorator]
    async def refresh_segments() -> None:
        processor.queries.refresh_segments()

    @app.timer(interval=15.0)  # type: ignore[untyped-decorator]
    async def refresh_gauges() -> None:
        processor.queries.refresh_gauges()

    @app.timer(interval=settings.churn_kpi_interval, on_leader=False)  # type: ignore[untyped-decorator]
    async def refresh_churn_kpis() -> None:
        await processor.refresh_churn_kpis()

    from app.web.views import register

    register(app, processor.queries)
    return app


TABLES = 2  # customer states and segment tallies, one RocksDB database per partition each


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """RocksDB sizes for each partition database, from FEEDBACK_STORE_MEMORY_MIB.

    Faust opens one database per table and partition, each with its own 2 GiB block
    cache and three 64 MiB write buffers by default: with 8 partitions that is far
    more than a worker should hold. The budget is split evenly: half to two write
    buffers, half to the block cache. (Faust passes a table's ``options`` to its
    store; a ``memory://`` store ignores them.)
    """
    per_db = settings.store_memory_mib * 1024**2 // (TABLES * settings.partitions)
    return {"write_buffer_size": max(1024**2, per_db // 4), "max_write_buffer_number": 2,
            "block_cache_size": max(1024**2, per_db // 2)}  # fmt: skip


def processor_of(app: faust.App) -> BatchProcessor:
    return getattr(app, _ATTR)  # type: ignore[no-any-return]
