"""The aiokafka consumer in README.md, executed as a CRM team would copy it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.alerts import alert_id
from app.domain.events import Alert, encode

from .harness import consume_all, produce

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## For CRM: consuming alerts", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python example under 'For CRM'"
    return match.group(1)


def make_alert(customer: str, event_id: str) -> Alert:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    return Alert(
        alert_id=alert_id("detractor", customer, event_id), rule="detractor", rule_version=1,
        customer_id=customer, trigger_event_id=event_id, score=2, previous_band="promoter",
        previous_score=9, rolling_nps=-100.0, trailing_revenue=Decimal("7000"), currency="EUR",
        value_tier="A", churn_risk=0.5, churn_reasons=["detractor"], open_complaints=0,
        occurred_at=at, emitted_at=at, sla_due_at=at + timedelta(hours=24),
    )  # fmt: skip


def test_readme_consumer_prints_each_alert(kafka_broker: str, unique: str) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 30, "a few lines a CRM team can copy"
    runnable = code.replace("asyncio.run(main())", "")
    namespace: dict[str, object] = {}
    exec(compile(runnable, "README.md", "exec"), namespace)  # noqa: S102 - the point of the test
    topic = f"alerts-{unique}"
    alerts = [make_alert("c1", "e1"), make_alert("c2", "e2")]
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (topic, a.customer_id.encode(), encode(a)) for a in alerts]
    records.insert(1, (topic, b"c-erased", None))  # an erasure tombstone: skipped, committed
    asyncio.run(produce(kafka_broker, records))

    out = io.StringIO()

    async def run_until_printed() -> None:
        task = asyncio.ensure_future(
            namespace["main"](kafka_broker, topic, f"actions-{unique}"))  # type: ignore[operator]
        deadline = asyncio.get_running_loop().time() + 60
        while out.getvalue().count("\n") < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with contextlib.redirect_stdout(out):
        asyncio.run(run_until_printed())
    lines = out.getvalue().splitlines()
    assert lines == [f"{a.alert_id} {a.customer_id} detractor 2026-05-02T00:00:00Z"
                     for a in alerts]  # fmt: skip
    # ... and published an action back for each, in our contract, keyed by customer.
    from app.domain.events import decode_action

    acted = asyncio.run(consume_all(kafka_broker, f"actions-{unique}", lambda r: len(r) >= 2))
    got = [(r.key, decode_action(r.value)) for r in acted]
    assert [(k, a.alert_id, a.action) for k, a in got] == [
        (a.customer_id.encode(), a.alert_id, "acknowledged") for a in alerts]
