"""What a live event costs the worker, at a steady rate, after a backfill: CPU, batches, phases.

    python -m bench.live [--events 300000] [--customers 100000] [--rate 1500 3000]
                         [--warm 60] [--seconds 40] [--idle 10] [--set FEEDBACK_X=VALUE]

``bench.throughput``'s latency run measures 20 s right after the worker has worked off
the jump of stream time; this one holds the live rate steady for longer and reports
where the worker's time goes at each rate, to tell a cost per event from a cost per
second or per batch. Per rate: a fresh broker, the backfill of ``--events`` simulated
events, a worker that reads it, ``--warm`` seconds of live events (each happening as
it is produced), ``--idle`` seconds with no traffic (what the worker costs per second
with nothing to do: its timers, the sweep's backlog), then ``--seconds`` measured:
worker CPU per event (its main thread, where the event loop runs, and the others,
aiokafka's consumer thread among them) and share of a core,
batches and their mean size, the batch phases per event (wall time, as
``feedback_batch_phase_seconds``), the sweep's re-scores, garbage-collector pauses,
and how busy the whole machine was (broker and producer included).
Results: bench/results/live-<time>.json/.md with the machine described.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.throughput import (
    COUNTED,
    WorkerProcess,
    add_history_ends,
    fresh_broker,
    history_start,
    machine,
    pipeline,
    produce,
    send,
    simulated,
    worker_env,
)

PHASES = ("fold", "deliver", "after", "idle_sweep")
STEPS = ("alerts", "tallies", "states")


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def snapshot(w: WorkerProcess) -> dict[str, float]:
    main, other = w.thread_cpu_s()
    out = {"cpu": w.cpu_s(), "main": main, "other": other, "counted": w.metric(*COUNTED),
           "batches": w.metric("feedback_batch_events_count"),
           "batch_events": w.metric("feedback_batch_events_sum"),
           "swept": w.metric("feedback_sweep_rescored_total"),
           "gc": w.metric("feedback_gc_pause_seconds_sum")}  # fmt: skip
    for p in PHASES:
        out[p] = w.metric(f'feedback_batch_phase_seconds_total{{phase="{p}"}}')
    for s in STEPS:
        out[f"step_{s}"] = w.metric(f'feedback_delivery_step_seconds_total{{step="{s}"}}')
    return out


def measure(events: int, customers: int, rate: float, warm: float, seconds: float,
            idle: float, ends: str, extra: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    with fresh_broker("live") as (info, topics, data):
        start = history_start(events, customers, ends)
        asyncio.run(produce(info.bootstrap, topics, events, customers, start=start))
        env = worker_env(info.bootstrap, topics, data / "worker", extra)
        out: dict[str, Any] = {}

        def live(w: WorkerProcess, backfill_rate: float) -> dict[str, Any]:
            n_warm, n = int(rate * warm), int(rate * seconds)
            counted = w.metric(*COUNTED)
            asyncio.run(produce(info.bootstrap, topics, n_warm, customers, skip=events,
                                rate=rate, create=False, live=True, start=start))  # fmt: skip
            # Generated before any clock starts: runs before 2026-12-06 08:40 counted the
            # worker's CPU during the 15-25 s this takes, idle, into the live events' cost.
            bodies = list(simulated(n, customers, events + n_warm, live=True, start=start))
            w.wait_counted(counted + n_warm, 600, "the warm-up events")
            # What the worker costs with nothing to do (its timers, the sweep's backlog):
            # a cost per second, apart from the cost per event measured next.
            i0, i_t0 = snapshot(w), time.monotonic()
            time.sleep(idle)
            i1, idle_s = snapshot(w), time.monotonic() - i_t0
            before, m0, t0 = snapshot(w), machine_busy(), time.monotonic()
            asyncio.run(send(info.bootstrap, topics, bodies, rate, create=False))
            w.wait_counted(before["counted"] + n, 600, "the live events")
            after, m1, elapsed = snapshot(w), machine_busy(), time.monotonic() - t0
            d = {k: after[k] - before[k] for k in after}
            per = 1e6 / d["counted"]
            out.update({
                "rate": rate, "backfill_events_per_s": round(backfill_rate),
                "events": int(d["counted"]), "seconds": round(elapsed, 1),
                "idle_cores": {k: round((i1[k] - i0[k]) / idle_s, 3) for k in ("main", "other")},
                "idle_swept": int(i1["swept"] - i0["swept"]),
                "cpu_us_per_event": round(d["cpu"] * per),
                "thread_cpu_us_per_event": {k: round(d[k] * per) for k in ("main", "other")},
                "worker_busy": round(d["cpu"] / elapsed, 2),
                "machine_busy_cores": round(2 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 2),
                "batches": int(d["batches"]),
                "mean_batch": round(d["batch_events"] / max(1.0, d["batches"]), 1),
                "phase_us_per_event": {p: round(d[p] * per, 1) for p in PHASES},
                "delivery_ms_per_batch": {s: round(d[f"step_{s}"] * 1e3 / max(1.0, d["batches"]), 2)
                                          for s in STEPS},  # fmt: skip
                "swept": int(d["swept"]), "gc_us_per_event": round(d["gc"] * per, 1),
            })  # fmt: skip
            return out

        pipeline([env], events, data / "worker.log", live)
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--rate", type=float, nargs="+", default=[1500.0, 3000.0])
    p.add_argument("--warm", type=float, default=60.0)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--idle", type=float, default=10.0)
    add_history_ends(p)
    p.add_argument("--set", action="append", default=[], metavar="FEEDBACK_X=VALUE")
    args = p.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    runs = [measure(args.events, args.customers, r, args.warm, args.seconds, args.idle,
                    args.history_ends, extra) for r in args.rate]  # fmt: skip
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "events": args.events, "customers": args.customers, "warm_s": args.warm,
              "history_ends": args.history_ends,
              "worker_settings": extra, "runs": runs}  # fmt: skip
    m = result["machine"]
    md = [f"# Live cost {result['when']}", "",
          f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
          f"{m['python']}, Kafka {m['kafka']} (local, same machine).", "",
          f"Command: `python -m bench.live --events {args.events} --customers {args.customers} "
          f"--rate {' '.join(f'{r:g}' for r in args.rate)} --warm {args.warm:g} "
          f"--seconds {args.seconds:g} --idle {args.idle:g} --history-ends {args.history_ends}"
          f"{''.join(f' --set {k}={v}' for k, v in extra.items())}`",
          "",
          "| rate | events | worker CPU per event (main thread / others) | idle worker before, "
          "cores (main / others), swept | worker busy | machine busy (cores) | "
          "batches, mean size | fold / deliver / after per event (wall) | "
          "deliver steps per batch: alerts / tallies / states | swept | gc per event |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in runs:
        ph = r["phase_us_per_event"]
        th, idle = r["thread_cpu_us_per_event"], r["idle_cores"]
        md.append(f"| {r['rate']:g}/s | {r['events']} | {r['cpu_us_per_event']} us "
                  f"({th['main']} / {th['other']}) | {idle['main']} / {idle['other']}, "
                  f"{r['idle_swept']} | {r['worker_busy']} | {r['machine_busy_cores']} | {r['batches']}, "
                  f"{r['mean_batch']} | {ph['fold']} / {ph['deliver']} / {ph['after']} us | "
                  f"{' / '.join(str(r['delivery_ms_per_batch'][s]) for s in STEPS)} ms | "
                  f"{r['swept']} | {r['gc_us_per_event']} us |")  # fmt: skip
    text = "\n".join(md) + "\n"
    report.save("live", report.stamp(), result, text)
    print(text)


if __name__ == "__main__":
    main()
