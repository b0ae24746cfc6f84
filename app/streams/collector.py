"""The worker process's garbage collector: thresholds, a freeze after indexing, pause times.

A worker keeps hundreds of thousands of long-lived objects (parsed customer states
in the cache, the read model, the revenue mirror) and allocates a few hundred
short-lived ones per event. With CPython's default thresholds (700, 10, 10) the
young generations are collected every few events and the full collection, which
walks that whole long-lived heap, runs every few seconds: measured in a worker at
10,000 customers (bench/throughput.py, 80,000 events), 9.0 s of 58 s went to
collections, 7.2 s of it full ones.

Most of that heap was garbage in a cycle: each batch with a dead letter was held
through the kept exception's traceback (fixed in ``BatchResult.reject``), and a fetch
handed over up to 190,000 parsed messages at once (now ``broker_max_poll_records``).
Without the cycle the thresholds trade total time against the longest stop, and a
stop holds every event behind it (the latency target is a p99 of 100 ms). At 100,000
customers and 300,000 events (bench/throughput.py, 2026-12-02, cycle fixed, fetches
not yet bounded): (100,000, 50, 100) stopped 3.5 s in all, single collections up to
0.5 s; (10,000, 10, 100) 6.8 s in all, none longer than 0.1 s (with fetches bounded
too: 6.8 s, none longer than 0.1 s). The second is set.

After an indexing pass what it built (the read model and revenue mirror of every
customer of the partitions assigned) is frozen (``gc.freeze``): moved to the permanent
generation, never walked again. It is still freed by reference counting when dropped;
only a reference cycle among those objects would outlive its use, and they hold none.

Reference cycles created later still get collected: the young generations catch the
short-lived ones (exceptions, futures) before they grow old, and full collections
still run, only far less often. Every pause is observed in
``feedback_gc_pause_seconds`` (by generation), so a stop shows on /metrics.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

# net allocations before a young collection; young collections per middle one;
# middle collections per full one (CPython also waits for 25% of the heap to be new)
THRESHOLDS = (10_000, 10, 100)

_Callback = Callable[[str, dict[str, Any]], None]


def tune() -> None:
    """Set the worker's thresholds (process-wide; called once when the worker starts)."""
    gc.set_threshold(*THRESHOLDS)


def freeze() -> None:
    """Exempt every object alive now from later collections (after an indexing pass)."""
    gc.freeze()


def watch(pauses: Histogram) -> _Callback:
    """Observe each collection's pause in ``pauses`` (labelled by generation); returns the
    callback, for ``unwatch``."""
    started = [0.0]
    labelled = {g: pauses.labels(str(g)) for g in range(3)}

    def on_collect(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            labelled[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(on_collect)
    return on_collect


def unwatch(callback: _Callback) -> None:
    if callback in gc.callbacks:
        gc.callbacks.remove(callback)
