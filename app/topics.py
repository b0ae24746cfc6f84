"""Create the service's topics up front with the configured partition count.

The three input topics must be co-partitioned (same count); an existing input
topic with another count is a configuration error reported at start.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from app.errors import ConfigError
from app.settings import Settings
from app.streams.summaries import summary_topic


async def ensure_topics(settings: Settings) -> None:
    """Create missing topics; fail if the input topics are not co-partitioned."""
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    try:
        await admin.start()
    except KafkaConnectionError:
        raise ConfigError(
            f"cannot reach Kafka at {settings.bootstrap_servers} (FEEDBACK_BROKER); start one "
            "with `feedback kafka up` or point FEEDBACK_BROKER at your cluster"
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
                topic_configs={"cleanup.policy": "compact"} if n in compacted else {},
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
