"""SIGKILL a worker mid-stream; a fresh worker restores from the changelog and loses nothing."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.alerts import Snapshot, evaluate
from app.domain.customer import CustomerState, Outcome, Policy, apply, public_view, refresh
from app.domain.events import AnyEvent, SurveyResponse, decode_event
from app.domain.value import ValuePolicy
from app.streams.store import CUSTOMERS_TABLE
from app.streams.tables import key_partition

from .harness import Worker, consume_all, event, poll, produce, worker_env

pytestmark = pytest.mark.integration

COMPARED = (
    "band", "latest_score", "latest_score_at", "previous_band", "previous_score", "rolling_nps",
    "responses", "trailing_revenue", "purchase_count", "first_purchase_at", "last_purchase_at",
    "high_value", "value_tier", "open_complaints", "sla_breaches", "churn_risk", "churn_reasons",
    "p_alive", "churn_as_of", "last_event_at", "events",
)  # fmt: skip


def generate(seed: int, customers: int, per_customer: int) -> list[tuple[str, str, bytes]]:
    """(topic kind, customer, value): distinct event times per customer, some re-deliveries."""
    rnd = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)  # ends before today: stream time is not clamped
    out: list[tuple[str, str, bytes]] = []
    for n in range(customers):
        cust = f"cust-{n:04d}"
        seg = {"tier": "gold" if n % 3 == 0 else "silver", "region": rnd.choice(["eu", "us"])}
        minutes = sorted(rnd.sample(range(0, 400 * 24 * 60), per_customer))
        for i, m in enumerate(minutes):
            at = (start + timedelta(minutes=m)).isoformat()
            eid = f"{cust}-e{i}"
            kind = rnd.choices(["survey", "purchase", "complaint"], [5, 4, 2])[0]
            if kind == "survey":
                raw = event("survey", eid, cust, at, score=rnd.choice([0, 3, 6, 7, 8, 9, 10]),
                            respondent_id=rnd.choice([None, "a", "b"]), segment=seg)  # fmt: skip
            elif kind == "purchase":
                raw = event("purchase", eid, cust, at, order_id=f"o{i}",
                            amount=str(rnd.randint(-20, 400)), currency=rnd.choice(["EUR", "USD"]))  # fmt: skip
            else:
                raw = event("complaint", eid, cust, at, complaint_id=f"k{rnd.randint(0, 2)}",
                            status=rnd.choice(["opened", "resolved", "escalated"]),
                            category="service", severity=rnd.choice(["minor", "major"]))  # fmt: skip
            out.append((kind, cust, raw))
            if rnd.random() < 0.03:
                out.append((kind, cust, raw))  # a re-delivery: must count once
    return out


@pytest.mark.parametrize("state_dir", ["fresh", "same"])
def test_sigkill_mid_stream_then_restore_from_changelog(
    kafka_broker: str, tmp_path: Path, state_dir: str
) -> None:
    """fresh: everything from the changelogs; same: RocksDB's persisted offsets plus the tail."""
    unique = uuid.uuid4().hex[:10]
    env = worker_env(
        kafka_broker, unique, tmp_path / "data-1",
        FEEDBACK_HIGH_VALUE_REVENUE="1000000000", FEEDBACK_HIGH_VALUE_TIERS="gold",
        FEEDBACK_FX_RATES='{"USD": "0.9"}', FEEDBACK_BATCH_SIZE="50",
        # Records arrive customer by customer, so stream time runs far ahead of most
        # customers' events; the time-driven rules would then depend on batch boundaries.
        FEEDBACK_ALERT_RULES="detractor",
    )  # fmt: skip
    topics = {"survey": env["FEEDBACK_TOPIC_SURVEYS"], "purchase": env["FEEDBACK_TOPIC_PURCHASES"],
              "complaint": env["FEEDBACK_TOPIC_COMPLAINTS"]}  # fmt: skip
    stream = generate(seed=7, customers=120, per_customer=40)
    records = [(topics[k], c.encode(), raw) for k, c, raw in stream]
    first, rest = records[: len(records) // 2], records[len(records) // 2 :]

    worker = Worker(env, tmp_path / "worker-1.log")
    worker.start()
    asyncio.run(produce(kafka_broker, first))
    poll(lambda: worker.metric("feedback_events_total") >= 600, 60, "600 events processed", worker)
    worker.kill()
    asyncio.run(produce(kafka_broker, rest))

    # fresh: a new state directory, everything must come back from the changelog topics;
    # same: the killed worker's RocksDB files, possibly ahead of or behind the changelog.
    data2 = tmp_path / ("data-2" if state_dir == "fresh" else "data-1")
    env2 = {**env, "FEEDBACK_DATA_DIR": str(data2)}
    restarted = Worker(env2, tmp_path / "worker-2.log")
    restarted.start(timeout=180)
    try:
        policy = Policy(
            fx_rates={"EUR": Decimal(1), "USD": Decimal("0.9")},
            value_policy=ValuePolicy(Decimal("1000000000"), 0.0, frozenset({"gold"})),
            rules=frozenset({"detractor"}),
        )
        # Stream time of each partition: the newest event time seen on it.
        clock: dict[int, datetime] = {}
        expected: dict[str, CustomerState] = {}
        expected_alerts: dict[str, str] = {}
        now = datetime.now(UTC)
        counted_days: list[date] = []
        for _, cust, raw in stream:
            ev: AnyEvent = decode_event(raw)
            part = key_partition(cust.encode(), int(env["FEEDBACK_PARTITIONS"]))
            clock[part] = max(clock.get(part, ev.occurred_at), ev.occurred_at)
            before = Snapshot.of(expected.get(cust))
            expected[cust], outcome = apply(expected.get(cust), ev, policy)
            if isinstance(ev, SurveyResponse) and outcome is not Outcome.DUPLICATE:
                counted_days.append(ev.occurred_at.astimezone(UTC).date())
            for a in evaluate(before, expected[cust], ev, policy, now):
                expected_alerts[a.alert_id] = a.trigger_event_id

        def caught_up() -> bool:
            for cust, state in expected.items():
                status, got = restarted.get(f"/customers/{cust}")
                if status != 200 or got.get("events") != state.seq:
                    return False
            return True

        poll(caught_up, 180, "every customer's event count to match the replay", restarted)
        if state_dir == "fresh":
            # The changelog came back through the bulk restore (app/streams/restore.py).
            restored = restarted.metric("feedback_changelog_restored_records_total",
                                        table=CUSTOMERS_TABLE)  # fmt: skip
            # 600 events in batches of 50 wrote at least one customer record per batch.
            assert restored >= 600 // 50, restored
        for cust, state in expected.items():
            # Churn risk and reply breaches as of the partition's stream time.
            now_p = clock[key_partition(cust.encode(), int(env["FEEDBACK_PARTITIONS"]))]
            refresh(state, policy, now_p)
            want = {k: public_view(state, now_p)[k] for k in COMPARED}
            got = restarted.get(f"/customers/{cust}")[1]
            assert {k: got[k] for k in COMPARED} == want, cust

        # Segment NPS: every response counted exactly once across the crash.
        as_of = max(counted_days)
        want_n = sum(1 for d in counted_days if (as_of - d).days < 90)
        status, nps = restarted.get("/nps?window=90d&segment=overall")
        assert status == 200 and nps["as_of"] == as_of.isoformat()
        assert nps["segments"][0]["n"] == want_n

        alerts = asyncio.run(
            consume_all(kafka_broker, env["FEEDBACK_TOPIC_ALERTS"],
                        lambda r: {json.loads(x.value)["alert_id"] for x in r} >= set(expected_alerts),
                        timeout=60)
        )  # fmt: skip
        seen: dict[str, str] = {}
        for r in alerts:
            body = json.loads(r.value)
            assert (
                seen.setdefault(body["alert_id"], body["trigger_event_id"])
                == body["trigger_event_id"]
            )
        assert set(seen) == set(expected_alerts), "every expected alert, and no other"
        assert seen == expected_alerts
        assert len(expected_alerts) > 5
    finally:
        restarted.stop()
