"""The worker's producer: Faust's, with a partition's changelog records sent as whole batches.

Why: each ``Producer.send`` is a coroutine through Faust (its sensors' produce hook)
and aiokafka (metadata check, serialisation, partition, one future per record that
the sender resolves). A batch writes about one changelog record per event, so that
per-record path is paid once per event. ``send_records`` appends a partition's records
to aiokafka record batches (``create_batch`` / ``send_batch``, aiokafka's public API)
and waits on one future per batch; the broker gives a batch consecutive offsets, so
the last record's offset is the batch's base offset plus its count less one.

Alerts take the same path, grouped by the partition the default partitioner gives
their key (tables.key_partition, the same murmur2): a record sent alone waits out the
producer's linger (10 ms) before it goes, and a batch's alerts are the first of its
three broker round trips (delivery.py).

Private API touched: Faust's ``Producer._ensure_producer`` (the aiokafka producer it
owns), which the processor already uses for topic metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

Sent = list[tuple[asyncio.Future[Any], int]]  # each batch's future (its base offset) and count


class BatchingProducer:
    """Faust's producer for every send, plus ``send_records`` for changelog writes."""

    def __init__(self, faust_producer: Any) -> None:
        self.faust_producer = faust_producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: float | None,
                   headers: Any) -> Awaitable[Any]:  # fmt: skip
        fut: Awaitable[Any] = await self.faust_producer.send(
            topic, key, value, partition, timestamp, headers
        )
        return fut

    async def send_records(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> Sent:
        """Queue ``records`` for one partition in order, as few record batches as fit."""
        producer = self.faust_producer._ensure_producer()
        sent: Sent = []
        batch, n = producer.create_batch(), 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append((await self._send(producer, batch, topic, partition), n))
                batch, n = producer.create_batch(), 0
                # An empty batch takes any record (aiokafka lets a first record exceed
                # the batch size; the broker's limit still applies).
                batch.append(key=key, value=value, timestamp=None)
            n += 1
        if n:
            sent.append((await self._send(producer, batch, topic, partition), n))
        return sent

    async def partition_count(self, topic: str) -> int:
        """The topic's partitions as the producer knows them (aiokafka's public
        ``partitions_for``, which waits for metadata the first time)."""
        return len(await self.faust_producer._ensure_producer().partitions_for(topic))

    @staticmethod
    async def _send(producer: Any, batch: Any, topic: str, partition: int) -> Any:
        """Close the batch, then queue it: nothing else is appended to it (a ``send`` to the
        same partition could be, while it is open), and a closed batch does not wait out
        the producer's linger (aiokafka's ``MessageBatch.remaining_linger``): it is whole."""
        batch.close()
        return await producer.send_batch(batch, topic, partition=partition)
