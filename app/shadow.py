"""``feedback shadow`` and ``feedback alerts diff``: what a rule change would do, before it pages.

``feedback shadow --set FEEDBACK_HIGH_VALUE_REVENUE=2000 [--name N]`` runs a worker
with the changed settings under its own app id (``<app id>-shadow-<name>``: its own
consumer group, changelogs and summaries), its own alert and dead-letter topics
(``<topic>.shadow-<name>``) and state directory, over the retained input history,
until it has caught up with the input as it stood at the start; then it stops. It
reads the production inputs and never writes to any production topic (a wrongly
keyed record is not re-keyed by a shadow: it reads the copy production made).

``feedback alerts diff --shadow N [--since ISO] [--json]`` compares the production
alert topic with the shadow's, per rule, by customer and trigger event (alert ids
are deterministic): the alerts the change would add and remove, with counts and the
revenue concerned. Time-driven rules (silent, complaint_reply_overdue,
case_contact_overdue, churn_safety_line) depend on when time was looked at, so a
replay can differ from live on them at the margins; ``detractor`` compares exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from app.alerts_tail import partitions_of
from app.settings import Settings, load_settings

# Settings a shadow must not take from --set: they would point it at production output.
FIXED = {"FEEDBACK_APP_ID", "FEEDBACK_TOPIC_ALERTS", "FEEDBACK_TOPIC_DEADLETTER",
         "FEEDBACK_DATA_DIR", "FEEDBACK_SHADOW", "FEEDBACK_WEB_PORT"}  # fmt: skip


def names(settings: Settings, name: str) -> dict[str, str]:
    """The shadow's own app id, topics and state directory."""
    return {
        "FEEDBACK_APP_ID": f"{settings.app_id}-shadow-{name}",
        "FEEDBACK_TOPIC_ALERTS": f"{settings.topic_alerts}.shadow-{name}",
        "FEEDBACK_TOPIC_DEADLETTER": f"{settings.topic_deadletter}.shadow-{name}",
        "FEEDBACK_DATA_DIR": str(settings.data_dir / f"shadow-{name}"),
        "FEEDBACK_SHADOW": "true",
    }


