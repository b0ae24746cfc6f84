"""The bulk restore's glue, and pins of the Faust internals app/streams/restore.py relies on."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from app.settings import Settings
from app.streams import restore, store
from app.streams.app import create_app
from app.streams.restore import BulkRecovery, Change, Span, changes, span


@pytest.mark.parametrize(
    ("persisted", "earliest", "end", "want"),
    [
        (None, 0, 10, Span(0, 10)),  # empty state dir: the whole log
        (None, 4, 10, Span(4, 10)),  # the cleaner removed offsets 0..3
        (6, 0, 10, Span(7, 10)),  # own state dir: the tail after the persisted offset
        (2, 5, 10, Span(5, 10)),  # persisted before what the cleaner kept
        (9, 0, 10, None),  # up to date
        (None, 0, 0, None),  # empty log
        (-1, 0, 3, Span(0, 3)),  # Faust's "nothing persisted"
    ],
)
def test_span(persisted: int | None, earliest: int, end: int, want: Span | None) -> None:
    assert span(persisted, earliest, end) == want


def test_changes_stop_at_the_end_offset() -> None:
    tp = TP("t-changelog", 3)
    records = [SimpleNamespace(offset=o, key=f"k{o}".encode(), value=b"v") for o in (5, 7, 9)]
    got = changes(tp, records, end=9)
    assert [(c.message.offset, c.message.key, c.message.partition) for c in got] == [
        (5, b"k5", 3), (7, b"k7", 3),
    ]  # fmt: skip


@pytest.fixture
def customers(tmp_path: Path) -> Any:
    app = create_app(Settings(data_dir=tmp_path))
    return app.tables[store.CUSTOMERS_TABLE]


def test_the_app_recovers_through_bulk_recovery(customers: Any) -> None:
    recovery = customers.app.tables.recovery
    assert isinstance(recovery, BulkRecovery)
    assert recovery.client_kwargs["bootstrap_servers"]


def test_rocksdb_store_applies_changes_and_persists_the_offset(customers: Any) -> None:
    """Pins what Store.apply_changelog_batch reads of an event, and its persisted offset."""
    tp = TP(customers.changelog_topic.get_topic_name(), 2)
    batch = [
        Change(restore._Message(tp, 2, 10, b"c1", b"one")),  # noqa: SLF001
        Change(restore._Message(tp, 2, 11, b"c2", b"two")),  # noqa: SLF001
        Change(restore._Message(tp, 2, 12, b"c1", None)),  # noqa: SLF001 - a tombstone
    ]
    customers.data.apply_changelog_batch(batch, to_key=lambda k: k, to_value=lambda v: v)
    db = customers.data._db_for_partition(2)  # noqa: SLF001
    assert db.get(b"c2") == b"two"
    assert db.get(b"c1") is None
    assert customers.data.persisted_offset(tp) == 12


class _Consumer:
    """What _build_offsets asks of Faust's consumer."""

    def __init__(self, earliest: Mapping[TP, int]) -> None:
        self.earliest = earliest

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}


def test_faust_recovery_starts_where_the_bulk_read_stopped(
    customers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read cut short (deadline) leaves Faust to read the rest, from the right offset."""
    topic = customers.changelog_topic.get_topic_name()
    done_tp, cut_tp, empty_tp = TP(topic, 0), TP(topic, 1), TP(topic, 5)
    recovery = customers.app.tables.recovery
    for tp in (done_tp, cut_tp, empty_tp):
        recovery.add_active(customers, tp)
    recovery.active_highwaters.update({done_tp: 4, cut_tp: 9, empty_tp: -1})
    asked: dict[TP, Span] = {}

    async def fake_read(
        kwargs: Any, spans: Mapping[TP, Span],
        apply: Callable[[TP, list[Change]], None], deadline: float, fetch: int,
    ) -> dict[TP, int]:  # fmt: skip
        asked.update(spans)
        for tp, upto in ((done_tp, 4), (cut_tp, 6)):
            apply(tp, [Change(restore._Message(tp, tp.partition, o, b"k%d" % o, b"v"))  # noqa: SLF001
                       for o in range(spans[tp].start, upto + 1)])  # fmt: skip
        return {done_tp: 4, cut_tp: 6}

    monkeypatch.setattr(restore, "read", fake_read)
    consumer = _Consumer({done_tp: 0, cut_tp: 2, empty_tp: 0})
    tps = {done_tp, cut_tp, empty_tp}
    asyncio.run(recovery._build_offsets(consumer, tps, recovery.active_offsets, "active"))  # noqa: SLF001
    assert asked == {done_tp: Span(0, 5), cut_tp: Span(2, 10)}
    assert recovery.active_offsets[done_tp] == 4 and recovery.active_offsets[cut_tp] == 6
    assert customers.data.persisted_offset(cut_tp) == 6
    assert recovery.active_remaining() == Counter({cut_tp: 3})
    assert recovery.need_recovery()

    # Standby partitions are left to Faust.
    asked.clear()
    asyncio.run(recovery._build_offsets(consumer, {done_tp}, Counter(), "standby"))  # noqa: SLF001
    assert asked == {}


def test_faust_internals_the_bulk_restore_uses() -> None:
    """If this fails, a Faust upgrade moved what restore.py relies on: re-check the module."""
    params = list(inspect.signature(Recovery._build_offsets).parameters)  # noqa: SLF001
    assert params == ["self", "consumer", "tps", "destination", "title"]
    source = inspect.getsource(Recovery.__dict__["_restart_recovery"].fun)
    # Highwaters are known before the active offsets are built, and those are what it seeks.
    highwaters = source.index("self._build_highwaters)(\n                        consumer, assigned_active_tps")
    offsets = source.index("self._build_offsets)(\n                        consumer, assigned_active_tps")
    seek = source.index("self._seek_offsets)(\n                        consumer, assigned_active_tps")
    assert highwaters < offsets < seek
    assert '"active"' in source[offsets : offsets + 200]
    assert "_recovery" in TableManager.__annotations__
    assert isinstance(inspect.getattr_static(TableManager, "recovery"), property)


def test_a_broker_error_leaves_the_rest_to_faust(
    customers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = customers.changelog_topic.get_topic_name()
    tp = TP(topic, 3)
    recovery = customers.app.tables.recovery
    recovery.add_active(customers, tp)
    recovery.active_highwaters[tp] = 99

    async def failing_read(
        kwargs: Any, spans: Mapping[TP, Span],
        apply: Callable[[TP, list[Change]], None], deadline: float, fetch: int,
    ) -> dict[TP, int]:  # fmt: skip
        apply(tp, [Change(restore._Message(tp, 3, o, b"k", b"v")) for o in range(40)])  # noqa: SLF001
        raise KafkaConnectionError()

    monkeypatch.setattr(restore, "read", failing_read)
    metrics = recovery.metrics
    before = metrics.restored_records.labels(customers.name)._value.get()  # noqa: SLF001
    asyncio.run(recovery._build_offsets(_Consumer({tp: 0}), {tp}, recovery.active_offsets, "active"))  # noqa: SLF001
    assert recovery.active_offsets[tp] == 39
    assert recovery.active_remaining() == Counter({tp: 60})
    assert metrics.restored_records.labels(customers.name)._value.get() - before == 40  # noqa: SLF001
