"""``feedback erase CUSTOMER_ID``: ask the workers to forget a customer (GDPR erasure).

Publishes an erasure request to FEEDBACK_TOPIC_ERASURE keyed by the customer id,
so it lands on the customer's partition and is carried out in order with the
customer's other events. Exit 0 once the broker has the request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime

from app.domain.events import ErasureRequest, encode
from app.settings import load_settings
from app.topics import publish_one


async def publish(customer_id: str, reason: str | None) -> ErasureRequest:
    settings = load_settings()
    request = ErasureRequest(
        event_type="erasure", event_id=f"erase-{uuid.uuid4()}", customer_id=customer_id,
        occurred_at=datetime.now(UTC), schema_version=1, reason=reason,
    )  # fmt: skip
    await publish_one(settings, settings.topic_erasure, customer_id.encode(), encode(request))
    return request


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback erase", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("customer_id")
    p.add_argument("--reason", default=None, help="free text kept with the request (not logged)")
    args = p.parse_args(argv)
    request = asyncio.run(publish(args.customer_id, args.reason))
    print(f"erasure requested: {request.event_id}", file=sys.stderr)
    return 0
