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

