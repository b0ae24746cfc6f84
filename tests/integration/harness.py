"""A real worker process against the real broker, driven as a user would drive it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from app.local.kafka import free_port


def worker_env(bootstrap: str, unique: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for one isolated worker: its own topics, group (app id) and state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env.update(
        FEEDBACK_BROKER=f"kafka://{bootstrap}",
        FEEDBACK_APP_ID=f"feedback-{unique}",
        FEEDBACK_DATA_DIR=str(data_dir),
        FEEDBACK_WEB_PORT=str(free_port()),
        FEEDBACK_PARTITIONS="4",
        FEEDBACK_SESSION_TIMEOUT="10",
        FEEDBACK_TOPIC_SURVEYS=f"surveys-{unique}",
        FEEDBACK_TOPIC_PURCHASES=f"purchases-{unique}",
        FEEDBACK_TOPIC_COMPLAINTS=f"complaints-{unique}",
        FEEDBACK_TOPIC_ALERTS=f"alerts-{unique}",
        FEEDBACK_TOPIC_DEADLETTER=f"deadletter-{unique}",
        FEEDBACK_TOPIC_ERASURE=f"erasure-{unique}",
        FEEDBACK_TOPIC_ALERT_ACTIONS=f"alert-actions-{unique}",
        FEEDBACK_HIGH_VALUE_TOP_SHARE="0",
    )
    env.update(extra)
    return env


def create_topics(env: dict[str, str]) -> None:
    """Create the worker's topics as the worker would (before producing to them)."""
    from app.settings import Settings
    from app.topics import ensure_topics_sync

    fields = {k.removeprefix("FEEDBACK_").lower(): json.loads(v) if v.startswith("{") else v
              for k, v in env.items() if k.startswith("FEEDBACK_")}  # fmt: skip
    ensure_topics_sync(Settings(**fields))


class Worker:
    """``python -m app worker`` as a child process with a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["FEEDBACK_WEB_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        self.spawn()
        poll(lambda: self._ready(), timeout, "worker ready (partitions assigned)", self)

    def spawn(self) -> None:
        """Start the process without waiting for it (to kill it during its start)."""
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", "info"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        out.close()

    def _ready(self) -> bool:
        status, body = self.get("/health")
        return status == 200 and body.get("assigned_partitions", 0) > 0

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers=headers or {})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                raw = r.read()
                try:
                    return r.status, json.loads(raw)
                except ValueError:
                    return r.status, raw.decode()
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except OSError:
            return 0, {}

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over series matching the labels."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in str(text).splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def tail(self, n: int = 60) -> str:
        lines = self.log.read_bytes().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def poll(
    check: Callable[[], bool], timeout: float, what: str, worker: Worker | None = None
) -> None:
    """Poll until check() holds, or fail naming what was awaited (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    extra = f"\n--- worker log ---\n{worker.tail()}" if worker else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


async def produce(
    bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futs = [await producer.send(t, v, key=k) for t, k, v in records]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, until: Callable[[list[ConsumerRecord[Any, Any]]], bool],
    timeout: float = 60,
) -> list[ConsumerRecord[Any, Any]]:  # fmt: skip
    """Read a topic from the beginning until ``until(records)`` holds or the time is up."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[ConsumerRecord[Any, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


def event(kind: str, event_id: str, customer: str, at: str, **fields: Any) -> bytes:
    return json.dumps(
        {"event_type": kind, "event_id": event_id, "customer_id": customer, "occurred_at": at,
         "schema_version": 1, **fields}
    ).encode()  # fmt: skip
