"""The event and alert contract (schema version 1), and the decoder for raw records.

The models are the single source of truth: ``schemas/*.json`` is generated from
them (``feedback schemas export``) and a test fails when the two drift.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from app.errors import InvalidEventError

SCHEMA_VERSION = 1
Band = Literal["promoter", "passive", "detractor"]
# No control characters (NUL, newlines...) in identifiers: they end up in keys and logs.
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


@functools.lru_cache(maxsize=256)
def _zone(offset: timedelta) -> timezone:
    return UTC if not offset else timezone(offset)


def _standard_zone(at: datetime) -> datetime:
    """The same instant, wall clock and offset, with the standard library's fixed-offset zone.

    pydantic parses an offset into its own ``TzInfo``, which the standard library has to
    call back into for every comparison, subtraction and ``timestamp()``: a comparison
    of two such times took 0.92 us against 0.08 us with ``datetime.timezone``, and a
    customer's re-score compares its event times hundreds of times (README, Benchmark).
    """
    offset = at.utcoffset()
    assert offset is not None  # AwareDatetime
    return at.replace(tzinfo=_zone(offset))


# RFC 3339 with an offset, kept as given (same instant, same offset).
Instant = Annotated[AwareDatetime, AfterValidator(_standard_zone)]
# A decimal amount as JSON: a number or a decimal string, at most 40 characters.
Money = Annotated[
    Decimal,
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "maxLength": 40,
                                                   "pattern": r"^-?\d+(\.\d+)?$"}]}),
]  # fmt: skip


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segment(_Contract):
    """Where a customer or response belongs, for per-segment NPS."""

    tier: str | None = Field(None, max_length=64)
    region: str | None = Field(None, max_length=64)
    channel: str | None = Field(None, max_length=64)
    product: str | None = Field(None, max_length=64)


class _Event(_Contract):
    event_id: Id = Field(description="Unique; a re-delivered event_id is counted once.")
    customer_id: Id
    occurred_at: Instant = Field(description="Event time, RFC 3339 with a UTC offset.")
    schema_version: Literal[1] = Field(description="Always 1 for this contract.")
    segment: Segment | None = None


class SurveyResponse(_Event):
    """One answer to "How likely are you to recommend us?" (0-10)."""

    event_type: Literal["survey"]
    score: int = Field(ge=0, le=10, strict=True)
    respondent_id: Id | None = Field(
        None, description="A person within the customer account; the account itself if absent."
    )
    survey_id: Id | None = None
    comment: str | None = Field(None, max_length=10_000)


class Purchase(_Event):
    """A purchase (positive amount) or refund (negative amount)."""

    event_type: Literal["purchase"]
    order_id: Id
    amount: Money = Field(allow_inf_nan=False, max_digits=20, decimal_places=6)
    currency: str = Field(pattern=r"^[A-Z]{3}$", max_length=3, description="ISO 4217 code.")


class Complaint(_Event):
    """A complaint's lifecycle step, keyed by complaint_id."""

    event_type: Literal["complaint"]
    complaint_id: Id
    status: Literal["opened", "resolved", "escalated"]
    category: Literal["product", "price", "service", "benefit", "policy", "other"]
    severity: Literal["minor", "major"]


class ErasureRequest(_Contract):
    """Forget this customer (GDPR right to be forgotten), on its own topic.

    Everything the service keeps about the customer goes: its state row (a
    tombstone in the changelog), its duplicate memory, its place in the read
    model and the Pareto summaries; the alert topic gets a tombstone for its
    key. Segment NPS tallies are aggregates and keep their counts.
    """

    event_type: Literal["erasure"]
    event_id: Id
    customer_id: Id
    occurred_at: Instant = Field(description="When the request was made.")
    schema_version: Literal[1] = Field(description="Always 1 for this contract.")
    reason: str | None = Field(None, max_length=500, description="Free text, never logged.")


