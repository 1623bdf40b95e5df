"""The callback pipeline end to end: gunicorn with 3 workers, concurrent signed traffic, the
SQLite file, the scraped /metrics, and a real Prometheus computing the delivery rate."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.prometheus import start_prometheus
from tests.integration.service import Service
from tests.support import callback_params, sid, wait_for

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, have), v in metrics.items() if n == name and wanted <= have)


def lifecycle_traffic(messages: int, seed: int = 7) -> list[tuple[str, str]]:
    """(MessageSid, status) callbacks: every message queued/sent + a final, shuffled so one
    message's callbacks interleave and reach different workers, with 20 % sent twice."""
    rng = random.Random(seed)
    callbacks = []
    for n in range(messages):
        final = "delivered" if n % 5 else rng.choice(["undelivered", "failed"])
        for status in ("queued", "sent", final):
            callbacks.append((sid("SM", n), status))
            if rng.random() < 0.2:
                callbacks.append((sid("SM", n), status))
    rng.shuffle(callbacks)
    return callbacks


def send_all(service: Service, callbacks: list[tuple[str, str]]) -> list[int]:
    def send(callback: tuple[str, str]) -> int:
        message_sid, status = callback
        extra = {"ErrorCode": "30007"} if status in ("undelivered", "failed") else {}
        return service.post_callback(callback_params(message_sid, status, **extra)).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(send, callbacks))


def test_concurrent_callbacks_are_recorded_and_counted_exactly_once(service: Service) -> None:
    callbacks = lifecycle_traffic(messages=150)
    codes = send_all(service, callbacks)
    assert set(codes) == {200}

    distinct = set(callbacks)
    duplicates = len(callbacks) - len(distinct)
    service.wait_applied()
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        stored = db.execute("SELECT message_sid, status FROM status_events").fetchall()
        current = dict(db.execute("SELECT message_sid, status FROM messages").fetchall())
    assert sorted(stored) == sorted(distinct)  # each (message, status) exactly once
    finals = {s for (m, s) in distinct if s not in ("queued", "sent")}
    assert set(current.values()) <= finals  # out-of-order arrivals never moved a status back

    metrics = samples(service.metrics_text())
    assert value(metrics, "twilio_status_callbacks_total", outcome="accepted") == len(distinct)
    assert value(metrics, "twilio_status_callbacks_total", outcome="duplicate") == duplicates
    for status in ("queued", "sent", "delivered", "undelivered", "failed"):
        expected = sum(1 for (_, s) in distinct if s == status)
        assert value(metrics, "twilio_message_status_total", status=status) == expected, status
    out_of_order = value(metrics, "twilio_status_callbacks_out_of_order_total")
    assert 0 < out_of_order < len(distinct)  # shuffled traffic: some, not all
    assert value(metrics, "twilio_messages_in_flight") == 0
    assert value(metrics, "twilio_status_callback_request_duration_seconds_count") == len(callbacks)


def test_same_callback_racing_on_every_worker_counts_once(service: Service) -> None:
    copies = [(sid("SM", 900 + n % 10), "delivered") for n in range(200)]
    assert set(send_all(service, copies)) == {200}
    metrics = samples(service.metrics_text())
    assert value(metrics, "twilio_message_status_total", status="delivered") == 10
    assert value(metrics, "twilio_status_callbacks_total", outcome="duplicate") == 190


def test_bad_signature_is_rejected_and_nothing_is_recorded(service: Service) -> None:
    response = service.post_callback(callback_params(sid("SM", 1), "sent"), token="not-the-token")
    assert response.status_code == 403
    unsigned = requests.post(service.status_url, data={"MessageSid": sid("SM", 1)}, timeout=10)
    assert unsigned.status_code == 403
    service.wait_applied()
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT count(*) FROM status_events").fetchone() == (0,)
    metrics = samples(service.metrics_text())
    assert value(metrics, "twilio_status_callbacks_total", outcome="invalid_signature") == 2
    assert value(metrics, "twilio_message_status_total") == 0


