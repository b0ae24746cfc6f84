from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from app.metrics import ServiceMetrics
from app.streams import collector


def test_each_collection_is_observed_under_its_generation_until_unwatched() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics.create(registry)

    def count(generation: str) -> float:
        value = registry.get_sample_value("feedback_gc_pause_seconds_count",
                                          {"generation": generation})  # fmt: skip
        return value or 0.0

    callback = collector.watch(metrics.gc_pause)
    try:
        before = count("2")
        gc.collect()  # a full collection: generation 2
        assert count("2") == before + 1
    finally:
        collector.unwatch(callback)
    gc.collect()
    assert count("2") == before + 1
    assert callback not in gc.callbacks


def test_freeze_exempts_what_is_alive_from_later_collections() -> None:
    before = gc.get_freeze_count()
    kept: list[list[int]] = [[] for _ in range(100)]
    assert any(o is kept[0] for o in gc.get_objects())
    try:
        collector.freeze()
        assert gc.get_freeze_count() >= before + len(kept)
        assert not any(o is kept[0] for o in gc.get_objects())  # no generation walks it
    finally:
        gc.unfreeze()
    assert any(o is kept[0] for o in gc.get_objects())


def test_the_worker_thresholds_are_set_by_tune() -> None:
    saved = gc.get_threshold()
    try:
        collector.tune()
        assert gc.get_threshold() == collector.THRESHOLDS
    finally:
        gc.set_threshold(*saved)
