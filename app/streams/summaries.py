"""Per-partition summaries shared by all workers through one compacted topic.

Segment-NPS tallies and customer revenues are owned per input partition (the
worker that owns a partition owns its customers). Every couple of seconds each
worker publishes a summary of each partition it owns, keyed by partition
number, and every worker reads the whole topic. Merging one summary per
partition counts each response and each customer exactly once, however the
partitions are spread over workers. (Faust's GlobalTable was tried first and
did not propagate writes between two workers here.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.settings import Settings

log = logging.getLogger(__name__)
MAX_REVENUE_POINTS = 20_000


def summary_topic(settings: Settings) -> str:
    return f"{settings.app_id}-partition-summaries"


def weighted(values: list[float], limit: int = MAX_REVENUE_POINTS) -> list[list[float]]:
    """Sorted (value, weight) points; above ``limit`` values, every k-th value stands for k."""
    ordered = sorted(values, reverse=True)
    if len(ordered) <= limit:
        return [[round(v, 2), 1] for v in ordered]
    step = len(ordered) / limit
    return [[round(ordered[int(i * step)], 2), step] for i in range(limit)]


class PartitionSummaries:
    """What other workers published, and publishing what this worker owns."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = summary_topic(settings)
        self.remote: dict[int, dict[str, Any]] = {}
        self._published: dict[int, str] = {}
        self.updated = asyncio.Event()

    async def follow(self) -> None:
        """Read the summary topic from the beginning, forever (a background task)."""
        consumer = AIOKafkaConsumer(**self.settings.client_kwargs(), enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        if r.key is None:
                            continue
                        partition = int(r.key)
                        if r.value is None:
                            self.remote.pop(partition, None)
                        else:
                            self.remote[partition] = json.loads(r.value)
                if batch:
                    self.updated.set()
        finally:
            await consumer.stop()

    async def publish(self, producer: Any, partition: int, summary: dict[str, Any]) -> None:
        """Publish one owned partition's summary when it changed."""
        body = json.dumps(summary, sort_keys=True)
        if self._published.get(partition) == body:
            return
        payload = json.dumps({**summary, "published_at": time.time()}).encode()
        fut = await producer.send(self.topic, str(partition).encode(), payload, 0, None, None)
        await fut
        self._published[partition] = body

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._published.pop(p, None)
