"""Hostile input: the only outcome is a valid event or InvalidEventError with a reason code.

Whatever decodes can be folded into a customer's state without any other exception, and
an event refused by the fold leaves the state exactly as it was.
"""

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import to_builtins

from app.domain.customer import CustomerState, Policy, apply, fold
from app.domain.events import decode_event
from app.errors import InvalidEventError

from .factory import complaint, purchase, survey

REASONS = {"empty", "oversized", "not_utf8", "not_json", "unknown_event_type",
           "schema_violation"}  # fmt: skip
POLICY = Policy()


def outcome(raw: bytes) -> str:
    try:
        decode_event(raw)
    except InvalidEventError as exc:
        assert exc.reason in REASONS
        return exc.reason
    return "ok"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_decode_or_give_a_reason(raw: bytes) -> None:
    outcome(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=10,
)  # fmt: skip
BASE: dict[str, Any] = {
    "survey": {"score": 7, "respondent_id": "r1", "comment": "fine"},
    "purchase": {"order_id": "o1", "amount": "12.50", "currency": "EUR"},
    "complaint": {"complaint_id": "k1", "status": "opened", "category": "price",
                  "severity": "minor"},
}  # fmt: skip


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(BASE)))
    body: dict[str, Any] = {"event_type": kind, "event_id": "e1", "customer_id": "c1",
                            "occurred_at": "2026-01-01T00:00:00Z", "schema_version": 1,
                            **BASE[kind]}  # fmt: skip
    for field in draw(st.lists(st.sampled_from(sorted(body) + ["extra", "segment"]),
                               max_size=3)):  # fmt: skip
        body[field] = draw(json_values)
    return json.dumps(body).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_mutated_events_decode_and_fold_or_are_refused_without_a_trace(raw: bytes) -> None:
    try:
        event = decode_event(raw)
    except InvalidEventError as exc:
        assert exc.reason in REASONS
        return
    existing, _ = apply(None, purchase(100, day=0, customer_id="c1"), POLICY)
    existing, _ = apply(existing, survey(9, day=1, customer_id="c1"), POLICY)
    existing, _ = apply(existing, complaint("k9", "opened", day=2, customer_id="c1"), POLICY)
    before = to_builtins(existing)
    try:
        fold(existing, event, POLICY)
    except InvalidEventError as exc:
        assert exc.reason == "unknown_currency"
        assert to_builtins(existing) == before, "a refused event changes nothing"
    if event.event_type != "purchase" or event.currency in POLICY.fx_rates:
        fresh = CustomerState(customer_id="c1")
        fold(fresh, event, POLICY)  # a first event for a new customer folds too
        assert fresh.seq == 1


def body(**over: Any) -> dict[str, Any]:
    return {"event_type": "survey", "event_id": "e1", "customer_id": "c1",
            "occurred_at": "2026-01-01T00:00:00Z", "schema_version": 1, "score": 5, **over}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "not_json"),  # nesting depth 10,000
        (b"[" * 10_000 + b"]" * 10_000, "not_json"),
        (json.dumps(body(score=10**100)).encode(), "schema_violation"),
        (json.dumps(body(score=5.0)).encode(), "schema_violation"),
        (b'{"event_type": "purchase", "event_id": "e", "customer_id": "c", "occurred_at": '
         b'"2026-01-01T00:00:00Z", "schema_version": 1, "order_id": "o", "amount": NaN, '
         b'"currency": "EUR"}', "schema_violation"),  # fmt: skip
        (b'{"event_type": "purchase", "event_id": "e", "customer_id": "c", "occurred_at": '
         b'"2026-01-01T00:00:00Z", "schema_version": 1, "order_id": "o", "amount": 1e400, '
         b'"currency": "EUR"}', "schema_violation"),  # fmt: skip
        (json.dumps(body(amount="Infinity", event_type="purchase", order_id="o",
                         currency="EUR")).encode(), "schema_violation"),  # fmt: skip
        (json.dumps(body(customer_id="c\u0000")).encode(), "schema_violation"),
        (json.dumps(body(event_id="x" * 257)).encode(), "schema_violation"),
        (json.dumps(body(comment="x" * 10_001)).encode(), "schema_violation"),
        (json.dumps(body(segment={"region": "r" * 65})).encode(), "schema_violation"),
        (json.dumps(body(unknown=1)).encode(), "schema_violation"),
        (json.dumps(body(customer_id=7)).encode(), "schema_violation"),
        (json.dumps(body(occurred_at="2026-01-01T00:00:00")).encode(), "schema_violation"),
        (b"\xff\xfe" + json.dumps(body()).encode(), "not_utf8"),
        (json.dumps(body()).encode().replace(b"c1", b"c\xc3\x28"), "not_utf8"),
        (b"\x00" * 10, "not_json"),
        (json.dumps([body()]).encode(), "schema_violation"),
        (json.dumps(body(event_type="refund")).encode(), "unknown_event_type"),
    ],
)
def test_hostile_records_get_the_right_reason(raw: bytes, reason: str) -> None:
    assert outcome(raw) == reason


def test_oversized_is_refused_before_parsing() -> None:
    raw = b'{"a":' * 100_000  # would be expensive to parse; never is
    with pytest.raises(InvalidEventError) as info:
        decode_event(raw, max_bytes=65_536)
    assert info.value.reason == "oversized"
