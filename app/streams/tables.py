"""Table classes whose changelog partition follows the key, not the current event.

Faust normally writes a table key's changelog record to the partition of the
event being processed, which ties writes to per-event iteration. The agent
writes once per batch, after the events, so the partition is computed from the
key exactly as the producer's default (murmur2) partitioner places records
keyed by customer_id on the co-partitioned input topics.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from app.streams import collector


@functools.lru_cache(maxsize=1 << 17)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (Java client compatible).

    Cached: every input record is checked against it, aiokafka's murmur2 is pure Python
    (about 4.5 us for a customer id) and a customer's events keep coming back; 131,072
    keys hold about 20 MiB.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitionedTable(faust.Table[Any, Any]):
    """A Table whose writes need no current event."""

    def partition_for_key(self, key: Any) -> int | None:
        return key_partition(_as_bytes(key), self.partitions or 1)


def _as_bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


class QuietWorker(faust.Worker):
    """Faust's worker without the terminal spinner.

    At ``-l warn`` and above the spinner lowers the root logger to DEBUG so it
    can spin on every record, which makes every library build DEBUG log
    records on the hot path (measured: about 7% of worker CPU).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        collector.tune()  # one worker per process: its heap, its collector thresholds
        super().__init__(*args, **kwargs)

    def _setup_spinner_handler(self, logger: Any, level: int) -> None:
        self.spinner = None


class PartitionPrefixedTable(faust.Table):  # type: ignore[type-arg]
    """A Table whose keys start with ``b"<partition>|"``: the key names its own partition.

    Used for per-partition aggregates (segment tallies): they live in the
    changelog partition of the input partition they summarise, so they move
    with it on rebalance and are restored with it after a crash.
    """

    def partition_for_key(self, key: Any) -> int | None:
        return int(_as_bytes(key).split(b"|", 1)[0])


ERASED_PREFIX = b"\x00erased|"


def erasure_marker_key(customer_key: bytes) -> bytes:
    """Where an erasure is remembered: a hash of the customer id, never the id itself.

    The marker lives in the customers table on the customer's own changelog
    partition, so it moves and is restored with it. It holds only the time of
    the request, so events of the customer that happened before it (replayed
    after a crash, or arriving late) are dropped instead of bringing it back.
    """
    return ERASED_PREFIX + hashlib.sha256(customer_key).hexdigest().encode()


def is_marker(key: bytes) -> bool:
    return key.startswith(ERASED_PREFIX)