def test_worker_restart_keeps_counters_and_records(service: Service) -> None:
    """A worker that dies (and is replaced) takes no counts with it."""
    send_all(service, [(sid("SM", n), "sent") for n in range(30)])
    victim = service.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in service.worker_pids() and len(service.worker_pids()) == 3,
             what="gunicorn to replace the killed worker")  # fmt: skip
    send_all(service, [(sid("SM", n), "delivered") for n in range(30)])
    metrics = samples(service.metrics_text())
    assert value(metrics, "twilio_message_status_total", status="sent") == 30
    assert value(metrics, "twilio_message_status_total", status="delivered") == 30


def test_real_prometheus_computes_the_delivery_rate(
    service: Service, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # 40 messages: 30 delivered, 6 undelivered, 4 failed -> delivery rate 0.75.
    callbacks = []
    for n in range(40):
        final = "delivered" if n < 30 else "undelivered" if n < 36 else "failed"
        callbacks += [(sid("SM", n), "sent"), (sid("SM", n), final)]
    prometheus = start_prometheus(tmp_path, [f"127.0.0.1:{service.port}"])
    request.addfinalizer(prometheus.stop)
    wait_for(lambda: prometheus.scraped("twilio-status-exporter"), what="a first scrape")
    assert set(send_all(service, callbacks)) == {200}
    by_status = (
        'sum by (status) (twilio_message_status_total{status=~"delivered|undelivered|failed"})'
    )
    delivery_rate = (
        'sum(twilio_message_status_total{status="delivered"}) / '
        'sum(twilio_message_status_total{status=~"delivered|undelivered|failed"})'
    )

    def rate_seen() -> float | None:
        counts = {r["metric"]["status"]: float(r["value"][1]) for r in prometheus.query(by_status)}
        if counts != {"delivered": 30, "undelivered": 6, "failed": 4}:
            return None
        (result,) = prometheus.query(delivery_rate)
        return float(result["value"][1])

    assert wait_for(rate_seen, timeout=30, what="prometheus to scrape the traffic") == 0.75


def test_show_prints_the_recorded_lifecycle(service: Service, run_cli: Callable[..., str]) -> None:
    service.post_callback(callback_params(sid("SM", 5), "sent"), query="tag.campaign=bf")
    service.post_callback(callback_params(sid("SM", 5), "delivered"))
    service.wait_applied()
    env = {**os.environ, "EXPORTER_TRACE_URL": "http://tempo.example/trace/{trace_id}"}
    output = run_cli("show", sid("SM", 5), "--store", service.store_url, env=env)
    assert "status=delivered" in output and "campaign=bf" in output
    assert output.index(" sent ") < output.index(" delivered ")
    trace_id = hashlib.sha256(b"twilio.message:" + sid("SM", 5).encode()).hexdigest()[:32]
    assert f"trace {trace_id}  http://tempo.example/trace/{trace_id}" in output


def test_final_statuses_are_counted_per_sender_up_to_the_cap(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory(workers=2, env={"EXPORTER_SENDERS_MAX": "2"})
    service_sid = sid("MG", 1)
    senders = {
        1: {"MessagingServiceSid": service_sid},  # wins over the From number
        2: {"From": "+14155550102"},
        3: {"From": "+14155550103"},  # the third sender: past the cap
    }
    for n, extra in senders.items():
        for status in ("sent", "delivered", "delivered"):  # Twilio retried the last one
            assert service.post_callback(callback_params(sid("SM", n), status, **extra)).ok
    undelivered = callback_params(sid("SM", 4), "undelivered", ErrorCode="30007")
    assert service.post_callback(undelivered).ok
    service.wait_applied()
    metrics = samples(service.metrics_text())

    name = "twilio_sender_message_status_total"
    assert value(metrics, name, sender=service_sid, status="delivered", channel="sms") == 1
    assert value(metrics, name, sender="+14155550102", status="delivered") == 1
    assert value(metrics, name, sender="other", status="delivered") == 1
    # The fourth message's From is a sender of its own, past the cap too.
    assert value(metrics, name, sender="other", status="undelivered", error_code="30007") == 1
    assert value(metrics, name, status="sent") == 0
    assert {dict(labels)["sender"] for (n, labels) in metrics if n == name} == {
        service_sid,
        "+14155550102",
        "other",
    }
