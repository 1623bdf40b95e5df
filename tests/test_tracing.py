"""Message traces: ids, names, timing, attributes and the export that never blocks a callback."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from exporter.inputs.callback_form import FormParams, parse_callback
from exporter.server.sweeper import Sweeper
from exporter.settings import ConfigError, Settings
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing import (
    MessageSpans,
    SpanOutbox,
    TracingConfig,
    exporters_from_env,
    span_outbox_from_env,
)
from exporter.telemetry.tracing import service_resource as make_resource
from exporter.telemetry.tracing.export import RateLimitFilter
from exporter.telemetry.tracing.outbox import ExportRequests, decode_span, otlp_span
from exporter.telemetry.tracing.shipper import ExportFailed, SpanShipper
from exporter.telemetry.tracing.spans import SCOPE, message_trace_id, redact_number
from exporter.web.app import Telemetry
from tests.apps import inline_client
from tests.otlp_receiver import (
    STATUS_UNSET,
    OTLPReceiver,
    ReceivedSpan,
    RecordingExporter,
    spans_of,
)
from tests.support import callback_params, sid

T0 = 1_700_000_000.0
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RESOURCE = Resource.create({"service.name": "test"})


def trace_id(message_sid: str) -> int:
    digest = hashlib.sha256(f"twilio.message:{message_sid}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def span_id(message_sid: str, stage: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{message_sid}:{stage}".encode()).digest()[:8], "big")


def ns(seconds: float) -> int:
    return round(seconds * 1e9)


def assert_times(span: ReadableSpan, start: float, end: float) -> None:
    assert span.start_time is not None and span.end_time is not None
    assert abs(span.start_time - ns(start)) < 1000
    assert abs(span.end_time - ns(end)) < 1000


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(span_exporter: InMemorySpanExporter) -> MessageSpans:
    return MessageSpans(SimpleSpanProcessor(span_exporter), RESOURCE)


class Callbacks:
    """Records callbacks in a real store and hands the outcome to the tracer, or has the store
    queue their spans in its outbox (`spans`), as the ingester does."""

    def __init__(
        self,
        store: SQLiteStore,
        tracer: MessageSpans | None = None,
        *,
        spans: SpanOutbox | None = None,
    ) -> None:
        self.store = store
        self.tracer = tracer
        self.spans = spans

    def post(self, message_sid: str, status: str, at: float, query: str = "", **extra: str) -> None:
        form = FormParams(
            {k: [v] for k, v in callback_params(message_sid, status, **extra).items()}
        )
        event = parse_callback(form, query, at)
        if self.spans is not None:
            self.store.record_all([event], spans=self.spans.encode)
        else:
            assert self.tracer is not None
            self.tracer.record(event, self.store.record(event))


@pytest.fixture
def callbacks(sqlite_store: SQLiteStore, tracer: MessageSpans) -> Callbacks:
    return Callbacks(sqlite_store, tracer)


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def test_spans_have_ids_derived_from_the_message_sid(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 1)
    for offset, status in enumerate(["queued", "sent", "delivered"]):
        callbacks.post(message, status, T0 + offset)
    spans = by_name(span_exporter.get_finished_spans())
    assert set(spans) == {
        "twilio.message",
        "twilio.message.queued",
        "twilio.message.sent",
        "twilio.message.delivered",
    }
    root = spans["twilio.message"]
    assert root.context.trace_id == trace_id(message)
    assert root.context.span_id == span_id(message, "root")
    assert root.parent is None
    for status in ("queued", "sent", "delivered"):
        span = spans[f"twilio.message.{status}"]
        assert span.context.trace_id == trace_id(message)
        assert span.context.span_id == span_id(message, status)
        assert span.parent is not None and span.parent.span_id == span_id(message, "root")
        assert span.parent.trace_id == trace_id(message)


def test_stage_spans_run_from_the_previous_stage_to_arrival(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 2)
    callbacks.post(message, "queued", T0)
    callbacks.post(message, "sent", T0 + 2)
    callbacks.post(message, "delivered", T0 + 10)
    spans = by_name(span_exporter.get_finished_spans())
    assert_times(spans["twilio.message.queued"], T0, T0)
    assert_times(spans["twilio.message.sent"], T0, T0 + 2)
    assert_times(spans["twilio.message.delivered"], T0 + 2, T0 + 10)
    assert_times(spans["twilio.message"], T0, T0 + 10)
    assert spans["twilio.message.delivered"].attributes["twilio.message.from_status"] == "sent"


def test_root_span_starts_at_the_senders_creation_time(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 3)
    query = urlencode({"created": str(T0 - 5)})
    callbacks.post(message, "sent", T0, query)
    callbacks.post(message, "delivered", T0 + 4, query)
    spans = by_name(span_exporter.get_finished_spans())
    assert_times(spans["twilio.message.sent"], T0 - 5, T0)
    assert_times(spans["twilio.message"], T0 - 5, T0 + 4)
    assert spans["twilio.message"].attributes["twilio.message.origin"] == "created"


def test_out_of_order_stage_is_timed_from_the_latest_lower_stage_and_flagged(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 4)
    callbacks.post(message, "queued", T0)
    callbacks.post(message, "delivered", T0 + 10)
    callbacks.post(message, "sent", T0 + 12)
    spans = by_name(span_exporter.get_finished_spans())
    late = spans["twilio.message.sent"]
    assert_times(late, T0, T0 + 12)
    assert late.attributes["twilio.callback.out_of_order"] is True
    assert late.parent is not None and late.parent.span_id == span_id(message, "root")
    assert spans["twilio.message.delivered"].attributes["twilio.callback.out_of_order"] is False
    assert_times(spans["twilio.message"], T0, T0 + 10)  # one root, closed at the final status


def test_duplicate_callback_emits_no_second_span(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 5)
    callbacks.post(message, "sent", T0)
    callbacks.post(message, "sent", T0 + 1)
    callbacks.post(message, "delivered", T0 + 2)
    callbacks.post(message, "delivered", T0 + 3)
    names = sorted(span.name for span in span_exporter.get_finished_spans())
    assert names == ["twilio.message", "twilio.message.delivered", "twilio.message.sent"]


def test_unknown_statuses_get_other_spans_with_distinct_ids(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 6)
    callbacks.post(message, "Bouncing", T0)
    callbacks.post(message, "wobbling", T0 + 1)
    spans = span_exporter.get_finished_spans()
    assert [span.name for span in spans] == ["twilio.message.other"] * 2
    assert [span.attributes["twilio.message.status"] for span in spans] == ["Bouncing", "wobbling"]
    assert [span.context.span_id for span in spans] == [
        span_id(message, "Bouncing"),
        span_id(message, "wobbling"),
    ]


def test_failed_message_is_an_error_with_the_codes_meaning(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 7)
    callbacks.post(message, "sent", T0)
    callbacks.post(message, "failed", T0 + 3, ErrorCode="30007")
    spans = by_name(span_exporter.get_finished_spans())
    for name in ("twilio.message.failed", "twilio.message"):
        span = spans[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description is not None
        assert span.status.description.startswith("30007: Message filtered")
        assert span.attributes["twilio.error_code"] == "30007"
        assert span.attributes["error.type"] == "30007"
        assert span.attributes["twilio.error.class"] == "compliance"
    assert spans["twilio.message.sent"].status.status_code is StatusCode.UNSET


def test_unknown_error_code_gets_a_generic_description(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    callbacks.post(sid("SM", 8), "undelivered", T0, ErrorCode="39999")
    callbacks.post(sid("SM", 9), "failed", T0)
    spans = {
        (span.attributes["messaging.message.id"], span.name): span
        for span in span_exporter.get_finished_spans()
    }
    unknown = spans[(sid("SM", 8), "twilio.message.undelivered")].status
    assert unknown.status_code is StatusCode.ERROR
    assert unknown.description is not None and "39999" in unknown.description
    missing = spans[(sid("SM", 9), "twilio.message.failed")]
    assert missing.status.description == "failed: no ErrorCode was reported"
    assert missing.attributes["error.type"] == "_OTHER"


def test_traceparent_puts_the_message_into_the_senders_trace(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 10)
    query = urlencode({"traceparent": TRACEPARENT})
    callbacks.post(message, "sent", T0, query)
    callbacks.post(message, "delivered", T0 + 1, query)
    spans = by_name(span_exporter.get_finished_spans())
    sender_trace = int(TRACEPARENT[3:35], 16)
    root = spans["twilio.message"]
    assert root.context.trace_id == sender_trace
    assert root.context.span_id == span_id(message, "root")
    assert root.parent is not None and root.parent.is_remote
    assert root.parent.span_id == int(TRACEPARENT[36:52], 16)
    assert root.parent.trace_id == sender_trace
    for status in ("sent", "delivered"):
        span = spans[f"twilio.message.{status}"]
        assert span.context.trace_id == sender_trace
        assert span.parent is not None and span.parent.span_id == span_id(message, "root")


@pytest.mark.parametrize("query", ["", urlencode({"traceparent": TRACEPARENT})])
def test_the_stored_message_names_the_trace_its_spans_are_in(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter, query: str
) -> None:
    """What `show` prints: the trace id read back from the record is the spans' own."""
    message = sid("SM", 11)
    callbacks.post(message, "sent", T0, query)
    callbacks.post(message, "delivered", T0 + 1)
    history = callbacks.store.history(message)
    assert history is not None
    trace_ids = {span.context.trace_id for span in span_exporter.get_finished_spans()}
    assert trace_ids == {message_trace_id(history.message)}


def test_stage_spans_carry_the_stage_and_the_root_the_message_context(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 11)
    query = "tag.campaign=spring&tag.tenant=acme"
    callbacks.post(
        message,
        "delivered",
        T0,
        query,
        MessagingServiceSid=sid("MG", 1),
        RawDlrDoneDate="2311141213",
        ChannelPrefix="whatsapp",
        To="whatsapp:+4915112345678",
    )
    spans = by_name(span_exporter.get_finished_spans())
    assert dict(spans["twilio.message.delivered"].attributes) == {
        "messaging.system": "twilio",
        "messaging.message.id": message,
        "twilio.message.status": "delivered",
        "twilio.channel": "whatsapp",
        "twilio.callback.out_of_order": False,
        "twilio.destination.country": "DE",
        "twilio.raw_dlr_done_date": "2311141213",
    }
    assert dict(spans["twilio.message"].attributes) == {
        "messaging.system": "twilio",
        "messaging.message.id": message,
        "twilio.message.status": "delivered",
        "twilio.channel": "whatsapp",
        "twilio.account_sid": sid("AC", 1),
        "twilio.messaging_service_sid": sid("MG", 1),
        "twilio.destination.country": "DE",
        "twilio.to": "whatsapp:+49*********78",
        "twilio.from": "+1********00",
        "twilio.tag.campaign": "spring",
        "twilio.tag.tenant": "acme",
        "twilio.message.origin": "first_seen",
        "twilio.message.stale": False,
    }
    for span in spans.values():
        assert span.kind is SpanKind.INTERNAL
        assert span.resource is RESOURCE
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "exporter.telemetry.tracing"