class AlertAction(_Contract):
    """What CRM did about an alert; moves the alert's case (README: Closing the loop)."""

    event_type: Literal["alert_action"]
    event_id: Id = Field(description="Unique; a re-delivered action is counted once.")
    alert_id: Id
    customer_id: Id
    action: Literal["acknowledged", "contacted", "resolved", "dismissed"]
    actor: Id = Field(description="Who acted (a CRM user or system).")
    note: str | None = Field(None, max_length=1000, description="Free text, never logged.")
    occurred_at: Instant = Field(description="When it was done, RFC 3339 with offset.")
    schema_version: Literal[1] = Field(description="Always 1 for this contract.")


Event = Annotated[SurveyResponse | Purchase | Complaint, Field(discriminator="event_type")]
AnyEvent = SurveyResponse | Purchase | Complaint
EVENT_TYPES = ("survey", "purchase", "complaint")


AlertRule = Literal[
    "detractor", "silent", "complaint_reply_overdue", "case_contact_overdue", "churn_safety_line"
]
ALERT_RULES: tuple[str, ...] = (
    "detractor", "silent", "complaint_reply_overdue", "case_contact_overdue", "churn_safety_line",
)  # fmt: skip
PERIOD_ALERT_CUSTOMER = "*"


class ChurnPeriodFigures(_Contract):
    """The period behind a ``churn_safety_line`` alert (see README, Churn KPIs)."""

    period_kind: Literal["month", "quarter"]
    period: str = Field(max_length=16, description="e.g. 2026-05 or 2026-Q2 (UTC calendar)")
    group: str = Field(max_length=128, description="overall or tier:A|B|C")
    churn_rate: float = Field(ge=0, description="lost / customers_at_end (the source's)")
    churn_rate_start: float | None = Field(ge=0, description="lost / customers_at_start")
    safety_line: float = Field(ge=0, le=1, description="the line for this period's length")
    lost: int = Field(ge=0)
    customers_at_start: int = Field(ge=0)
    customers_at_end: int = Field(ge=0)
    revenue_lost: Money
    churn_loss: Money


class Alert(_Contract):
    """What a CRM agent needs to call a high-value customer at risk, without another lookup.

    Rules: ``detractor`` (the band moved into detractor; ``score`` is that
    answer), ``silent`` (the customer lapsed: P(alive) fell below the lapse
    setting; the trigger is its last purchase), ``complaint_reply_overdue`` (a
    complaint still open 24 h after it was opened; the trigger is its opening
    event and ``complaint_id`` names it), ``churn_safety_line`` (a month's or
    quarter's churn rate of a group crossed the safety line: not about one
    customer, so ``customer_id`` is ``*``, ``churn_period`` carries the figures,
    ``trailing_revenue`` is the revenue lost in the period and ``churn_risk``
    the period's churn rate, capped at 1).
    """

    alert_id: str = Field(
        max_length=64, description="Deterministic from rule, customer_id and trigger event."
    )
    rule: AlertRule
    rule_version: int
    customer_id: Id
    trigger_event_id: Id
    score: int | None = Field(
        ge=0, le=10, description="The triggering answer (detractor), else the latest; null if none."
    )
    previous_band: Literal["promoter", "passive"] | None
    previous_score: int | None
    rolling_nps: float | None = Field(ge=-100, le=100)
    trailing_revenue: Money
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", max_length=3, description="Base currency of trailing_revenue."
    )
    value_tier: Literal["A", "B", "C"] | None = Field(
        description="The customer's tier; for churn_safety_line the group's tier, or null."
    )
    churn_risk: float = Field(ge=0, le=1)
    churn_reasons: list[Annotated[str, Field(max_length=64)]] = Field(max_length=16)
    open_complaints: int = Field(ge=0)
    segment: Segment | None = None
    occurred_at: Instant
    emitted_at: Instant
    sla_due_at: Instant = Field(description="occurred_at + 24 h: the reply standard.")
    complaint_id: Id | None = Field(None, description="complaint_reply_overdue: the complaint.")
    p_alive: float | None = Field(None, ge=0, le=1, description="The customer's P(alive) then.")
    churn_period: ChurnPeriodFigures | None = Field(None, description="churn_safety_line only.")
    schema_version: Literal[1] = 1


EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)


def decode_event(raw: bytes | None, max_bytes: int = 65_536) -> AnyEvent:
    """Decode one record value into an event, or raise InvalidEventError with a reason code.

    Reason codes are stable and machine-readable (they label the dead-letter
    metric): ``empty``, ``oversized``, ``not_utf8``, ``not_json``,
    ``unknown_event_type``, ``schema_violation``.
    """
    raw = _readable(raw, max_bytes)
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


def decode_erasure(raw: bytes | None, max_bytes: int = 65_536) -> ErasureRequest:
    """Decode an erasure request, or raise InvalidEventError with the same reason codes."""
    return _decode_model(ErasureRequest, raw, max_bytes)


def decode_action(raw: bytes | None, max_bytes: int = 65_536) -> AlertAction:
    """Decode an alert action, or raise InvalidEventError with the same reason codes."""
    return _decode_model(AlertAction, raw, max_bytes)


M = TypeVar("M", bound=BaseModel)


def _readable(raw: bytes | None, max_bytes: int) -> bytes:
    """Refuse what is not worth parsing: no value, too big, not UTF-8 (checked before JSON)."""
    if not raw:
        raise InvalidEventError("empty", "record has no value")
    if len(raw) > max_bytes:
        raise InvalidEventError("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError("not_utf8", str(exc)) from None
    return raw


def _decode_model(model: type[M], raw: bytes | None, max_bytes: int) -> M:
    raw = _readable(raw, max_bytes)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise InvalidEventError("not_json", err["msg"]) from None
        loc = ".".join(str(p) for p in err["loc"]) or None
        raise InvalidEventError("schema_violation", err["msg"], loc) from None


def _invalid(exc: ValidationError) -> InvalidEventError:
    err = exc.errors(include_url=False)[0]
    kind = err["type"]
    loc = ".".join(str(p) for p in err["loc"][1:] if p not in EVENT_TYPES) or None
    if kind == "json_invalid":
        return InvalidEventError("not_json", err["msg"])
    if kind == "union_tag_invalid":
        found = err.get("ctx", {}).get("tag")
        return InvalidEventError(
            "unknown_event_type", f"event_type {found!r} is not one of {EVENT_TYPES}", "event_type"
        )
    if kind == "model_attributes_type":
        return InvalidEventError("schema_violation", "record is not a JSON object")
    if kind == "union_tag_not_found":
        return InvalidEventError("schema_violation", "event_type is missing", "event_type")
    if err["loc"] and err["loc"][0] in EVENT_TYPES:
        loc = ".".join(str(p) for p in err["loc"][1:])
    count = exc.error_count()
    more = f" (+{count - 1} more)" if count > 1 else ""
    return InvalidEventError("schema_violation", f"{err['msg']}{more}", loc)


def encode(model: BaseModel) -> bytes:
    """Serialise a contract model as compact JSON bytes (the wire form)."""
    return model.model_dump_json(exclude_none=False).encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each event and of the alert, keyed by the file name they ship under."""
    return {
        "survey_response.v1.json": SurveyResponse.model_json_schema(),
        "purchase.v1.json": Purchase.model_json_schema(),
        "complaint.v1.json": Complaint.model_json_schema(),
        "event.v1.json": EVENT_ADAPTER.json_schema(),
        "alert.v1.json": Alert.model_json_schema(),
        "erasure.v1.json": ErasureRequest.model_json_schema(),
        "alert_action.v1.json": AlertAction.model_json_schema(),
    }


def is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None