async def input_ends(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = []
        for topic in settings.input_topics:
            tps += await partitions_of(consumer, topic)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def committed(settings: Settings, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


def run_shadow(args: argparse.Namespace) -> int:
    overrides = dict(item.split("=", 1) for item in args.set)
    bad = [k for k in overrides if not k.startswith("FEEDBACK_") or k in FIXED]
    if bad:
        print(f"feedback shadow: --set cannot change {', '.join(bad)} (a shadow keeps its own "
              "app id, topics and state)", file=sys.stderr)  # fmt: skip
        return 2
    base = load_settings()
    own = names(base, args.name)
    from app.local.kafka import free_port

    env = {**os.environ, **overrides, **own, "FEEDBACK_WEB_PORT": str(free_port())}
    shadow_settings = load_settings(**{k.removeprefix("FEEDBACK_").lower(): v
                                       for k, v in {**overrides, **own}.items()})  # fmt: skip
    ends = asyncio.run(input_ends(base))
    target = {tp: end for tp, end in ends.items() if end > 0}
    log_path = Path(own["FEEDBACK_DATA_DIR"]) / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    since_file = log_path.with_name("since")
    if args.since:
        datetime.fromisoformat(args.since)  # refuse a bad time before running anything
        since_file.write_text(args.since)
    else:
        since_file.unlink(missing_ok=True)
    print(f"shadow {args.name}: {own['FEEDBACK_APP_ID']}, alerts to "
          f"{own['FEEDBACK_TOPIC_ALERTS']}, {sum(target.values())} input records to read; "
          f"log {log_path}", file=sys.stderr)  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app", "worker", "-l", "warn"], env=env,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    began = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                print(f"feedback shadow: the worker exited ({proc.returncode}); see {log_path}",
                      file=sys.stderr)  # fmt: skip
                return 2
            done = asyncio.run(committed(shadow_settings, own["FEEDBACK_APP_ID"]))
            if all(done.get(tp, -1) >= end for tp, end in target.items()):
                break
            if time.monotonic() - began > args.timeout:
                print("feedback shadow: not caught up within --timeout", file=sys.stderr)
                return 2
            time.sleep(1.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"shadow {args.name} caught up in {time.monotonic() - began:.0f}s; compare with "
          f"`feedback alerts diff --shadow {args.name}`", file=sys.stderr)  # fmt: skip
    return 0


async def read_alerts(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every alert on a topic (tombstones skipped), from the beginning to its current end."""
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = await partitions_of(consumer, topic)
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        left = {tp for tp in tps if end[tp] > 0}
        while left:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                out += [json.loads(r.value) for r in records if r.value is not None]
                if records and records[-1].offset + 1 >= end[tp]:
                    left.discard(tp)
            for tp in list(left):
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return out


def diff(prod: list[dict[str, Any]], shadow: list[dict[str, Any]],
         since: datetime | None) -> dict[str, Any]:  # fmt: skip
    """Per rule: alerts only in the shadow (added) and only in production (removed)."""

    def index(alerts: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
        out: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        for a in alerts:
            if since is not None and datetime.fromisoformat(a["occurred_at"]) < since:
                continue
            out[a["rule"]][(a["customer_id"], a["trigger_event_id"])] = a
        return out

    p, s = index(prod), index(shadow)
    report: dict[str, Any] = {}
    for rule in sorted(set(p) | set(s)):
        added = [s[rule][k] for k in sorted(set(s[rule]) - set(p[rule]))]
        removed = [p[rule][k] for k in sorted(set(p[rule]) - set(s[rule]))]
        report[rule] = {
            "production": len(p[rule]), "shadow": len(s[rule]),
            "added": len(added), "removed": len(removed),
            "added_revenue": str(sum((Decimal(a["trailing_revenue"]) for a in added), Decimal(0))),
            "removed_revenue": str(sum((Decimal(a["trailing_revenue"]) for a in removed),
                                       Decimal(0))),
            "added_alerts": [{"customer_id": a["customer_id"],
                              "trigger_event_id": a["trigger_event_id"],
                              "trailing_revenue": a["trailing_revenue"]} for a in added],
            "removed_alerts": [{"customer_id": a["customer_id"],
                                "trigger_event_id": a["trigger_event_id"],
                                "trailing_revenue": a["trailing_revenue"]} for a in removed],
        }  # fmt: skip
    return report


def run_diff(args: argparse.Namespace) -> int:
    settings = load_settings()
    other = args.against or names(settings, args.shadow)["FEEDBACK_TOPIC_ALERTS"]
    if args.since is None and args.shadow:
        stored = Path(names(settings, args.shadow)["FEEDBACK_DATA_DIR"]) / "since"
        args.since = stored.read_text().strip() if stored.exists() else None
    since = datetime.fromisoformat(args.since) if args.since else None
    prod = asyncio.run(read_alerts(settings, settings.topic_alerts))
    shadow = asyncio.run(read_alerts(settings, other))
    report = diff(prod, shadow, since)
    if args.json:
        print(json.dumps({"production": settings.topic_alerts, "shadow": other, "rules": report},
                         indent=2))  # fmt: skip
        return 0
    print(f"production {settings.topic_alerts} vs shadow {other}"
          + (f", alerts since {args.since}" if since else ""))  # fmt: skip
    for rule, r in report.items():
        print(f"{rule}: production {r['production']}, shadow {r['shadow']}: "
              f"+{r['added']} (revenue {r['added_revenue']}), "
              f"-{r['removed']} (revenue {r['removed_revenue']})")
        for a in r["added_alerts"]:
            print(f"  + {a['customer_id']}  {a['trigger_event_id']}  {a['trailing_revenue']}")
        for a in r["removed_alerts"]:
            print(f"  - {a['customer_id']}  {a['trigger_event_id']}  {a['trailing_revenue']}")
    return 0


def main_shadow(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback shadow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="FEEDBACK_X=VALUE",
                   required=True, help="a changed setting (repeatable)")  # fmt: skip
    p.add_argument("--name", default="trial", help="names the shadow's app id and topics")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to catch up")
    p.add_argument("--since", default=None,
                   help="compare alerts that occurred since this time (ISO 8601); the shadow "
                        "still reads the whole retained history to build its state")  # fmt: skip
    return run_shadow(p.parse_args(argv))


def main_diff(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback alerts diff", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--shadow", help="the --name given to feedback shadow")
    who.add_argument("--against", help="any other alert topic")
    p.add_argument("--since", default=None,
                   help="only alerts that occurred since (ISO 8601); default: the shadow's")
    p.add_argument("--json", action="store_true")
    return run_diff(p.parse_args(argv))
