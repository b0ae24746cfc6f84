"""What the worker stores: the parsed-state cache, and rows written beneath Faust's store API."""

from __future__ import annotations

from pathlib import Path

from faust.stores.rocksdb import Store as RocksStore
from faust.types import TP

from app.domain.customer import CustomerState
from app.settings import Settings
from app.streams import store
from app.streams.app import create_app
from tests.unit.streams.batchkit import Table


def test_a_cached_state_is_served_only_while_the_table_holds_its_bytes_and_until_cleared() -> None:
    table = Table("customers")
    states = store.CustomerStore(store.Rows(table), cache_size=10)
    state = CustomerState(customer_id="c1", seq=3)
    raw = store.dump_state(state)
    table.data[b"c1"] = raw
    states.remember(b"c1", raw, state)
    assert states.get(b"c1", 0) is state
    state.seq = 99  # a fold changed the cached object; its batch then did not finish
    states.clear()
    reread = states.get(b"c1", 0)
    assert reread is not state and reread is not None and reread.seq == 3
    states.remember(b"c1", raw, state)
    table.data[b"c1"] = store.dump_state(CustomerState(customer_id="c1", seq=4))
    fresh = states.get(b"c1", 0)
    assert fresh is not None and fresh.seq == 4, "the table changed under the cache"


def test_rows_write_a_partition_of_faust_rocksdb_store_with_its_changelog_offset(
    tmp_path: Path,
) -> None:
    """The private API store.Rows uses (faust-streaming 0.15): written rows are what Faust
    itself reads (a lookup without a current event, as an HTTP view makes, and the
    persisted offset a restart seeks from), on the partition they were written to and no other."""
    app = create_app(Settings(data_dir=tmp_path))
    table = app.tables[store.CUSTOMERS_TABLE]
    assert isinstance(table.data, RocksStore)
    rows = store.Rows(table)
    rows.write(3, [(b"c1", b"one"), (b"c2", b"two")], offset=41)
    rows.write(3, [(b"c2", None)], offset=42)
    assert rows.get(b"c1", 3) == b"one"
    assert rows.get(b"c2", 3) is None, "a None change deletes"
    assert rows.get(b"c1", 0) is None, "another partition's database"
    assert table.data.persisted_offset(TP(rows.changelog, 3)) == 42
    assert table.data.persisted_offset(TP(rows.changelog, 0)) is None
    assert table.data.get(b"c1") == b"one", "Faust's lookup without a current event"


def test_rows_over_a_mapping_store_keep_the_offset_per_changelog_partition() -> None:
    table = Table("customers")
    rows = store.Rows(table)
    rows.write(2, [(b"c1", b"one"), (b"c1", b"newer")], offset=7)
    assert rows.get(b"c1", 2) == b"newer" and table.data.persisted == {
        TP("customers-changelog", 2): 7
    }
