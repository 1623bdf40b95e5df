"""Message traces, set up from the OTEL_* variables.

One trace per message: a root span `twilio.message` from creation (or first sight) to the
final status, and a child span per stage. Ids are derived from the MessageSid, so no
coordination is needed between processes or replicas, and a retried callback (a duplicate)
never makes a second span. Spans are built when their event is applied, queued in the store
with it (outbox.py), and exported from there by the ingester (shipper.py).
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from prometheus_client import Counter

from exporter import __version__
from exporter.settings import ConfigError, Settings
from exporter.telemetry.tracing.config import TracingConfig
from exporter.telemetry.tracing.export import quiet_exporter_logs
from exporter.telemetry.tracing.outbox import RequestExporter, SpanOutbox
from exporter.telemetry.tracing.spans import MessageSpans

__all__ = [
    "MessageSpans",
    "SpanOutbox",
    "TracingConfig",
    "exporters_from_env",
    "service_resource",
    "span_outbox_from_env",
]
log = logging.getLogger(__name__)
DEFAULT_SERVICE_NAME = "twilio-status-exporter"


def span_outbox_from_env(settings: Settings, spans_dropped: Counter) -> SpanOutbox | None:
    """What encodes spans for the store's outbox, or None when the OTEL_* variables turn
    tracing off (then no span is queued at all). Spans that cannot be built are counted in
    `spans_dropped`."""
    try:
        config = TracingConfig.from_env()
    except ConfigError as ex:  # startup checks these first; tracing never stops the service
        log.error("traces are not exported: %s", ex)
        return None
    if not config.enabled:
        return None
    return SpanOutbox(
        redact_phone_numbers=settings.redact_phone_numbers,
        report_dropped=lambda count, _reason: spans_dropped.inc(count),
    )


def exporters_from_env() -> list[RequestExporter]:
    """The span exporters the OTEL_* variables ask for (none when tracing is off)."""
    config = TracingConfig.from_env()
    if not config.enabled:
        return []
    quiet_exporter_logs()
    log.info("exporting traces with %s (%s)", ", ".join(config.exporters), config.protocol)
    return [_exporter(name, config) for name in config.exporters]


def service_resource() -> Resource:
    """Resource from OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME, with our name and version
    where they say nothing."""
    detected = Resource.create()
    defaults: dict[str, str] = {}
    if str(detected.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if SERVICE_VERSION not in detected.attributes:
        defaults[SERVICE_VERSION] = __version__
    return detected.merge(Resource(defaults)) if defaults else detected


def _exporter(name: str, config: TracingConfig) -> RequestExporter:
    """The exporters read their endpoint, headers, certificates and compression from OTEL_*."""
    # Imported here: the OTLP exporters (gRPC above all) cost a process that does not trace.
    from exporter.telemetry.tracing import request_exporters

    if name == "console":
        return request_exporters.ConsoleRequestExporter()
    if config.protocol == "grpc":
        return request_exporters.GrpcRequestExporter(timeout=config.export_timeout)
    return request_exporters.HttpRequestExporter(timeout=config.export_timeout)
