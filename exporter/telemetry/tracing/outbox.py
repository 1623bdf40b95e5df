"""Spans as the store keeps them until export: built when their event is applied, encoded
once into the protobuf `Span` a collector receives (opentelemetry-proto's own message), and
queued (as base64 text) in the same transaction. The shipper puts queued spans into an export
request as they are: no span is decoded or encoded twice.

The store is the outbox: a span is queued with the event that produced it, so a collector
that is down, or a process killed at any moment, delays spans and loses none. The resource
and the instrumentation scope are the exporting process's, added to each request.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanContext, Status, StatusCode

from exporter.model import MessageState, Recorded, StatusEvent
from exporter.telemetry.tracing.spans import KIND, SAMPLED, SCOPE, MessageSpans

log = logging.getLogger(__name__)
_EMPTY_RESOURCE = Resource({})


class SpanOutbox:
    """Encodes the spans that recording events (or marking messages stale) produced, for the
    store to queue in the same transaction."""

    def __init__(
        self,
        *,
        redact_phone_numbers: bool = True,
        report_dropped: Callable[[int, str], None] | None = None,
    ) -> None:
        self._built: list[ReadableSpan] = []
        self._spans = MessageSpans(
            _Collect(self._built),
            _EMPTY_RESOURCE,
            redact_phone_numbers=redact_phone_numbers,
            report_dropped=report_dropped,  # a span that could not be built
        )

    def encode(self, events: Sequence[StatusEvent], recorded: Sequence[Recorded]) -> list[str]:
        for event, outcome in zip(events, recorded, strict=True):
            self._spans.record(event, outcome)
        return self._take()

    def encode_stale(self, messages: Sequence[MessageState], now: float) -> list[str]:
        for message in messages:
            self._spans.record_stale(message, now)
        return self._take()

    def _take(self) -> list[str]:
        if not self._built:
            return []
        encoded = [encode_span(otlp_span(span)) for span in self._built]
        self._built.clear()
        return encoded


class Batch(NamedTuple):
    """An encoded export request and how many spans it holds."""

    request: ExportTraceServiceRequest
    spans: int


class RequestExporter(Protocol):
    def export_batch(self, batch: Batch) -> bool:
        """True once the receiver took the whole batch."""

    def shutdown(self) -> None: ...


class ExportRequests:
    """OTLP export requests made of queued spans, under one resource and our scope."""

    def __init__(self, resource: Resource) -> None:
        # The resource and scope as the SDK's encoder writes them, taken from a request for
        # one placeholder span.
        placeholder = ReadableSpan(
            name="", context=SpanContext(1, 1, False), resource=resource,
            instrumentation_scope=SCOPE,
        )  # fmt: skip
        template = encode_spans([placeholder])
        template.resource_spans[0].scope_spans[0].ClearField("spans")
        self._template = template.SerializeToString()
        self._resource = resource

    def build(self, queued: Sequence[str]) -> Batch:
        request = ExportTraceServiceRequest.FromString(self._template)
        spans = request.resource_spans[0].scope_spans[0].spans
        for encoded in queued:
            if encoded.startswith("{"):
                spans.append(_from_json(encoded, self._resource))
            else:
                spans.add().ParseFromString(base64.b64decode(encoded))
        return Batch(request, len(queued))


class _Collect(SpanProcessor):
    """Keeps the spans MessageSpans hands over, for SpanOutbox to encode."""

    def __init__(self, into: list[ReadableSpan]) -> None:
        self._into = into

    def on_end(self, span: ReadableSpan) -> None:
        self._into.append(span)


def encode_span(span: Span) -> str:
    return base64.b64encode(span.SerializeToString()).decode("ascii")


def decode_span(encoded: str) -> Span:
    """A queued span, back as the protobuf it was encoded from (for tests and tools)."""
    span = Span()
    span.ParseFromString(base64.b64decode(encoded))
    return span


# Our spans' kind, and their flags: the SDK's encoder says whether the parent is remote.
_KIND = Span.SpanKind.Value(f"SPAN_KIND_{KIND.name}")
_LOCAL_PARENT = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE_PARENT = _LOCAL_PARENT | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def otlp_span(span: ReadableSpan) -> Span:
    """One of our spans as OTLP: the message the SDK's encoder (`encode_spans`) makes of it,
    field for field (a test holds the two equal), for the spans MessageSpans builds (of one
    kind, no events, links or trace state, attributes of scalar values). That encoder groups spans
    by resource, hashing the resource's JSON for every span, and converts each attribute
    through a chain of calls: the largest part of the ingester's time (bench/results)."""
    context = span.context
    encoded = Span(
        trace_id=context.trace_id.to_bytes(16, "big"),
        span_id=context.span_id.to_bytes(8, "big"),
        name=span.name,
        kind=_KIND,
        start_time_unix_nano=span.start_time or 0,
        end_time_unix_nano=span.end_time or 0,
        flags=_LOCAL_PARENT,
    )
    parent = span.parent
    if parent is not None:
        encoded.parent_span_id = parent.span_id.to_bytes(8, "big")
        if parent.is_remote:
            encoded.flags = _REMOTE_PARENT
    status = span.status
    encoded.status.code = status.status_code.value  # type: ignore[assignment]  # same numbers
    if status.description:
        encoded.status.message = status.description
    attributes = encoded.attributes
    for key, value in (span.attributes or {}).items():
        attribute = attributes.add()
        attribute.key = key
        kind = value.__class__
        if kind is str:
            attribute.value.string_value = value
        elif kind is bool:
            attribute.value.bool_value = value
        elif kind is int:
            attribute.value.int_value = value
        elif kind is float:
            attribute.value.double_value = value
        else:  # none of ours; the SDK's encoder, too, leaves out what it cannot encode
            log.warning("span attribute %s left out: %s values are not encoded", key, kind)
            del attributes[-1]
    return encoded


def _from_json(encoded: str, resource: Resource) -> Span:
    """A span an earlier release queued as JSON (before an upgrade), in OTLP."""
    fields = json.loads(encoded)
    trace_id = int(fields["trace"], 16)
    parent = None
    if fields["parent"] is not None:
        parent = SpanContext(trace_id, int(fields["parent"], 16), fields["parent_remote"], SAMPLED)
    return otlp_span(
        ReadableSpan(
            name=fields["name"],
            context=SpanContext(trace_id, int(fields["span"], 16), False, SAMPLED),
            parent=parent,
            resource=resource,
            attributes=fields["attributes"],
            kind=KIND,
            status=Status(StatusCode(fields["status"]), fields["description"]),
            start_time=fields["start"],
            end_time=fields["end"],
            instrumentation_scope=SCOPE,
        )
    )
