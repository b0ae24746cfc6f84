"""The parsed-state cache in front of the customers table."""

from __future__ import annotations

from app.domain.customer import CustomerState
from app.streams import store
from tests.unit.streams.batchkit import Table


def test_a_cached_state_is_served_only_while_the_table_holds_its_bytes_and_until_cleared() -> None:
    table = Table("customers")
    states = store.CustomerStore(table, cache_size=10)
    state = CustomerState(customer_id="c1", seq=3)
    raw = store.dump_state(state)
    table.data[b"c1"] = raw
    states.remember(b"c1", raw, state)
    assert states.get(b"c1") is state
    state.seq = 99  # a fold changed the cached object; its batch then did not finish
    states.clear()
    reread = states.get(b"c1")
    assert reread is not state and reread is not None and reread.seq == 3
    states.remember(b"c1", raw, state)
    table.data[b"c1"] = store.dump_state(CustomerState(customer_id="c1", seq=4))
    fresh = states.get(b"c1")
    assert fresh is not None and fresh.seq == 4, "the table changed under the cache"
