"""Create the service's topics up front with the configured partition count.

The three input topics must be co-partitioned (same count); an existing input
topic with another count is a configuration error reported at start.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.errors import ConfigError
from app.settings import Settings


async def ensure_topics(settings: Settings) -> None:
    """Create missing topics; fail if the input topics are not co-partitioned."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = [*settings.input_topics, settings.topic_alerts, settings.topic_deadletter]
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
                )
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


def ensure_topics_sync(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
