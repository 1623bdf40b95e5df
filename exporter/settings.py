"""Settings: read once from the environment at start, with one clear line per mistake."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_STORE = "sqlite:///twilio-status-exporter.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# Event Streams posts batches of events of about a kilobyte each, and documents no batch size;
# Twilio discards a delivery refused with a 4xx, so the limit sits far above any real batch
# (sixteen times the largest record of Twilio's other sinks, Kinesis's one mebibyte). Memory
# stays bounded: a declared length over it is refused before reading, a chunked body is read
# up to it and no further.
DEFAULT_EVENTS_MAX_BODY_BYTES = 16 * 1024 * 1024
# Twilio: "Once a message is older than 72 hours, receiving a further status is unlikely".
DEFAULT_STALE_AFTER = 72 * 3600.0
DEFAULT_RETENTION = 90 * 86400.0
DEFAULT_SWEEP_INTERVAL = 60.0
DEFAULT_BIND = "0.0.0.0:8080"
# Senders named in twilio_sender_message_status_total, per process; later ones are `other`.
# Most deployments send from a few messaging services and numbers; the cap is what keeps one
# with thousands of them (a number pool without a service) at a bounded series count.
DEFAULT_SENDERS_MAX = 50
LOG_LEVELS = ("debug", "info", "warning", "error")
# prometheus-client reads this variable itself, when first imported: the server sets it
# (exporter.server.metrics_directory) before that happens, and the app reads it here.
METRICS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
# EXPORTER_TRACE_URL's one placeholder. Other braces are left alone: a Grafana Explore link
# carries JSON in its query.
TRACE_ID_PLACEHOLDER = "{trace_id}"
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the variable and how to fix it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; see README for each variable."""

    auth_tokens: tuple[str, ...] = ()
    account_sid: str | None = None
    public_url: str | None = None
    store_url: str = DEFAULT_STORE
    insecure_skip_signature: bool = False
    # Webhook SharedKeys (X-Twilio-Webhooks-Signature-Settings): key id -> secret.
    shared_keys: Mapping[str, str] = field(default_factory=dict)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Event Streams webhook sink: Basic credentials from the sink URL's user info (user, password).
    events_basic_auth: tuple[tuple[str, str], ...] = ()
    events_max_body_bytes: int = DEFAULT_EVENTS_MAX_BODY_BYTES
    stale_after: float = DEFAULT_STALE_AFTER
    retention: float = DEFAULT_RETENTION
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    metric_tags: tuple[str, ...] = ()
    metric_tag_values_max: int = 50
    senders_max: int = DEFAULT_SENDERS_MAX
    redact_phone_numbers: bool = True
    # A link to a message's trace in the tracing UI, with TRACE_ID_PLACEHOLDER in it.
    trace_url: str | None = None
    sqlite_synchronous: str = "NORMAL"
    # Set under gunicorn: each worker writes its metric values to files there, merged per scrape.
    metrics_directory: str | None = None

    def __repr__(self) -> str:
        # Secrets never reach logs, even through an accidental repr().
        return (
            f"Settings(store_url={redact_url(self.store_url)!r}, public_url={self.public_url!r}, "
            f"auth_tokens=<{len(self.auth_tokens)} hidden>, "
            f"events_basic_auth=<{len(self.events_basic_auth)} hidden>, "
            f"insecure_skip_signature={self.insecure_skip_signature})"
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        overrides: Mapping[str, str] | None = None,
        require_auth_token: bool = True,
    ) -> Settings:
        """Parse settings from environment variables; raise ConfigError on the first bad one.

        `overrides` are values given on the command line, by variable name: they win.
        `require_auth_token=False` is for the commands that validate no signature (show,
        migrate, reconcile's store): they work without TWILIO_AUTH_TOKEN."""
        env = {**(os.environ if env is None else env), **(overrides or {})}
        skip = _flag(env, "EXPORTER_INSECURE_SKIP_SIGNATURE", default=False)
        tokens = _list(env.get("TWILIO_AUTH_TOKEN", ""))
        shared_keys = _shared_keys(env.get("EXPORTER_WEBHOOK_SHARED_KEYS", ""))
        if require_auth_token and not tokens and not shared_keys and not skip:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN",
                "required to validate Twilio's signatures; set it to your auth token "
                "(comma-separated for rotation), or EXPORTER_INSECURE_SKIP_SIGNATURE=1 "
                "for a local demo",
            )
        metric_tags = _list(env.get("EXPORTER_METRIC_TAGS", ""))
        for name in metric_tags:
            if not TAG_NAME.match(name):
                raise ConfigError(
                    "EXPORTER_METRIC_TAGS",
                    f"{name!r} is not a valid tag name (letters, digits, underscore)",
                )
        synchronous = env.get("EXPORTER_SQLITE_SYNCHRONOUS", "NORMAL").strip().upper()
        if synchronous not in {"NORMAL", "FULL"}:
            raise ConfigError("EXPORTER_SQLITE_SYNCHRONOUS", "must be NORMAL or FULL")
        return cls(
            auth_tokens=tuple(tokens),
            account_sid=_account_sid(env.get("TWILIO_ACCOUNT_SID", "")),
            public_url=_public_url(env.get("EXPORTER_PUBLIC_URL", "")),
            store_url=_store_url(env.get("EXPORTER_STORE", "") or DEFAULT_STORE),
            insecure_skip_signature=skip,
            shared_keys=shared_keys,
            trusted_proxies=_networks(env.get("EXPORTER_TRUSTED_PROXIES", "")),
            max_body_bytes=env_int(env, "EXPORTER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024),
            events_basic_auth=_basic_credentials(env.get("EXPORTER_EVENTS_BASIC_AUTH", "")),
            events_max_body_bytes=env_int(
                env, "EXPORTER_EVENTS_MAX_BODY_BYTES", DEFAULT_EVENTS_MAX_BODY_BYTES, 1024
            ),
            stale_after=_duration(env, "EXPORTER_STALE_AFTER", DEFAULT_STALE_AFTER, 1.0),
            retention=_duration(env, "EXPORTER_RETENTION", DEFAULT_RETENTION, 0.0),
            sweep_interval=_duration(env, "EXPORTER_SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL, 0.1),
            metric_tags=tuple(metric_tags),
            metric_tag_values_max=env_int(env, "EXPORTER_METRIC_TAG_VALUES_MAX", 50, 1),
            senders_max=env_int(env, "EXPORTER_SENDERS_MAX", DEFAULT_SENDERS_MAX, 0),
            redact_phone_numbers=_flag(env, "EXPORTER_REDACT_PHONE_NUMBERS", default=True),
            sqlite_synchronous=synchronous,
            metrics_directory=metrics_directory(env),
            trace_url=_trace_url(env.get("EXPORTER_TRACE_URL", "")),
        )

    def trace_link(self, trace_id: str) -> str | None:
        """The trace's page in the tracing UI, when EXPORTER_TRACE_URL is set."""
        return self.trace_url.replace(TRACE_ID_PLACEHOLDER, trace_id) if self.trace_url else None


@dataclass(frozen=True)
class ServerSettings:
    """How gunicorn runs the service: where it listens, how many workers, how much it logs."""

    bind: str = DEFAULT_BIND
    workers: int = 2
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        """EXPORTER_BIND, WEB_CONCURRENCY (gunicorn's own name for it) and EXPORTER_LOG_LEVEL."""
        env = os.environ if env is None else env
        log_level = env.get("EXPORTER_LOG_LEVEL", "").strip().lower() or "info"
        if log_level not in LOG_LEVELS:
            raise ConfigError("EXPORTER_LOG_LEVEL", f"{log_level!r} is not one of {LOG_LEVELS}")
        return cls(
            bind=_bind(env.get("EXPORTER_BIND", "")),
            # One worker per CPU, and two at least so one slow request never stalls the rest.
            workers=env_int(env, "WEB_CONCURRENCY", max(2, os.cpu_count() or 1), 1),
            log_level=log_level,
        )


def metrics_directory(env: Mapping[str, str] | None = None) -> str | None:
    """PROMETHEUS_MULTIPROC_DIR, or None when metrics live in this one process."""
    env = os.environ if env is None else env
    return env.get(METRICS_DIRECTORY_VARIABLE, "").strip() or None


@dataclass(frozen=True)
class ApiCredentials:
    """Who reconcile is to Twilio's REST API: the account, and its auth token or an API key."""

    account_sid: str
    username: str  # the account SID with an auth token, the API key SID with a key secret
    password: str

    def __repr__(self) -> str:
        return f"ApiCredentials(account_sid={self.account_sid!r}, username={self.username!r})"


def api_credentials(settings: Settings, env: Mapping[str, str] | None = None) -> ApiCredentials:
    """TWILIO_API_KEY and TWILIO_API_SECRET if both are set, else the (first) auth token, for
    the account in TWILIO_ACCOUNT_SID; ConfigError naming what is missing."""
    env = os.environ if env is None else env
    account = settings.account_sid
    if account is None:
        raise ConfigError(
            "TWILIO_ACCOUNT_SID", "required (AC...), the account whose messages are reconciled"
        )
    key, secret = env.get("TWILIO_API_KEY", "").strip(), env.get("TWILIO_API_SECRET", "").strip()
    if key or secret:
        if not (key and secret):
            raise ConfigError(
                "TWILIO_API_KEY" if not key else "TWILIO_API_SECRET",
                "set both TWILIO_API_KEY and TWILIO_API_SECRET, or neither",
            )
        return ApiCredentials(account, key, secret)
    if not settings.auth_tokens:
        raise ConfigError(
            "TWILIO_AUTH_TOKEN",
            "required for the REST API (or TWILIO_API_KEY and TWILIO_API_SECRET)",
        )
    return ApiCredentials(account, account, settings.auth_tokens[0])


def twilio_api_base(flag: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """Another base URL for Twilio's REST API (a test double, a proxy): the `--api-base` flag,
    else TWILIO_API_BASE; None for Twilio's own."""
    env = os.environ if env is None else env
    source, base = ("--api-base", flag) if flag else ("TWILIO_API_BASE", env.get("TWILIO_API_BASE"))
    base = (base or "").strip()
    if base and not base.startswith(("https://", "http://")):
        raise ConfigError(source, f"{base!r} must be a URL like https://api.twilio.com")
    return base or None


def signing_auth_token(env: Mapping[str, str] | None = None) -> str | None:
    """The auth token the simulator signs with: the first of TWILIO_AUTH_TOKEN, if set."""
    env = os.environ if env is None else env
    tokens = _list(env.get("TWILIO_AUTH_TOKEN", ""))
    return tokens[0] if tokens else None


def parse_duration(text: str) -> float:
    """Seconds from '90', '1.5s', '30m', '72h', '7d' or '2w'; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 72h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ConfigError(name, f"{value!r} is not a boolean; use 1 or 0")


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    """A whole number from the environment, at least `minimum`; ConfigError naming it if not."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(name, f"{value!r} is not a whole number") from None
    if number < minimum:
        raise ConfigError(name, f"must be at least {minimum}")
    return number


def _duration(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as ex:
        raise ConfigError(name, str(ex)) from None
    if seconds < minimum:
        raise ConfigError(name, f"must be at least {minimum:g}s")
    return seconds


def _public_url(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(
            "EXPORTER_PUBLIC_URL",
            f"{text!r} must be an absolute http(s) URL such as https://hooks.example.com",
        )
    if parts.query or parts.fragment:
        raise ConfigError("EXPORTER_PUBLIC_URL", "must not carry a query string or fragment")
    return text.rstrip("/")


def _trace_url(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    example = "e.g. http://tempo.example/trace/{trace_id}"
    if not text.startswith(("http://", "https://")):
        raise ConfigError("EXPORTER_TRACE_URL", f"{text!r} must be an http(s) URL, {example}")
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - {TRACE_ID_PLACEHOLDER})
    if unknown:
        raise ConfigError(
            "EXPORTER_TRACE_URL",
            f"unknown placeholder {', '.join(unknown)}: {TRACE_ID_PLACEHOLDER} is the only one",
        )
    if TRACE_ID_PLACEHOLDER not in text:
        raise ConfigError(
            "EXPORTER_TRACE_URL",
            f"must contain {TRACE_ID_PLACEHOLDER} where the id goes, {example}",
        )
    return text


def _account_sid(text: str) -> str | None:
    text = text.strip()
    if text and not text.startswith("AC"):
        raise ConfigError("TWILIO_ACCOUNT_SID", f"{text!r} is not an account SID (AC...)")
    return text or None


def _bind(text: str) -> str:
    text = text.strip()
    if not text:
        return DEFAULT_BIND
    if text.startswith("unix:"):
        return text
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("EXPORTER_BIND", f"{text!r} is not HOST:PORT (or unix:PATH)")
    return text


def _store_url(text: str) -> str:
    text = text.strip()
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    if text.startswith(("postgresql://", "postgres://")):
        return text
    raise ConfigError(
        "EXPORTER_STORE",
        f"{redact_url(text)!r} is not sqlite:///PATH or postgresql://USER@HOST/DB",
    )


def _shared_keys(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in _list(text):
        key_id, sep, secret = item.partition("=")
        if not sep or not key_id.strip() or not secret.strip():
            raise ConfigError(
                "EXPORTER_WEBHOOK_SHARED_KEYS", "expected KEY_ID=SECRET pairs separated by commas"
            )
        keys[key_id.strip()] = secret.strip()
    return keys


def _basic_credentials(text: str) -> tuple[tuple[str, str], ...]:
    credentials = []
    for item in _list(text):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                "EXPORTER_EVENTS_BASIC_AUTH",
                "expected USER:PASSWORD (the sink URL's user info), comma-separated for rotation",
            )
        credentials.append((user, password))
    return tuple(credentials)


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _list(text):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                "EXPORTER_TRUSTED_PROXIES", f"{item!r} is not an IP address or CIDR range"
            ) from None
    return tuple(networks)


def redact_url(url: str) -> str:
    """Drop the password from a store URL before it is shown anywhere."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
