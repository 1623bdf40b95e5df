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

import psycopg
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


def send(services: list[Service], reports: list[Report]) -> list[int]:
    """Callbacks one by one, events in batches, all interleaved across 16 connections, each
    request to one of `services` at random."""
    rng = random.Random(5)
    callbacks = [r for r in reports if r.input == "callback"]
    events = [event_of(r) for r in reports if r.input == "event"]
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    jobs: list[tuple[Service, Report | list[dict[str, object]]]] = [
        (rng.choice(services), r) for r in callbacks
    ]
    jobs += [(rng.choice(services), batch) for batch in batches]
    rng.shuffle(jobs)

    def post(job: tuple[Service, Report | list[dict[str, object]]]) -> int:
        target, what = job
        if isinstance(what, list):
            return target.post_events(what).status_code
        failed = what.status in ("undelivered", "failed")
        params = callback_params(
            what.message_sid, what.status, **({"ErrorCode": "30003"} if failed else {})
        )
        return target.post_callback(params).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(post, jobs))


def check_counts(
    reports: list[Report], stored: list[tuple[str, str, str, float | None]], scrapes: list[str]
) -> None:
    """Each (message, status) stored and counted once, whichever input or replica had it;
    event-only statuses timed by their events."""
    distinct = {(r.message_sid, r.status) for r in reports}
    by_callback = {(r.message_sid, r.status) for r in reports if r.input == "callback"}
    event_times = {(r.message_sid, r.status): r.at for r in reports if r.input == "event"}
    assert sorted((m, s) for m, s, _, _ in stored) == sorted(distinct)  # each exactly once
    for message, status, source, occurred_at in stored:
        if (message, status) not in by_callback:
            assert source == "event_stream"
            assert occurred_at == pytest.approx(event_times[(message, status)], abs=1e-3)
    parsed = [samples(text) for text in scrapes]

    def total(name: str, **labels: str) -> float:
        return sum(value(scrape, name, **labels) for scrape in parsed)

    callbacks = sum(1 for r in reports if r.input == "callback")
    events = len(reports) - callbacks
    accepted = total("twilio_status_callbacks_total", outcome="accepted") + total(
        "twilio_stream_events_total", outcome="accepted"
    )
    duplicates = total("twilio_status_callbacks_total", outcome="duplicate") + total(
        "twilio_stream_events_total", outcome="duplicate"
    )
    assert accepted == len(distinct)
    assert duplicates == len(reports) - len(distinct)
    assert total("twilio_stream_events_total") == events
    assert total("twilio_status_callbacks_total") == callbacks
    assert total("twilio_stream_requests_total", outcome="accepted") == -(-events // BATCH)
    for status in ("queued", "sent", "delivered", "undelivered", "failed"):
        expected = sum(1 for (_, s) in distinct if s == status)
        assert total("twilio_message_status_total", status=status) == expected, status
    assert all(value(scrape, "twilio_messages_in_flight") == 0 for scrape in parsed)
    # Event Streams timestamps are exact: every accepted event's lag was observed.
    lag = total("twilio_callback_lag_seconds_count")
    assert lag == total("twilio_stream_events_total", outcome="accepted")


def test_both_inputs_for_the_same_messages_count_each_status_once(service: Service) -> None:
    reports = ground_truth()
    assert set(send([service], reports)) == {200}
    service.wait_applied()
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        query = "SELECT message_sid, status, source, occurred_at FROM status_events"
        stored = db.execute(query).fetchall()
    check_counts(reports, stored, [service.metrics_text()])


def test_both_inputs_across_replicas_sharing_postgres(
    service_factory: Callable[..., Service], postgres_url: str
) -> None:
    replicas = [service_factory(workers=2, store_url=postgres_url) for _ in range(2)]
    reports = ground_truth(seed=12)
    assert set(send(replicas, reports)) == {200}
    replicas[0].wait_applied()
    with psycopg.connect(postgres_url) as db:
        query = "SELECT message_sid, status, source, occurred_at FROM status_events"
        stored = db.execute(query).fetchall()
    check_counts(reports, stored, [replica.metrics_text() for replica in replicas])


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def test_traces_are_timed_by_the_events_own_timestamps(
    service_factory: Callable[..., Service], receiver: OTLPReceiver
) -> None:
    service = service_factory(workers=3, env=otlp_env(receiver.grpc_endpoint, "grpc"))
    created = float(int(time.time()) - 600)  # whole seconds: every time below is exact
    message = sid("SM", 8000)
    callback_url = f"https://example.com/twilio/status?created={created:.0f}&tag.campaign=streams"
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
    service.wait_applied()
    output = run_cli("show", message, "--store", service.store_url)
    assert "status=sent" in output and "campaign=es" in output
    assert "event_stream" in output
    happened = datetime.fromtimestamp(sent_at, UTC).isoformat(timespec="milliseconds")
    assert f"occurred {happened}" in output
