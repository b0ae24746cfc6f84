"""Which input partitions this worker owns, and the in-memory mirrors built from them.

The mirrors (revenue per customer for the Pareto boundary, the read model, the
parsed segment tallies) are caches of the restored tables. After any rebalance
they are dropped and rebuilt by one scan of the tables, because a partition may
have been away and back, changed by another worker meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from app.domain import segments
from app.settings import Settings
from app.streams import store
from app.streams.pareto import ParetoMirror
from app.streams.readmodel import ReadModel
from app.streams.summaries import PartitionSummaries
from app.streams.tables import is_marker, key_partition

SEED_YIELD_EVERY = 5000  # customers scanned between yields to the event loop


class Ownership:
    """Owned and indexed partitions, and the segment tallies of the owned ones."""

    def __init__(self, settings: Settings, customers: Any, nps_tallies: Any,
                 readmodel: ReadModel, pareto: ParetoMirror,
                 summaries: PartitionSummaries,
                 on_indexed: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.on_indexed = on_indexed  # told how many partitions each indexing pass covered
        # The summaries timer and the batch path both sync: one pass at a time.
        self._syncing = asyncio.Lock()
        self.customers = customers
        self.nps_tallies = nps_tallies
        self.readmodel = readmodel
        self.pareto = pareto
        self.summaries = summaries
        self.owned: set[int] = set()
        self.seeded: set[int] = set()
        # Parsed segment tallies of the owned partitions: partition -> segment|day -> tally
        # (a mirror of the tallies table, seeded on assignment, kept current by batches).
        self.tallies: dict[int, dict[str, list[int]]] = {}
        self._generation = -1  # the consumer group generation the mirrors were seeded in

    async def sync(self, owned: set[int], generation: int, recovered: bool) -> bool:
        """Rebuild the mirrors when the assignment changed; True once they match ``owned``."""
        if owned == self.owned and generation == self._generation and recovered:
            return True
        async with self._syncing:
            return await self._sync(owned, generation, recovered)

    async def _sync(self, owned: set[int], generation: int, recovered: bool) -> bool:
        if owned == self.owned and generation == self._generation and recovered:
            return True  # the other caller did it while this one waited
        self.summaries.forget(self.owned - owned)
        self.pareto.keep_only(())
        self.tallies.clear()
        self.readmodel.forget(self.owned | self.seeded)
        self.seeded.clear()
        self.owned = set()
        if not recovered:
            return False
        await self._seed(owned)
        self.owned, self._generation = owned, generation
        return True

    def indexed(self, partition: int) -> bool:
        return partition in self.seeded

    def ready(self) -> bool:
        """Every owned partition is indexed (the read side covers this worker's share)."""
        return bool(self.owned) and self.owned <= self.seeded

    async def _seed(self, partitions: set[int]) -> None:
        """Index newly owned partitions' customers: revenue mirror, read model, sweep schedule.

        Yields to the event loop every few thousand customers: at a million customers
        the pass takes tens of seconds, longer than a consumer-group session timeout.
        """
        if not partitions:
            return
        n = self.settings.partitions
        wall = datetime.now(UTC)
        for i, (key, raw) in enumerate(self.customers.items()):
            if i % SEED_YIELD_EVERY == SEED_YIELD_EVERY - 1:
                await asyncio.sleep(0)
            k = key if isinstance(key, bytes) else str(key).encode()
            if is_marker(k):
                continue
            p = key_partition(k, n)
            if p in partitions:
                self.pareto.put(p, k, self.readmodel.seed(k, p, store.load_fields(raw), wall))
        for key, raw in self.nps_tallies.items():
            part, rest = segments.split_partition(_text(key))
            if part in partitions:
                self.tallies.setdefault(part, {})[rest] = store.load_tally(raw) or []
        self.seeded |= partitions
        self.pareto.invalidate()
        if self.on_indexed is not None:
            self.on_indexed(len(partitions))

    def put_tallies(self, tallies: Mapping[bytes, list[int]]) -> None:
        """A batch's written tallies into the mirror."""
        for tkey, tally in tallies.items():
            part, rest = segments.split_partition(tkey.decode())
            self.tallies.setdefault(part, {})[rest] = tally

    def local_tallies(self) -> dict[str, list[int]]:
        """Tallies of the partitions this worker owns (all it holds, before the first check)."""
        if not self.owned:
            return {_text(k): store.load_tally(v) or [] for k, v in self.nps_tallies.items()}
        return {f"{p}|{rest}": tally for p in self.owned
                for rest, tally in self.tallies.get(p, {}).items()}  # fmt: skip

    def expire_tallies(self, as_of: date) -> None:
        """Delete the owned partitions' tallies older than every window, table and mirror.

        From the mirror's keys: a pass over the table's keys in RocksDB every 10 s
        was a few percent of a busy worker's CPU.
        """
        owned = dict.fromkeys(self.owned, True)
        keys = [f"{p}|{rest}" for p in self.owned for rest in self.tallies.get(p, {})]
        for key in segments.expired(keys, as_of, owned):
            del self.nps_tallies[key.encode()]
            part, rest = segments.split_partition(key)
            self.tallies.get(part, {}).pop(rest, None)

    def owned_or_all(self) -> set[int] | None:
        """The owned partitions, or None (no filter) before the first assignment is known."""
        return self.owned or None


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
