"""``feedback alerts tail|ack``: follow the alert topic as a CRM agent would, and act on it.

``tail`` uses its own consumer group only when ``--group`` is given, and then
commits only offsets of alerts it has printed: nothing unread is acknowledged.
The table view adds each alert's case status, asked of a worker over HTTP
(``--worker``, default the configured web address; ``-`` when none answers).
``ack`` publishes what CRM did (acknowledged, contacted, resolved, dismissed)
to the alert-actions topic: what a small team without a CRM integration uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.domain.events import AlertAction, encode
from app.settings import load_settings
from app.topics import publish_one

COLUMNS = ("emitted_at", "rule", "customer_id", "score", "previous_band", "trailing_revenue",
           "value_tier", "churn_risk", "open_complaints", "sla_due_at", "case")  # fmt: skip


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """A topic's partitions; asks for fresh metadata once if the client has none yet."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()  # noqa: SLF001
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


def _line(alert: dict[str, Any], case: str = "-") -> str:
    return "  ".join(case if c == "case" else str(alert.get(c)) for c in COLUMNS)


def case_status(worker: str | None, token: str | None, alert: dict[str, Any]) -> str:
    """The alert's case status from the worker that owns its customer, or ``-``."""
    if not worker or alert.get("customer_id") in (None, "*"):
        return "-"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{worker.rstrip('/')}/customers/{urllib.parse.quote(alert['customer_id'])}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=2) as r:  # fmt: skip
            state = json.loads(r.read())
    except (OSError, ValueError):
        return "-"
    for case in state.get("cases", []):
        if case.get("alert_id") == alert.get("alert_id"):
            return str(case["status"]) + (" OVERDUE" if case.get("overdue") else "")
    return "-"


async def tail(args: argparse.Namespace) -> int:
    settings = load_settings()
    worker = args.worker if args.worker is not None else (
        f"http://{settings.web_host}:{settings.web_port}")  # fmt: skip
    token = settings.http_token.get_secret_value() if settings.http_token else None
    consumer = AIOKafkaConsumer(
        **settings.client_kwargs(), group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    printed = 0
    try:
        tps = await partitions_of(consumer, settings.topic_alerts)
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
                    if args.json:
                        print(json.dumps(alert), flush=True)
                    else:
                        print(_line(alert, case_status(worker, token, alert)), flush=True)
                    printed += 1
                if done is not None and args.group:
                    await consumer.commit({tp: done + 1})
    finally:
        await consumer.stop()
    return 0


async def find_customer(alert_id: str) -> str | None:
    """The customer of an alert, read from the alert topic (for ``ack`` without --customer)."""
    settings = load_settings()
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, settings.topic_alerts)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    if r.value is not None and json.loads(r.value).get("alert_id") == alert_id:
                        return str(json.loads(r.value)["customer_id"])
    finally:
        await consumer.stop()
    return None


async def ack(args: argparse.Namespace) -> int:
    """Publish what was done about an alert to the alert-actions topic."""
    settings = load_settings()
    customer = args.customer or await find_customer(args.alert_id)
    if customer is None:
        print(f"feedback alerts ack: alert {args.alert_id} is not on {settings.topic_alerts}; "
              "give --customer", file=sys.stderr)  # fmt: skip
        return 2
    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    action = AlertAction(
        event_type="alert_action", event_id=f"ack-{uuid.uuid4()}", alert_id=args.alert_id,
        customer_id=customer, action=args.action, actor=args.actor, note=args.note,
        occurred_at=at, schema_version=1,
    )  # fmt: skip
    await publish_one(settings, settings.topic_alert_actions, customer.encode(), encode(action))
    print(f"{args.action} {args.alert_id} ({customer}) by {args.actor}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["diff"]:
        from app.shadow import main_diff

        return main_diff(argv[1:])
    if argv[:1] == ["ack"]:
        a = argparse.ArgumentParser(prog="feedback alerts ack",
                                    description="tell the service what CRM did about an alert")
        a.add_argument("alert_id")
        a.add_argument("--action", required=True,
                       choices=["acknowledged", "contacted", "resolved", "dismissed"])
        a.add_argument("--actor", required=True, help="who did it")
        a.add_argument("--customer", default=None,
                       help="the alert's customer (else looked up on the alert topic)")
        a.add_argument("--note", default=None, help="free text, at most 1000 characters")
        a.add_argument("--at", default=None, help="when (ISO 8601 with offset; default now)")
        return asyncio.run(ack(a.parse_args(argv[1:])))
    p = argparse.ArgumentParser(prog="feedback alerts", description=__doc__)
    p.add_argument("action", choices=["tail", "ack", "diff"])
    p.add_argument("--json", action="store_true", help="one alert per line as JSON")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--offset", type=int, default=None, help="start at this offset (each partition)")
    p.add_argument("--since", default=None, help="start at this time (ISO 8601 with offset)")
    p.add_argument("--group", default=None,
                   help="group: resume where it left off, commit what it printed")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="stop after N alerts")
    p.add_argument("--exit-idle", type=float, default=None,
                   help="stop after N seconds without alerts")  # fmt: skip
    p.add_argument("--worker", default=None,
                   help="a worker's HTTP address for case status ('' to skip)")  # fmt: skip
    args = p.parse_args(argv)
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()
