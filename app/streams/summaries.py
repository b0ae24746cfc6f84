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
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.settings import Settings

log = logging.getLogger(__name__)
# Revenue points per partition summary. Above this many customers every k-th revenue
# (in order) stands for k: the Pareto cutoff read from it is off by at most k ranks
# per partition (6 at 100,000 customers over 8 partitions, against 2,500 customers in
# the top 20% of each). A bigger summary costs every worker its JSON every couple of
# seconds: at 20,000 points a busy worker at 100,000 customers spent about a tenth of
# its samples (py-spy) building and dumping its summaries.
MAX_REVENUE_POINTS = 2_000


def summary_topic(settings: Settings) -> str:
    return f"{settings.app_id}-partition-summaries"


def weighted(values: list[float], limit: int = MAX_REVENUE_POINTS) -> list[list[float]]:
    """Sorted (value, weight) points; above ``limit`` values, every k-th value stands for k."""
    ordered = -np.sort(-np.fromiter(values, dtype=np.float64, count=len(values)))
    if len(ordered) <= limit:
        return [[v, 1] for v in np.round(ordered, 2).tolist()]
    step = len(ordered) / limit
    picked = ordered[(np.arange(limit) * step).astype(np.int64)]
    return [[v, step] for v in np.round(picked, 2).tolist()]


class Received(Mapping[int, dict[str, Any]]):
    """The newest summary per partition, decoded when first read.

    A worker reads back its own partitions' summaries too (one topic for all), and
    those are never used while it owns them: decoding them all every couple of
    seconds cost several percent of a busy worker's CPU at 10,000 customers.
    """

    def __init__(self) -> None:
        self._raw: dict[int, bytes] = {}
        self._decoded: dict[int, dict[str, Any]] = {}

    def receive(self, partition: int, raw: bytes | None) -> None:
        self._decoded.pop(partition, None)
        if raw is None:
            self._raw.pop(partition, None)
        else:
            self._raw[partition] = raw

    def __getitem__(self, partition: int) -> dict[str, Any]:
        decoded = self._decoded.get(partition)
        if decoded is None:
            decoded = self._decoded[partition] = json.loads(self._raw[partition])
        return decoded

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._raw))

    def __len__(self) -> int:
        return len(self._raw)

    def others(self, owned: Collection[int]) -> list[tuple[int, dict[str, Any]]]:
        """Summaries of the partitions not in ``owned`` (only those are decoded)."""
        return [(p, self[p]) for p in list(self._raw) if p not in owned]


class PartitionSummaries:
    """What other workers published, and publishing what this worker owns."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = summary_topic(settings)
        self.remote = Received()
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
                        self.remote.receive(int(r.key), r.value)
                if batch:
                    self.updated.set()
        finally:
            await consumer.stop()

    async def publish(self, producer: Any, partition: int, summary: dict[str, Any]) -> None:
        """Publish one owned partition's summary when it changed."""
        body = orjson.dumps(summary, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
        if self._published.get(partition) == body:
            return
        # The same JSON with the publish time added as the last field (dumped once).
        sep = ", " if summary else ""
        payload = f'{body[:-1]}{sep}"published_at": {time.time()!r}}}'.encode()
        fut = await producer.send(self.topic, str(partition).encode(), payload, 0, None, None)
        await fut
        self._published[partition] = body

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._published.pop(p, None)
