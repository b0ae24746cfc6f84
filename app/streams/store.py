"""The owner of what the worker stores: table names, key formats, codecs and the write path.

Everyone else calls these functions; nothing else parses stored bytes.

- ``customer_state_by_customer``: key ``customer_id`` bytes, value the CustomerState
  JSON (``dump_state``; the format the pydantic model wrote, so older data loads), or
  an erasure marker under ``erasure_marker_key`` (see tables.py).
- ``nps_tally_by_partition``: key ``<partition>|<segment>|<day>`` (segments.tally_key),
  value ``[promoters, passives, detractors, last_offset]`` as JSON.

A write goes to the table's changelog first and, once the broker has it, to the
local store with the changelog offset it reached, so a restart on the same state
directory and one on a fresh directory see the same state.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import msgspec
import orjson
import rocksdict
from faust.stores.rocksdb import Store as RocksStore
from faust.types import TP

from app.domain import segments
from app.domain.customer import CustomerState
from app.streams.tables import erasure_marker_key

CUSTOMERS_TABLE = "customer_state_by_customer"
TALLIES_TABLE = "nps_tally_by_partition"

# The state codec: JSON through msgspec. The format is the one the pydantic model wrote
# (RFC 3339 times, decimals as strings), so states stored before still load; a field a
# newer version added is ignored, so a rolled-back worker still reads what it finds.
_STATE_ENCODER = msgspec.json.Encoder(decimal_format="string")
_STATE_DECODER = msgspec.json.Decoder(CustomerState)


def load_state(raw: bytes | None) -> CustomerState | None:
    """Parse a stored state; bytes that are not a state raise msgspec.ValidationError."""
    return None if raw is None else _STATE_DECODER.decode(raw)


def dump_state(state: CustomerState) -> bytes:
    return _STATE_ENCODER.encode(state)


def load_fields(raw: bytes) -> dict[str, Any]:
    """A stored state's JSON fields, unvalidated, for a pass over every customer that reads
    a few of them (the read model's index after an assignment): at a million customers
    that pass decides how long a restarted worker takes to be ready, and a full parse
    costs several times as much. orjson: 6 us against the standard library's 13 for a
    3 KB state (README, Dependencies)."""
    fields: dict[str, Any] = orjson.loads(raw)
    return fields


def dump_tally(tally: list[int]) -> bytes:
    return json.dumps(tally).encode()


def load_tally(raw: bytes | None) -> list[int] | None:
    return None if raw is None else list(json.loads(raw))


def tally_partition(key: bytes | str) -> int:
    """The input partition a tally key counts (its first field)."""
    text = key.decode() if isinstance(key, bytes) else key
    return segments.split_partition(text)[0]


def dump_marker(erased_at: datetime) -> bytes:
    return json.dumps({"erased_at": erased_at.astimezone(UTC).isoformat()}).encode()


def load_marker(raw: bytes | None) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(json.loads(raw)["erased_at"])


class Rows:
    """One table's local rows, read and written by partition beneath Faust's store API.

    Why beneath it: Faust's RocksDB store picks a partition's database from its current
    event and writes each key with its own put, so a batch had to bind an event before
    every read and write (5.7 us a get and 7.6 a set through Faust, against 2.2 and 2.4
    here, measured on 100,000 keys). Here a batch's changes to one partition are one
    RocksDB WriteBatch that carries the changelog offset they reached, so the rows and
    the offset a restart reads from are written together or not at all.

    Private API touched (faust-streaming 0.15, pinned in pyproject.toml and by
    tests/unit/streams/test_store.py): ``Store._db_for_partition`` and
    ``Store.offset_key``, which ``persisted_offset`` reads back. Any other store
    (``memory://``, the unit tests' dicts) is one mapping for every partition and goes
    through the mapping API.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()

    @cached_property
    def _rocks(self) -> RocksStore | None:
        """Looked at on first use: Faust builds a table's store when it is first read."""
        data = self.table.data
        return data if isinstance(data, RocksStore) else None

    def get(self, key: bytes, partition: int) -> bytes | None:
        rocks = self._rocks
        if rocks is not None:
            raw: bytes | None = rocks._db_for_partition(partition).get(key)
            return raw
        got: bytes | None = self.table.data.get(key)
        return got

    def write(self, partition: int, changes: Sequence[tuple[bytes, bytes | None]],
              offset: int) -> None:  # fmt: skip
        """Store ``changes`` (value or None: delete) with the changelog ``offset`` they reached."""
        rocks = self._rocks
        if rocks is not None:
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, raw in changes:
                if raw is None:
                    batch.delete(key)
                else:
                    batch.put(key, raw)
            batch.put(rocks.offset_key, str(offset).encode())
            rocks._db_for_partition(partition).write(batch)
            return
        data = self.table.data
        for key, raw in changes:
            if raw is None:
                data.pop(key, None)
            else:
                data[key] = raw
        data.set_persisted_offset(TP(self.changelog, partition), offset)


class CustomerStore:
    """Reads of the customers table, reusing parsed states whose stored bytes are unchanged.

    The table stays the source of truth: a cached object is only used when the bytes
    in the table are exactly the bytes that produced it, so a rebalance, a restore or
    a crashed batch can never serve a stale state. (The sweep may have re-scored a
    cached object as of a later stream time without writing it: its facts are still
    the stored ones, and figures as of now are recomputed wherever they are read.)
    """

    def __init__(self, rows: Rows, cache_size: int) -> None:
        self.rows = rows
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, tuple[bytes, CustomerState]] = OrderedDict()

    def get(self, key: bytes, partition: int) -> CustomerState | None:
        raw = self.rows.get(key, partition)
        if raw is None:
            return None
        hit = self._cache.get(key)
        if hit is not None and hit[0] == raw:
            self._cache.move_to_end(key)
            return hit[1]
        return load_state(raw)

    def erased_at(self, key: bytes, partition: int) -> datetime | None:
        return load_marker(self.rows.get(erasure_marker_key(key), partition))

    def remember(self, key: bytes, raw: bytes, state: CustomerState) -> None:
        self._cache[key] = (raw, state)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, key: bytes) -> None:
        self._cache.pop(key, None)

    def clear(self) -> None:
        """Drop every parsed state: after a batch that did not finish, the fold may have
        changed cached objects whose new bytes never reached the table."""
        self._cache.clear()


async def write(
    producer: Any, rows: Rows, records: Sequence[tuple[bytes, bytes | None, int]],
    also: Sequence[Awaitable[Any]] = (),
) -> None:  # fmt: skip
    """Deliver (key, value or tombstone, partition) records to the changelog, then store them.

    ``producer.send_records`` (producer.BatchingProducer) sends a partition's records in
    order and gives each batch's future with its record count. ``also`` (dead letters,
    re-routed records) is awaited with the changelog sends: all of it reaches the
    broker before the batch is acknowledged. The local store is written only then, one
    batch per partition with the offset its changelog reached.
    """
    changes: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, raw, part in records:
        changes.setdefault(part, []).append((key, raw))
    sent = {part: await producer.send_records(rows.changelog, part, batch)
            for part, batch in changes.items()}  # fmt: skip
    futs = [fut for batches in sent.values() for fut, _ in batches]
    if futs or also:
        await asyncio.gather(*futs, *also)
    for part, batch in changes.items():
        last, count = sent[part][-1]
        rows.write(part, batch, last.result().offset + count - 1)