def test_phone_numbers_are_redacted_by_default(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    callbacks.post(sid("SM", 12), "delivered", T0, To="whatsapp:+4915112345678")
    span = by_name(span_exporter.get_finished_spans())["twilio.message"]
    assert span.attributes["twilio.to"] == "whatsapp:+49*********78"
    assert span.attributes["twilio.from"] == "+1********00"
    values = [str(value) for value in span.attributes.values()]
    assert not any("15112345678" in value or "4155550100" in value for value in values)


def test_phone_numbers_are_kept_when_redaction_is_off(
    sqlite_store: SQLiteStore, span_exporter: InMemorySpanExporter
) -> None:
    tracer = MessageSpans(SimpleSpanProcessor(span_exporter), RESOURCE, redact_phone_numbers=False)
    Callbacks(sqlite_store, tracer).post(sid("SM", 13), "delivered", T0)
    span = by_name(span_exporter.get_finished_spans())["twilio.message"]
    assert span.attributes["twilio.to"] == "+4915112345678"
    assert span.attributes["twilio.from"] == "+14155550100"


@pytest.mark.parametrize(
    ("address", "redacted"),
    [
        ("+4915112345678", "+49*********78"),
        ("+14155550100", "+1********00"),
        ("+35312345678", "+353******78"),
        ("whatsapp:+447700900123", "whatsapp:+44********23"),
        ("12345", "***45"),
        ("MyBrand", "*****nd"),
        ("+4912", "+49**"),
    ],
)
def test_redaction_keeps_calling_code_and_last_two_digits(address: str, redacted: str) -> None:
    assert redact_number(address) == redacted


def test_read_after_delivery_is_a_child_without_a_second_root(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 14)
    callbacks.post(message, "delivered", T0, ChannelPrefix="whatsapp")
    callbacks.post(message, "read", T0 + 60, ChannelPrefix="whatsapp")
    spans = by_name(span_exporter.get_finished_spans())
    assert set(spans) == {"twilio.message", "twilio.message.delivered", "twilio.message.read"}
    read = spans["twilio.message.read"]
    assert read.parent is not None and read.parent.span_id == span_id(message, "root")
    assert_times(read, T0, T0 + 60)


def test_stale_sweep_closes_the_trace_and_later_stages_still_attach(
    callbacks: Callbacks, sqlite_store: SQLiteStore, span_exporter: InMemorySpanExporter
) -> None:
    message = sid("SM", 15)
    callbacks.post(message, "queued", T0)
    callbacks.post(message, "sent", T0 + 1)
    now = [T0 + 2]
    sweeper = Sweeper(
        sqlite_store,
        Metrics(CollectorRegistry()),
        SpanOutbox(),
        stale_after=3600,
        retention=0,
        clock=lambda: now[0],
    )
    assert sweeper.run_once() == 0
    now[0] = T0 + 1 + 3601
    assert sweeper.run_once() == 1
    assert sweeper.run_once() == 0  # each stale message is handed out once
    shipped = RecordingExporter()
    ship(sqlite_store, shipped)  # the root span was queued with the stale mark
    [root] = shipped.spans
    assert root.name == "twilio.message"
    assert (root.start_ns, root.end_ns) == (ns(T0), ns(now[0]))
    assert root.attributes["twilio.message.stale"] is True
    assert root.attributes["twilio.message.status"] == "sent"
    assert root.span_id == f"{span_id(message, 'root'):016x}"
    assert root.status_code == STATUS_UNSET

    callbacks.post(message, "delivered", now[0] + 5)
    names = sorted(span.name for span in span_exporter.get_finished_spans())
    assert "twilio.message" not in names  # the stale root stays the only one
    delivered = by_name(span_exporter.get_finished_spans())["twilio.message.delivered"]
    assert delivered.parent is not None and delivered.parent.span_id == span_id(message, "root")


class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector exploded")


class RaisingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor exploded")


def test_record_swallows_exporter_errors(sqlite_store: SQLiteStore) -> None:
    tracer = MessageSpans(SimpleSpanProcessor(RaisingExporter()), RESOURCE)
    Callbacks(sqlite_store, tracer).post(sid("SM", 16), "delivered", T0)


def test_record_swallows_processor_errors_and_counts_them(sqlite_store: SQLiteStore) -> None:
    dropped: list[tuple[int, str]] = []
    tracer = MessageSpans(
        RaisingProcessor(), RESOURCE, report_dropped=lambda n, why: dropped.append((n, why))
    )
    Callbacks(sqlite_store, tracer).post(sid("SM", 17), "sent", T0)
    message = sqlite_store.history(sid("SM", 17))
    assert message is not None
    tracer.record_stale(message.message, T0 + 10)
    assert [n for n, _ in dropped] == [1, 1]
    assert "processor exploded" in dropped[0][1]


def test_callback_through_the_app_queues_its_span_once(sqlite_store: SQLiteStore) -> None:
    settings = Settings(insecure_skip_signature=True)
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, Metrics(registry))
    client = inline_client(settings, sqlite_store, telemetry, SpanOutbox())
    body = urlencode(callback_params(sid("SM", 18), "sent"))
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(2):  # the retry is a duplicate
        assert client.simulate_post("/twilio/status", body=body, headers=headers).status_code == 200
    exporter = RecordingExporter()
    assert ship(sqlite_store, exporter) == 1
    assert [span.name for span in exporter.spans] == ["twilio.message.sent"]


