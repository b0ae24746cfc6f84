"""The batch layer alone, without broker or Faust: fold_batch plus delivery into fakes.

    python -m bench.batch [--events 60000] [--customers 10000] [--batch 1000]

What our own code costs per event, apart from Kafka, RocksDB and Faust: the fold
(decode, validate, fold, alerts, tallies, re-score of each touched customer) and the
delivery (state codec, changelog sends into a recording producer). States are kept
parsed between batches as the worker's cache does, so no state is re-parsed. The
sweep is left out (the view never reports a customer due). Results go to
bench/results/batch-<timestamp>.md with the machine described.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from app.domain.batch import Record, fold_batch
from app.domain.customer import CustomerState
from app.settings import load_settings
from app.simulate.model import Simulation
from app.streams import store
from app.streams.delivery import Delivery
from app.streams.policy import policy_from
from app.streams.tables import key_partition
from bench import report
from bench.throughput import machine
from tests.unit.streams.batchkit import LIMITS, Metrics, Producer, Table, View

PARTITIONS = 4


class CachedView(View):
    """The fake view, with parsed states kept between batches (the worker's cache)."""

    parsed: dict[bytes, CustomerState]

    def customer(self, key: bytes, partition: int) -> CustomerState | None:
        return self.parsed.get(key)


def records(events: int, customers: int) -> list[Record]:
    sim = Simulation(customers, seed=1, start=datetime(2025, 1, 1, tzinfo=UTC))
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for i, ev in enumerate(sim.events()):
        if i >= events:
            break
        part = key_partition(ev.key, PARTITIONS)
        off = offsets.get((ev.kind, part), 0)
        offsets[(ev.kind, part)] = off + 1
        out.append(Record(ev.kind, part, off, ev.key, ev.value, time.time()))
    return out


async def run(recs: list[Record], batch: int) -> dict[str, Any]:
    policy = policy_from(load_settings())
    customers, tallies = Table("customers"), Table("tallies")
    view = CachedView(customers, tallies, policy)
    view.parsed = {}
    producer = Producer()
    delivery = Delivery(producer, store.Rows(customers), store.Rows(tallies), topic_alerts="alerts",
                        topic_deadletter="deadletter", partitions_of=lambda topic: PARTITIONS,
                        metrics=Metrics())  # fmt: skip
    now = datetime.now(UTC)
    fold_s = deliver_s = 0.0
    touched = alerts = 0
    for start in range(0, len(recs), batch):
        t0 = time.perf_counter()
        result = fold_batch(recs[start:start + batch], view, policy, LIMITS, now)
        t1 = time.perf_counter()
        await delivery.deliver(result)
        t2 = time.perf_counter()
        view.clock.update(result.clock)
        view.parsed.update({k: s for k, (_, s) in result.states.items()})
        fold_s, deliver_s = fold_s + t1 - t0, deliver_s + t2 - t1
        touched, alerts = touched + len(result.states), alerts + len(result.alerts)
    n = len(recs)
    return {"events": n, "events_per_s": round(n / (fold_s + deliver_s)),
            "fold_us_per_event": round(fold_s / n * 1e6, 1),
            "deliver_us_per_event": round(deliver_s / n * 1e6, 1),
            "customers_written_per_event": round(touched / n, 3), "alerts": alerts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the simulation's malformed share is dead-lettered
    result = {"machine": machine(), "batch": args.batch, "customers": args.customers,
              **asyncio.run(run(records(args.events, args.customers), args.batch))}  # fmt: skip
    stamp = report.stamp()
    m = result["machine"]
    md = (f"# Batch layer without broker, {stamp}\n\nMachine: {m['cpus']} cores "
          f"{m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}.\n\n"
          f"Command: `python -m bench.batch --events {args.events} --customers "
          f"{args.customers} --batch {args.batch}`\n\n| figure | value |\n|---|---|\n"
          + "".join(f"| {k} | {v} |\n" for k, v in result.items() if k != "machine"))  # fmt: skip
    report.save("batch", stamp, result, md)
    print(md)


if __name__ == "__main__":
    main()
