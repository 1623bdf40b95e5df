"""Message traces: the interface the web layer calls, and its set-up from the OTEL_* variables.

One trace per message: a root span `twilio.message` from creation (or first
sight) to the final status, and a child span per stage. Ids are derived from the MessageSid,
so no coordination is needed between workers or replicas, and a retried callback (which the
store reports as a duplicate) never makes a second span.
"""

from __future__ import annotations

import atexit
import logging
from typing import Protocol

from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from prometheus_client import Counter

from exporter import __version__
from exporter.model import MessageState, Recorded, StatusEvent
from exporter.settings import ConfigError, Settings
from exporter.telemetry.tracing.config import TracingConfig
from exporter.telemetry.tracing.export import (
    BoundedBatchSpanProcessor,
    DropReporter,
    quiet_exporter_logs,
)
from exporter.telemetry.tracing.spans import MessageSpans

__all__ = ["MessageSpans", "MessageTracer", "NoTracer", "TracingConfig", "tracer_from_env"]
log = logging.getLogger(__name__)
DEFAULT_SERVICE_NAME = "twilio-status-exporter"


class MessageTracer(Protocol):
    """Turns recorded lifecycle steps into spans. Must never raise or block a callback."""

    def record(self, event: StatusEvent, recorded: Recorded) -> None: ...

    def record_stale(self, message: MessageState, now: float) -> None: ...

    def shutdown(self) -> None: ...


class NoTracer:
    """Tracing switched off (OTEL_TRACES_EXPORTER=none)."""

    def record(self, event: StatusEvent, recorded: Recorded) -> None:
        pass

    def record_stale(self, message: MessageState, now: float) -> None:
        pass

    def shutdown(self) -> None:
        pass


def tracer_from_env(settings: Settings, spans_dropped: Counter) -> MessageTracer:
    """The tracer the OTEL_* variables ask for. Call it in the worker, after gunicorn forks: the
    batch processor's export thread must belong to the process that records the spans. The
    processor is flushed (for a few seconds at most) when the worker exits."""
    try:
        config = TracingConfig.from_env()
    except ConfigError as ex:  # startup checks these first; a worker never dies of tracing
        log.error("traces are not exported: %s", ex)
        return NoTracer()
    if not config.enabled:
        return NoTracer()
    report = DropReporter(spans_dropped)
    try:
        processors = [
            BoundedBatchSpanProcessor(
                _exporter(name, config), report, max_queue_size=config.max_queue_size
            )
            for name in config.exporters
        ]
    except Exception:
        log.exception("traces are not exported: the span exporter could not be set up")
        return NoTracer()
    tracer = MessageSpans(
        _combined(processors),
        service_resource(),
        redact_phone_numbers=settings.redact_phone_numbers,
        report_dropped=report,
    )
    quiet_exporter_logs()
    atexit.register(tracer.shutdown)
    log.info("exporting traces with %s (%s)", ", ".join(config.exporters), config.protocol)
    return tracer


def service_resource() -> Resource:
    """Resource from OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME, with our name and version
    where they say nothing."""
    detected = Resource.create()
    defaults: dict[str, str] = {}
    if str(detected.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if SERVICE_VERSION not in detected.attributes:
        defaults[SERVICE_VERSION] = __version__
    return HashedResource(detected.merge(Resource(defaults)) if defaults else detected)


# Kept because the OTLP encoders hash every exported span's resource, and the SDK's hash
# serialises all its attributes each time; tests/test_hashed_resource.py fails if that changes.
class HashedResource(Resource):
    """A Resource that computes its hash once. The OTLP encoders group every exported span by
    its resource, and Resource.__hash__ serialises all the attributes to JSON each time, in
    the export thread, holding the GIL the request threads wait for. A resource's attributes
    are immutable, so the hash never changes."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def _exporter(name: str, config: TracingConfig) -> SpanExporter:
    """The exporters read their endpoint, headers, certificates and compression from OTEL_*."""
    if name == "console":
        return ConsoleSpanExporter()
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(timeout=config.export_timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(timeout=config.export_timeout)


def _combined(processors: list[BoundedBatchSpanProcessor]) -> SpanProcessor:
    if len(processors) == 1:
        return processors[0]
    combined = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    for processor in processors:
        combined.add_span_processor(processor)
    return combined
