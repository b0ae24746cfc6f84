"""Every setting of the service, read once from the environment (prefix ``FEEDBACK_``).

The class is frozen: code receives a ``Settings`` instance and never reads the
environment itself, so tests inject their own values.
"""

from __future__ import annotations

import functools
import ssl
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.domain.churn import ChurnModel, load_model
from app.domain.events import ALERT_RULES
from app.errors import ConfigError


@functools.lru_cache(maxsize=8)
def _load_model(path: Path | None) -> ChurnModel:
    return load_model(path)

DEFAULT_FX_RATES: dict[str, Decimal] = {
    "EUR": Decimal("1"),
    "USD": Decimal("0.92"),
    "GBP": Decimal("1.17"),
    "CHF": Decimal("1.05"),
    "JPY": Decimal("0.0062"),
    "SEK": Decimal("0.088"),
    "PLN": Decimal("0.23"),
}


class Settings(BaseSettings):
    """Service configuration; each field is ``FEEDBACK_<FIELD NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="FEEDBACK_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    http_token: SecretStr | None = Field(None, min_length=16)
    kafka_tls: bool = False
    kafka_ca_file: Path | None = None  # CA bundle to trust instead of the system's (TLS)

    app_id: str = Field("feedback", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    broker: str = "kafka://127.0.0.1:9092"
    store: Literal["rocksdb://", "memory://"] = "rocksdb://"
    data_dir: Path = Path(".data")
    web_host: str = "127.0.0.1"
    web_bind: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)

    topic_surveys: str = "feedback.surveys.v1"
    topic_purchases: str = "feedback.purchases.v1"
    topic_complaints: str = "feedback.complaints.v1"
    topic_alerts: str = "feedback.alerts.v1"
    topic_deadletter: str = "feedback.deadletter.v1"
    topic_erasure: str = "feedback.erasure.v1"
    topic_alert_actions: str = "feedback.alert-actions.v1"
    partitions: int = Field(8, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=7)

    high_value_revenue: Decimal = Field(Decimal("5000"), ge=0)
    high_value_top_share: float = Field(0.2, ge=0.0, le=1.0)
    high_value_tiers: Annotated[frozenset[str], NoDecode] = frozenset()
    detractor_realert_after: timedelta | None = None
    alert_rules: Annotated[frozenset[str], NoDecode] = frozenset(ALERT_RULES)

    base_currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    # Units of base currency per unit. Without FEEDBACK_FX_RATES: the default table,
    # rebased on FEEDBACK_BASE_CURRENCY (the defaults are relative, so that is exact).
    fx_rates: dict[str, Decimal] = Field(default_factory=lambda: dict(DEFAULT_FX_RATES))

    dedup_event_ids: int = Field(1000, ge=1, le=100_000)
    max_event_bytes: int = Field(65_536, ge=256)
    max_future_skew: timedelta = Field(timedelta(hours=1), ge=timedelta(0))
    batch_size: int = Field(5000, ge=1)
    batch_within: float = Field(0.01, gt=0)
    commit_interval: float = Field(3.0, gt=0, le=60)
    state_cache_size: int = Field(20_000, ge=0)
    store_memory_mib: int = Field(512, ge=32)
    fetch_mib: int = Field(8, ge=1, le=64)
    # What the broker waits for before it answers a fetch (batchpath.FetchingThread).
    fetch_min_kib: int = Field(64, ge=0, le=65_536)
    fetch_wait_ms: int = Field(25, ge=0, le=60_000)
    changelog_segment_mib: int = Field(16, ge=1, le=1024)
    session_timeout: float = Field(30.0, ge=6, le=300)
    standby_replicas: int = Field(1, ge=0, le=8)

    churn_model_file: Path | None = None
    lapse_p_alive: float = Field(0.5, gt=0.0, lt=1.0)
    churn_refit_interval: float = Field(600.0, ge=5.0)
    sweep_batch_limit: int = Field(200, ge=0)
    case_contact_sla: timedelta = Field(timedelta(hours=24), gt=timedelta(0))
    detractor_rearm_after: timedelta = Field(timedelta(days=14), ge=timedelta(0))
    churn_kpi_interval: float = Field(30.0, ge=1.0)
    shadow: bool = False  # set by `feedback shadow`: never write to production topics
    churn_margin: Decimal = Field(Decimal("0.05"), ge=0, le=1)
    churn_safety_line: dict[str, float] = Field(
        default_factory=lambda: {"overall": 0.25, "A": 0.10, "B": 0.20, "C": 0.30}
    )

    @field_validator("churn_safety_line")
    @classmethod
    def _lines(cls, value: dict[str, float]) -> dict[str, float]:
        for key, rate in value.items():
            if key not in ("overall", "A", "B", "C") or not 0 < rate < 1:
                raise ValueError(f"{key}={rate}: keys overall, A, B, C; annual rates in (0, 1)")
        return value

    @field_validator("kafka_ca_file")
    @classmethod
    def _ca_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("churn_model_file")
    @classmethod
    def _model_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                _load_model(value)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"cannot load churn model {value}: {exc}") from None
        return value

    def churn_model(self) -> ChurnModel:
        """The churn model: the file in FEEDBACK_CHURN_MODEL_FILE, or the shipped default."""
        return _load_model(self.churn_model_file)

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if not value.startswith("kafka://"):
            raise ValueError("must be a Faust broker URL such as kafka://127.0.0.1:9092")
        return value

    @field_validator("high_value_tiers", "alert_rules", mode="before")
    @classmethod
    def _split_tiers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("alert_rules")
    @classmethod
    def _known_rules(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = sorted(value - set(ALERT_RULES))
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; rules are {list(ALERT_RULES)}")
        return value

    @field_validator("fx_rates")
    @classmethod
    def _positive_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, rate in value.items():
            if len(code) != 3 or not code.isupper() or rate <= 0:
                raise ValueError(f"{code}={rate}: codes are ISO 4217 and rates positive")
        return value

    @model_validator(mode="before")
    @classmethod
    def _rebase_default_rates(cls, data: Any) -> Any:
        """The default FX table is in EUR; rebase it on another base currency."""
        if not isinstance(data, dict) or data.get("fx_rates") is not None:
            return data
        base = str(data.get("base_currency") or "EUR").strip().upper()
        anchor = DEFAULT_FX_RATES.get(base)
        if anchor is None:  # a currency the defaults do not know: only itself, at 1
            return {**data, "fx_rates": {base: Decimal(1)}}
        return {**data, "fx_rates": {c: r / anchor for c, r in DEFAULT_FX_RATES.items()}}

    @model_validator(mode="after")
    def _base_rate(self) -> Settings:
        rate = self.fx_rates.get(self.base_currency)
        if rate is not None and rate != 1:
            raise ValueError(
                f"FEEDBACK_FX_RATES gives the base currency {self.base_currency} "
                f"(FEEDBACK_BASE_CURRENCY) the rate {rate}; it must be 1 (rates are units "
                "of the base currency per unit)"
            )
        self.fx_rates.setdefault(self.base_currency, Decimal("1"))
        topics = [
            self.topic_surveys,
            self.topic_purchases,
            self.topic_complaints,
            self.topic_alerts,
            self.topic_deadletter,
            self.topic_erasure,
            self.topic_alert_actions,
        ]
        if len(set(topics)) != len(topics):
            raise ValueError(
                "FEEDBACK_TOPIC_SURVEYS, _PURCHASES, _COMPLAINTS, _ALERTS, _DEADLETTER, "
                "_ERASURE and _ALERT_ACTIONS must all differ"
            )
        if self.sasl_mechanism and not (self.sasl_username and self.sasl_password):
            raise ValueError("FEEDBACK_SASL_MECHANISM needs FEEDBACK_SASL_USERNAME and _PASSWORD")
        return self

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as aiokafka wants it (host:port[,host:port])."""
        return ";".join(self.broker.split(";")).replace("kafka://", "").replace(";", ",")

    def client_kwargs(self) -> dict[str, Any]:
        """Connection options for aiokafka clients (security included)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.sasl_mechanism:
            kw.update(
                security_protocol="SASL_SSL" if self.kafka_tls else "SASL_PLAINTEXT",
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=(
                    self.sasl_password.get_secret_value() if self.sasl_password else None
                ),
            )
        elif self.kafka_tls:
            kw["security_protocol"] = "SSL"
        if self.kafka_tls:
            kw["ssl_context"] = self.ssl_context()
        return kw

    def ssl_context(self) -> ssl.SSLContext:
        """TLS to the brokers: the system CA bundle, or FEEDBACK_KAFKA_CA_FILE."""
        return ssl.create_default_context(
            cafile=str(self.kafka_ca_file) if self.kafka_ca_file else None
        )

    @property
    def input_topics(self) -> tuple[str, ...]:
        """Every co-partitioned topic the customer agent reads (erasure, CRM actions included)."""
        return (self.topic_surveys, self.topic_purchases, self.topic_complaints,
                self.topic_erasure, self.topic_alert_actions)  # fmt: skip


def load_settings(**overrides: Any) -> Settings:
    """Read settings once; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"][0] if err["loc"] else ""
            msg = err["msg"].removeprefix("Value error, ")
            if not loc:  # a rule across settings: its message names them; no values dumped
                problems.append(msg)
                continue
            name = f"FEEDBACK_{str(loc).upper()}"
            secret = "password" in str(loc) or "token" in str(loc)
            shown = "***" if secret else repr(err.get("input"))
            problems.append(f"{name}: {msg} (got {shown})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc
