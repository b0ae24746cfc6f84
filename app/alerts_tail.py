"""``feedback alerts tail``: follow the alert topic as a CRM agent would read it.

It uses its own consumer group only when ``--group`` is given, and then
commits only offsets of alerts it has printed: nothing unread is acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.settings import load_settings

COLUMNS = ("emitted_at", "rule", "customer_id", "score", "previous_band", "trailing_revenue",
           "value_tier", "churn_risk", "open_complaints", "sla_due_at")  # fmt: skip


def _line(alert: dict[str, Any]) -> str:
    return "  ".join(str(alert.get(c)) for c in COLUMNS)


async def tail(args: argparse.Namespace) -> int:
    settings = load_settings()
    consumer = AIOKafkaConsumer(
        **settings.client_kwargs(), group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    printed = 0
    try:
        parts = consumer.partitions_for_topic(settings.topic_alerts)
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(settings.topic_alerts) or set()
        tps = [TopicPartition(settings.topic_alerts, p) for p in sorted(parts)]
        consumer.assign(tps)
        if args.since:
            ts = int(datetime.fromisoformat(args.since).timestamp() * 1000)
            offsets = await consumer.offsets_for_times({tp: ts for tp in tps})
            end = await consumer.end_offsets(tps)
            for tp in tps:
                found = offsets.get(tp)
                consumer.seek(tp, found.offset if found else end[tp])
        elif args.from_beginning:
            await consumer.seek_to_beginning(*tps)
        elif args.offset is not None:
            for tp in tps:
                consumer.seek(tp, args.offset)
        elif args.group is None:
            await consumer.seek_to_end(*tps)
        if not args.json:
            print("  ".join(COLUMNS))
        idle = 0.0
        while args.limit is None or printed < args.limit:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                idle += 0.5
                if args.exit_idle is not None and idle >= args.exit_idle:
                    break
                continue
            idle = 0.0
            for tp, records in batch.items():
                done = None
                for r in records:
                    if args.limit is not None and printed >= args.limit:
                        break
                    done = r.offset
                    if r.value is None:  # a tombstone: the customer was erased
                        continue
                    alert = json.loads(r.value)
                    print(json.dumps(alert) if args.json else _line(alert), flush=True)
                    printed += 1
                if done is not None and args.group:
                    await consumer.commit({tp: done + 1})
    finally:
        await consumer.stop()
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback alerts", description=__doc__)
    p.add_argument("action", choices=["tail"])
    p.add_argument("--json", action="store_true", help="one alert per line as JSON")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--offset", type=int, default=None, help="start at this offset (each partition)")
    p.add_argument("--since", default=None, help="start at this time (ISO 8601 with offset)")
    p.add_argument("--group", default=None,
                   help="group: resume where it left off, commit what it printed")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="stop after N alerts")
    p.add_argument("--exit-idle", type=float, default=None,
                   help="stop after N seconds without alerts")  # fmt: skip
    args = p.parse_args(argv)
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()