def ship(store: SQLiteStore, exporter: RecordingExporter) -> int:
    """Export everything the outbox holds, as the ingester's shipper does."""
    shipper = SpanShipper(store, [exporter], RESOURCE, Metrics(CollectorRegistry()))
    shipped = 0
    while count := shipper.ship_once():
        shipped += count
    return shipped


def as_received(span: ReadableSpan) -> ReceivedSpan:
    """A span built by the SDK, as a receiver reads it after the SDK's own OTLP encoder."""
    [received] = spans_of(encode_spans([span]), "memory")
    return received


def test_queued_spans_are_exported_exactly_as_the_sdk_encodes_them(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """The outbox keeps each span as the SDK's encoder wrote it; a batch of them is one
    request under this process's resource and scope, nothing lost or changed on the way."""
    message = sid("SM", 19)
    outbox = SQLiteStore(str(tmp_path / "outbox.db"))  # the same callbacks, queued there
    queued = Callbacks(outbox, spans=SpanOutbox())
    for post in (callbacks.post, queued.post):
        post(message, "sent", T0, query=f"traceparent={TRACEPARENT}")
        post(message, "failed", T0 + 5, ErrorCode="30007")
    built = [as_received(span) for span in span_exporter.get_finished_spans()]
    batch = ExportRequests(RESOURCE).build([e for _, e in outbox.unexported_spans(10)])
    assert batch.spans == 3  # sent, failed, and the root
    [resource_spans] = batch.request.resource_spans
    [scope_spans] = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == (SCOPE.name, SCOPE.version)
    sent = list(spans_of(batch.request, "memory"))
    assert [span.resource for span in sent] == [dict(RESOURCE.attributes)] * 3
    assert sorted(sent, key=lambda s: s.name) == sorted(
        (replace(span, resource=dict(RESOURCE.attributes)) for span in built),
        key=lambda s: s.name,
    )
    assert decode_span(outbox.unexported_spans(1)[0][1]).name == "twilio.message.sent"


def test_each_span_is_encoded_as_the_sdks_encoder_encodes_it(
    callbacks: Callbacks, span_exporter: InMemorySpanExporter
) -> None:
    """The outbox fills OTLP messages itself (the SDK's encoder costs four times as much);
    every kind of span MessageSpans builds comes out as the SDK's encoder makes it."""
    first, second, third = sid("SM", 31), sid("SM", 32), sid("SM", 33)
    tags = urlencode({"traceparent": TRACEPARENT, "tag.team": "growth", "created": T0 - 3})
    callbacks.post(first, "queued", T0, query=tags, MessagingServiceSid=sid("MG", 1))
    callbacks.post(first, "delivered", T0 + 3, NumSegments="2", RawDlrDoneDate="2311151234")
    callbacks.post(first, "sent", T0 + 2)  # out of order
    callbacks.post(second, "undelivered", T0, ErrorCode="30007", MCC="262", MNC="01")
    callbacks.post(third, "failed", T0 + 1, To="whatsapp:+4915112345678")
    callbacks.post(third, "no-such-status", T0 + 2)
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 9
    for span in spans:
        [expected] = encode_spans([span]).resource_spans[0].scope_spans[0].spans
        assert otlp_span(span) == expected, span.name


def test_spans_queued_as_json_by_an_earlier_release_are_still_exported(
    sqlite_store: SQLiteStore,
) -> None:
    """Spans a release before this one queued (as JSON) and had not exported when it was
    upgraded still leave, in OTLP, with their ids."""
    legacy = (
        '{"name":"twilio.message.sent","trace":"0af7651916cd43dd8448eb211c80319c",'
        '"span":"b7ad6b7169203331","parent":"00f067aa0ba902b7","parent_remote":false,'
        '"start":1700000000000000000,"end":1700000001000000000,'
        '"attributes":{"twilio.message.status":"sent","twilio.callback.out_of_order":false},'
        '"status":0,"description":null}'
    )
    with sqlite3.connect(sqlite_store.path) as db:
        db.execute("INSERT INTO span_outbox (queued_at, span) VALUES (?, ?)", (T0, legacy))
    exporter = RecordingExporter()
    assert ship(sqlite_store, exporter) == 1
    [span] = exporter.spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00f067aa0ba902b7"
    )  # fmt: skip
    assert (span.name, span.start_ns, span.end_ns) == ("twilio.message.sent", ns(T0), ns(T0 + 1))
    assert span.attributes == {
        "twilio.message.status": "sent", "twilio.callback.out_of_order": False
    }  # fmt: skip


