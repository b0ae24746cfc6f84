"""Pins the Faust behaviour hold_back relies on: an acked message is never acked again."""

from typing import Any

from faust.types import TP
from faust.types.tuples import Message

from app.streams.tables import hold_back


class Consumer:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


class Event:
    def __init__(self, message: Message) -> None:
        self.message = message


def message(offset: int) -> Message:
    return Message(topic="t", partition=0, offset=offset, timestamp=0.0, timestamp_type=0,
                   headers=[], key=b"k", value=b"v", checksum=None, tp=TP("t", 0))


def test_a_held_back_batch_is_never_acked() -> None:
    held, normal = message(1), message(2)
    held.incref()
    normal.incref()
    hold_back([Event(held)])
    consumer = Consumer()
    assert held.ack(consumer) is False  # type: ignore[arg-type]
    assert normal.ack(consumer) is True  # type: ignore[arg-type]
    assert held.acked and normal.acked



def test_rocksdb_memory_is_split_within_the_setting() -> None:
    from app.settings import load_settings
    from app.streams.app import TABLES, rocksdb_options

    for partitions, budget in ((8, 512), (24, 256), (1, 64)):
        opts = rocksdb_options(load_settings(partitions=partitions, store_memory_mib=budget))
        per_db = opts["write_buffer_size"] * opts["max_write_buffer_number"] + opts["block_cache_size"]
        assert per_db * TABLES * partitions <= budget * 1024**2
        assert per_db * TABLES * partitions >= budget * 1024**2 * 0.9
