"""Create the service's topics up front with the configured partition count.

The three input topics must be co-partitioned (same count); an existing input
topic with another count is a configuration error reported at start.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, TopicAlreadyExistsError

from app.errors import ConfigError
from app.settings import Settings
from app.streams.summaries import summary_topic


async def ensure_topics(settings: Settings) -> None:
    """Create missing topics; fail if the input topics are not co-partitioned."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    try:
        try:
            await admin.start()
        except KafkaConnectionError:
            # aiokafka only logs why each bootstrap host failed: connect once more to one
            # of them ourselves to tell bad credentials and untrusted TLS from no broker.
            await _diagnose(settings)
            raise
    except KafkaConnectionError:
        raise ConfigError(
            f"cannot reach Kafka at {settings.bootstrap_servers} (FEEDBACK_BROKER); start one "
            "with `feedback kafka up` or point FEEDBACK_BROKER at your cluster"
        ) from None
    except SaslAuthenticationFailed:
        raise ConfigError(
            f"Kafka at {settings.bootstrap_servers} refused the credentials of "
            f"FEEDBACK_SASL_USERNAME={settings.sasl_username!r} ({settings.sasl_mechanism}): "
            "check FEEDBACK_SASL_PASSWORD (not shown) and FEEDBACK_SASL_MECHANISM"
        ) from None
    except ssl.SSLError:
        raise ConfigError(
            f"TLS to Kafka at {settings.bootstrap_servers} failed (the certificate is not "
            "trusted, or the listener does not speak TLS): check FEEDBACK_KAFKA_TLS and "
            "FEEDBACK_KAFKA_CA_FILE"
        ) from None
    try:
        names = [*settings.input_topics, settings.topic_alerts, settings.topic_deadletter]
        compacted = changelog_topics(settings)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                n,
                settings.partitions,
                settings.replication_factor,
                topic_configs=changelog_configs(settings) if n in compacted else {},
            )  # fmt: skip
            for n in [*names, *compacted]
            if n not in existing
        ]
        if summary_topic(settings) not in existing:
            missing.append(
                NewTopic(
                    summary_topic(settings),
                    1,
                    settings.replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                )  # fmt: skip
            )
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        described = await admin.describe_topics(list(settings.input_topics))
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        if len(set(counts.values())) > 1:
            raise ConfigError(
                f"input topics are not co-partitioned: {counts}; give them the same "
                "partition count (FEEDBACK_PARTITIONS is used for topics this service creates)"
            )
    finally:
        await admin.close()


def changelog_configs(settings: Settings) -> dict[str, str]:
    """Compacted, in segments of FEEDBACK_CHANGELOG_SEGMENT_MIB.

    Kafka compacts only closed segments, and its default segment is 1 GiB: a
    partition's changelog smaller than that keeps every write of every customer, and
    a worker restoring on an empty state dir reads them all. Smaller segments let the
    log cleaner keep about one record per customer. Applied when the topic is created.
    """
    return {"cleanup.policy": "compact",
            "segment.bytes": str(settings.changelog_segment_mib * 1024**2)}  # fmt: skip


def changelog_topics(settings: Settings) -> list[str]:
    """Faust's changelog topic names for our tables, created up front.

    Created here (compacted, same partition count) so a worker never
    subscribes before they exist, which stalled the first assignment.
    """
    return [
        f"{settings.app_id}-customer_state_by_customer-changelog",
        f"{settings.app_id}-nps_tally_by_partition-changelog",
    ]


def ensure_topics_sync(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))


async def _diagnose(settings: Settings) -> None:
    """Raise what connecting to the first bootstrap host really fails with, if anything."""
    from aiokafka.conn import create_conn

    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    kw = {k: v for k, v in settings.client_kwargs().items() if k != "bootstrap_servers"}
    try:
        conn = await create_conn(host, int(port), request_timeout_ms=10_000, **kw)
    except (SaslAuthenticationFailed, ssl.SSLError):
        raise
    except Exception:  # noqa: BLE001 - anything else: the caller's message stands
        return
    conn.close()


async def publish_one(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    """Produce one record and wait until the brokers have it (the CLI's small writes)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**settings.client_kwargs(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
