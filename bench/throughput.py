"""Sustained events/s of the full pipeline against the raw aiokafka floor, in one run.

    python -m bench.throughput [--events N] [--customers N]

Starts its own fresh broker, produces N simulated events, then measures:
- floor: one aiokafka consumer doing decode + validate + fold (same domain code), no Faust;
- pipeline: a real `feedback worker` process (Faust, RocksDB tables, changelogs, alerts).
Writes bench/results/throughput-<timestamp>.json and .md with the machine described.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.domain.customer import CustomerState, fold, refresh
from app.domain.events import decode_event
from app.errors import InvalidEventError
from app.local import kafka
from app.settings import load_settings
from app.simulate.model import Simulation
from app.streams.processor import policy_from

RESULTS = Path(__file__).resolve().parent / "results"
PARTITIONS = 8


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


async def produce(bootstrap: str, topics: dict[str, str], n: int, customers: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.values()])
    await admin.close()
    sim = Simulation(customers, seed=1, start=datetime(2025, 1, 1, tzinfo=UTC))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    pending = []
    for i, ev in enumerate(sim.events()):
        if i >= n:
            break
        pending.append(await producer.send(topics[ev.kind], ev.value, key=ev.key))
        if len(pending) >= 5000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await producer.stop()


async def floor(bootstrap: str, topics: dict[str, str], n: int) -> dict[str, float]:
    """decode + validate + fold + refresh once per touched customer per batch; state in a dict."""
    settings = load_settings()
    policy = policy_from(settings)
    store: dict[bytes, CustomerState] = {}
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
            work: dict[bytes, CustomerState] = {}
            for records in batch.values():
                for r in records:
                    seen += 1
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
        elapsed = time.perf_counter() - t0
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": round(elapsed, 3), "events_per_s": round(seen / elapsed)}


def metric_sum(port: int, names: tuple[str, ...]) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(names))  # fmt: skip


def pipeline(
    bootstrap: str, topics: dict[str, str], n: int, data: Path, extra: dict[str, str]
) -> dict[str, float]:
    port = kafka.free_port()
    env = {**extra, **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")},
           "FEEDBACK_BROKER": f"kafka://{bootstrap}", "FEEDBACK_APP_ID": f"bench-{uuid.uuid4().hex[:8]}",
           "FEEDBACK_DATA_DIR": str(data), "FEEDBACK_WEB_PORT": str(port),
           "FEEDBACK_PARTITIONS": str(PARTITIONS), "FEEDBACK_TOPIC_SURVEYS": topics["survey"],
           "FEEDBACK_TOPIC_PURCHASES": topics["purchase"], "FEEDBACK_TOPIC_COMPLAINTS": topics["complaint"],
           "FEEDBACK_TOPIC_ALERTS": f"alerts-{uuid.uuid4().hex[:8]}",
           "FEEDBACK_TOPIC_DEADLETTER": f"dlq-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    log = open(data.parent / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "app", "worker", "-l", "warn"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    names = ("feedback_events_total", "feedback_dead_letters_total")
    try:
        deadline = time.monotonic() + 900
        t0 = c0 = 0.0
        count = 0.0
        while time.monotonic() < deadline:
            count = metric_sum(port, names)
            now = time.perf_counter()
            if count > 0 and not t0:
                t0, c0 = now, count
            if count >= n:
                break
            if proc.poll() is not None:
                tail = Path(log.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker exited {proc.returncode}:\n{tail}")
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        # Time inside the batch handler (our code) versus Faust's machinery around it.
        handler_s = metric_sum(port, ("feedback_batch_processing_seconds_sum",))
        rss = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
    finally:
        proc.terminate()
        proc.wait(60)
    return {"events": count, "measured_events": count - c0, "seconds": round(elapsed, 3),
            "events_per_s": round((count - c0) / elapsed), "worker_rss_mib": round(rss / 1024),
            "batch_handler_seconds": round(handler_s, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--set", action="append", default=[], metavar="FEEDBACK_X=VALUE",
                        help="a worker setting to change, e.g. --set FEEDBACK_BATCH_SIZE=4000")  # fmt: skip
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    if bad := [k for k in extra if not k.startswith("FEEDBACK_")]:
        parser.error(f"--set takes FEEDBACK_ settings only, not {', '.join(bad)}")
    with tempfile.TemporaryDirectory(prefix="feedback-bench-") as tmp:
        data = Path(tmp)
        info = kafka.up(port=kafka.free_port(), data_dir=data / "kafka", heap="1g")
        try:
            tag = uuid.uuid4().hex[:8]
            topics = {k: f"bench-{k}-{tag}" for k in ("survey", "purchase", "complaint")}
            t = time.perf_counter()
            asyncio.run(produce(info.bootstrap, topics, args.events, args.customers))
            produce_s = time.perf_counter() - t
            raw = asyncio.run(floor(info.bootstrap, topics, args.events))
            full = pipeline(info.bootstrap, topics, args.events, data / "worker", extra)
        finally:
            kafka.down(data / "kafka")
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "events": args.events, "customers": args.customers, "partitions": PARTITIONS,
        "worker_settings": extra,
        "produce_seconds": round(produce_s, 1),
        "floor_aiokafka_decode_validate_fold": raw,
        "pipeline_faust_worker": full,
        "ratio_pipeline_to_floor": round(full["events_per_s"] / raw["events_per_s"], 3),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"throughput-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    md = (
        f"# Throughput {result['when']}\n\n"
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, Kafka {m['kafka']} (local single node, KRaft).\n\n"
        f"{args.events} simulated events, {args.customers} customers, {PARTITIONS} partitions"
        f"{'; worker settings ' + str(extra) if extra else ''}.\n\n"
        "| path | events/s | seconds |\n|---|---|---|\n"
        f"| floor: aiokafka + decode + validate + fold | {raw['events_per_s']} | {raw['seconds']} |\n"
        f"| pipeline: feedback worker (Faust, RocksDB, changelog) | {full['events_per_s']} | "
        f"{full['seconds']} |\n\n"
        f"Ratio pipeline/floor: {result['ratio_pipeline_to_floor']}. "
        f"Worker RSS at the end: {full['worker_rss_mib']} MiB. Time in the batch handler "
        f"(decode, fold, alerts, state writes): {full['batch_handler_seconds']} s.\n"
    )
    (RESULTS / f"throughput-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
