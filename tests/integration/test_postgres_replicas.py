"""Scale-out on PostgreSQL: two replicas (gunicorn, two workers each) sharing one database,
callbacks of one message split across both in any order, and a database outage survived
without a restart."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from exporter.telemetry.trace_ids import trace_id_hex_for
from exporter.telemetry.tracing.spans import span_id_for
from tests.integration.service import Service
from tests.integration.test_pipeline_e2e import lifecycle_traffic, samples, value
from tests.otlp_receiver import OTLPReceiver
from tests.postgres_server import PostgresServer
from tests.support import callback_params, sid, wait_for

pytestmark = pytest.mark.integration

STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")


def send_split(replicas: list[Service], callbacks: list[tuple[str, str]]) -> list[int]:
    """Post every callback, each to a randomly chosen replica, from 16 threads."""
    rng = random.Random(11)
    targets = [rng.choice(replicas) for _ in callbacks]

    def send(job: tuple[Service, tuple[str, str]]) -> int:
        replica, (message_sid, status) = job
        extra = {"ErrorCode": "30007"} if status in ("undelivered", "failed") else {}
        return replica.post_callback(callback_params(message_sid, status, **extra)).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(send, zip(targets, callbacks, strict=True)))


def test_replicas_sharing_postgres_record_and_count_each_status_once(
    service_factory: Callable[..., Service], postgres_url: str, run_cli: Callable[..., str]
) -> None:
    replicas = [service_factory(workers=2, store_url=postgres_url) for _ in range(2)]
    callbacks = lifecycle_traffic(messages=200, seed=3)
    assert set(send_split(replicas, callbacks)) == {200}

    distinct = set(callbacks)
    duplicates = len(callbacks) - len(distinct)
    replicas[0].wait_applied()  # one ingester applies what every replica accepted
    with psycopg.connect(postgres_url) as db:
        stored = db.execute("SELECT message_sid, status FROM status_events").fetchall()
        current = dict(db.execute("SELECT message_sid, status FROM messages").fetchall())
    assert Counter(stored) == Counter(distinct)  # nothing lost, nothing twice
    assert len(current) == 200
    assert set(current.values()) <= {"delivered", "undelivered", "failed"}  # never backwards

    scrapes = [samples(replica.metrics_text()) for replica in replicas]

    def total(name: str, **labels: str) -> float:
        return sum(value(scrape, name, **labels) for scrape in scrapes)

    for status in STATUSES:
        expected = sum(1 for (_, s) in distinct if s == status)
        assert total("twilio_message_status_total", status=status) == expected, status
    assert total("twilio_status_callbacks_total", outcome="accepted") == len(distinct)
    assert total("twilio_status_callbacks_total", outcome="duplicate") == duplicates
    # Both replicas took callbacks (the split was not one-sided); one ingester applied them.
    assert all(
        value(s, "twilio_status_callback_request_duration_seconds_count") > 0 for s in scrapes
    )
    assert [value(s, "twilio_exporter_ingester_leader") for s in scrapes] in ([1, 0], [0, 1])
    # The in-flight gauge is read from the shared database: every replica sees all of it.
    assert [value(s, "twilio_messages_in_flight") for s in scrapes] == [0, 0]
    shown = run_cli("show", sid("SM", 7), "--store", postgres_url)
    assert f"status={current[sid('SM', 7)]}" in shown and " queued " in shown


def test_callbacks_of_one_message_on_both_replicas_make_one_trace(
    service_factory: Callable[..., Service], postgres_url: str
) -> None:
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        replicas = [service_factory(workers=2, store_url=postgres_url, env=env) for _ in range(2)]
        messages = 30
        callbacks = lifecycle_traffic(messages=messages, seed=5)
        assert set(send_split(replicas, callbacks)) == {200}
        receiver.wait_for_spans(lambda got: len(got) >= messages * 4, timeout=30)
        for replica in replicas:
            replica.stop()  # a span exported twice would have shown by now
        spans = receiver.spans()
    by_trace: dict[str, list[str]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span.span_id)
    for message_sid, _ in callbacks:
        trace = trace_id_hex_for(message_sid)
        root = f"{span_id_for(message_sid, 'root'):016x}"
        # Root + one span per distinct status, whichever replica took each callback.
        assert len(by_trace[trace]) == 4 and len(set(by_trace[trace])) == 4
        assert root in by_trace[trace]
    assert len(spans) == messages * 4  # no span twice, none for a duplicate
    roots = {f"{span_id_for(sid_, 'root'):016x}" for sid_, _ in callbacks}
    assert all(s.parent_span_id in roots for s in spans if s.span_id not in roots)


def test_replicas_survive_a_database_outage_without_restart(
    service_factory: Callable[..., Service],
    postgres_url: str,
    postgres_server: PostgresServer,
) -> None:
    service = service_factory(workers=2, store_url=postgres_url)
    workers = wait_for(lambda: _all_workers(service, 2), what="both workers to have started")
    assert service.post_callback(callback_params(sid("SM", 1), "sent")).status_code == 200

    postgres_server.stop()
    try:
        wait_for(lambda: _readyz(service) == 503, timeout=20, what="/readyz to report 503")
        down = service.post_callback(callback_params(sid("SM", 1), "delivered"))
        assert down.status_code == 503
        assert down.headers.get("Retry-After")
        assert requests.get(f"{service.base_url}/healthz", timeout=10).status_code == 200
    finally:
        postgres_server.start()

    wait_for(lambda: _readyz(service) == 200, timeout=30, what="/readyz to recover")
    wait_for(
        lambda: (
            service.post_callback(callback_params(sid("SM", 1), "delivered")).status_code == 200
        ),
        timeout=30,
        what="callbacks to be accepted again",
    )
    assert service.process.poll() is None
    assert sorted(service.worker_pids()) == workers  # no worker crashed or was replaced
    assert "Traceback" not in service.log()
    metrics = samples(service.metrics_text())
    assert value(metrics, "twilio_message_status_total", status="delivered") == 1
    assert value(metrics, "twilio_status_callbacks_total", outcome="error") >= 1


def _readyz(service: Service) -> int:
    return requests.get(f"{service.base_url}/readyz", timeout=10).status_code


def _all_workers(service: Service, expected: int) -> list[int] | None:
    pids = sorted(service.worker_pids())
    return pids if len(pids) == expected else None
