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
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from faust.types import TP

from app.domain import segments
from app.domain.customer import CustomerState
from app.streams.tables import bind_event, erasure_marker_key

CUSTOMERS_TABLE = "customer_state_by_customer"
TALLIES_TABLE = "nps_tally_by_partition"

# partition -> binds Faust's current event so the RocksDB store picks that partition's db
Bind = Callable[[int], None]


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


def binder(events_by_partition: dict[int, Any]) -> Bind:
    """A Bind over one Faust event per input partition of the batch."""

    def bind(partition: int) -> None:
        bind_event(events_by_partition[partition])

    return bind


class CustomerStore:
    """Reads of the customers table, reusing parsed states whose stored bytes are unchanged.

    The table stays the source of truth: a cached object is only used when the bytes
    in the table are exactly the bytes that produced it, so a rebalance, a restore or
    a crashed batch can never serve a stale state. (The sweep may have re-scored a
    cached object as of a later stream time without writing it: its facts are still
    the stored ones, and figures as of now are recomputed wherever they are read.)
    """

    def __init__(self, table: Any, cache_size: int) -> None:
        self.table = table
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, tuple[bytes, CustomerState]] = OrderedDict()

    def get(self, key: bytes) -> CustomerState | None:
        raw = self.table.data.get(key)
        if raw is None:
            return None
        hit = self._cache.get(key)
        if hit is not None and hit[0] == raw:
            self._cache.move_to_end(key)
            return hit[1]
        return load_state(raw)

    def erased_at(self, key: bytes) -> datetime | None:
        return load_marker(self.table.data.get(erasure_marker_key(key)))

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
    producer: Any, table: Any, records: Sequence[tuple[bytes, bytes | None, int]], bind: Bind,
    also: Sequence[Awaitable[Any]] = (),
) -> None:  # fmt: skip
    """Deliver (key, value or tombstone, partition) records to the changelog, then store them.

    ``also`` (dead letters, re-routed records) is awaited with the changelog sends: all
    of it reaches the broker before the batch is acknowledged.
    """
    changelog = table.changelog_topic.get_topic_name()
    futs: list[Any] = [
        await producer.send(changelog, key, raw, part, None, None) for key, raw, part in records
    ]
    if futs or also:
        await asyncio.gather(*futs, *also)
    store = table.data
    last: dict[int, int] = {}
    for (key, raw, part), fut in zip(records, futs, strict=True):
        bind(part)
        if raw is None:
            store.pop(key, None)
        else:
            store[key] = raw
        last[part] = max(last.get(part, -1), fut.result().offset)
    for part, offset in last.items():
        # Where the local store is up to date: a restart reads only the tail.
        store.set_persisted_offset(TP(changelog, part), offset)
