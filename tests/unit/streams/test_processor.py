"""The batch processor's Pareto boundary around an assignment (a real Faust app, no broker)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from app.streams.app import create_app, processor_of


def test_the_boundary_is_not_recut_from_a_mirror_that_is_not_indexed_yet(tmp_path: Path) -> None:
    processor = processor_of(create_app(Settings(data_dir=tmp_path, partitions=2)))
    before = processor.policy
    batch = {0: {b"c1": 900.0, b"c2": 10.0, b"c3": 5.0, b"c4": 1.0, b"c5": 0.5}}
    assert processor.repolicy(batch) is before, "the mirror holds only this batch"
    processor.ownership.owned = processor.ownership.seeded = {0, 1}  # indexed
    after = processor.repolicy({0: {b"c6": 7.0}})
    assert after is not before and after.cutoffs.a == 10.0  # the top 20% of 6: two
