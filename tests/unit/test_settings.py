from decimal import Decimal

import pytest

from app.errors import ConfigError
from app.settings import load_settings


def test_defaults() -> None:
    s = load_settings()
    assert s.broker == "kafka://127.0.0.1:9092"
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.high_value_top_share == 0.2
    assert s.fx_rates["EUR"] == Decimal("1")


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("FEEDBACK_HIGH_VALUE_TOP_SHARE", "1.5", "FEEDBACK_HIGH_VALUE_TOP_SHARE"),
        ("FEEDBACK_WEB_PORT", "http", "FEEDBACK_WEB_PORT"),
        ("FEEDBACK_STORE", "redis://", "FEEDBACK_STORE"),
        ("FEEDBACK_BROKER", "127.0.0.1:9092", "FEEDBACK_BROKER"),
        ("FEEDBACK_PARTITIONS", "0", "FEEDBACK_PARTITIONS"),
        ("FEEDBACK_BASE_CURRENCY", "euro", "FEEDBACK_BASE_CURRENCY"),
        ("FEEDBACK_FX_RATES", '{"USD": "-1"}', "FEEDBACK_FX_RATES"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_env_values_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_HIGH_VALUE_TIERS", "gold, platinum")
    monkeypatch.setenv("FEEDBACK_FX_RATES", '{"USD": "0.9"}')
    monkeypatch.setenv("FEEDBACK_DETRACTOR_REALERT_AFTER", "P30D")
    s = load_settings()
    assert s.high_value_tiers == frozenset({"gold", "platinum"})
    assert s.fx_rates == {"USD": Decimal("0.9"), "EUR": Decimal("1")}
    assert s.detractor_realert_after is not None
    assert s.detractor_realert_after.days == 30


def test_cluster_ids_never_look_like_options() -> None:
    from app.local.kafka import base64_uuid

    ids = [base64_uuid() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_sasl_needs_credentials_and_keeps_password_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(ConfigError, match="FEEDBACK_SASL_USERNAME"):
        load_settings()
    monkeypatch.setenv("FEEDBACK_SASL_USERNAME", "svc")
    monkeypatch.setenv("FEEDBACK_SASL_PASSWORD", "hunter2")
    s = load_settings()
    assert "hunter2" not in repr(s)
    kw = s.client_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT" and kw["sasl_plain_password"] == "hunter2"


def test_another_base_currency_rebases_the_default_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_BASE_CURRENCY", "USD")
    s = load_settings()
    assert s.fx_rates["USD"] == 1
    assert s.fx_rates["EUR"] * Decimal("0.92") == pytest.approx(Decimal(1))
    assert s.fx_rates["GBP"] == pytest.approx(Decimal("1.17") / Decimal("0.92"))
    monkeypatch.setenv("FEEDBACK_BASE_CURRENCY", "NOK")  # not in the default table
    assert load_settings().fx_rates == {"NOK": Decimal(1)}


def test_a_rule_across_settings_names_them_and_dumps_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_BASE_CURRENCY", "USD")
    monkeypatch.setenv("FEEDBACK_FX_RATES", '{"USD": "0.92", "EUR": "1"}')
    monkeypatch.setenv("FEEDBACK_SASL_PASSWORD", "hunter2")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "FEEDBACK_FX_RATES" in text and "FEEDBACK_BASE_CURRENCY" in text and "0.92" in text
    assert "hunter2" not in text and "broker" not in text and "Value error" not in text
    monkeypatch.delenv("FEEDBACK_FX_RATES")
    monkeypatch.setenv("FEEDBACK_TOPIC_ALERTS", "feedback.surveys.v1")
    with pytest.raises(ConfigError, match="FEEDBACK_TOPIC_SURVEYS.*must all differ"):
        load_settings()
