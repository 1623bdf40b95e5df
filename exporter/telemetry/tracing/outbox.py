"""Spans as the store keeps them until export: built when their event is applied, encoded as
a small JSON object in the same transaction, decoded again by the exporter.

The store is the outbox: a span is queued with the event that produced it, so a collector
that is down, or a process killed at any moment, delays spans and loses none. The resource
and the instrumentation scope are the exporting process's, added when a span is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanContext, Status, StatusCode

from exporter.model import MessageState, Recorded, StatusEvent
from exporter.telemetry.tracing.spans import KIND, SAMPLED, SCOPE, MessageSpans

_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
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
        encoded = [encode_span(span) for span in self._built]
        self._built.clear()
        return encoded


class _Collect(SpanProcessor):
    """Keeps the spans MessageSpans hands over, for SpanOutbox to encode."""

    def __init__(self, into: list[ReadableSpan]) -> None:
        self._into = into

    def on_end(self, span: ReadableSpan) -> None:
        self._into.append(span)


def encode_span(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None  # every span MessageSpans builds has one
    parent = span.parent
    return _encode_json(
        {
            "name": span.name,
            "trace": f"{context.trace_id:032x}",
            "span": f"{context.span_id:016x}",
            "parent": f"{parent.span_id:016x}" if parent is not None else None,
            "parent_remote": bool(parent.is_remote) if parent is not None else False,
            "start": span.start_time,
            "end": span.end_time,
            "attributes": dict(span.attributes or {}),
            "status": span.status.status_code.value,
            "description": span.status.description,
        }
    )


def decode_span(encoded: str, resource: Resource) -> ReadableSpan:
    fields = json.loads(encoded)
    trace_id = int(fields["trace"], 16)
    parent = None
    if fields["parent"] is not None:
        parent = SpanContext(trace_id, int(fields["parent"], 16), fields["parent_remote"], SAMPLED)
    return ReadableSpan(
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
