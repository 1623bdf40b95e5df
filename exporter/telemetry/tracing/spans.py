"""A message's lifecycle as spans, built from what the store recorded, with ids derived from the
MessageSid so that every worker and replica puts one message's spans into one trace.

The SDK's Tracer draws span ids at random and times spans by the wall clock; ours come from
SHA-256 and from the recorded lifecycle. So the spans are built whole, as `ReadableSpan`s, and
handed to the span processor the way the SDK hands it every ended span (`on_end`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE, ErrorTypeValues
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from exporter import __version__, error_codes, model
from exporter.model import MessageState, Recorded, StatusEvent, Transition
from exporter.telemetry.trace_ids import message_trace_id

log = logging.getLogger(__name__)
ROOT_SPAN = "twilio.message"
ROOT_STAGE = "root"
SCOPE = InstrumentationScope("exporter.telemetry.tracing", __version__)
# INTERNAL rather than CONSUMER: these spans are a message's life at Twilio and the carriers,
# rebuilt after the fact from status reports, not work this process did on a received message.
# CONSUMER would make span-metrics and service-graph processors (Tempo's metrics-generator, the
# Collector's spanmetrics) read carrier delays as this service's processing latency and draw
# an edge from the sender's span to the exporter.
KIND = SpanKind.INTERNAL
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
# Country calling codes: 1 to 3 digits, none a prefix of another (ITU E.164).
_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

# Contract attribute names, written out: semantic-conventions has the messaging ones only in
# its private `_incubating` modules, whose names may still change in an SDK upgrade (which pins
# that package exactly); a contract name must not move with it.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_MESSAGE_ID = "messaging.message.id"

Attributes = dict[str, AttributeValue]


def span_id_for(message_sid: str, stage: str) -> int:
    """First 8 bytes of SHA-256(MessageSid + ":" + stage); stage is `root` or the status."""
    digest = hashlib.sha256(f"{message_sid}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def span_name(status: str) -> str:
    """`twilio.message.delivered`; unknown statuses share `twilio.message.other`."""
    return f"{ROOT_SPAN}.{model.status_label(status)}"


@lru_cache(maxsize=4096)  # a sender's few From numbers come back on every callback
def redact_number(address: str) -> str:
    """`+4915112345678` -> `+49*********78`: calling code and last two digits kept, a channel
    prefix (`whatsapp:`) kept; anything not E.164 keeps only its last two characters."""
    prefix, _, number = address.rpartition(":")
    head = ""
    if number.startswith("+") and number[1:].isdigit():
        digits = number[1:]
        code = next((digits[:n] for n in (1, 2, 3) if digits[:n] in _CALLING_CODES), "")
        head, number = f"+{code}", digits[len(code) :]
    keep = 2 if len(number) > 4 else 0
    masked = "*" * (len(number) - keep) + number[len(number) - keep :]
    return f"{prefix}:{head}{masked}" if prefix else f"{head}{masked}"


class _Trace(NamedTuple):
    """Where a message's spans go: its trace, its root span, and the root's parent (the
    sender's span when the callback URL carried a traceparent)."""

    trace_id: int
    root: SpanContext
    parent: SpanContext | None


def _trace_of(message: MessageState) -> _Trace:
    sid = message.message_sid
    trace_id = message_trace_id(message)  # the id the message's exemplars name too
    traceparent = message.traceparent  # validated when the callback was parsed
    parent = None
    if traceparent:
        parent = SpanContext(trace_id, int(traceparent[36:52], 16), True, SAMPLED)
    return _Trace(
        trace_id, SpanContext(trace_id, span_id_for(sid, ROOT_STAGE), False, SAMPLED), parent
    )


def _failure(attributes: Attributes, status: str, code: str | None) -> Status:
    """ERROR with the code's meaning; `error.type` is the semantic-convention attribute."""
    error = error_codes.describe(code)
    attributes[ERROR_TYPE] = error.code or ErrorTypeValues.OTHER.value
    attributes["twilio.error.class"] = str(error.error_class)
    description = error.description if code else f"{status}: {error.meaning}"
    return Status(StatusCode.ERROR, description)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class MessageSpans:
    """The OpenTelemetry MessageTracer: one span per recorded stage, and the root span once the
    message is final or stale. Never raises: a failure costs the span, counted as dropped."""

    def __init__(
        self,
        processor: SpanProcessor,
        resource: Resource,
        *,
        redact_phone_numbers: bool = True,
        report_dropped: Callable[[int, str], None] | None = None,
    ) -> None:
        self._processor = processor
        self._resource = resource
        self._redact = redact_phone_numbers
        self._report = report_dropped

    def record(self, event: StatusEvent, recorded: Recorded) -> None:
        transition = recorded.transition
        if transition is None:  # a duplicate: its span was emitted the first time
            return
        try:
            message = recorded.message
            trace = _trace_of(message)
            self._processor.on_end(self._stage_span(event, message, transition, trace))
            # A message that went stale had its root span emitted by the sweep.
            if transition.reached_final and message.stale_at is None:
                self._processor.on_end(self._root_span(message, transition.at, trace, False))
        except Exception as ex:
            self._failed("record", event.message_sid, ex)

    def record_stale(self, message: MessageState, now: float) -> None:
        try:
            self._processor.on_end(self._root_span(message, now, _trace_of(message), True))
        except Exception as ex:
            self._failed("record_stale", message.message_sid, ex)

    def _stage_span(
        self, event: StatusEvent, message: MessageState, transition: Transition, trace: _Trace
    ) -> ReadableSpan:
        # Stage spans carry what differs per stage, plus what queries slice stages by; the rest
        # of the message's context is on the root. Every attribute adds OTLP encoding work in the
        # export thread, under the GIL the request threads need.
        attributes: Attributes = {
            MESSAGING_SYSTEM: "twilio",
            MESSAGING_MESSAGE_ID: message.message_sid,
            "twilio.message.status": transition.status,
            "twilio.channel": message.channel,
            "twilio.callback.out_of_order": transition.out_of_order,
        }
        if message.country:
            attributes["twilio.destination.country"] = message.country
        if event.source != "callback":
            attributes["twilio.event.source"] = event.source
        if transition.from_status is not None:
            attributes["twilio.message.from_status"] = transition.from_status
        if event.raw_dlr_done_date:
            attributes["twilio.raw_dlr_done_date"] = event.raw_dlr_done_date
        if event.segments is not None:
            attributes["twilio.message.segments"] = event.segments
        if event.mcc:
            attributes["twilio.mcc"] = event.mcc
        if event.mnc:
            attributes["twilio.mnc"] = event.mnc
        if event.error_code:
            attributes["twilio.error_code"] = event.error_code
        status = _UNSET
        if transition.status in model.FAILED_STATUSES:
            status = _failure(attributes, transition.status, event.error_code)
        span_id = span_id_for(event.message_sid, transition.status)
        return ReadableSpan(
            name=span_name(transition.status),
            context=SpanContext(trace.trace_id, span_id, False, SAMPLED),
            parent=trace.root,
            resource=self._resource,
            attributes=attributes,
            kind=KIND,
            status=status,
            start_time=_ns(transition.started_at),
            end_time=_ns(transition.at),
            instrumentation_scope=SCOPE,
        )

    def _root_span(
        self, message: MessageState, end: float, trace: _Trace, stale: bool
    ) -> ReadableSpan:
        attributes = self._message_attributes(message)
        attributes["twilio.message.status"] = message.status
        attributes["twilio.message.origin"] = (
            "created" if message.created_at is not None else "first_seen"
        )
        attributes["twilio.message.stale"] = stale
        status = _UNSET
        if message.status in model.FAILED_STATUSES:
            if message.error_code:
                attributes["twilio.error_code"] = message.error_code
            status = _failure(attributes, message.status, message.error_code)
        start = message.origin
        return ReadableSpan(
            name=ROOT_SPAN,
            context=trace.root,
            parent=trace.parent,
            resource=self._resource,
            attributes=attributes,
            kind=KIND,
            status=status,
            start_time=_ns(start),
            end_time=_ns(max(start, end)),
            instrumentation_scope=SCOPE,
        )

    def _message_attributes(self, message: MessageState) -> Attributes:
        attributes: Attributes = {
            MESSAGING_SYSTEM: "twilio",
            MESSAGING_MESSAGE_ID: message.message_sid,
            "twilio.channel": message.channel,
        }
        if message.account_sid:
            attributes["twilio.account_sid"] = message.account_sid
        if message.messaging_service_sid:
            attributes["twilio.messaging_service_sid"] = message.messaging_service_sid
        if message.country:
            attributes["twilio.destination.country"] = message.country
        if message.to:
            attributes["twilio.to"] = redact_number(message.to) if self._redact else message.to
        if message.from_:
            from_ = message.from_
            attributes["twilio.from"] = redact_number(from_) if self._redact else from_
        for name, value in message.tags.items():
            attributes[f"twilio.tag.{name}"] = value
        return attributes

    def _failed(self, operation: str, message_sid: str, ex: Exception) -> None:
        log.debug("%s failed for %s", operation, message_sid, exc_info=True)
        if self._report is not None:
            self._report(1, f"{operation} failed: {type(ex).__name__}: {ex}")
