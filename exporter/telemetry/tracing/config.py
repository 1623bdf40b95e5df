"""Trace export settings from the standard OTEL_* variables, checked once at start.

The OpenTelemetry exporters read their own variables (endpoints, headers, certificates,
compression); this module only decides which exporters to build and checks the values that
would otherwise fail inside a worker, or be silently replaced by the SDK's defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.settings import ConfigError

EXPORTERS = ("otlp", "console")
# The OpenTelemetry specification: "the default transport SHOULD be http/protobuf". The Python
# SDK's own auto-configuration picks grpc; we follow the specification (and Jaeger's and
# Tempo's documented defaults work with either: 4318 for HTTP, 4317 for gRPC).
DEFAULT_PROTOCOL = "http/protobuf"
PROTOCOLS = ("grpc", "http/protobuf")
# Export requests give up after this many seconds unless OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT
# says otherwise (a healthy collector answers far sooner; the spans of a failed export stay
# queued in the store and are sent again).
DEFAULT_EXPORT_TIMEOUT_SECONDS = 5.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class TracingConfig:
    """Which span exporters to run, over which protocol."""

    exporters: tuple[str, ...] = ("otlp",)
    protocol: str = DEFAULT_PROTOCOL
    # None: the exporter reads OTEL_EXPORTER_OTLP_TRACES_TIMEOUT / OTEL_EXPORTER_OTLP_TIMEOUT.
    export_timeout: float | None = DEFAULT_EXPORT_TIMEOUT_SECONDS

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingConfig:
        """Read the OTEL_* variables; raise ConfigError naming the first bad one."""
        env = os.environ if env is None else env
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
            return cls(exporters=())
        return cls(
            exporters=_exporters(env.get("OTEL_TRACES_EXPORTER", "")),
            protocol=_protocol(env),
            export_timeout=_export_timeout(env),
        )


def _exporters(text: str) -> tuple[str, ...]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()] or ["otlp"]
    for name in names:
        if name not in (*EXPORTERS, "none"):
            raise ConfigError(
                "OTEL_TRACES_EXPORTER",
                f"{name!r} is not supported; use otlp (default), console or none",
            )
    return tuple(dict.fromkeys(name for name in names if name != "none"))


def _protocol(env: Mapping[str, str]) -> str:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(variable, "").strip().lower()
        if not value:
            continue
        if value not in PROTOCOLS:
            raise ConfigError(
                variable, f"{value!r} is not supported; use grpc or http/protobuf (default)"
            )
        return value
    return DEFAULT_PROTOCOL


def _export_timeout(env: Mapping[str, str]) -> float | None:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = env.get(variable, "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(variable, f"{value!r} is not a number of seconds") from None
        if not seconds > 0:
            raise ConfigError(variable, "must be a positive number of seconds")
        return None  # valid: the exporter reads it itself
    return DEFAULT_EXPORT_TIMEOUT_SECONDS
