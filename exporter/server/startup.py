"""Checks run once before serving: configuration, store reachable, loud warnings."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

from exporter.settings import ConfigError, Settings, redact_url
from exporter.store import StoreUnavailable, open_store
from exporter.telemetry.tracing import TracingConfig

log = logging.getLogger("exporter")


def check_startup(settings: Settings | None = None) -> Settings:
    """Validate settings (read from the environment unless given) and open the store once
    (creating its schema); on any problem print one line naming it and exit with status 2,
    never a traceback."""
    try:
        settings = Settings.from_env() if settings is None else settings
        TracingConfig.from_env()  # the OTEL_* values a worker would otherwise trip over
    except ConfigError as ex:
        fail(str(ex))
    try:
        store = open_store(settings.store_url, synchronous=settings.sqlite_synchronous)
        store.check_writable()
        store.close()
    except (StoreUnavailable, OSError, ValueError) as ex:
        fail(f"EXPORTER_STORE: cannot open {redact_url(settings.store_url)}: {ex}")
    if settings.insecure_skip_signature:
        log.warning(
            "EXPORTER_INSECURE_SKIP_SIGNATURE=1: Twilio signatures are NOT validated; anyone "
            "who can reach this service can forge callbacks. Use this for local demos only."
        )
    return settings


def store_command_settings(store: str | None) -> Settings:
    """Settings for a command that only works on the store (show, migrate, reconcile): it
    validates no signature, so it needs no auth token; `store` (its --store flag) wins over
    EXPORTER_STORE; a bad value ends the command with one line naming it."""
    overrides = {"EXPORTER_STORE": store} if store else {}
    try:
        return Settings.from_env(overrides=overrides, require_auth_token=False)
    except ConfigError as ex:
        fail(str(ex))


def fail(message: str) -> NoReturn:
    print(f"twilio-status-exporter: error: {message}", file=sys.stderr)
    raise SystemExit(2)
