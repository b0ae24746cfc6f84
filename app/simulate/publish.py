"""Publish simulated traffic to the input topics at a chosen pace."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from app.settings import Settings
from app.simulate.model import ChurnMix, Simulation


@dataclass(frozen=True)
class SimOptions:
    """How much traffic, how fast, and where the ground truth goes."""

    customers: int = 2000
    seed: int = 42
    rate: float = 500.0  # events per second; 0 = as fast as possible
    events: int | None = None
    duration: float | None = None  # seconds of real time
    speed: float = 86400.0  # simulated seconds per real second (1 day per second)
    days_back: float = 365.0  # the simulation starts this long before now
    truth: Path | None = None
    run_id: str = "sim"
    mix: ChurnMix = field(default_factory=ChurnMix)


async def publish(
    settings: Settings, opts: SimOptions,
    progress: Callable[[int, Counter[str]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> Counter[str]:  # fmt: skip
    """Produce until ``events``, ``duration`` or ``stop``; returns counts by kind and fault."""
    start = datetime.now(UTC) - timedelta(days=opts.days_back)
    sim = Simulation(opts.customers, opts.seed, start, run_id=opts.run_id, mix=opts.mix)
    topics = {"survey": settings.topic_surveys, "purchase": settings.topic_purchases,
              "complaint": settings.topic_complaints}  # fmt: skip
    producer = AIOKafkaProducer(
        **settings.client_kwargs(), linger_ms=20, acks="all",
        max_batch_size=256 * 1024,
    )  # fmt: skip
    await producer.start()
    counts: Counter[str] = Counter()
    began = time.monotonic()
    sent = 0
    last_at = start
    pending: list[asyncio.Future[object]] = []
    try:
        for ev in sim.events():
            if opts.events is not None and sent >= opts.events:
                break
            elapsed = time.monotonic() - began
            if opts.duration is not None and elapsed >= opts.duration:
                break
            if stop is not None and stop.is_set():
                break
            # Pace by rate and by simulated-time speed, whichever is slower.
            due = max(
                sent / opts.rate if opts.rate > 0 else 0.0,
                ((ev.emitted_at or ev.occurred_at) - start).total_seconds() / opts.speed
                if opts.speed > 0
                else 0.0,
            )
            # Never ahead of the wall clock: a record is published once it has happened.
            ahead = ((ev.emitted_at or ev.occurred_at) - datetime.now(UTC)).total_seconds()
            due = max(due, elapsed + ahead)
            if due > elapsed:
                await asyncio.sleep(min(due - elapsed, 1.0))
            pending.append(await producer.send(topics[ev.kind], ev.value, key=ev.key))
            sent += 1
            last_at = max(last_at, ev.emitted_at or ev.occurred_at)
            counts[ev.kind] += 1
            counts[f"fault:{ev.fault}"] += 1 if ev.fault else 0
            if len(pending) >= 500:
                counts["sim_days"] = int((last_at - start).total_seconds() // 86400)
                await asyncio.gather(*pending)
                pending.clear()
                if progress:
                    progress(sent, counts)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    if progress:
        progress(sent, counts)
    if opts.truth is not None:
        opts.truth.parent.mkdir(parents=True, exist_ok=True)
        with opts.truth.open("w") as fh:
            for row in sim.ground_truth(last_at):
                fh.write(json.dumps(row) + "\n")
    counts["total"] = sent
    counts["sim_days"] = int((last_at - start).total_seconds() // 86400)
    return +counts


def write_file(opts: SimOptions, out: Path, days: float | None) -> Counter[str]:
    """Write the records ``publish`` would send, one per line in arrival order, and the truth.

    The simulation starts ``days_back`` days before now (as when publishing);
    it stops after ``events`` records or ``days`` simulated days. Malformed
    records are written as they would be published (they may not be UTF-8).
    """
    start = datetime.now(UTC) - timedelta(days=opts.days_back)
    sim = Simulation(opts.customers, opts.seed, start, run_id=opts.run_id, mix=opts.mix)
    end = start + timedelta(days=days) if days is not None else None
    counts: Counter[str] = Counter()
    last_at = start
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        for ev in sim.events():
            at = ev.emitted_at or ev.occurred_at
            if opts.events is not None and counts["total"] >= opts.events:
                break
            if end is not None and at > end:
                break
            fh.write(ev.value + b"\n")
            last_at = max(last_at, at)
            counts["total"] += 1
            counts[ev.kind] += 1
            if ev.fault:
                counts[f"fault:{ev.fault}"] += 1
    if opts.truth is not None:
        opts.truth.parent.mkdir(parents=True, exist_ok=True)
        with opts.truth.open("w") as tf:
            for row in sim.ground_truth(last_at):
                tf.write(json.dumps(row) + "\n")
    counts["sim_days"] = int((last_at - start).total_seconds() // 86400)
    return counts
