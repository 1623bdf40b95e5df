"""Configuration: defaults, parsing, and one clear line naming a bad variable."""

from __future__ import annotations

import pytest

from exporter.settings import DEFAULT_STORE, ConfigError, Settings, parse_duration


def test_defaults_need_only_an_auth_token() -> None:
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "a, b"})
    assert settings.auth_tokens == ("a", "b")
    assert settings.store_url == DEFAULT_STORE
    assert settings.stale_after == 72 * 3600
    assert settings.max_body_bytes == 64 * 1024
    assert settings.redact_phone_numbers


def test_missing_token_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^TWILIO_AUTH_TOKEN: required"):
        Settings.from_env({})


def test_insecure_skip_allows_no_token() -> None:
    assert Settings.from_env({"EXPORTER_INSECURE_SKIP_SIGNATURE": "1"}).insecure_skip_signature


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXPORTER_STORE", "mysql://x"),
        ("EXPORTER_PUBLIC_URL", "hooks.example.com"),
        ("EXPORTER_PUBLIC_URL", "https://x.com/?a=1"),
        ("EXPORTER_STALE_AFTER", "soon"),
        ("EXPORTER_MAX_BODY_BYTES", "-5"),
        ("EXPORTER_TRUSTED_PROXIES", "10.0.0.300"),
        ("EXPORTER_INSECURE_SKIP_SIGNATURE", "maybe"),
        ("EXPORTER_WEBHOOK_SHARED_KEYS", "nokey"),
        ("EXPORTER_METRIC_TAGS", "bad-name"),
        ("EXPORTER_SQLITE_SYNCHRONOUS", "OFF"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"TWILIO_AUTH_TOKEN": "t", variable: value})
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: ")


def test_repr_hides_tokens_and_store_password() -> None:
    settings = Settings.from_env(
        {"TWILIO_AUTH_TOKEN": "s3cr3t", "EXPORTER_STORE": "postgresql://u:pw@db/x"}
    )
    assert "s3cr3t" not in repr(settings) and "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("1.5s", 1.5), ("30m", 1800), ("72h", 259200), ("7d", 604800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
