"""Exemplars on the latency histograms: in OpenMetrics only, on the bucket the value fell in,
naming the message's trace (the very id its spans carry), the newest of any process."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import falcon.testing
import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from exporter.model import MessageState
from exporter.server.metrics_directory import clear
from exporter.settings import Settings
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.exemplars import Exemplars, read_directory
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing import SpanOutbox
from exporter.telemetry.tracing.shipper import SpanShipper
from exporter.web.app import Telemetry, create_app
from tests.apps import inline_client
from tests.otlp_receiver import RecordingExporter
from tests.support import callback_params, sid

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TRACED = {
    "twilio_message_stage_duration_seconds",
    "twilio_message_time_to_status_seconds",
    "twilio_callback_lag_seconds",
}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STAGE = {"from_status": "sent", "to_status": "delivered", "channel": "sms"}
ROOT = Path(__file__).resolve().parents[1]


def trace_hex(message_sid: str) -> str:
    """The specification's trace id of a message: SHA-256 of "twilio.message:" + sid, 16 bytes."""
    return hashlib.sha256(f"twilio.message:{message_sid}".encode()).digest()[:16].hex()


def message(message_sid: str) -> MessageState:
    return MessageState(message_sid, "delivered", first_seen_at=0.0, updated_at=0.0)


@pytest.fixture
def telemetry(registry: CollectorRegistry) -> Telemetry:
    return Telemetry(registry, Metrics(registry))


@pytest.fixture
def client(sqlite_store: SQLiteStore, telemetry: Telemetry) -> falcon.testing.TestClient:
    return inline_client(Settings(insecure_skip_signature=True), sqlite_store, telemetry)


