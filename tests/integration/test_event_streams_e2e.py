"""Event Streams beside StatusCallbacks, end to end: gunicorn with 3 workers, the same messages
reported by either input or both, counted against ground truth; traces timed by the events."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.integration.service import Service
from tests.integration.test_pipeline_e2e import samples, value
from tests.integration.test_tracing_e2e import otlp_env, span_id, trace_id
from tests.otlp_receiver import OTLPReceiver
from tests.support import callback_params, cloud_event, sid

pytestmark = pytest.mark.integration

MESSAGES = 120
BATCH = 8
# Seconds after its creation at which each stage of a simulated message happened.
STAGE_OFFSETS = {"queued": 0.0, "sent": 2.25, "final": 9.5}


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Report:
    """One status of one message, as one input reports it."""

    message_sid: str
    status: str
    at: float  # when it happened (what the event says)
    input: str  # "callback" or "event"


def ground_truth(seed: int = 11) -> list[Report]:
    """Every message queued, sent, then a final status; each status reported by callbacks,
    by Event Streams, or both (a sender subscribed to both), some reports twice."""
    rng = random.Random(seed)
    start = time.time() - 3600
    reports = []
    for n in range(MESSAGES):
        message = sid("SM", 7000 + n)
        final = "delivered" if n % 4 else rng.choice(["undelivered", "failed"])
        for stage, status in (("queued", "queued"), ("sent", "sent"), ("final", final)):
            at = start + n + STAGE_OFFSETS[stage]
            inputs = rng.choice([["callback"], ["event"], ["callback", "event"]])
            for source in inputs:
                reports.append(Report(message, status, at, source))
                if rng.random() < 0.1:  # Twilio retries; Event Streams delivers at least once
                    reports.append(Report(message, status, at, source))
    rng.shuffle(reports)
    return reports


def event_of(report: Report) -> dict[str, object]:
    extra: dict[str, object] = {}
    if report.status in ("undelivered", "failed"):
        extra["errorCode"] = 30003
    return cloud_event(report.message_sid, report.status, iso(report.at), **extra)


def send(service: Service, reports: list[Report]) -> list[int]:
    """Callbacks one by one, events in batches, all interleaved across 16 connections."""
    callbacks = [r for r in reports if r.input == "callback"]
    events = [event_of(r) for r in reports if r.input == "event"]
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    work: list[Callable[[], int]] = [
        lambda r=r: (
            service.post_callback(
                callback_params(
                    r.message_sid,
                    r.status,
                    **({"ErrorCode": "30003"} if r.status in ("undelivered", "failed") else {}),
                )
            ).status_code
        )
        for r in callbacks
    ]
    work += [lambda b=b: service.post_events(b).status_code for b in batches]
    random.Random(5).shuffle(work)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda job: job(), work))


def test_both_inputs_for_the_same_messages_count_each_status_once(service: Service) -> None:
    reports = ground_truth()
    codes = send(service, reports)
    assert set(codes) == {200}

    distinct = {(r.message_sid, r.status) for r in reports}
    event_only = {
        (r.message_sid, r.status): r.at
        for r in reports
        if not any(
            o.input == "callback"
            for o in reports
            if (o.message_sid, o.status) == (r.message_sid, r.status)
        )
    }
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        stored = db.execute(
            "SELECT message_sid, status, source, occurred_at FROM status_events"
        ).fetchall()
    assert sorted((m, s) for m, s, _, _ in stored) == sorted(distinct)  # each exactly once
    for message, status, source, occurred_at in stored:
        if (message, status) in event_only:
            assert source == "event_stream"
            assert occurred_at == pytest.approx(event_only[(message, status)], abs=1e-3)

    metrics = samples(service.metrics_text())
    callbacks = sum(1 for r in reports if r.input == "callback")
    events = len(reports) - callbacks
    accepted = value(metrics, "twilio_status_callbacks_total", outcome="accepted") + value(
        metrics, "twilio_stream_events_total", outcome="accepted"
    )
    duplicates = value(metrics, "twilio_status_callbacks_total", outcome="duplicate") + value(
        metrics, "twilio_stream_events_total", outcome="duplicate"
    )
    assert accepted == len(distinct)
    assert duplicates == len(reports) - len(distinct)
    assert value(metrics, "twilio_stream_events_total") == events
    assert value(metrics, "twilio_status_callbacks_total") == callbacks
    batches = -(-events // BATCH)
    assert value(metrics, "twilio_stream_requests_total", outcome="accepted") == batches
    for status in ("queued", "sent", "delivered", "undelivered", "failed"):
        expected = sum(1 for (_, s) in distinct if s == status)
        assert value(metrics, "twilio_message_status_total", status=status) == expected, status
    assert value(metrics, "twilio_messages_in_flight") == 0
    # Event Streams timestamps are exact: every accepted event's lag was observed.
    lag = value(metrics, "twilio_callback_lag_seconds_count")
    assert lag == value(metrics, "twilio_stream_events_total", outcome="accepted")


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def test_traces_are_timed_by_the_events_own_timestamps(
    service_factory: Callable[..., Service], receiver: OTLPReceiver
) -> None:
    service = service_factory(workers=3, env=otlp_env(receiver.grpc_endpoint, "grpc"))
    created = time.time() - 600
    message = sid("SM", 8000)
    callback_url = f"https://example.com/twilio/status?created={created:.3f}&tag.campaign=streams"
    times = {"queued": created + 1, "sent": created + 3.5, "delivered": created + 61.25}
    for status, at in times.items():  # one delivery each, seconds to minutes after the fact
        event = cloud_event(
            message, status, iso(at), statusCallBackUrl=callback_url, tags={"tenant": "t1"}
        )
        assert service.post_events([event]).status_code == 200
    spans = receiver.wait_for_spans(lambda spans: len(spans) >= 4, timeout=20)
    by_id = {span.span_id: span for span in spans}
    assert {span.trace_id for span in spans} == {trace_id(message)}

    def ms(ns: int) -> float:
        return round(ns / 1e9, 3)

    starts = {"queued": created, "sent": times["queued"], "delivered": times["sent"]}
    for status, at in times.items():
        stage = by_id[span_id(message, status)]
        assert (ms(stage.start_ns), ms(stage.end_ns)) == (round(starts[status], 3), round(at, 3))
        assert stage.attributes["twilio.event.source"] == "event_stream"
    root = by_id[span_id(message, "root")]
    assert (ms(root.start_ns), ms(root.end_ns)) == (round(created, 3), round(times["delivered"], 3))
    assert root.attributes["twilio.tag.tenant"] == "t1"
    assert root.attributes["twilio.tag.campaign"] == "streams"


def test_show_prints_when_each_event_happened(
    service: Service, run_cli: Callable[..., str]
) -> None:
    message = sid("SM", 8100)
    sent_at = time.time() - 120
    event = cloud_event(message, "sent", iso(sent_at), tags={"campaign": "es"})
    assert service.post_events([event]).status_code == 200
    output = run_cli("show", message, "--store", service.store_url)
    assert "status=sent" in output and "campaign=es" in output
    assert "event_stream" in output
    happened = datetime.fromtimestamp(sent_at, UTC).isoformat(timespec="milliseconds")
    assert f"occurred {happened}" in output
