"""Settings: defaults, parsing, and one clear line naming a bad variable."""

from __future__ import annotations

import pytest

from exporter.settings import (
    DEFAULT_STORE,
    ConfigError,
    ServerSettings,
    Settings,
    api_credentials,
    metrics_directory,
    parse_duration,
    signing_auth_token,
    twilio_api_base,
)
from tests.support import sid


def test_defaults_need_only_an_auth_token() -> None:
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "a, b"})
    assert settings.auth_tokens == ("a", "b")
    assert settings.store_url == DEFAULT_STORE
    assert settings.stale_after == 72 * 3600
    assert settings.max_body_bytes == 64 * 1024
    assert settings.redact_phone_numbers
    assert settings.senders_max == 50
    assert settings.trace_url is None and settings.trace_link("0" * 32) is None


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
        ("TWILIO_ACCOUNT_SID", "SK123"),
        ("EXPORTER_SENDERS_MAX", "-1"),
        ("EXPORTER_SENDERS_MAX", "many"),
        ("EXPORTER_TRACE_URL", "http://tempo.example/trace/"),
        ("EXPORTER_TRACE_URL", "tempo.example/trace/{trace_id}"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"TWILIO_AUTH_TOKEN": "t", variable: value})
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: ")


def test_senders_max_of_zero_names_no_sender() -> None:
    settings = Settings.from_env({"EXPORTER_SENDERS_MAX": "0"}, require_auth_token=False)
    assert settings.senders_max == 0


@pytest.mark.parametrize(
    ("template", "link"),
    [
        ("http://tempo.example/trace/{trace_id}", "http://tempo.example/trace/4bf92f35"),
        ("https://jaeger.example/trace/{trace_id}?uiFind={trace_id}",
         "https://jaeger.example/trace/4bf92f35?uiFind=4bf92f35"),
        # Grafana Explore carries JSON in its query: braces that are no placeholder stay.
        ('https://grafana.example/explore?left={"queries":[{"query":"{trace_id}"}]}',
         'https://grafana.example/explore?left={"queries":[{"query":"4bf92f35"}]}'),
    ],
)  # fmt: skip
def test_trace_url_puts_the_trace_id_in_its_placeholder(template: str, link: str) -> None:
    settings = Settings.from_env({"EXPORTER_TRACE_URL": template}, require_auth_token=False)
    assert settings.trace_link("4bf92f35") == link


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("http://tempo.example/trace/", "must contain {trace_id}"),
        ("http://tempo.example/trace/{traceId}", "unknown placeholder {traceId}"),
        ("http://tempo.example/{span_id}/{trace_id}", "unknown placeholder {span_id}"),
        ("tempo.example/trace/{trace_id}", "must be an http(s) URL"),
    ],
)
def test_trace_url_without_its_placeholder_or_with_another_is_refused(
    template: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"EXPORTER_TRACE_URL": template}, require_auth_token=False)
    message = str(raised.value)
    assert message.startswith("EXPORTER_TRACE_URL: ") and problem in message
    assert "\n" not in message


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


def test_commands_without_signatures_need_no_auth_token() -> None:
    settings = Settings.from_env({}, require_auth_token=False)
    assert settings.auth_tokens == ()
    assert not settings.insecure_skip_signature


def test_command_line_values_win_over_the_environment() -> None:
    settings = Settings.from_env(
        {"TWILIO_AUTH_TOKEN": "env", "EXPORTER_STORE": "sqlite:///env.db"},
        overrides={"EXPORTER_STORE": "sqlite:///flag.db"},
    )
    assert settings.store_url == "sqlite:///flag.db"
    assert settings.auth_tokens == ("env",)


def test_metrics_directory_is_read_with_the_settings() -> None:
    env = {"TWILIO_AUTH_TOKEN": "t", "PROMETHEUS_MULTIPROC_DIR": "/run/metrics"}
    assert Settings.from_env(env).metrics_directory == "/run/metrics"
    assert metrics_directory({}) is None


def test_server_defaults_and_values() -> None:
    defaults = ServerSettings.from_env({})
    assert defaults.bind == "0.0.0.0:8080"
    assert defaults.workers >= 2
    assert defaults.log_level == "info"
    chosen = ServerSettings.from_env(
        {"EXPORTER_BIND": "127.0.0.1:9000", "WEB_CONCURRENCY": "3", "EXPORTER_LOG_LEVEL": "DEBUG"}
    )
    assert (chosen.bind, chosen.workers, chosen.log_level) == ("127.0.0.1:9000", 3, "debug")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXPORTER_BIND", "localhost"),
        ("EXPORTER_BIND", "127.0.0.1:http"),
        ("EXPORTER_BIND", "127.0.0.1:70000"),
        ("WEB_CONCURRENCY", "many"),
        ("WEB_CONCURRENCY", "0"),
        ("EXPORTER_LOG_LEVEL", "loud"),
    ],
)
def test_bad_server_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ServerSettings.from_env({variable: value})
    assert raised.value.variable == variable


def test_api_credentials_prefer_an_api_key_and_name_what_is_missing() -> None:
    account = sid("AC", 1)

    def credentials(env: dict[str, str]) -> object:
        settings = Settings.from_env(env, require_auth_token=False)
        return api_credentials(settings, env)

    key = api_credentials(
        Settings.from_env({"TWILIO_ACCOUNT_SID": account}, require_auth_token=False),
        {"TWILIO_API_KEY": "SK1", "TWILIO_API_SECRET": "k3y-s3cr3t"},
    )
    token = api_credentials(
        Settings.from_env({"TWILIO_ACCOUNT_SID": account, "TWILIO_AUTH_TOKEN": "t1,t2"}), {}
    )

    assert (key.account_sid, key.username, key.password) == (account, "SK1", "k3y-s3cr3t")
    assert (token.username, token.password) == (account, "t1")
    assert "t1" not in repr(token) and "k3y-s3cr3t" not in repr(key)
    with pytest.raises(ConfigError, match=r"^TWILIO_ACCOUNT_SID: required"):
        credentials({"TWILIO_AUTH_TOKEN": "t"})
    with pytest.raises(ConfigError, match=r"^TWILIO_API_SECRET: "):
        credentials({"TWILIO_ACCOUNT_SID": account, "TWILIO_API_KEY": "SK1"})
    with pytest.raises(ConfigError, match=r"^TWILIO_AUTH_TOKEN: required for the REST API"):
        credentials({"TWILIO_ACCOUNT_SID": account})


def test_api_base_from_the_flag_else_the_variable() -> None:
    env = {"TWILIO_API_BASE": "http://127.0.0.1:9/"}
    assert twilio_api_base(None, env) == "http://127.0.0.1:9/"
    assert twilio_api_base("https://proxy.example", env) == "https://proxy.example"
    assert twilio_api_base(None, {}) is None
    with pytest.raises(ConfigError, match=r"^TWILIO_API_BASE: "):
        twilio_api_base(None, {"TWILIO_API_BASE": "api.twilio.com"})
    with pytest.raises(ConfigError, match=r"^--api-base: "):
        twilio_api_base("api.twilio.com", {})


def test_the_simulator_signs_with_the_first_auth_token() -> None:
    assert signing_auth_token({"TWILIO_AUTH_TOKEN": " t1 , t2"}) == "t1"
    assert signing_auth_token({}) is None
