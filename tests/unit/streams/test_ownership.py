"""Owned partitions and the mirrors rebuilt from the tables when the assignment changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from app.domain import segments
from app.domain.customer import CustomerState
from app.settings import load_settings
from app.streams import store
from app.streams.ownership import Ownership
from app.streams.pareto import ParetoMirror
from app.streams.readmodel import ReadModel
from app.streams.summaries import PartitionSummaries
from app.streams.tables import key_partition

SETTINGS = load_settings(partitions=4)
AT = datetime(2026, 3, 1, tzinfo=UTC)
TODAY = date(2026, 3, 1)


class Table(dict[bytes, bytes]):
    """What Ownership reads of a Faust table: items(), and deletes for the tally expiry."""


def customers_on(partitions: int, per_partition: int) -> Table:
    """Stored states until each partition holds ``per_partition`` customers."""
    table = Table()
    counts = dict.fromkeys(range(partitions), 0)
    i = 0
    while min(counts.values()) < per_partition:
        key = f"cust-{i}".encode()
        i += 1
        p = key_partition(key, partitions)
        if counts[p] >= per_partition:
            continue
        counts[p] += 1
        state = CustomerState(customer_id=key.decode(), last_event_at=AT, churn_as_of=AT,
                              trailing_revenue=Decimal(100 + i))  # fmt: skip
        table[key] = store.dump_state(state)
    return table


def tally_table(days: list[date]) -> Table:
    table = Table()
    for p in range(4):
        for day in days:
            table[segments.tally_key(p, "tier:A", day).encode()] = store.dump_tally([1, 0, 0, 5])
    return table


def ownership(customers: Table, tallies: Table) -> tuple[Ownership, ReadModel, ParetoMirror]:
    readmodel, pareto = ReadModel(), ParetoMirror()
    own = Ownership(SETTINGS, customers, tallies, readmodel, pareto, PartitionSummaries(SETTINGS))
    return own, readmodel, pareto


def sync(own: Ownership, owned: set[int], generation: int, recovered: bool = True) -> bool:
    return asyncio.run(own.sync(owned, generation, recovered))


def test_sync_indexes_only_the_owned_partitions() -> None:
    customers = customers_on(4, 3)
    own, readmodel, pareto = ownership(customers, tally_table([TODAY]))
    assert sync(own, {0, 2}, generation=1)
    assert own.owned == {0, 2} and own.seeded == {0, 2} and own.ready()
    assert {row.partition for row in readmodel} == {0, 2}
    assert len(readmodel) == 6
    assert set(own.tallies) == {0, 2}
    assert sorted(own.local_tallies()) == [f"{p}|tier:A|{TODAY.isoformat()}" for p in (0, 2)]
    assert pareto.summary(0)[1] == 3 and pareto.summary(1)[1] == 0


def test_same_assignment_keeps_the_mirrors_and_a_new_generation_rebuilds_them() -> None:
    customers = customers_on(4, 2)
    own, readmodel, _ = ownership(customers, tally_table([TODAY]))
    sync(own, {1}, generation=1)
    stray = next(iter(readmodel.rows))
    readmodel.drop(stray)  # a change the next sync must keep (same generation) or undo (new)
    assert sync(own, {1}, generation=1)
    assert stray not in readmodel.rows
    assert sync(own, {1}, generation=2)
    assert stray in readmodel.rows


def test_before_recovery_nothing_is_indexed() -> None:
    own, readmodel, _ = ownership(customers_on(4, 1), tally_table([TODAY]))
    sync(own, {0, 1}, generation=1)
    assert not sync(own, {0, 1}, generation=2, recovered=False)
    assert own.owned == set() and own.seeded == set() and not own.ready()
    assert len(readmodel) == 0 and own.tallies == {}


def test_expiry_deletes_owned_tallies_older_than_every_window_in_table_and_mirror() -> None:
    old = TODAY - timedelta(days=segments.RETENTION_DAYS + 2)
    tallies = tally_table([old, TODAY])
    own, _, _ = ownership(customers_on(4, 1), tallies)
    sync(own, {0}, generation=1)
    before = set(tallies)
    own.expire_tallies(TODAY)
    gone = before - set(tallies)
    assert gone == {segments.tally_key(0, "tier:A", old).encode()}
    assert own.tallies[0] == {f"tier:A|{TODAY.isoformat()}": [1, 0, 0, 5]}


def test_batch_tallies_update_the_mirror() -> None:
    own, _, _ = ownership(customers_on(4, 1), tally_table([]))
    sync(own, {3}, generation=1)
    key = segments.tally_key(3, "tier:B", TODAY)
    own.put_tallies({key.encode(): [0, 2, 1, 9]})
    assert own.local_tallies() == {key: [0, 2, 1, 9]}




def test_concurrent_syncs_index_once_and_report_the_partitions_indexed() -> None:
    """The summaries timer and a batch of a partition not indexed yet both sync."""
    readmodel, pareto = ReadModel(), ParetoMirror()
    indexed: list[int] = []
    own = Ownership(SETTINGS, customers_on(4, 2000), tally_table([TODAY]), readmodel, pareto,
                    PartitionSummaries(SETTINGS), indexed.append)  # fmt: skip

    async def both() -> list[bool]:
        return list(await asyncio.gather(own.sync({0, 1}, 3, True), own.sync({0, 1}, 3, True)))

    assert asyncio.run(both()) == [True, True]
    assert indexed == [2], "one pass over the table for the two callers"
    assert len(readmodel) == 4000 and own.ready()
