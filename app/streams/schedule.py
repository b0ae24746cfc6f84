"""One partition's sweep schedule: which customers' risk can have changed by a given time.

A calendar queue: keys in buckets of an hour by due time, the buckets in a heap of
their numbers. Why not one ordering of every entry:

- a heap cannot move an entry, so each write left its superseded entry behind until
  its time came (1 to 30 days ahead, live); the heap grew with the writes rather than
  the customers and had to be compacted now and then, which held the event loop about
  65 ms per partition at 12,500 customers and 344 ms at 125,000 (``bench.sweep``);
- an ordered list (``SortedList``) moves an entry without compaction, but a move cost
  about four times a heap push (``bench.sweep``: 17 us against 4.4 at a million).

Here a move is a few dict and set operations, and each key's due time is kept once.
Taking what is due sorts only the buckets it takes from (a few hundred keys at most, at
a million customers), so keys still come out earliest first, ties by key.
"""

from __future__ import annotations

import heapq

BUCKET_S = 3600.0


def _bucket(due: float) -> int:
    return int(due // BUCKET_S)


class Schedule:
    """Due times of one partition's customers, one per key."""

    def __init__(self) -> None:
        self._due: dict[bytes, float] = {}
        self._buckets: dict[int, set[bytes]] = {}
        # Bucket numbers, each pushed when its bucket is created. An emptied bucket stays
        # (an empty set) until it comes to the top, so a key moving in and out of one
        # bucket never pushes its number twice.
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self._due)

    def move(self, key: bytes, due: float) -> None:
        """(Re)schedule ``key`` at ``due``."""
        current = self._due.get(key)
        if current == due:
            return
        if current is not None:
            self._buckets[_bucket(current)].discard(key)
        self._due[key] = due
        b = _bucket(due)
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = set()
            heapq.heappush(self._order, b)
        bucket.add(key)

    def remove(self, key: bytes) -> None:
        """Unschedule ``key`` (no-op if it is not scheduled)."""
        due = self._due.pop(key, None)
        if due is not None:
            self._buckets[_bucket(due)].discard(key)

    def _first(self) -> int | None:
        """The earliest non-empty bucket's number (dropping empty ones on top)."""
        order, buckets = self._order, self._buckets
        while order:
            b = order[0]
            if buckets.get(b):
                return b
            heapq.heappop(order)
            buckets.pop(b, None)
        return None

    def take(self, cutoff: float, limit: int) -> list[bytes]:
        """Up to ``limit`` keys due at or before ``cutoff``, earliest first (ties by key);
        no longer scheduled."""
        out: list[bytes] = []
        due = self._due
        last = _bucket(cutoff)
        while len(out) < limit:
            b = self._first()
            if b is None or b > last:
                break
            bucket = self._buckets[b]
            ready = sorted((due[key], key) for key in bucket if due[key] <= cutoff)
            for _, key in ready[: limit - len(out)]:
                bucket.discard(key)
                del due[key]
                out.append(key)
            if bucket or b == last:
                break  # the limit, or the rest of the bucket is not due yet
        return out

    def count(self, cutoff: float) -> int:
        """How many keys are due at or before ``cutoff`` (a pass over the buckets)."""
        last = _bucket(cutoff)
        due = self._due
        n = 0
        for b, bucket in self._buckets.items():
            if b < last:
                n += len(bucket)
            elif b == last:
                n += sum(1 for key in bucket if due[key] <= cutoff)
        return n

    def any_due(self, cutoff: float) -> bool:
        b = self._first()
        if b is None or b > _bucket(cutoff):
            return False
        due = self._due
        return any(due[key] <= cutoff for key in self._buckets[b])
