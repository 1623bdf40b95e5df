"""Exemplars end to end: the service under gunicorn (two workers and the ingester, in
multiprocess mode), traces to a real OTLP receiver, and a real Prometheus with exemplar
storage scraping /metrics (it asks for OpenMetrics). The exemplars Prometheus stores name
traces the receiver got."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from tests.integration.prometheus import Prometheus, start_prometheus
from tests.integration.service import Service
from tests.otlp_receiver import OTLPReceiver
from tests.support import callback_params, sid, wait_for

pytestmark = pytest.mark.integration

TRACED = (
    "twilio_message_stage_duration_seconds",
    "twilio_message_time_to_status_seconds",
    "twilio_callback_lag_seconds",
)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MESSAGES = 12
STATUSES = ("queued", "sent", "delivered")
# The traceparent message was created this long ago, the others minutes ago at most: it
# alone falls in the time-to-status bucket (1800, 3600].
TRACEPARENT_AGE = 2000.0


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def send(service: Service, started: float) -> dict[str, str]:
    """Every message's lifecycle, messages in parallel so they spread over the workers; the
    trace id each message's spans should carry, by MessageSid."""
    traces: dict[str, str] = {}

    def post_lifecycle(n: int) -> None:
        message = sid("SM", 7000 + n)
        query = {"created": str(started - (TRACEPARENT_AGE if n == 0 else 5 + 30 * n))}
        if n == 0:
            query["traceparent"] = TRACEPARENT
            traces[message] = TRACEPARENT[3:35]
        else:
            traces[message] = hashlib.sha256(f"twilio.message:{message}".encode()).hexdigest()[:32]
        for status in STATUSES:
            extra = {}
            if status == "delivered":
                extra["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
            params = callback_params(message, status, **extra)
            response = service.post_callback(params, query=urlencode(query))
            assert response.status_code == 200, response.text

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(post_lifecycle, range(MESSAGES)))
    return traces


def query_exemplars(prometheus: Prometheus, metric: str, start: float) -> list[dict[str, Any]]:
    """Prometheus's stored exemplars of a histogram's buckets since `start`: one entry per
    series, each with its `seriesLabels` and `exemplars`."""
    response = requests.get(
        f"{prometheus.url}/api/v1/query_exemplars",
        params={"query": f"{metric}_bucket", "start": start, "end": time.time() + 60},
        timeout=10,
    )
    body = response.json()
    assert body.get("status") == "success", body
    result: list[dict[str, Any]] = body["data"]
    return result


def test_prometheus_stores_exemplars_naming_exported_traces(
    service_factory: Callable[..., Service], receiver: OTLPReceiver, tmp_path: Path
) -> None:
    service = service_factory(
        workers=2,
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
    )
    wait_for(
        lambda: len(service.worker_pids()) == 2 and service.ingester_pid() is not None,
        what="two workers and the ingester",
    )
    prometheus = start_prometheus(
        tmp_path, [f"127.0.0.1:{service.port}"], flags=["--enable-feature=exemplar-storage"]
    )
    try:
        started = time.time()
        traces = send(service, started)
        # A stage span per status, and the root span once delivered.
        receiver.wait_for_spans(lambda spans: len(spans) >= MESSAGES * 4, timeout=30)
        exported = {span.trace_id for span in receiver.spans()}
        assert exported == set(traces.values())

        def stored() -> dict[str, list[dict[str, Any]]] | None:
            found = {metric: query_exemplars(prometheus, metric, started - 60) for metric in TRACED}
            traceparent_bucket = [
                exemplar["labels"]["trace_id"]
                for one in found["twilio_message_time_to_status_seconds"]
                if one["seriesLabels"].get("le") == "3600.0"
                and one["seriesLabels"].get("status") == "delivered"
                for exemplar in one["exemplars"]
            ]
            return found if all(found.values()) and traceparent_bucket else None

        found = wait_for(stored, timeout=30, what="Prometheus to store exemplars of each histogram")
    finally:
        prometheus.stop()

    for metric, series in found.items():
        for one in series:
            labels = one["seriesLabels"]
            assert labels["__name__"] == f"{metric}_bucket"
            for exemplar in one["exemplars"]:
                trace_id = exemplar["labels"]["trace_id"]
                assert set(exemplar["labels"]) == {"trace_id"}
                assert trace_id in exported, (metric, labels, exemplar)
                assert float(exemplar["value"]) <= float(labels["le"])
                assert started - 5 <= exemplar["timestamp"] <= time.time()
    (slow,) = (
        one
        for one in found["twilio_message_time_to_status_seconds"]
        if one["seriesLabels"]["le"] == "3600.0" and one["seriesLabels"]["status"] == "delivered"
    )
    assert {e["labels"]["trace_id"] for e in slow["exemplars"]} == {TRACEPARENT[3:35]}
    assert TRACEPARENT_AGE <= float(slow["exemplars"][-1]["value"]) <= 3600
