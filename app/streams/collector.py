"""Garbage-collector thresholds for the worker process.

A worker keeps hundreds of thousands of long-lived objects (parsed customer states
in the cache, the read model, the revenue mirror) and allocates a few hundred
short-lived ones per event. With CPython's default thresholds (700, 10, 10) the
young generations are collected every few events and the full collection, which
walks that whole long-lived heap, runs every few seconds: measured in a worker at
10,000 customers (bench/throughput.py, 80,000 events), 9.0 s of 58 s went to
collections, 7.2 s of it full ones. With the thresholds below the same run spent
0.9 s.

Reference cycles still get collected: the young generations catch the short-lived
ones (exceptions, futures) before they grow old, and full collections still run,
only far less often.
"""

from __future__ import annotations

import gc

# net allocations before a young collection; young collections per middle one;
# middle collections per full one (CPython also waits for 25% of the heap to be new)
THRESHOLDS = (100_000, 50, 100)


def tune() -> None:
    """Set the worker's thresholds (process-wide; called once when the worker starts)."""
    gc.set_threshold(*THRESHOLDS)
