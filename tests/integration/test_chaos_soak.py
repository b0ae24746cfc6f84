"""Chaos soak: kills, restores, a worker joining and leaving, a broker outage; nothing is lost.

A seeded stream for 150 customers (re-deliveries, late events, malformed records) is
produced at a steady rate while the worker is SIGKILLed 10 times (right after start,
mid-stream, during restore; alternately on its own and on an empty state dir), a second
worker joins the group and leaves, and the broker is stopped and started under a running
worker. Afterwards every customer's state, the detractor alerts and /nps equal a
sequential replay, and every malformed record is in the dead-letter topic with a reason.
(bench/chaos.py runs the longer version; the time-driven rules are switched off here as
in the crash test, since when time is looked at depends on batch boundaries.)
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from app.domain.alerts import Snapshot, evaluate
from app.domain.customer import CustomerState, Outcome, Policy, apply, public_view, refresh
from app.domain.events import SurveyResponse, decode_event
from app.domain.value import ValuePolicy
from app.local import kafka
from app.streams.tables import key_partition

from .harness import Worker, consume_all, poll, worker_env
from .test_crash_recovery import COMPARED, generate

pytestmark = pytest.mark.integration
MALFORMED = [b"{not json", b"\xff\xfe", b'{"event_type": "refund"}', b"",
             b'{"event_type": "survey", "score": 11}', b"[1, 2, 3]"]  # fmt: skip
REASONS = {"not_json", "not_utf8", "unknown_event_type", "empty", "schema_violation"}


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """A broker of its own: this test stops and starts it."""
    data = tmp_path_factory.mktemp("chaos-kafka")
    port = kafka.free_port()
    kafka.up(port=port, data_dir=data, heap="768m")
    try:
        yield f"127.0.0.1:{port}", data, port
    finally:
        kafka.down(data)


class Producer(threading.Thread):
    """Produces the records at a steady rate, riding out the broker outage."""

    def __init__(self, bootstrap: str, records: list[tuple[str, bytes, bytes]], rate: float):
        super().__init__(daemon=True)
        self.bootstrap, self.records, self.rate = bootstrap, records, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    enable_idempotence=True, request_timeout_ms=120_000,
                                    retry_backoff_ms=500)  # fmt: skip
        await producer.start()
        began = time.monotonic()
        try:
            for i, (topic, key, value) in enumerate(self.records):
                due = began + i / self.rate
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                await (await producer.send(topic, value, key=key))
                self.sent = i + 1
        finally:
            await producer.stop()


def test_chaos_soak_loses_nothing(own_broker: tuple[str, Path, int], tmp_path: Path) -> None:
    bootstrap, broker_dir, port = own_broker
    unique = uuid.uuid4().hex[:10]
    rnd = random.Random(11)
    env = worker_env(
        bootstrap, unique, tmp_path / "own",
        FEEDBACK_HIGH_VALUE_REVENUE="1000000000", FEEDBACK_HIGH_VALUE_TIERS="gold",
        FEEDBACK_FX_RATES='{"USD": "0.9"}', FEEDBACK_BATCH_SIZE="50",
        FEEDBACK_ALERT_RULES="detractor", FEEDBACK_SESSION_TIMEOUT="6",
    )  # fmt: skip
    from .harness import create_topics

    create_topics(env)
    topics = {"survey": env["FEEDBACK_TOPIC_SURVEYS"], "purchase": env["FEEDBACK_TOPIC_PURCHASES"],
              "complaint": env["FEEDBACK_TOPIC_COMPLAINTS"]}  # fmt: skip
    stream = generate(seed=23, customers=150, per_customer=24)
    # Late events: some records swap places with the next one of the same topic.
    for i in range(len(stream) - 1):
        if rnd.random() < 0.03 and stream[i][0] == stream[i + 1][0]:
            stream[i], stream[i + 1] = stream[i + 1], stream[i]
    records = [(topics[k], c.encode(), raw) for k, c, raw in stream]
    for n, bad in enumerate(MALFORMED * 3):
        records.insert(rnd.randrange(len(records)), (topics["survey"], f"bad-{n}".encode(), bad))
    import os

    plan = int(os.environ.get("SOAK_STEPS", "9"))  # kills after the early one
    early = os.environ.get("SOAK_EARLY_KILL", "1") == "1"
    outage = float(os.environ.get("SOAK_OUTAGE_SECONDS", "15"))
    # Long enough that every kill lands while records are still arriving.
    producer = Producer(bootstrap, records, rate=len(records) / max(70.0, 7.0 * plan))

    dirs = iter(range(100))

    def worker(own: bool) -> Worker:
        data = tmp_path / ("own" if own else f"empty-{next(dirs)}")
        return Worker({**env, "FEEDBACK_DATA_DIR": str(data)}, tmp_path / "worker.log")

    kills = 0
    began = time.monotonic()
    producer.start()
    if early:
        w = worker(own=True)
        w.spawn()
        time.sleep(1.0)  # the scenario: killed one second into its start
        w.kill()
        kills += 1
    for i in range(plan):
        w = worker(own=i % 2 == 0)
        if i % 4 == 2:  # during restore: an empty dir reads the changelog back
            w = worker(own=False)
            w.spawn()
            time.sleep(2.0)
        else:
            w.start(timeout=180)
            done = w.metric("feedback_events_total")
            poll(lambda w=w, done=done: w.metric("feedback_events_total") > done + 20, 120,
                 "progress before the kill", w)  # fmt: skip
            if i == 3 and os.environ.get("SOAK_JOIN", "1") == "1":  # a second worker joins, leaves
                other = worker(own=False)
                other.start(timeout=180)
                other.stop()
            if i == 5 and os.environ.get("SOAK_OUTAGE", "1") == "1":  # the broker goes away
                kafka.down(broker_dir)
                time.sleep(outage)  # the outage itself
                kafka.up(port=port, data_dir=broker_dir, heap="768m")
                before = w.metric("feedback_events_total")
                poll(lambda w=w, b=before: w.metric("feedback_events_total") > b, 180,
                     "the worker carries on after the outage", w)  # fmt: skip
        w.kill()
        kills += 1
    assert kills == plan + early
    final = worker(own=False)
    final.start(timeout=180)
    try:
        producer.join(300)
        assert producer.error is None and producer.sent == len(records), producer.error
        policy = Policy(
            fx_rates={"EUR": Decimal(1), "USD": Decimal("0.9")},
            value_policy=ValuePolicy(Decimal("1000000000"), 0.0, frozenset({"gold"})),
            rules=frozenset({"detractor"}),
        )
        expected: dict[str, CustomerState] = {}
        expected_alerts: dict[str, str] = {}
        clock: dict[int, datetime] = {}
        responses = 0
        now = datetime.now(UTC)
        counted_days = []
        for _, key, raw in records:
            try:
                ev = decode_event(raw)
            except Exception:  # noqa: BLE001 - the malformed ones
                continue
            part = key_partition(key, int(env["FEEDBACK_PARTITIONS"]))
            clock[part] = max(clock.get(part, ev.occurred_at), ev.occurred_at)
            before = Snapshot.of(expected.get(ev.customer_id))
            expected[ev.customer_id], outcome = apply(expected.get(ev.customer_id), ev, policy)
            if isinstance(ev, SurveyResponse) and outcome is not Outcome.DUPLICATE:
                responses += 1
                counted_days.append(ev.occurred_at.astimezone(UTC).date())
            for a in evaluate(before, expected[ev.customer_id], ev, policy, now):
                expected_alerts[a.alert_id] = a.trigger_event_id

        behind: dict[str, tuple[object, int]] = {}

        def caught_up() -> bool:
            behind.clear()
            for c, s in expected.items():
                got = final.get(f"/customers/{c}")[1].get("events")
                if got != s.seq:
                    behind[c] = (got, s.seq)
            return not behind

        try:
            poll(caught_up, 120, "every customer's events counted once", final)
        except AssertionError:
            victim = next(iter(behind))
            changelog = f"{env['FEEDBACK_APP_ID']}-customer_state_by_customer-changelog"
            logged = asyncio.run(consume_all(bootstrap, changelog, lambda r: False, timeout=8))
            seqs = [(r.partition, r.offset, json.loads(r.value)["seq"]) for r in logged
                    if r.key == victim.encode() and r.value]  # fmt: skip
            raise AssertionError(f"{len(behind)} customers differ (got, want): "
                                 f"{dict(list(behind.items())[:8])}; {victim} changelog "
                                 f"(partition, offset, seq): {seqs}") from None
        for cust, state in expected.items():
            now_p = clock[key_partition(cust.encode(), int(env["FEEDBACK_PARTITIONS"]))]
            refresh(state, policy, now_p)
            want = {k: public_view(state, now_p)[k] for k in COMPARED}
            got = final.get(f"/customers/{cust}")[1]
            assert {k: got[k] for k in COMPARED} == want, cust
        as_of = max(counted_days)
        want_n = sum(1 for d in counted_days if (as_of - d).days < 90)
        poll(lambda: final.get("/nps?window=90d&segment=overall")[1].get("segments", [{}])[0]
             .get("n") == want_n, 60, "each response counted once in /nps", final)  # fmt: skip

        alerts = asyncio.run(consume_all(
            bootstrap, env["FEEDBACK_TOPIC_ALERTS"],
            lambda r: {json.loads(x.value)["alert_id"] for x in r} >= set(expected_alerts),
            timeout=60))  # fmt: skip
        seen = Counter(json.loads(r.value)["alert_id"] for r in alerts)
        assert set(seen) == set(expected_alerts), "every expected alert and no other"
        dead = asyncio.run(consume_all(bootstrap, env["FEEDBACK_TOPIC_DEADLETTER"],
                                       lambda r: len(r) >= len(MALFORMED) * 3))  # fmt: skip
        reasons = Counter(dict(r.headers)["dlq.reason"].decode() for r in dead)
        keys = {r.key for r in dead}
        assert keys >= {f"bad-{n}".encode() for n in range(len(MALFORMED) * 3)}
        assert set(reasons) <= REASONS
        # Every worker of the soak logged here (Faust's info lines included): no customer id.
        logged = (tmp_path / "worker.log").read_text(errors="replace")
        assert "cust-" not in logged, "a customer id appeared in a worker's log"
        figures = {"kills": kills, "records": len(records), "customers": len(expected),
                   "alerts": len(expected_alerts), "alert_repeats": sum(seen.values()) - len(seen),
                   "dead_letters": sum(reasons.values()), "responses": responses,
                   "broker_outage_seconds": outage if os.environ.get("SOAK_OUTAGE", "1") == "1"
                   else 0, "seconds": round(time.monotonic() - began, 1)}  # fmt: skip
        print("soak: " + json.dumps(figures))
    finally:
        final.stop()
