"""End to end on the real broker: events in, exact alerts, state over HTTP, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.domain.alerts import alert_id
from app.domain.customer import CustomerState, apply, refresh
from app.domain.events import decode_event
from app.settings import load_settings
from app.streams.policy import policy_from
from app.streams.tables import key_partition

from .harness import Worker, consume_all, event, produce, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(
    kafka_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, dict[str, str]]]:
    import uuid

    unique = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("agent")
    env = worker_env(
        kafka_broker, unique, tmp / "data",
        FEEDBACK_HIGH_VALUE_REVENUE="1000", FEEDBACK_HIGH_VALUE_TIERS="platinum",
        FEEDBACK_FX_RATES='{"USD": "0.5"}', FEEDBACK_MAX_EVENT_BYTES="4096",
        # case escalations depend on when time is looked at: tested in test_closed_loop
        FEEDBACK_ALERT_RULES="detractor,silent,complaint_reply_overdue",
    )  # fmt: skip
    worker = Worker(env, tmp / "worker.log")
    worker.start()
    try:
        yield worker, env
    finally:
        worker.stop()


def test_scenario_exact_alerts_and_state(running: tuple[Worker, dict[str, str]]) -> None:
    worker, env = running
    bootstrap = env["FEEDBACK_BROKER"].removeprefix("kafka://")
    s, p, c = (
        env["FEEDBACK_TOPIC_SURVEYS"],
        env["FEEDBACK_TOPIC_PURCHASES"],
        env["FEEDBACK_TOPIC_COMPLAINTS"],
    )

    def rec(topic: str, cust: str, raw: bytes, key: str | None = None) -> tuple[str, bytes, bytes]:
        return topic, (key or cust).encode(), raw

    records = [
        # big: high value by revenue (2 x 600 EUR), promoter -> detractor: one alert.
        rec(p, "big", event("purchase", "big-p1", "big", "2026-01-01T10:00:00Z",
                            order_id="o1", amount="600", currency="EUR")),
        rec(p, "big", event("purchase", "big-p2", "big", "2026-02-01T10:00:00Z",
                            order_id="o2", amount="1200", currency="USD")),
        rec(s, "big", event("survey", "big-s1", "big", "2026-02-10T10:00:00Z", score=9)),
        rec(c, "big", event("complaint", "big-c1", "big", "2026-02-11T10:00:00Z",
                            complaint_id="k1", status="opened", category="service",
                            severity="major")),
        rec(s, "big", event("survey", "big-s2", "big", "2026-02-12T10:00:00+01:00", score=2)),
        rec(s, "big", event("survey", "big-s2", "big", "2026-02-12T10:00:00+01:00", score=2)),
        rec(s, "big", event("survey", "big-s3", "big", "2026-02-13T10:00:00Z", score=1)),
        # small: same story, low revenue: no alert.
        rec(p, "small", event("purchase", "small-p1", "small", "2026-01-05T10:00:00Z",
                              order_id="o3", amount="20", currency="EUR")),
        rec(s, "small", event("survey", "small-s1", "small", "2026-02-10T10:00:00Z", score=10)),
        rec(s, "small", event("survey", "small-s2", "small", "2026-02-12T10:00:00Z", score=0)),
        # vip: platinum membership makes it high-value; its record is wrongly keyed.
        rec(s, "vip", event("survey", "vip-s1", "vip", "2026-03-01T10:00:00Z", score=5,
                            segment={"tier": "platinum", "region": "eu"}), key="not-vip"),
        # late: the detractor answer is older than the promoter one: band stays promoter.
        rec(p, "late", event("purchase", "late-p1", "late", "2026-01-01T10:00:00Z",
                             order_id="o4", amount="5000", currency="EUR")),
        rec(s, "late", event("survey", "late-s2", "late", "2026-03-01T10:00:00Z", score=9)),
        rec(s, "late", event("survey", "late-s1", "late", "2026-02-01T10:00:00Z", score=1)),
    ]  # fmt: skip
    # Kafka orders records within a partition, not across the three topics: purchases and
    # the complaint go first, so the alert's figures (revenue, open complaints) are fixed.
    first = [r for r in records if r[0] != s]
    asyncio.run(produce(bootstrap, first))
    from .harness import poll

    poll(lambda: worker.metric("feedback_events_total") >= len(first), 60,
         "purchases and the complaint processed", worker)  # fmt: skip
    asyncio.run(produce(bootstrap, [r for r in records if r[0] == s]))

    expected = {
        alert_id("detractor", "big", "big-s2"): ("big", "big-s2", "promoter"),
        alert_id("detractor", "vip", "vip-s1"): ("vip", "vip-s1", None),
        # k1 opened 2026-02-11 10:00 is still open when big-s3 (02-13) moves time on.
        alert_id("complaint_reply_overdue", "big", "big-c1"): ("big", "big-c1", None),
    }
    alerts = asyncio.run(
        consume_all(bootstrap, env["FEEDBACK_TOPIC_ALERTS"], lambda r: len(r) >= 3, timeout=60)
    )
    # Give a wrong extra alert the chance to show up before asserting exactness.
    worker_done = lambda: worker.metric("feedback_events_total") >= 13  # noqa: E731
    poll(worker_done, 60, "all 13 valid events counted", worker)
    alerts = asyncio.run(
        consume_all(bootstrap, env["FEEDBACK_TOPIC_ALERTS"], lambda r: len(r) >= 4, timeout=3)
    )
    got = {}
    for r in alerts:
        body = json.loads(r.value)
        assert r.key == body["customer_id"].encode()
        got[body["alert_id"]] = (body["customer_id"], body["trigger_event_id"],
                                 body["previous_band"])  # fmt: skip
    assert got == expected
    bodies = [json.loads(r.value) for r in alerts]
    big = next(b for b in bodies if b["customer_id"] == "big" and b["rule"] == "detractor")
    assert big["score"] == 2 and big["previous_score"] == 9
    assert big["trailing_revenue"] == "1200.00" and big["value_tier"] == "A"
    assert big["open_complaints"] == 1 and "detractor" in big["churn_reasons"]
    assert big["sla_due_at"] == "2026-02-13T09:00:00Z"
    assert big["occurred_at"] == "2026-02-12T09:00:00Z"
    assert big["schema_version"] == 1 and big["rule_version"] == 1
    overdue = next(b for b in bodies if b["rule"] == "complaint_reply_overdue")
    assert overdue["complaint_id"] == "k1" and overdue["occurred_at"] == "2026-02-12T10:00:00Z"
    assert overdue["sla_due_at"] == "2026-02-12T10:00:00Z" and overdue["score"] == 1

    status, state = worker.get("/customers/big")
    assert status == 200
    assert state["band"] == "detractor" and state["latest_score"] == 1
    assert state["events"] == 6, "the duplicate big-s2 counted once"
    assert state["high_value"] is True and state["open_complaints"] == 1
    # Risk as of the partition's stream time: "vip" shares big's partition (4 partitions)
    # and its survey on 2026-03-01 is the newest event there.
    assert key_partition(b"big", 4) == key_partition(b"vip", 4)
    replay = expected_state([r[2] for r in records if r[1] == b"big"], env)
    now_p = datetime(2026, 3, 1, 10, tzinfo=UTC)
    refresh(replay, policy_from(load_settings(**settings_of(env))), now_p)
    assert state["churn_as_of"] == "2026-03-01T10:00:00Z"
    assert state["churn_risk"] == replay.churn_risk and state["p_alive"] == replay.p_alive
    assert state["churn_reasons"] == replay.churn_reasons and state["sla_breaches"] == 1
    assert state["churn_horizon_days"] == 90
    status, late = worker.get("/customers/late")
    assert late["band"] == "promoter" and late["rolling_nps"] == 100.0
    assert worker.get("/customers/vip")[1]["segment"]["tier"] == "platinum"
    assert worker.get("/customers/nobody")[0] == 404
    assert worker.metric("feedback_events_total", outcome="duplicate") == 1
    assert worker.metric("feedback_rekeyed_records_total") == 1

    status, nps = worker.get("/nps?window=90d&segment=overall")
    assert status == 200 and nps["as_of"] == "2026-03-01"
    (overall,) = nps["segments"]
    assert (overall["n"], overall["promoters"], overall["detractors"]) == (8, 3, 5)
    assert overall["nps"] == -25.0 and overall["ci95"][0] < -25 < overall["ci95"][1]
    status, week = worker.get("/nps?window=7d")
    by_segment = {r["segment"]: r for r in week["segments"]}
    assert by_segment["overall"]["n"] == 2 and by_segment["overall"]["nps"] == 0.0
    assert by_segment["region:eu"]["n"] == 1 and by_segment["region:eu"]["nps"] == -100.0
    assert worker.get("/nps?window=1y")[0] == 400


BAD = {
    "not_utf8": b"\xff\xfe\xfa",
    "not_json": b"{this is not json",
    "schema_violation": event("survey", "x1", "bad", "2026-01-01T00:00:00Z", score=11),
    "unknown_event_type": event("refund", "x2", "bad", "2026-01-01T00:00:00Z"),
    "unknown_currency": event(
        "purchase", "x3", "bad", "2026-01-01T00:00:00Z", order_id="o", amount="1", currency="XYZ"
    ),  # fmt: skip
    "oversized": event(
        "survey", "x4", "bad", "2026-01-01T00:00:00Z", score=5, comment="x" * 5000
    ),  # fmt: skip
    "empty": None,
    # A valid shape, an impossible time: folding it would age the customer years ahead.
    "future_event": event("survey", "x5", "bad", "2099-01-01T00:00:00Z", score=5),
}


def test_every_kind_of_bad_input_is_dead_lettered_and_processing_goes_on(
    running: tuple[Worker, dict[str, str]],
) -> None:
    worker, env = running
    bootstrap = env["FEEDBACK_BROKER"].removeprefix("kafka://")
    s, p = env["FEEDBACK_TOPIC_SURVEYS"], env["FEEDBACK_TOPIC_PURCHASES"]
    records: list[tuple[str, bytes | None, bytes | None]] = []
    for i, (reason, raw) in enumerate(BAD.items()):
        topic = p if reason == "unknown_currency" else s
        records.append((s, b"good", event("survey", f"good-{i}", "good",
                                          f"2026-04-0{i + 1}T00:00:00Z", score=8)))  # fmt: skip
        records.append((topic, b"bad", raw))
    asyncio.run(produce(bootstrap, records))

    dead = asyncio.run(
        consume_all(bootstrap, env["FEEDBACK_TOPIC_DEADLETTER"], lambda r: len(r) >= len(BAD))
    )
    by_reason = {dict(r.headers)["dlq.reason"].decode(): r for r in dead}
    assert set(by_reason) == set(BAD)
    for reason, raw in BAD.items():
        r = by_reason[reason]
        headers = dict(r.headers)
        assert r.key == b"bad"
        assert r.value == (raw or b"")
        assert headers["dlq.topic"].decode() in (s, p)
        assert int(headers["dlq.offset"]) >= 0 and int(headers["dlq.partition"]) >= 0
    from .harness import poll

    poll(lambda: worker.get("/customers/good")[1].get("events") == len(BAD), 30,
         "all valid records around the bad ones processed", worker)  # fmt: skip
    for reason in BAD:
        assert worker.metric("feedback_dead_letters_total", reason=reason) == 1


def settings_of(env: dict[str, str]) -> dict[str, object]:
    """The worker's settings as keyword arguments (JSON objects decoded as the env would)."""
    return {k.removeprefix("FEEDBACK_").lower(): json.loads(v) if v.startswith("{") else v
            for k, v in env.items() if k.startswith("FEEDBACK_")}  # fmt: skip


def expected_state(raws: list[bytes], env: dict[str, str]) -> CustomerState:
    """A sequential replay of one customer's records through the domain code."""
    policy = policy_from(load_settings(**settings_of(env)))
    state: CustomerState | None = None
    for raw in raws:
        state, _ = apply(state, decode_event(raw), policy)
    assert state is not None
    return state