def test_spans_never_exported_by_the_retention_horizon_are_dropped_and_counted(
    sqlite_store: SQLiteStore,
) -> None:
    Callbacks(sqlite_store, spans=SpanOutbox()).post(sid("SM", 21), "delivered", T0)
    registry = CollectorRegistry()
    later = time.time() + 3601
    sweeper = Sweeper(
        sqlite_store, Metrics(registry), None, stale_after=60, retention=3600, clock=lambda: later
    )
    sweeper.run_once()
    assert sqlite_store.backlog().spans == 0
    assert registry.get_sample_value("twilio_exporter_spans_dropped_total") == 2


def test_spans_stay_queued_while_the_collector_is_down(sqlite_store: SQLiteStore) -> None:
    spans = SpanOutbox()
    Callbacks(sqlite_store, spans=spans).post(sid("SM", 20), "delivered", T0)
    exporter = RecordingExporter()
    exporter.failing = True
    registry = CollectorRegistry()
    shipper = SpanShipper(sqlite_store, [exporter], RESOURCE, Metrics(registry))
    with pytest.raises(ExportFailed):
        shipper.ship_once()
    assert sqlite_store.backlog().spans == 2  # the stage and the root, kept
    assert registry.get_sample_value("twilio_exporter_span_export_failures_total") == 1
    exporter.failing = False
    assert shipper.ship_once() == 2
    assert sorted(s.name for s in exporter.spans) == [
        "twilio.message",
        "twilio.message.delivered",
    ]
    assert sqlite_store.backlog().spans == 0
    assert registry.get_sample_value("twilio_exporter_spans_exported_total") == 2