def post(
    client: falcon.testing.TestClient, message_sid: str, status: str, query: str = "", **extra: str
) -> None:
    result = client.simulate_post(
        "/twilio/status",
        body=urlencode(callback_params(message_sid, status, **extra)),
        query_string=query or None,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result.status_code == 200, result.text


def lifecycle(client: falcon.testing.TestClient, message_sid: str, query: str = "") -> None:
    """queued, sent, delivered (with a RawDlrDoneDate, so callback lag is observed)."""
    post(client, message_sid, "queued", query)
    post(client, message_sid, "sent", query)
    dlr = time.strftime("%y%m%d%H%M", time.gmtime())
    post(client, message_sid, "delivered", query, RawDlrDoneDate=dlr)


def scrape(client: falcon.testing.TestClient, accept: str = OPENMETRICS) -> str:
    result = client.simulate_get("/metrics", headers={"Accept": accept} if accept else None)
    assert result.status_code == 200
    return result.text


def buckets_with_exemplars(text: str) -> Iterator[tuple[str, Sample, float]]:
    """(family, bucket sample, the bucket's lower bound) of every exemplar in an OpenMetrics
    exposition, which the library's own parser must read."""
    for family in text_string_to_metric_families(text):
        lower = -math.inf
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                lower = -math.inf  # the next series starts
                continue
            if sample.exemplar is not None:
                yield family.name, sample, lower
            lower = float(sample.labels["le"])


def series(sample: Sample) -> dict[str, str]:
    return {k: v for k, v in sample.labels.items() if k != "le"}


def test_each_traced_bucket_names_the_message_observed_in_it(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    message = sid("SM", 1)
    lifecycle(client, message, query=f"created={time.time() - 100}")
    found = list(buckets_with_exemplars(scrape(client)))

    assert {family for family, _, _ in found} == TRACED  # none on the request duration
    for family, bucket, lower in found:
        exemplar = bucket.exemplar
        assert exemplar is not None
        assert exemplar.labels == {"trace_id": trace_hex(message)}
        assert sum(map(len, [*exemplar.labels, *exemplar.labels.values()])) <= 128
        assert lower < exemplar.value <= float(bucket.labels["le"])
        assert exemplar.timestamp is not None and abs(float(exemplar.timestamp) - time.time()) < 60
        # One observation per series: the exemplar's value is the series' whole sum.
        observed = registry.get_sample_value(f"{family}_sum", series(bucket))
        assert observed == pytest.approx(exemplar.value)
    # One bucket per series carries it, the one the value fell in.
    assert len(found) == len({(family, *series(b).items()) for family, b, _ in found})
    to_delivered = [
        b
        for f, b, _ in found
        if f.endswith("time_to_status_seconds") and series(b)["status"] == "delivered"
    ]
    assert [b.labels["le"] for b in to_delivered] == ["120.0"]  # 100 s after creation


def test_the_latest_message_in_a_bucket_is_its_exemplar(
    client: falcon.testing.TestClient,
) -> None:
    first, second = sid("SM", 2), sid("SM", 3)
    lifecycle(client, first)
    lifecycle(client, second)
    found = list(buckets_with_exemplars(scrape(client)))
    assert found
    assert {b.exemplar.labels["trace_id"] for _, b, _ in found if b.exemplar} == {trace_hex(second)}


def test_exemplars_name_the_trace_of_the_spans_with_a_traceparent_too(
    sqlite_store: SQLiteStore, telemetry: Telemetry
) -> None:
    settings = Settings(insecure_skip_signature=True)
    client = inline_client(settings, sqlite_store, telemetry, SpanOutbox())
    lifecycle(client, sid("SM", 4), query=urlencode({"traceparent": TRACEPARENT}))
    spans = RecordingExporter()
    shipper = SpanShipper(sqlite_store, [spans], Resource.create({}), Metrics(CollectorRegistry()))
    while shipper.ship_once():
        pass
    span_traces = {span.trace_id for span in spans.spans}
    found = list(buckets_with_exemplars(scrape(client)))
    exemplar_traces = {b.exemplar.labels["trace_id"] for _, b, _ in found if b.exemplar}
    assert exemplar_traces == span_traces == {TRACEPARENT[3:35]}


@pytest.mark.parametrize("accept", ["", "text/plain; version=0.0.4", "*/*"])
def test_the_text_format_carries_no_exemplars_and_is_the_librarys_own(
    client: falcon.testing.TestClient, registry: CollectorRegistry, accept: str
) -> None:
    lifecycle(client, sid("SM", 5))
    text = scrape(client, accept)
    assert "trace_id" not in text
    assert text == generate_latest(registry).decode()


def observe_as_a_process(directory: str, message_sid: str, at: str, *seconds: str) -> None:
    """Run in a process of its own with PROMETHEUS_MULTIPROC_DIR set (as the ingester is):
    observe stage durations at time `at`, then save this process's exemplars."""
    exemplars = Exemplars(directory, clock=lambda: float(at))
    metrics = Metrics(CollectorRegistry(), exemplars=exemplars)
    for value in seconds:
        metrics.stage_duration.observe(tuple(STAGE.values()), float(value), message(message_sid))
    exemplars.save()


def run_as_a_process(directory: Path, message_sid: str, at: float, *seconds: float) -> None:
    code = (
        "import sys; from tests.test_exemplars import observe_as_a_process as o; o(*sys.argv[1:])"
    )
    args = [str(directory), message_sid, str(at), *map(str, seconds)]
    subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        cwd=ROOT,
        check=True,
        timeout=60,
    )


def test_under_multiprocess_mode_the_newest_exemplar_of_any_process_wins(
    tmp_path: Path, sqlite_store: SQLiteStore
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    newer, older = sid("SM", 6), sid("SM", 7)
    run_as_a_process(directory, newer, 2_000_000_000.0, 3.0)
    # Saved last, but kept earlier: the timestamp decides, not the order of the files.
    run_as_a_process(directory, older, 1_000_000_000.0, 4.0, 100.0)
    assert len(list(directory.glob("exemplars_*.json"))) == 2
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, Metrics(registry), str(directory))
    client = falcon.testing.TestClient(create_app(Settings(), sqlite_store, telemetry))

    text = scrape(client)
    found = {
        b.labels["le"]: b
        for f, b, _ in buckets_with_exemplars(text)
        if f.endswith("stage_duration_seconds")
    }
    assert set(found) == {"5.0", "120.0"}
    five, hundred_twenty = found["5.0"], found["120.0"]
    assert five.value == 2  # both processes' observations, merged
    assert five.exemplar is not None and hundred_twenty.exemplar is not None
    assert five.exemplar.labels == {"trace_id": trace_hex(newer)}
    assert (five.exemplar.value, float(five.exemplar.timestamp or 0)) == (3.0, 2e9)
    assert hundred_twenty.exemplar.labels == {"trace_id": trace_hex(older)}
    assert hundred_twenty.exemplar.value == 100.0
    assert "trace_id" not in scrape(client, "text/plain; version=0.0.4")


def test_exemplars_are_saved_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [100.0]
    exemplars = Exemplars(str(tmp_path), save_interval=1.0, monotonic=lambda: now[0])
    histogram = exemplars.histogram("h_seconds", "H.", ["status"], (1, 10), CollectorRegistry())

    def saved() -> list[str]:
        return [
            e.labels["trace_id"]
            for e in read_directory(str(tmp_path)).get("h_seconds", {}).values()
        ]

    exemplars.save_if_due()
    assert list(tmp_path.iterdir()) == []  # nothing kept, nothing written
    histogram.observe(("sent",), 0.5, message(sid("SM", 21)))
    exemplars.save_if_due()
    assert saved() == [trace_hex(sid("SM", 21))]
    histogram.observe(("sent",), 0.5, message(sid("SM", 22)))
    now[0] += 0.5
    exemplars.save_if_due()
    assert saved() == [trace_hex(sid("SM", 21))]  # saved half a second ago: not yet
    now[0] += 0.5
    exemplars.save_if_due()
    assert saved() == [trace_hex(sid("SM", 22))]
    assert [p.name for p in tmp_path.iterdir()] == [f"exemplars_{os.getpid()}.json"]


def test_an_unreadable_exemplar_file_is_skipped(tmp_path: Path) -> None:
    exemplars = Exemplars(str(tmp_path))
    histogram = exemplars.histogram("h_seconds", "H.", ["status"], (1, 10), CollectorRegistry())
    histogram.observe(("sent",), 5.0, message(sid("SM", 23)))
    exemplars.save()
    (tmp_path / "exemplars_1.json").write_text('[["h_seconds", {"status": "sent"}')  # cut short
    (tmp_path / "exemplars_2.json").write_text(json.dumps({"not": "ours"}))
    found = read_directory(str(tmp_path))
    assert [(key, e.labels) for key, e in found["h_seconds"].items()] == [
        (((("status", "sent"),), "10.0"), {"trace_id": trace_hex(sid("SM", 23))})
    ]


def test_a_failed_save_is_logged_once_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    exemplars = Exemplars(str(tmp_path / "gone"), monotonic=lambda: now[0])
    histogram = exemplars.histogram("h_seconds", "H.", ["status"], (1,), CollectorRegistry())
    histogram.observe(("sent",), 0.5, message(sid("SM", 24)))
    with caplog.at_level(logging.WARNING, logger="exporter.telemetry.exemplars"):
        for _ in range(3):
            exemplars.save_if_due()
            now[0] += 1
    assert len(caplog.records) == 1
    (tmp_path / "gone").mkdir()
    exemplars.save_if_due()
    assert read_directory(str(tmp_path / "gone"))


def test_a_new_run_starts_without_the_previous_runs_exemplars(tmp_path: Path) -> None:
    for name in ("exemplars_11.json", "exemplars_12.json.tmp", "counter_11.db", "notes.txt"):
        (tmp_path / name).write_text("[]")
    clear(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
