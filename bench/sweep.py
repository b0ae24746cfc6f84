"""What re-scoring customers as stream time passes costs at a million customers per worker.

    python -m bench.sweep [--customers 1000000] [--sample 5000]

Measures, in one process, without a broker:
- the CPU cost of one sweep re-score (parse the stored state, re-score as of now,
  evaluate the time rules, and serialise it when a fact changed or it alerted, which
  is when the worker writes it) on realistic simulated states, and the share written;
- the read model (rows + schedule) at N customers: memory, scheduling all of them,
  popping one stream-day's worth of due customers, moving every customer's next check
  twice more (what live writes do: the mean and the longest single move, which is
  how long the event loop is held by it), the gauges' pass, and the churn
  KPIs' tally: taking every customer in (the first recount after an assignment),
  reading the counts of every partition, and taking in 1% of the customers again
  after their lifecycle changed (what a recount costs as time goes on);
and derives the re-score load per day of stream time from the schedule rule
(half the customer's own purchase gap, 1-14 days). The Kafka/RocksDB write of a
re-scored customer costs what any customer write costs (see bench/throughput.py).
Results: bench/results/sweep-<time>.json/.md.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from app.analysis import experiment
from app.domain import churn_kpi
from app.domain.batch import sweep_one
from app.domain.customer import CustomerState, fold, next_check, refresh
from app.domain.events import decode_event
from app.streams import store
from app.streams.readmodel import ReadModel
from bench import report
from bench.churn_eval import machine


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulated_states(customers: int) -> tuple[list[bytes], datetime]:
    history = experiment.simulate(seed=1, customers=customers, cutoff_days=[300], horizon_days=0)
    policy = experiment.policy()
    states: dict[str, CustomerState] = {}
    clock = experiment.START
    for raw in history.lines:
        try:
            ev = decode_event(raw)
        except Exception:  # noqa: BLE001 - malformed records are skipped here
            continue
        st = states.setdefault(ev.customer_id, CustomerState(customer_id=ev.customer_id))
        fold(st, ev, policy)
        clock = max(clock, ev.occurred_at)
    for st in states.values():
        refresh(st, policy, clock)
    return [store.dump_state(st) for st in states.values()], clock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=5000)
    args = p.parse_args()
    policy = experiment.policy()
    raws, clock = simulated_states(args.sample)
    later = clock + timedelta(days=7)
    wall = datetime.now(UTC)
    # 1. one re-score, as the sweep does it
    t0 = time.perf_counter()
    gaps = []
    written = 0
    for raw in raws:
        st = store.load_state(raw)
        assert st is not None
        _, write = sweep_one(st, policy, later, wall)
        if write:
            store.dump_state(st)
            written += 1
        due = next_check(st, policy, later)
        gaps.append((due - later).total_seconds() / 86400)
    per_rescore_us = (time.perf_counter() - t0) / len(raws) * 1e6
    step_days = statistics.mean(gaps)
    # 2. the read model at N customers (rows cloned from the sample)
    gc.collect()
    before = rss_mib()
    rm = ReadModel()
    states = [st for r in raws if (st := store.load_state(r)) is not None]
    t0 = time.perf_counter()
    for i in range(args.customers):
        st = states[i % len(states)]
        key = f"cust-{i:07d}".encode()
        due = later + timedelta(days=(i % 1400) / 100)  # spread over 14 days
        rm.record(key, i % 8, st, due)
    record_s = time.perf_counter() - t0
    mem_mib = rss_mib() - before
    for p_ in range(8):
        rm.advance(p_, later + timedelta(days=1), wall + timedelta(days=3650))
    t0 = time.perf_counter()
    popped = sum(len(rm.take_due(p_, 10**9)) for p_ in range(8))
    pop_s = time.perf_counter() - t0
    longest = 0.0
    t0 = time.perf_counter()
    for n in range(2 * args.customers):  # every customer twice, in a scattered order
        i = (n * 7919) % args.customers
        t1 = time.perf_counter()
        rm.schedule(f"cust-{i:07d}".encode(), i % 8,
                    (later + timedelta(days=2 + n // args.customers)).timestamp()
                    + (n % 1400) * 864.0)  # fmt: skip
        longest = max(longest, time.perf_counter() - t1)
    move_us = (time.perf_counter() - t0) / (2 * args.customers) * 1e6
    t0 = time.perf_counter()
    rm.counts()
    gauges_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    while rm.kpi_sync(10**9):
        pass
    kpi_first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p_ in range(8):
        for kind in churn_kpi.PERIODS:
            rm.kpi.counts(p_, kind, later, 5)
    kpi_read_s = time.perf_counter() - t0
    lapsed = [st for st in states if st.lapses] or states
    changed = args.customers // 100
    for i in range(0, args.customers, 100):  # 1%: another lifecycle (or the same, re-read)
        st = lapsed[i % len(lapsed)] if not states[i % len(states)].lapses else CustomerState(
            customer_id="x", first_seen_at=later)
        rm.record(f"cust-{i:07d}".encode(), i % 8, st, later + timedelta(days=1))
    t0 = time.perf_counter()
    while rm.kpi_sync(10**9):
        pass
    kpi_changed_s = time.perf_counter() - t0
    per_day = args.customers / step_days
    result: dict[str, Any] = {
        "machine": machine(), "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": args.customers, "sample_states": len(raws),
        "rescore_us": round(per_rescore_us, 1), "written_share": round(written / len(raws), 3),
        "mean_step_days": round(step_days, 2),
        "rescores_per_stream_day": round(per_day),
        "rescore_cpu_s_per_stream_day": round(per_day * per_rescore_us / 1e6, 1),
        "live_rescores_per_s": round(per_day / 86400, 2),
        "readmodel_rss_mib": round(mem_mib), "record_all_s": round(record_s, 2),
        "pop_one_day_due": popped, "pop_one_day_s": round(pop_s, 2),
        "reschedule_us": round(move_us, 2), "reschedule_longest_ms": round(longest * 1e3, 2),
        "gauges_pass_s": round(gauges_s, 2), "kpi_tally_all_s": round(kpi_first_s, 2),
        "kpi_read_all_kinds_s": round(kpi_read_s, 3), "kpi_changed_customers": changed,
        "kpi_tally_changed_s": round(kpi_changed_s, 3),
    }  # fmt: skip
    md = "\n".join([f"# sweep cost {result['when']}", "", f"machine: {result['machine']}", "",
                    "| figure | value |", "|---|---|",
                    *[f"| {k} | {v} |" for k, v in result.items() if k not in ("machine", "when")],
                    ""])  # fmt: skip
    report.save("sweep", report.stamp(), result, md)
    print(md)


if __name__ == "__main__":
    main()
