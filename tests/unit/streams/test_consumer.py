"""The commit base fix, and pins of the Faust internals app/streams/consumer.py relies on."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from app.settings import Settings
from app.streams.app import create_app
from app.streams.consumer import SafeOffsetConsumer, committable, consecutive_run

TOPIC = "surveys"


@pytest.mark.parametrize(
    ("acked", "base", "want"),
    [
        ([0, 1, 2], 0, 3),  # from the start of the log
        ([100, 101, 105], 100, 102),  # stops at the first hole
        ([41, 42, 43], 0, None),  # records 0..40 were never processed
        ([0, 1, 2, 3, 41], 0, 4),  # what was processed before the hole still commits
        ([101, 102], 100, 103),  # one past: a transaction marker at the committed offset
        ([102, 103], 100, None),
        ([0, 1], None, None),  # no known base: never commit blindly
        ([], 0, None),
    ],
)
def test_committable(acked: list[int], base: int | None, want: int | None) -> None:
    assert committable(acked, base) == want


def test_consecutive_run() -> None:
    assert consecutive_run([5, 6, 7, 9]) == [5, 6, 7]
    assert consecutive_run([5, 5, 6]) == [5]


@pytest.fixture
def consumer(tmp_path: Path) -> SafeOffsetConsumer:
    app = create_app(Settings(data_dir=tmp_path))
    made = app.consumer
    assert isinstance(made, SafeOffsetConsumer)
    return made


def test_never_committed_partition_with_a_hole_at_the_head_commits_nothing(
    consumer: SafeOffsetConsumer,
) -> None:
    tp = TP(TOPIC, 0)
    consumer._acked[tp] = [41, 42, 43]  # noqa: SLF001 - the state under test
    consumer._log_start[tp] = 0  # noqa: SLF001
    assert consumer._new_offset(tp) is None  # noqa: SLF001
    assert consumer._acked[tp] == [41, 42, 43]  # noqa: SLF001 - kept for later
    # Faust's own check would have committed past offsets 0..40: the bug fixed here.
    # If this starts failing, a Faust upgrade changed _new_offset: re-check the module.
    assert driver.Consumer._new_offset(consumer, tp) == 44  # noqa: SLF001


def test_a_contiguous_run_commits_and_leaves_the_rest(consumer: SafeOffsetConsumer) -> None:
    tp = TP(TOPIC, 1)
    consumer._committed_offset[tp] = 10  # noqa: SLF001
    consumer._acked[tp] = [12, 10, 11, 15]  # noqa: SLF001
    consumer._acked_index[tp] = {10, 11, 12, 15}  # noqa: SLF001
    assert consumer._new_offset(tp) == 13  # noqa: SLF001
    assert consumer._acked[tp] == [15]  # noqa: SLF001
    assert consumer._acked_index[tp] == {15}  # noqa: SLF001


def test_a_gap_the_fetch_loop_saw_counts_as_processed(consumer: SafeOffsetConsumer) -> None:
    tp = TP(TOPIC, 2)
    consumer._committed_offset[tp] = 10  # noqa: SLF001
    consumer._gap[tp].addi(12, 14)  # noqa: SLF001 - offsets 12 and 13 hold no records
    consumer._acked[tp] = [10, 11, 14]  # noqa: SLF001
    assert consumer._new_offset(tp) == 15  # noqa: SLF001


def test_recovery_seeks_before_it_resumes_the_flow() -> None:
    """The order the fix relies on: resume input partitions, perform_seek, then resume flow."""
    source = inspect.getsource(Recovery.on_recovery_completed)
    resume_parts = source.index("consumer.resume_partitions(")
    seek = source.index("consumer.perform_seek()")
    flow = source.index("self.app.flow_control.resume()")
    assert resume_parts < seek < flow
