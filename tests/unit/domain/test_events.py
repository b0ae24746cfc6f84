import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.events import Purchase, SurveyResponse, decode_event, json_schemas
from app.errors import InvalidEventError

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "schemas" / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("valid_*.json")), ids=lambda p: p.stem)
def test_valid_examples_decode(path: Path) -> None:
    event = decode_event(path.read_bytes())
    assert event.event_id.startswith("evt-")
    assert event.occurred_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("name", "reason", "field"),
    [
        ("invalid_score_out_of_range", "schema_violation", "score"),
        ("invalid_naive_timestamp", "schema_violation", "occurred_at"),
        ("invalid_unknown_field", "schema_violation", "coupon"),
        ("invalid_unknown_type", "unknown_event_type", "event_type"),
        ("invalid_bad_status", "schema_violation", "status"),
        ("invalid_float_score", "schema_violation", "score"),
    ],
)
def test_invalid_examples_name_reason_and_field(name: str, reason: str, field: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_event((EXAMPLES / f"{name}.json").read_bytes())
    assert info.value.reason == reason
    assert info.value.field == field


def test_every_invalid_example_is_covered() -> None:
    assert len(list(EXAMPLES.glob("invalid_*.json"))) == 6


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "schema_violation"),
        (b'{"customer_id": "c"}', "schema_violation"),
        (b"x" * 70_000, "oversized"),
    ],
)
def test_malformed_bytes(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_event(raw)
    assert info.value.reason == reason


def test_amount_is_exact_decimal_from_number_or_string() -> None:
    base = json.loads((EXAMPLES / "valid_purchase.json").read_text())
    for amount in ("0.1", 0.1):
        raw = json.dumps({**base, "amount": amount}).encode()
        event = decode_event(raw)
        assert isinstance(event, Purchase)
        assert event.amount == Decimal("0.1")


def test_score_must_be_integer_not_string() -> None:
    base = json.loads((EXAMPLES / "valid_survey.json").read_text())
    with pytest.raises(InvalidEventError):
        decode_event(json.dumps({**base, "score": "7"}).encode())
    assert isinstance(decode_event(json.dumps(base).encode()), SurveyResponse)


def test_committed_schemas_match_models() -> None:
    for name, schema in json_schemas().items():
        committed = (ROOT / "schemas" / name).read_text()
        expected = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        assert committed == expected, f"schemas/{name} drifted: run `feedback schemas export`"


def test_erasure_request_decodes_or_gives_a_reason() -> None:
    import json as _json

    from app.domain.events import decode_erasure
    from app.streams.tables import erasure_marker_key, is_marker

    good = {"event_type": "erasure", "event_id": "x1", "customer_id": "c1",
            "occurred_at": "2026-01-01T00:00:00Z", "schema_version": 1, "reason": "art. 17"}  # fmt: skip
    assert decode_erasure(_json.dumps(good).encode()).customer_id == "c1"
    for raw, reason in [(b"", "empty"), (b"{", "not_json"), (b"\xff", "not_utf8"),
                        (_json.dumps({**good, "customer_id": ""}).encode(), "schema_violation"),
                        (_json.dumps({**good, "extra": 1}).encode(), "schema_violation")]:  # fmt: skip
        with pytest.raises(InvalidEventError) as info:
            decode_erasure(raw)
        assert info.value.reason == reason
    marker = erasure_marker_key(b"c1")
    assert is_marker(marker) and b"c1" not in marker and not is_marker(b"c1")
    assert marker == erasure_marker_key(b"c1") != erasure_marker_key(b"c2")


@pytest.mark.parametrize(("given", "offset_hours"), [
    ("2026-03-01T10:00:00Z", 0), ("2026-03-01T10:00:00+00:00", 0),
    ("2026-03-01T12:00:00+02:00", 2), ("2026-03-01T04:30:00-05:30", -5.5),
])  # fmt: skip
def test_event_time_keeps_its_instant_and_offset_in_a_standard_zone(
    given: str, offset_hours: float
) -> None:
    base = json.loads((EXAMPLES / "valid_survey.json").read_text())
    event = decode_event(json.dumps({**base, "occurred_at": given}).encode())
    at = event.occurred_at
    # datetime.timezone, not pydantic's TzInfo (slow to compare: events.Instant)
    assert type(at.tzinfo) is timezone
    assert at.utcoffset() == timedelta(hours=offset_hours)
    assert at == datetime(2026, 3, 1, 10, tzinfo=UTC)
