"""BatchingProducer's split of a partition's records into record batches (no broker;
tests/integration/test_producer.py sends them to the real one)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import MessageBatch
from faust.transport.drivers import aiokafka as driver

from app.streams.producer import BatchingProducer


class Builder:
    """A record batch holding ``room`` records (any first record fits, as in aiokafka)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes | None]] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def append(self, *, key: bytes, value: bytes | None, timestamp: Any) -> object | None:
        assert not self.closed
        if self.records and len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()


class Aio:
    def __init__(self, room: int) -> None:
        self.room = room
        self.batches: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []

    def create_batch(self) -> Builder:
        return Builder(self.room)

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> Any:
        assert batch.closed, "a batch is closed before it is queued"
        self.batches.append((topic, partition, batch.records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(len(self.batches))
        return fut


class FaustLike:
    def __init__(self, aio: Aio) -> None:
        self.aio = aio

    def _ensure_producer(self) -> Aio:
        return self.aio


def test_records_fill_batches_in_order_with_each_batch_counted() -> None:
    aio = Aio(room=2)
    records: list[tuple[bytes, bytes | None]] = [(b"a", b"1"), (b"b", None), (b"c", b"3"),
                                                 (b"d", b"4"), (b"e", b"5")]  # fmt: skip
    sent = asyncio.run(BatchingProducer(FaustLike(aio)).send_records("t", 3, records))
    assert [n for _, n in sent] == [2, 2, 1]
    assert [b for _, _, b in aio.batches] == [records[:2], records[2:4], records[4:]]
    assert {(t, p) for t, p, _ in aio.batches} == {("t", 3)}


def test_no_records_send_no_batch() -> None:
    aio = Aio(room=2)
    assert asyncio.run(BatchingProducer(FaustLike(aio)).send_records("t", 0, [])) == []
    assert aio.batches == []


def test_the_producer_api_it_uses() -> None:
    assert callable(driver.Producer._ensure_producer)  # noqa: SLF001
    params = inspect.signature(AIOKafkaProducer.send_batch).parameters
    assert list(params)[:3] == ["self", "batch", "topic"] and "partition" in params
    assert callable(AIOKafkaProducer.create_batch)
    assert inspect.iscoroutinefunction(AIOKafkaProducer.partitions_for)


def test_partition_count_is_the_producers_metadata() -> None:
    class Meta(Aio):
        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1, 2} if topic == "alerts" else {0}

    assert asyncio.run(BatchingProducer(FaustLike(Meta(room=1))).partition_count("alerts")) == 3
    # A closed batch is sent without waiting out the producer's linger.
    assert "self._builder.closed()" in inspect.getsource(MessageBatch.remaining_linger)
