"""``feedback demo``: local Kafka, a worker and realistic traffic, with a live terminal view.

Everything it starts it stops again on Ctrl-C or after ``--duration``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from app.local import kafka
from app.settings import Settings, load_settings
from app.simulate.publish import SimOptions, publish


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="feedback demo", description=__doc__)
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--rate", type=float, default=300.0, help="events per second (default 300)")
    p.add_argument("--customers", type=int, default=1500)
    p.add_argument("--speed-days", type=float, default=3.0,
                   help="simulated days per real second (default 3)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--kafka-port", type=int, default=9092)
    p.add_argument("--data-dir", default=".data/demo")
    return p.parse_args(argv)


_TOKEN: str | None = None  # FEEDBACK_HTTP_TOKEN, when the demo's worker requires one


def _get(url: str) -> Any:
    headers = {"Authorization": f"Bearer {_TOKEN}"} if _TOKEN else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=3) as r:
            body = r.read().decode()
            return json.loads(body) if body.startswith(("{", "[")) else body
    except (OSError, ValueError):
        return None


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Demo:
    """Owns every process the demo starts, so it can stop them all."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.data = Path(args.data_dir)
        self.started_kafka: Path | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.alerts: deque[dict[str, Any]] = deque(maxlen=8)
        self.alert_count = 0
        self.counts: dict[str, int] = {}
        self.rates: deque[tuple[float, float]] = deque(maxlen=6)

    def start_kafka(self) -> str:
        if "FEEDBACK_BROKER" in os.environ:
            return load_settings().broker
        port = self.args.kafka_port
        kdir = self.data / "kafka"
        running = kafka.status(kdir)
        if running is None and not kafka.port_free(port):
            port = kafka.free_port()
            self.console.print(f"port {self.args.kafka_port} is busy: local Kafka uses {port}")
        with self.console.status(
            f"starting Apache Kafka {kafka.KAFKA_VERSION} (KRaft; the first run fetches jars "
            "from Maven Central)..."
        ):
            t = time.monotonic()
            info = kafka.up(port=running.port if running else port, data_dir=kdir,
                            progress=lambda m: self.console.print(m))  # fmt: skip
        self.console.print(f"Kafka ready at {info.bootstrap} in {time.monotonic() - t:.1f}s")
        self.started_kafka = kdir
        return info.url

    def start_worker(self, settings: Settings) -> None:
        env = {**os.environ, "FEEDBACK_BROKER": settings.broker,
               "FEEDBACK_DATA_DIR": str(self.data / "worker"),
               "FEEDBACK_WEB_PORT": str(settings.web_port)}  # fmt: skip
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.data / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", "info"], env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        base = f"http://127.0.0.1:{settings.web_port}"
        deadline = time.monotonic() + 120
        with self.console.status("starting the worker (Faust: topics, tables, recovery)..."):
            while time.monotonic() < deadline:
                if self.worker.poll() is not None:
                    raise SystemExit(f"the worker exited; see {self.data / 'worker.log'}")
                health = _get(f"{base}/health")
                if isinstance(health, dict) and health.get("assigned_partitions", 0) > 0:
                    return
                time.sleep(0.3)
        raise SystemExit(f"the worker did not become ready; see {self.data / 'worker.log'}")

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(10)
        if self.started_kafka is not None:
            kafka.down(self.started_kafka)

    async def follow_alerts(self, settings: Settings, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            settings.topic_alerts, **settings.client_kwargs(),
            auto_offset_reset="latest", enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        if r.value is not None:  # tombstones mark erased customers
                            self.alerts.appendleft(json.loads(r.value))
                        self.alert_count += 1
        finally:
            await consumer.stop()

    def view(self, settings: Settings, began: float) -> Group:
        base = f"http://127.0.0.1:{settings.web_port}"
        text = _get(f"{base}/metrics") or ""
        processed = _metric(str(text), "feedback_events_total")
        dead = _metric(str(text), "feedback_dead_letters_total")
        now = time.monotonic()
        self.rates.append((now, processed))
        t0, c0 = self.rates[0]
        rate = (processed - c0) / (now - t0) if now > t0 else 0.0
        head = Table.grid(padding=(0, 2))
        head.add_row("elapsed", f"{now - began:.0f}s", "simulated days",
                     str(self.counts.get("sim_days", 0)))  # fmt: skip
        head.add_row("events/s", f"{rate:,.0f}", "processed", f"{processed:,.0f}")
        head.add_row("dead letters", f"{dead:,.0f}", "alerts", f"{self.alert_count:,}")
        head.add_row("metrics", f"{base}/metrics", "customer", f"{base}/customers/<id>")
        head.add_row("segment NPS", f"{base}/nps?window=30d", "at risk", f"{base}/at-risk")
        lapsed = _metric(str(text), "feedback_customers_lapsed")
        won = _metric(str(text), "feedback_won_back_total")
        churn = _get(f"{base}/churn?period=month&segment=overall") or {}
        months = [r for r in churn.get("rows", []) if r.get("churn_rate") is not None]
        rate_text = "-"
        if months:
            last = months[-1]
            rate_text = (f"{100 * last['churn_rate']:.1f}% ({last['period']}, lost "
                         f"{last['lost']} of {last['customers_at_end']})")  # fmt: skip
        head.add_row("lapsed now", f"{lapsed:,.0f} (won back {won:,.0f})", "churn this month",
                     rate_text)  # fmt: skip

        nps = Table(title="NPS by segment, last 30 days of event time", expand=True)
        for col in ("segment", "n", "NPS", "95% CI", "P/Pa/D"):
            nps.add_column(col, justify="right" if col != "segment" else "left")
        report = _get(f"{base}/nps?window=30d") or {}
        for row in (report.get("segments") or [])[:14]:
            ci = row.get("ci95")
            nps.add_row(row["segment"], str(row["n"]),
                        "-" if row["nps"] is None else f"{row['nps']:+.1f}",
                        f"{ci[0]:+.0f}..{ci[1]:+.0f}" if ci else "-",
                        f"{row['promoters']}/{row['passives']}/{row['detractors']}")  # fmt: skip

        alerts = Table(title="Latest alerts (feedback.alerts.v1)", expand=True)
        for col in ("rule", "customer", "score", "was", "revenue", "tier", "risk", "reasons"):
            alerts.add_column(col)
        for a in list(self.alerts):
            alerts.add_row(a["rule"], a["customer_id"],
                           "-" if a["score"] is None else str(a["score"]),
                           str(a["previous_band"] or "-"),
                           f"{float(a['trailing_revenue']):,.0f} {a.get('currency', '')}",
                           a["value_tier"] or "-", f"{a['churn_risk']:.2f}",
                           ", ".join(a["churn_reasons"][:3]))  # fmt: skip

        risk = Table(title="High-value customers most at risk", expand=True)
        for col in ("customer", "risk", "reasons", "revenue", "band", "open complaints"):
            risk.add_column(col)
        for c in (_get(f"{base}/at-risk?limit=6") or {}).get("customers", []):
            risk.add_row(c["customer_id"], f"{c['churn_risk']:.2f}",
                         ", ".join(c["churn_reasons"][:3]),
                         f"{float(c['trailing_revenue']):,.0f} {c.get('currency', '')}",
                         str(c["band"] or "-"), str(c["open_complaints"]))  # fmt: skip
        return Group(Panel(head, title="feedback demo (Ctrl-C stops everything)"), nps, alerts,
                     risk)  # fmt: skip


async def _run(demo: Demo, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    args = demo.args
    opts = SimOptions(customers=args.customers, seed=args.seed or int(time.time()),
                      rate=args.rate, speed=args.speed_days * 86400,
                      # Start far enough back that the simulated clock does not reach
                      # today during the run (an hour without --duration); after that
                      # the simulator publishes in real time, never ahead of the clock.
                      days_back=max(365.0, args.speed_days * (args.duration or 3600) + 30),
                      truth=demo.data / "ground_truth.jsonl",
                      run_id=f"demo-{uuid.uuid4().hex[:6]}")  # fmt: skip

    def progress(_: int, counts: Any) -> None:
        demo.counts = dict(counts)

    sim = asyncio.create_task(publish(settings, opts, progress=progress, stop=stop))
    follower = asyncio.create_task(demo.follow_alerts(settings, stop))
    began = time.monotonic()
    interactive = demo.console.is_terminal
    try:
        if interactive:
            with Live(demo.view(settings, began), console=demo.console,
                      refresh_per_second=1, screen=False) as live:  # fmt: skip
                while not stop.is_set():
                    if args.duration and time.monotonic() - began >= args.duration:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
                    live.update(demo.view(settings, began))
        else:
            while not stop.is_set():
                if args.duration and time.monotonic() - began >= args.duration:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=5.0)
                demo.console.print(demo.view(settings, began))
    finally:
        stop.set()
        await asyncio.gather(sim, follower, return_exceptions=True)


def main(argv: list[str]) -> int:
    args = parse(argv)
    console = Console()
    demo = Demo(args, console)
    try:
        broker = demo.start_kafka()
        web_port = int(os.environ.get("FEEDBACK_WEB_PORT", "6066"))
        if not kafka.port_free(web_port):
            web_port = kafka.free_port()
        settings = load_settings(broker=broker, web_port=web_port)
        global _TOKEN
        _TOKEN = settings.http_token.get_secret_value() if settings.http_token else None
        from app.topics import ensure_topics_sync

        ensure_topics_sync(settings)
        demo.start_worker(settings)
        asyncio.run(_run(demo, settings))
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping the worker and the local Kafka..."):
            demo.stop()
        console.print(f"stopped; logs and ground truth in {demo.data}")
    return 0
