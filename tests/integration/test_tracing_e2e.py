"""Traces over the wire: the service (gunicorn, several workers, the ingester shipping the span
outbox) exporting to a real OTLP receiver."""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from tests.integration.service import Service
from tests.otlp_receiver import STATUS_ERROR, OTLPReceiver, ReceivedSpan
from tests.support import callback_params, free_port, sid, wait_for

pytestmark = pytest.mark.integration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MESSAGES = 40


def trace_id(message_sid: str) -> str:
    return hashlib.sha256(f"twilio.message:{message_sid}".encode()).digest()[:16].hex()


def span_id(message_sid: str, stage: str) -> str:
    return hashlib.sha256(f"{message_sid}:{stage}".encode()).digest()[:8].hex()


@dataclass
class Plan:
    """The callbacks one message gets, in the order they are posted."""

    message_sid: str
    posts: list[tuple[str, dict[str, str]]]
    query: str = ""
    statuses: set[str] = field(default_factory=set)

    @property
    def trace_id(self) -> str:
        return TRACEPARENT[3:35] if self.query else trace_id(self.message_sid)


def plan(n: int) -> Plan:
    message = sid("SM", 5000 + n)
    final: tuple[str, dict[str, str]] = ("delivered", {"RawDlrDoneDate": "2311231200"})
    if n % 5 == 0:
        final = ("failed", {"ErrorCode": "30003"})
    posts = [("queued", {}), ("sent", {}), final]
    if n % 7 == 3:  # out of order: the final status overtakes `sent`
        posts = [posts[0], posts[2], posts[1]]
    if n % 4 == 1:  # Twilio retries a callback
        posts.insert(2, posts[1])
    query = urlencode({"traceparent": TRACEPARENT, "tag.campaign": "e2e"}) if n == 2 else ""
    return Plan(message, posts, query, {status for status, _ in posts})


def send(service: Service, plans: list[Plan]) -> None:
    """Post every plan's callbacks, messages in parallel so they spread over the workers."""

    def post_all(one: Plan) -> None:
        for status, extra in one.posts:
            response = service.post_callback(
                callback_params(one.message_sid, status, **extra), query=one.query
            )
            assert response.status_code == 200, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(post_all, plans))


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def otlp_env(endpoint: str, protocol: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "exporter-e2e",
        **extra,
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_message_arrives_as_one_complete_trace(
    service_factory: Callable[..., Service], receiver: OTLPReceiver, protocol: str
) -> None:
    service = service_factory(workers=3, env=otlp_env(receiver.endpoint(protocol), protocol))
    plans = [plan(n) for n in range(MESSAGES)]
    expected = sum(len(one.statuses) + 1 for one in plans)
    send(service, plans)
    receiver.wait_for_spans(lambda spans: len(spans) >= expected, timeout=20)
    service.wait_applied(spans=True)
    service.stop()  # the outbox is empty: nothing more can arrive after this
    spans = receiver.spans()

    duplicates = [key for key, n in Counter(s.span_id for s in spans).items() if n > 1]
    assert duplicates == []
    assert len(spans) == expected
    assert {s.transport for s in spans} == {"grpc" if protocol == "grpc" else "http"}
    assert {s.resource.get("service.name") for s in spans} == {"exporter-e2e"}
    by_message: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_message.setdefault(str(span.attributes["messaging.message.id"]), []).append(span)
    for one in plans:
        check_trace(one, by_message[one.message_sid])


def check_trace(one: Plan, spans: list[ReceivedSpan]) -> None:
    names = sorted(span.name for span in spans)
    assert names == sorted(["twilio.message", *(f"twilio.message.{s}" for s in one.statuses)])
    root_id = span_id(one.message_sid, "root")
    for span in spans:
        assert span.trace_id == one.trace_id
        assert span.start_ns <= span.end_ns
        if span.name == "twilio.message":
            assert span.attributes["twilio.to"] == "+49*********78"
            assert span.span_id == root_id
            assert span.parent_span_id == (TRACEPARENT[36:52] if one.query else None)
            continue
        status = span.name.removeprefix("twilio.message.")
        assert span.span_id == span_id(one.message_sid, status)
        assert span.parent_span_id == root_id
        if status == "failed":
            assert span.status_code == STATUS_ERROR
            assert span.status_message.startswith("30003: Unreachable destination handset")
    out_of_order = {s.name for s in spans if s.attributes.get("twilio.callback.out_of_order")}
    reordered = [status for status, _ in one.posts][1] != "sent"
    assert out_of_order == ({"twilio.message.sent"} if reordered else set())
    if one.query:
        (root,) = (span for span in spans if span.name == "twilio.message")
        assert root.attributes["twilio.tag.campaign"] == "e2e"


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(len(ordered) * 0.95) - 1]


def metric(service: Service, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", service.metrics_text(), re.M)
    return float(match.group(1)) if match else 0.0


def test_a_down_collector_costs_callbacks_no_time_and_spans_no_loss(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    down = service_factory(workers=3, env=otlp_env(closed, "grpc", OTEL_EXPORTER_OTLP_TIMEOUT="1"))
    off = service_factory(  # a store of its own: one ingester per store, tracing on or off
        workers=3,
        env={"OTEL_TRACES_EXPORTER": "none"},
        store_url=f"sqlite:///{tmp_path / 'off.db'}",
    )
    latencies: dict[str, list[float]] = {"down": [], "off": []}
    with requests.Session() as session:
        for n in range(200):
            for name, service in (("down", down), ("off", off)):
                params = callback_params(sid("SM", 9000 + n), "delivered")
                started = time.perf_counter()
                response = service.post_callback(params, session=session)
                latencies[name].append(time.perf_counter() - started)
                assert response.status_code == 200
    # Generous: the box is shared and noisy; a blocking exporter would cost seconds.
    assert p95(latencies["down"]) < 3 * p95(latencies["off"]) + 0.02, {
        name: p95(samples) for name, samples in latencies.items()
    }
    failures = "twilio_exporter_span_export_failures_total"
    wait_for(lambda: metric(down, failures) > 0, timeout=20, what="failed exports counted")
    # Kept for the collector's return (test_durable_traces.py sees them arrive): a stage span
    # and a root span per delivered message, none dropped.
    assert metric(down, "twilio_exporter_span_export_backlog_spans") == 2 * 200
    assert metric(down, "twilio_exporter_spans_dropped_total") == 0
    assert metric(off, "twilio_exporter_span_export_backlog_spans") == 0  # tracing off: none