def test_exporter_log_lines_are_rate_limited() -> None:
    now = [0.0]
    limit = RateLimitFilter(interval=60, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("otlp", logging.ERROR, __file__, 1, msg, ("x",), None)

    assert limit.filter(record("Failed to export %s"))
    assert not limit.filter(record("Failed to export %s"))
    assert limit.filter(record("Transient error %s"))
    now[0] = 61
    assert limit.filter(record("Failed to export %s"))


# Configuration from the OTEL_* variables.


def test_tracing_config_defaults_follow_the_specification() -> None:
    config = TracingConfig.from_env({})
    assert config.exporters == ("otlp",)
    assert config.protocol == "http/protobuf"
    assert config.export_timeout == 5.0


@pytest.mark.parametrize(
    ("env", "exporters", "protocol"),
    [
        ({"OTEL_TRACES_EXPORTER": "none"}, (), "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",), "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console"), "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("otlp",), "grpc"),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            ("otlp",),
            "http/protobuf",
        ),
        ({"OTEL_SDK_DISABLED": "true"}, (), "http/protobuf"),
    ],
)
def test_tracing_config_reads_the_standard_variables(
    env: dict[str, str], exporters: tuple[str, ...], protocol: str
) -> None:
    config = TracingConfig.from_env(env)
    assert (config.exporters, config.protocol) == (exporters, protocol)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ],
)
def test_bad_tracing_variables_are_named(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as error:
        TracingConfig.from_env(env)
    assert error.value.variable == variable


def test_explicit_export_timeout_is_left_to_the_exporter() -> None:
    assert TracingConfig.from_env({"OTEL_EXPORTER_OTLP_TIMEOUT": "2"}).export_timeout is None


def test_no_span_is_queued_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert span_outbox_from_env(Settings(), Metrics(CollectorRegistry()).spans_dropped) is None
    assert exporters_from_env() == []


def test_otlp_tracing_queues_spans_and_exports_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert isinstance(
        span_outbox_from_env(Settings(), Metrics(CollectorRegistry()).spans_dropped), SpanOutbox
    )
    [exporter] = exporters_from_env()
    assert isinstance(exporter, HttpSpanExporter)  # the SDK's, with its OTEL_* settings
    exporter.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shipper_sends_the_queued_spans_through_the_sdk_exporters(
    protocol: str, sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the wire to a real receiver, with the exporters the OTEL_* variables make: the
    hooks the exporters rely on in the SDK's OTLP exporters still do what they did."""
    Callbacks(sqlite_store, spans=SpanOutbox()).post(sid("SM", 22), "failed", T0, ErrorCode="30007")
    with OTLPReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        exporters = exporters_from_env()
        shipper = SpanShipper(sqlite_store, exporters, RESOURCE, Metrics(CollectorRegistry()))
        assert shipper.ship_once() == 2
        received = receiver.wait_for_spans(lambda spans: len(spans) >= 2)
        for exporter in exporters:
            exporter.shutdown()
    assert sorted(span.name for span in received) == ["twilio.message", "twilio.message.failed"]
    assert {span.trace_id for span in received} == {f"{trace_id(sid('SM', 22)):032x}"}
    assert all(span.resource["service.name"] == "test" for span in received)
    assert sqlite_store.backlog().spans == 0


def test_service_name_defaults_and_follows_otel_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert make_resource().attributes["service.name"] == "twilio-status-exporter"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sms-exporter")
    resource = make_resource()
    assert resource.attributes["service.name"] == "sms-exporter"
    assert resource.attributes["deployment.environment"] == "prod"
