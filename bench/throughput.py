"""Sustained events/s of the full pipeline against the raw aiokafka floor, in one run.

    python -m bench.throughput [--events N] [--customers N] [--history-ends now|2025]

Starts its own fresh broker, produces N simulated events (a history that ends now, as
a backfill before live traffic would; --history-ends 2025 for the runs before
2026-12-06 09:00, whose history ended 22 months before the live events), then measures:
- floors: one aiokafka consumer reading raw records; the same plus decode + validate; the
  same plus fold (same domain code), no Faust;
- pipeline: a real `feedback worker` process (Faust, RocksDB tables, changelogs, alerts);
- recovery: a worker SIGKILLed and started on an empty state dir (the whole changelog is
  read back) and on its own state dir (only the tail): seconds until every partition is
  restored and indexed (/health), and changelog records per second;
- latency: the caught-up pipeline worker fed live events at a share of its rate
  (--latency-share, default 0.5; a warm-up until the re-score of every customer that a
  jump of stream time to now causes is worked off, 30 to 300 s; 20 s measured): p50/p99 from produce to
  state written (visible over HTTP) and from produce to alert delivered, from the worker's
  own histograms;
- scale out (--workers N): N workers in one group on a copy of the run, aggregate rate.
Also reported: the worker's CPU time per event (steadier than events/s on a machine the
broker shares) and the time inside the batch handler. BENCH_LOG=FILE keeps the worker's
log there (by default it goes with the run's temporary directory).
Writes bench/results/throughput-<timestamp>.json and .md with the machine described.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from faust.types import TP

from app.domain.customer import CustomerState, fold, refresh
from app.domain.events import decode_event
from app.errors import InvalidEventError
from app.local import kafka
from app.settings import load_settings
from app.simulate.model import SimEvent, Simulation
from app.streams import restore
from app.streams.policy import policy_from
from bench import report as report_file

PARTITIONS = 8
# Every input record a worker has finished with: processed (any outcome) or dead-lettered.
COUNTED = ("feedback_events_total", "feedback_dead_letters_total")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "kafka": kafka.KAFKA_VERSION}  # fmt: skip


Body = tuple[tuple[bytes, bytes | None], SimEvent]


# Where the simulated history begins unless it is anchored to end now (history_start).
REFERENCE_START = datetime(2025, 1, 1, tzinfo=UTC)


def history_start(events: int, customers: int, ends: str) -> datetime:
    """The simulation's start for a history of ``events`` events that ends ``ends``.

    "2025": it starts on REFERENCE_START (every run before 2026-12-06 09:00): 300,000
    events at 100,000 customers end in February 2025, so live events after them jump
    stream time 22 months ahead, and each live event first ages its customer by that
    much (a lapse and a win-back, a year of purchases pruned, a new tier): no worker
    in production meets that after a backfill. "now": the same history, shifted to end
    at the moment this is called (the simulation is the same sequence from any start).
    """
    if ends == "2025":
        return REFERENCE_START
    last = REFERENCE_START
    for _, ev in simulated(events, customers):
        last = ev.occurred_at
    return REFERENCE_START + (datetime.now(UTC) - last)


def add_history_ends(parser: argparse.ArgumentParser) -> None:
    """The ``--history-ends`` option of every bench that backfills (``history_start``)."""
    parser.add_argument("--history-ends", choices=("now", "2025"), default="now",
                        help="the simulated history ends now, or in 2025 (runs before "
                             "2026-12-06 09:00: live events then jump stream time 22 months)")


def simulated(n: int, customers: int, skip: int = 0, live: bool = False,
              start: datetime = REFERENCE_START) -> Iterator[Body]:  # fmt: skip
    """The simulation's events ``skip`` to ``skip + n`` (live: templated, see ``send``).

    Take them into a list before any clock starts: skipping the first ``skip`` events of
    the simulation takes tens of seconds, and a schedule or a measurement begun before it
    counted that time (bench.live counted the worker's CPU during it; a paced schedule
    put that many seconds' worth of events on the wire at once).
    """
    sim = Simulation(customers, seed=1, start=start)
    for ev in itertools.islice(sim.events(), skip, skip + n):
        yield (_live_template(ev.value) if live else (ev.value, None)), ev


async def produce(bootstrap: str, topics: dict[str, str], n: int, customers: int,
                  skip: int = 0, rate: float | None = None, create: bool = True,
                  live: bool = False, start: datetime = REFERENCE_START) -> None:  # fmt: skip
    """The simulation's events ``skip`` to ``skip + n``, as fast as possible or at ``rate``/s.

    ``live``: each event happens as it is produced (occurred_at = now), as in production;
    replayed history instead moves stream time days per second and makes every customer
    due for a re-score many times over.
    """
    bodies = simulated(n, customers, skip, live, start)
    await send(bootstrap, topics, bodies if rate is None else list(bodies), rate, create)


async def send(bootstrap: str, topics: dict[str, str], bodies: Iterable[Body],
               rate: float | None = None, create: bool = True) -> None:  # fmt: skip
    """Produce ``bodies`` (``simulated``) as fast as possible or at ``rate``/s; a live body
    gets the time it is sent as its occurred_at."""
    if create:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.values()])
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20 if rate is None else 0,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    pending = []
    began = time.monotonic()
    for i, ((head, tail), ev) in enumerate(bodies):
        if rate is not None:
            due = began + i / rate
            if due > time.monotonic() + PACE_S:
                await asyncio.sleep(due - time.monotonic())
        # live: each event happens as it is produced
        raw = head if tail is None else head + datetime.now(UTC).isoformat().encode() + tail
        pending.append(await producer.send(topics[ev.kind], raw, key=ev.key))
        if len(pending) >= 5000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await producer.stop()


# A paced producer sleeps only once it is this far ahead of its schedule (a sleep per
# event at thousands of events/s costs the machine the bench shares more than it paces).
PACE_S = 0.002


def _live_template(value: bytes) -> tuple[bytes, bytes | None]:
    """(bytes before occurred_at's value, bytes after it), or (value, None) for a record
    that is not a JSON event (the simulation's malformed share stays as it is)."""
    try:
        body = json.loads(value)
    except (ValueError, TypeError):
        return value, None
    if not isinstance(body, dict) or "occurred_at" not in body:
        return value, None
    marker = "\x00occurred_at\x00"
    body["occurred_at"] = marker
    head, tail = json.dumps(body).encode().split(json.dumps(marker).encode())
    return head + b'"', b'"' + tail


async def consume_timed(
    bootstrap: str, topics: dict[str, str], n: int, on_batch: Callable[[list[Any]], None]
) -> dict[str, float]:
    """One aiokafka consumer reads ``n`` records, handing each fetched batch to ``on_batch``;
    timed from the first batch."""
    consumer = AIOKafkaConsumer(*topics.values(), bootstrap_servers=bootstrap,
                                group_id=f"floor-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                max_poll_records=1000)  # fmt: skip
    await consumer.start()
    seen = 0
    t0 = 0.0
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            if not batch:
                continue
            if not t0:
                t0 = time.perf_counter()
            records = [r for rs in batch.values() for r in rs]
            seen += len(records)
            on_batch(records)
        elapsed = time.perf_counter() - t0
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": round(elapsed, 3), "events_per_s": round(seen / elapsed)}


async def read_floor(bootstrap: str, topics: dict[str, str], n: int, decode: bool) -> dict[str, float]:
    """aiokafka consume alone (``decode=False``), or with decode + validate of every record."""

    def on_batch(records: list[Any]) -> None:
        if decode:
            for r in records:
                try:
                    decode_event(r.value)
                except InvalidEventError:
                    pass

    return await consume_timed(bootstrap, topics, n, on_batch)


async def floor(bootstrap: str, topics: dict[str, str], n: int) -> dict[str, float]:
    """decode + validate + fold + refresh once per touched customer per batch; state in a dict."""
    policy = policy_from(load_settings())
    store: dict[bytes, CustomerState] = {}

    def on_batch(records: list[Any]) -> None:
        work: dict[bytes, CustomerState] = {}
        for r in records:
            try:
                ev = decode_event(r.value)
            except InvalidEventError:
                continue
            key = ev.customer_id.encode()
            state = work.get(key) or store.get(key)
            if state is None:
                state = CustomerState(customer_id=ev.customer_id)
            work[key] = state
            try:
                fold(state, ev, policy)
            except InvalidEventError:
                continue
        for key, state in work.items():
            refresh(state, policy)
            store[key] = state

    return await consume_timed(bootstrap, topics, n, on_batch)


def check_alive(proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Fail with the end of ``log`` if ``proc`` has exited."""
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} exited {proc.returncode}:\n{tail}")


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def faust_noop(bootstrap: str, topics: dict[str, str], n: int, data: Path,
               log: Path) -> dict[str, float]:  # fmt: skip
    """Faust's own per-message path into an agent that only counts (bench/faust_noop.py),
    timed by the agent from its first batch to its last."""
    out = data / "noop.json"
    env = {**os.environ, "NOOP_BOOTSTRAP": bootstrap, "NOOP_TOPICS": ",".join(topics.values()),
           "NOOP_EVENTS": str(n), "NOOP_OUT": str(out), "NOOP_DATA": str(data / "noop")}  # fmt: skip
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "bench.faust_noop", "worker", "-l", "warn"],
                                env=env, stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + max(300, n / 500)
        while not out.exists():
            check_alive(proc, log, "the Faust no-op agent")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Faust no-op agent did not count {n} records in time")
            time.sleep(0.1)
        got = json.loads(out.read_text())
    finally:
        proc.kill()
        proc.wait(60)
    return {"events": got["events"], "seconds": round(got["seconds"], 3),
            "events_per_s": round(got["events"] / got["seconds"])}  # fmt: skip


def metric_sum(port: int, names: tuple[str, ...]) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(names))  # fmt: skip


def by_label(port: int, metric: str, label: str) -> dict[str, int]:
    """A counter's samples summed per value of one label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'{label}="' in line:
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[value] = out.get(value, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def gc_pauses(port: int) -> dict[str, dict[str, float | None]]:
    """Per collector generation: collections, seconds stopped, and the bucket bound the
    longest pause was under (feedback_gc_pause_seconds)."""
    buckets = {g: histogram(port, "feedback_gc_pause_seconds", f'generation="{g}"')
               for g in ("0", "1", "2")}  # fmt: skip
    out: dict[str, dict[str, float | None]] = {}
    for g, points in buckets.items():
        total = points[-1][1] if points else 0.0
        longest = next((le for le, n in points if n >= total), None) if total else None
        out[g] = {"collections": total, "seconds": round(metric_sum(port, (
            f'feedback_gc_pause_seconds_sum{{generation="{g}"}}',)), 3), "longest_under_s": longest}
    return out


def alerts_by_rule(port: int) -> dict[str, int]:
    return by_label(port, "feedback_alerts_total", "rule")


def worker_env(bootstrap: str, topics: dict[str, str], data: Path,
               extra: dict[str, str]) -> dict[str, str]:  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    return {**extra, **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")},
            "FEEDBACK_BROKER": f"kafka://{bootstrap}", "FEEDBACK_APP_ID": f"bench-{tag}",
            "FEEDBACK_DATA_DIR": str(data), "FEEDBACK_WEB_PORT": str(kafka.free_port()),
            "FEEDBACK_PARTITIONS": str(PARTITIONS), "FEEDBACK_TOPIC_SURVEYS": topics["survey"],
            "FEEDBACK_TOPIC_PURCHASES": topics["purchase"],
            "FEEDBACK_TOPIC_COMPLAINTS": topics["complaint"],
            "FEEDBACK_TOPIC_ALERTS": f"alerts-{tag}", "FEEDBACK_TOPIC_DEADLETTER": f"dlq-{tag}"}  # fmt: skip


class WorkerProcess:
    """``python -m app worker`` with a log file; the bench reads its /metrics and /health."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.port = env, int(env["FEEDBACK_WEB_PORT"])
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "app", "worker", "-l", "warn"],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def check(self) -> None:
        check_alive(self.proc, self.log, "worker")

    def metric(self, *names: str) -> float:
        return metric_sum(self.port, names)

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return {}

    def rss_mib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return round(int(status.split("VmRSS:")[1].split()[0]) / 1024)

    def cpu_s(self) -> float:
        """CPU seconds the worker process used so far (user + system)."""
        return stat_cpu_s(Path(f"/proc/{self.proc.pid}/stat"))

    def thread_cpu_s(self) -> tuple[float, float]:
        """CPU seconds so far of the worker's main thread (the event loop: our batches and
        Faust's timers) and of its other threads (aiokafka's consumer thread in Faust's
        ServiceThread, RocksDB's)."""
        main = other = 0.0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended since the listing
                used = stat_cpu_s(task / "stat")
                if task.name == str(self.proc.pid):
                    main += used
                else:
                    other += used
        return main, other

    def wait_counted(self, target: float, within: float, what: str) -> None:
        """Poll until the worker has counted ``target`` events (COUNTED), or fail after
        ``within`` seconds naming ``what`` it was counting."""
        deadline = time.monotonic() + within
        while self.metric(*COUNTED) < target:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not count {what} within {within:g} s")
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def pipeline(
    envs: list[dict[str, str]], n: int, log: Path,
    then: Callable[[WorkerProcess, float], dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Workers of one group (one per env) until they have counted ``n`` events together.

    ``then(worker, rate)`` runs on the (first) worker once it is caught up, before the kill.
    """
    workers = [WorkerProcess(env, log) for env in envs]
    try:
        deadline = time.monotonic() + max(900, n / 200)  # 200 events/s: surely stuck
        t0 = c0 = 0.0
        cpu0: list[float] = []
        count = 0.0
        # Each worker's count every 5 s from the first counted event: with several workers,
        # who worked when (a rebalance shows as a flat stretch).
        progress: list[list[float]] = []
        while time.monotonic() < deadline:
            counts = [w.metric(*COUNTED) for w in workers]
            count = sum(counts)
            now = time.perf_counter()
            if count > 0 and not t0:
                t0, c0 = now, count
                cpu0 = [w.cpu_s() for w in workers]
            if t0 and now - t0 >= 5 * len(progress):
                progress.append([round(now - t0, 1), *counts])
            if count >= n:
                break
            for w in workers:
                w.check()
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        # CPU per event is steadier than events/s on a machine the broker shares.
        cpu = sum(w.cpu_s() for w in workers) - sum(cpu0)
        # Time inside the batch handler (our code) versus Faust's machinery around it.
        handler_s = sum(w.metric("feedback_batch_processing_seconds_sum") for w in workers)
        phases = {phase: round(sum(w.metric(f'feedback_batch_phase_seconds_total{{phase="{phase}"}}')
                                   for w in workers), 3)
                  for phase in ("fold", "deliver", "after")}  # fmt: skip
        # Work beside the events: customers re-scored as stream time moved, alerts sent.
        swept = sum(w.metric("feedback_sweep_rescored_total") for w in workers)
        alerts = sum(w.metric("feedback_alerts_total") for w in workers)
        by_rule = alerts_by_rule(workers[0].port)
        # A duplicate is an event read again (after a rebalance or a restart): it counts
        # towards the events but does no work, so the outcomes say how many there were.
        outcomes: dict[str, int] = {}
        for w in workers:
            for k, v in by_label(w.port, "feedback_events_total", "outcome").items():
                outcomes[k] = outcomes.get(k, 0) + v
        indexed = sum(w.metric("feedback_partitions_indexed_total") for w in workers)
        collections = gc_pauses(workers[0].port)
        rss = [w.rss_mib() for w in workers]
        rate = (count - c0) / elapsed
        after = then(workers[0], rate) if then is not None else None
    finally:
        for w in workers:
            w.kill()  # SIGKILL: the recovery runs start from what a crash leaves
    return {"workers": len(workers), "events": count, "measured_events": count - c0,
            "seconds": round(elapsed, 3), "events_per_s": round((count - c0) / elapsed),
            "worker_cpu_us_per_event": round(cpu / max(1.0, count - c0) * 1e6),
            "worker_cpu_busy": round(cpu / elapsed / len(workers), 2),
            "worker_rss_mib": max(rss), "worker_rss_mib_each": rss,
            "batch_handler_seconds": round(handler_s, 3), "batch_phase_seconds": phases,
            "swept_customers": swept,
            "alerts": alerts, "alerts_by_rule_first_worker": by_rule,
            "events_by_outcome": outcomes, "partitions_indexed": indexed,
            "gc_first_worker": collections, "progress": progress, "then": after}  # fmt: skip


async def changelog_records(bootstrap: str, topic: str) -> tuple[int, int, int]:
    """(records in the log, offset span, distinct keys): the log cleaner removes records
    from closed segments, so what a restore reads can be fewer than the offsets span.
    Read with the worker's own bulk restore reader (app/streams/restore.read)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends, starts = await consumer.end_offsets(parts), await consumer.beginning_offsets(parts)
    finally:
        await consumer.stop()
    spans = {TP(topic, tp.partition): restore.Span(starts[tp], ends[tp])
             for tp in parts if ends[tp] > starts[tp]}  # fmt: skip
    present, keys = 0, set[bytes]()

    def count(tp: TP, batch: list[restore.Change]) -> None:
        nonlocal present
        present += len(batch)
        keys.update(c.message.key for c in batch)

    deadline = time.monotonic() + 1800
    await restore.read({"bootstrap_servers": bootstrap}, spans, count, deadline, 32 * 1024**2)
    if time.monotonic() >= deadline:
        raise RuntimeError(f"reading {topic} back took over 1800 s")
    return present, sum(ends[tp] - starts[tp] for tp in parts), len(keys)


def recovery(env: dict[str, str], log: Path, records: int,
             probe: Callable[[], None]) -> dict[str, float]:  # fmt: skip
    """Seconds from start until every partition is restored and indexed, and until the
    first event is processed (``probe`` produces one live event before the start)."""
    probe()
    t0 = time.perf_counter()
    worker = WorkerProcess(env, log)
    assigned = first = None
    try:
        deadline = time.monotonic() + 1800
        ready = None
        while ready is None or first is None:
            health = worker.health()
            now = time.perf_counter() - t0
            if assigned is None and health.get("assigned_partitions"):
                # The group waited out the killed member's session before assigning.
                assigned = now
            if ready is None and health.get("indexed_partitions") == PARTITIONS:
                ready = now
                rss = worker.rss_mib()
                bulk = (worker.metric("feedback_changelog_restored_records_total"),
                        worker.metric("feedback_changelog_restore_seconds_total"))  # fmt: skip
            if first is None and worker.metric(*COUNTED) >= 1:
                first = now
            worker.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not restore within 1800 s")
            time.sleep(0.05)
    finally:
        worker.kill()
    restore = ready - (assigned or 0.0)
    return {"seconds_to_ready": round(ready, 2), "seconds_to_assignment": round(assigned or 0, 2),
            "seconds_assignment_to_ready": round(restore, 2), "changelog_records": records,
            "records_per_s_after_assignment": round(records / restore),
            "seconds_to_first_event": round(first, 2), "worker_rss_mib": rss,
            "bulk_restore_records": int(bulk[0]), "bulk_restore_seconds": round(bulk[1], 2),
            "bulk_restore_records_per_s": round(bulk[0] / bulk[1]) if bulk[1] > 0 else 0,
            }  # fmt: skip


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile from cumulative (upper bound, count) buckets, interpolated as Prometheus does."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def histogram(port: int, name: str, labels: str = "") -> list[tuple[float, float]]:
    """(le, cumulative count) of a histogram's buckets; ``labels``: 'a="x"' to pick one series."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and labels in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float(le), float(line.rsplit(" ", 1)[1])))
    return sorted(out)


def latency(worker: WorkerProcess, bootstrap: str, topics: dict[str, str], skip: int,
            customers: int, rate: float, start: datetime,
            seconds: float = 20.0) -> dict[str, Any]:  # fmt: skip
    """Feed a caught-up worker live events at ``rate``: a warm-up, then ``seconds``
    measured from the worker's latency histograms.

    When the live events start, stream time jumps from the replayed history to now and
    every customer is due for a re-score at once. The warm-up lasts until the worker has
    worked that off: at least WARM_MIN_S (two samplings of the gauges), then in steps of
    5 s until the sweep's backlog (``feedback_sweep_due_customers``) is under 1% of the
    customers and the consumer lag under a second of traffic, or WARM_MAX_S have passed;
    the report gives how long it took and whether it got there. Then the worker counts
    every warm-up event before the measured ones are produced, so none of the warm-up's
    backlog is measured.
    """
    warm = int(rate * WARM_MIN_S)
    counted = worker.metric(*COUNTED)
    asyncio.run(produce(bootstrap, topics, warm, customers, skip=skip, rate=rate, create=False,
                        live=True, start=start))  # fmt: skip
    began = time.monotonic()

    def settled() -> bool:
        return (worker.metric("feedback_sweep_due_customers") < customers / 100
                and worker.metric("feedback_consumer_lag_records") < rate)  # fmt: skip

    done_warming = settled()
    while not done_warming and time.monotonic() - began < WARM_MAX_S - WARM_MIN_S:
        step = int(rate * 5)
        asyncio.run(produce(bootstrap, topics, step, customers, skip=skip + warm, rate=rate,
                            create=False, live=True, start=start))  # fmt: skip
        warm += step
        done_warming = settled()
    warm_s = round(WARM_MIN_S + time.monotonic() - began)
    # The measured events start on an empty queue: the worker counts every warm-up event
    # first (runs before 2026-12-06 06:20 did not wait, and a backlog left by the
    # warm-up, up to a second of traffic by the lag gauge, counted into the histograms).
    worker.wait_counted(counted + warm, WARM_MAX_S, "the warm-up events")
    backlog = worker.metric("feedback_sweep_due_customers")
    base = {n: histogram(worker.port, n) for n in LATENCY_METRICS}
    batches = (worker.metric("feedback_batch_events_sum"), worker.metric("feedback_batch_events_count"))
    n = int(rate * seconds)
    bodies = list(simulated(n, customers, skip + warm, live=True, start=start))
    done, cpu = worker.metric(*COUNTED), worker.cpu_s()
    asyncio.run(send(bootstrap, topics, bodies, rate, create=False))
    worker.wait_counted(done + n, 600, "the paced events")
    out: dict[str, Any] = {"rate_events_per_s": round(rate), "events": n, "produced": warm + n,
                           "warm_up_s": warm_s, "sweep_backlog_after_warm_up": backlog,
                           "settled": done_warming}  # fmt: skip
    out["cpu_us_per_event"] = round((worker.cpu_s() - cpu) / n * 1e6)
    taken = worker.metric("feedback_batch_events_count") - batches[1]
    out["mean_batch_events"] = round((worker.metric("feedback_batch_events_sum") - batches[0])
                                     / taken, 1) if taken > 0 else None  # fmt: skip
    for name in LATENCY_METRICS:
        now = dict(histogram(worker.port, name))
        delta = [(le, now[le] - dict(base[name]).get(le, 0.0)) for le in sorted(now)]
        out[name] = {"count": int(delta[-1][1]) if delta else 0,
                     "p50_ms": _ms(quantile(delta, 0.5)), "p99_ms": _ms(quantile(delta, 0.99))}  # fmt: skip
    return out


LATENCY_METRICS = ("feedback_event_latency_seconds", "feedback_alert_latency_seconds",
                   "feedback_batch_processing_seconds", "feedback_event_loop_lag_seconds")
# What the latency section's table shows, with its label.
LATENCY_ROWS = (("feedback_event_latency_seconds", "produce -> state written"),
                ("feedback_alert_latency_seconds", "produce -> alert delivered"),
                ("feedback_batch_processing_seconds", "one batch, start to delivered"),
                ("feedback_event_loop_lag_seconds", "event loop held (lag of a 50 ms probe)"))
WARM_MIN_S, WARM_MAX_S = 30, 300


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@contextlib.contextmanager
def fresh_broker(prefix: str) -> Iterator[tuple[kafka.BrokerInfo, dict[str, str], Path]]:
    """A local broker of its own in a temporary directory (stopped after), with the run's
    input topic names (``<prefix>-<kind>-<tag>``, created by the first ``produce``)."""
    with tempfile.TemporaryDirectory(prefix=f"feedback-{prefix}-") as tmp:
        data = Path(tmp)
        info = kafka.up(port=kafka.free_port(), data_dir=data / "kafka", heap="1g")
        try:
            tag = uuid.uuid4().hex[:8]
            yield info, {k: f"{prefix}-{k}-{tag}" for k in ("survey", "purchase", "complaint")}, data
        finally:
            kafka.down(data / "kafka")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--set", action="append", default=[], metavar="FEEDBACK_X=VALUE",
                        help="a worker setting to change, e.g. --set FEEDBACK_BATCH_SIZE=4000")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1,
                        help="also run this many workers in one group (aggregate rate)")
    add_history_ends(parser)
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-share", type=float, default=0.5,
                        help="the latency run's rate as a share of the pipeline's (default 0.5)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    if bad := [k for k in extra if not k.startswith("FEEDBACK_")]:
        parser.error(f"--set takes FEEDBACK_ settings only, not {', '.join(bad)}")
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "events": args.events, "customers": args.customers, "partitions": PARTITIONS,
        "worker_settings": extra, "history_ends": args.history_ends,
    }  # fmt: skip
    start = history_start(args.events, args.customers, args.history_ends)
    with fresh_broker("bench") as (info, topics, data):
        t = time.perf_counter()
        asyncio.run(produce(info.bootstrap, topics, args.events, args.customers, start=start))
        result["produce_seconds"] = round(time.perf_counter() - t, 1)
        result["floor_raw_consume"] = asyncio.run(
            read_floor(info.bootstrap, topics, args.events, decode=False))
        result["floor_decode_validate"] = asyncio.run(
            read_floor(info.bootstrap, topics, args.events, decode=True))
        result["floor_aiokafka_decode_validate_fold"] = asyncio.run(
            floor(info.bootstrap, topics, args.events))
        env = worker_env(info.bootstrap, topics, data / "worker", extra)
        log = Path(os.environ.get("BENCH_LOG", data / "worker.log"))
        result["floor_faust_noop_agent"] = faust_noop(info.bootstrap, topics, args.events, data,
                                                      log)  # fmt: skip

        def paced(worker: WorkerProcess, rate: float) -> dict[str, Any]:
            return latency(worker, info.bootstrap, topics, args.events, args.customers,
                           rate=rate * args.latency_share, start=start)  # fmt: skip

        full = result["pipeline_faust_worker"] = pipeline(
            [env], args.events, log, None if args.skip_latency else paced)
        if full["then"] is not None:
            result["latency"] = full["then"]
        if args.workers > 1:
            # Two workers of one group on fresh topics' copy: the same records again.
            group = worker_env(info.bootstrap, topics, data / "group-0", extra)
            envs = [{**group, "FEEDBACK_DATA_DIR": str(data / f"group-{i}"),
                     "FEEDBACK_WEB_PORT": str(kafka.free_port())}
                    for i in range(args.workers)]  # fmt: skip
            result["pipeline_workers_in_one_group"] = pipeline(envs, args.events, log)
        if not args.skip_recovery:
            records, span, keys = asyncio.run(changelog_records(
                info.bootstrap, f"{env['FEEDBACK_APP_ID']}-customer_state_by_customer-changelog"))
            result["changelog"] = {"records_in_log": records, "offset_span": span,
                                   "distinct_keys": keys}  # fmt: skip
            probes = iter(range(2))

            def probe() -> None:
                # One more live event of the simulation, after all the others produced.
                skip = args.events + (full["then"] or {}).get("produced", 0)
                asyncio.run(produce(info.bootstrap, topics, 1, args.customers,
                                    skip=skip + next(probes), create=False, live=True,
                                    start=start))  # fmt: skip

            result["recovery_empty_state_dir"] = recovery(
                {**env, "FEEDBACK_DATA_DIR": str(data / "fresh")}, log, records, probe)
            result["recovery_own_state_dir"] = recovery(env, log, records, probe)
    full = result["pipeline_faust_worker"]
    dv = result["floor_decode_validate"]
    result["ratio_pipeline_to_decode_floor"] = round(full["events_per_s"] / dv["events_per_s"], 3)
    md = report(result, args)
    report_file.save("throughput", report_file.stamp(), result, md)
    print(md)


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    m, full = result["machine"], result["pipeline_faust_worker"]
    rows = [("floor: aiokafka consume, raw records", result["floor_raw_consume"]),
            ("floor: + decode + validate", result["floor_decode_validate"]),
            ("floor: + fold + re-score (state in a dict)",
             result["floor_aiokafka_decode_validate_fold"]),
            *([("floor: Faust no-op agent (take_events, counts only)",
                result["floor_faust_noop_agent"])] if "floor_faust_noop_agent" in result else []),
            ("pipeline: feedback worker (Faust, RocksDB, changelogs, alerts)", full)]  # fmt: skip
    if "pipeline_workers_in_one_group" in result:
        group = result["pipeline_workers_in_one_group"]
        rows.append((f"pipeline: {group['workers']} workers in one group, together", group))
    md = (
        f"# Throughput {result['when']}\n\n"
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, Kafka {m['kafka']} (local single node, KRaft, same machine).\n\n"
        f"Command: `python -m bench.throughput --events {args.events} --customers "
        f"{args.customers}{' --workers ' + str(args.workers) if args.workers > 1 else ''}"
        f"{' --latency-share ' + format(args.latency_share, 'g') if args.latency_share != 0.5 else ''}"
        f"{' --history-ends 2025' if args.history_ends == '2025' else ''}"
        f"{' --skip-recovery' if args.skip_recovery else ''}"
        f"{' --skip-latency' if args.skip_latency else ''}"
        f"{''.join(' --set ' + s for s in args.set)}`"
        f"\n\n{args.events} simulated events, {args.customers} customers, {PARTITIONS} "
        "partitions.\n\n| path | events/s | seconds |\n|---|---|---|\n"
        + "".join(f"| {name} | {r['events_per_s']} | {r['seconds']} |\n" for name, r in rows)
        + f"\nPipeline / decode+validate floor: {result['ratio_pipeline_to_decode_floor']}. "
        f"Worker RSS at the end: {full['worker_rss_mib']} MiB. Time in the batch handler: "
        f"{full['batch_handler_seconds']} s of {full['seconds']} s (fold, deliver, after: "
        f"{', '.join(str(v) for v in full.get('batch_phase_seconds', {}).values())} s). Worker CPU: "
        f"{full['worker_cpu_us_per_event']} us per event, busy {full['worker_cpu_busy']} of "
        f"the time. Besides the events it "
        f"re-scored {int(full['swept_customers'])} customers as stream time moved (the sweep) "
        f"and sent {int(full['alerts'])} alerts ({full['alerts_by_rule_first_worker']}). "
        f"Events by outcome: {full.get('events_by_outcome')}; partitions indexed (once per "
        f"partition per assignment that brought it): {full.get('partitions_indexed')}. "
        f"Garbage collector (generation: collections, seconds stopped, longest pause under s): "
        + "; ".join(f"{g}: {int(c['collections'] or 0)}, {c['seconds']}, {c['longest_under_s']}"
                    for g, c in full.get("gc_first_worker", {}).items())
        + ".\n"
    )  # fmt: skip
    if "recovery_empty_state_dir" in result:
        md += ("\n| recovery after SIGKILL | to assignment s | assignment to ready s | "
               "changelog records | records/s after assignment | bulk restore: records, s, "
               "records/s | to first event s | RSS MiB |\n|---|---|---|---|---|---|---|---|\n")
        for name in ("recovery_empty_state_dir", "recovery_own_state_dir"):
            r = result[name]
            md += (f"| {name.removeprefix('recovery_').replace('_', ' ')} | "
                   f"{r['seconds_to_assignment']} | {r['seconds_assignment_to_ready']} | "
                   f"{r['changelog_records']} | {r['records_per_s_after_assignment']} | "
                   f"{r['bulk_restore_records']}, {r['bulk_restore_seconds']}, "
                   f"{r['bulk_restore_records_per_s']} | "
                   f"{r['seconds_to_first_event']} | {r['worker_rss_mib']} |\n")  # fmt: skip
        md += ("\nTo assignment: the group waits out the killed member's session "
               "(`FEEDBACK_SESSION_TIMEOUT`). Ready = every partition restored and indexed "
               "(/health `indexed_partitions`); indexing runs on a 2 s timer after recovery, "
               "so this includes up to 2 s of it. Bulk restore: what the worker's own "
               "changelog reader (app/streams/restore.py) wrote, for both tables (customer "
               "states and segment tallies), and the time it took, from its metrics at "
               "ready; Faust's recovery reads whatever is left. To first event: from the "
               "start until the "
               "worker processed a record (one live event is produced just before the start; "
               "records not committed before the kill are read again and count too). "
               "Changelog records: those in the log when "
               "the restore began (read back with a consumer); the log cleaner had left "
               f"{result['changelog']['records_in_log']} of an offset span of "
               f"{result['changelog']['offset_span']}, for "
               f"{result['changelog']['distinct_keys']} keys.\n")  # fmt: skip
    if "latency" in result:
        lat = result["latency"]
        md += (f"\nLatency at {lat['rate_events_per_s']} events/s ({args.latency_share:g} of the "
               "pipeline rate, fed "
               f"live events to the caught-up pipeline worker: {lat['warm_up_s']} s warm-up, "
               f"after which {lat['sweep_backlog_after_warm_up']:.0f} customers were due for a "
               f"re-score ({'settled' if lat['settled'] else 'not settled: the worker had not worked off the jump of stream time'}), "
               f"20 s measured), {lat['events']} events in batches of "
               f"{lat.get('mean_batch_events')} on average and {lat.get('cpu_us_per_event')} us "
               "of worker CPU per event, from the worker's histograms:\n\n"
               "| path | count | p50 ms | p99 ms |\n|---|---|---|---|\n")
        for name, label in LATENCY_ROWS:
            if name not in lat:
                continue  # a results file from before the row was measured
            h = lat[name]
            md += f"| {label} | {h['count']} | {h['p50_ms']} | {h['p99_ms']} |\n"
    return md


if __name__ == "__main__":
    main()
