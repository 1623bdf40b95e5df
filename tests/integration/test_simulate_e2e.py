"""`twilio-status-exporter simulate` against the real service: what it sent is what is counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service
from tests.support import AUTH_TOKEN, wait_for


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of the metric `name`, keyed by its sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _callbacks_by_outcome(service: Service) -> dict[str, float]:
    samples = _samples(service.metrics_text(), "twilio_status_callbacks_total")
    return {dict(labels)["outcome"]: value for labels, value in samples.items()}


def _by_outcome(service: Service, name: str) -> dict[str, float]:
    """A counter's samples summed per `outcome` label (over every other label); outcomes
    that never happened (pre-created at zero) left out."""
    totals: dict[str, float] = {}
    for labels, value in _samples(service.metrics_text(), name).items():
        outcome = dict(labels)["outcome"]
        totals[outcome] = totals.get(outcome, 0.0) + value
    return {outcome: value for outcome, value in totals.items() if value}


def _simulate(service: Service, summary_path: Path, *options: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "exporter.cli", "simulate", "--url", service.status_url]
    command += ["--quiet"]
    command += ["--summary-json", str(summary_path), *options]
    env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{service.log()[-3000:]}"
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary


def test_simulated_traffic_is_accepted_and_counted_exactly(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    service = service_factory(workers=3)

    summary = _simulate(
        service, tmp_path / "summary.json",
        "--messages", "400", "--rate", "0", "--concurrency", "8", "--seed", "42",
        "--duplicate-rate", "0.1", "--out-of-order-rate", "0.1",
        "--invalid-signature-rate", "0.05", "--initial-status-rate", "0.1",
    )  # fmt: skip

    planned, responses = summary["planned"], summary["responses"]
    assert responses["5xx"] == 0
    assert responses["error"] == 0
    assert responses["4xx"] == 0
    assert responses["403"] == planned["invalid_signature"] > 0
    assert responses["2xx"] == summary["sent"] - planned["invalid_signature"]
    first_copies = planned["accepted"] + planned["out_of_order"]
    counted = wait_for(
        lambda: (c := _callbacks_by_outcome(service)).get("accepted") == first_copies and c,
        timeout=30,
        what="the exporter to count every simulated callback",
    )
    assert counted["duplicate"] == planned["duplicate"] > 0
    assert counted["invalid_signature"] == planned["invalid_signature"]
    assert counted.get("error", 0) == 0
    assert counted.get("malformed", 0) == 0
    text = service.metrics_text()
    assert sum(_samples(text, "twilio_message_status_total").values()) == first_copies
    out_of_order = sum(_samples(text, "twilio_status_callbacks_out_of_order_total").values())
    # Each message's callbacks arrive in the planned order (simultaneous duplicates race only
    # their own original), so the exporter sees exactly the planned disorder.
    assert out_of_order == planned["out_of_order"] > 0


def test_paced_demo_run_with_time_compression_reaches_final_statuses(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    service = service_factory(workers=2)

    summary = _simulate(
        service, tmp_path / "summary.json",
        "--duration", "4", "--rate", "150", "--time-compression", "3600", "--seed", "7",
    )  # fmt: skip

    assert summary["sent"] > 200
    assert summary["unexpected"] == dict.fromkeys(summary["unexpected"], 0)
    statuses = {
        dict(labels)["status"]
        for labels in _samples(service.metrics_text(), "twilio_message_status_total")
    }
    assert {"sent", "delivered"} <= statuses


DISORDER = (
    "--messages", "300", "--rate", "0", "--concurrency", "8", "--seed", "42",
    "--duplicate-rate", "0.1", "--out-of-order-rate", "0.1", "--invalid-signature-rate", "0.05",
    "--initial-status-rate", "0.1",
)  # fmt: skip


def test_simulated_event_streams_traffic_is_counted_exactly(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    service = service_factory(workers=3)

    summary = _simulate(
        service, tmp_path / "summary.json", "--input", "events", "--event-batch", "10", *DISORDER
    )

    events, expected = summary["inputs"]["events"], summary["expected"]
    assert list(summary["inputs"]) == ["events"]
    assert events["responses"]["5xx"] == events["responses"]["error"] == 0
    assert events["responses"]["4xx"] == 0
    requests = expected["twilio_stream_requests_total"]
    assert events["responses"]["403"] == requests["invalid_signature"] > 0
    assert events["responses"]["2xx"] == requests["accepted"] > 0
    assert events["requests"] < events["sent"]  # batched
    stream = expected["twilio_stream_events_total"]
    counted = wait_for(
        lambda: (
            (c := _by_outcome(service, "twilio_stream_events_total")).get("accepted")
            == stream["accepted"]
            and c
        ),
        timeout=30,
        what="the exporter to count every simulated event",
    )
    assert counted == {"accepted": stream["accepted"], "duplicate": stream["duplicate"]}
    assert stream["duplicate"] > 0
    assert _by_outcome(service, "twilio_stream_requests_total") == requests
    assert _by_outcome(service, "twilio_status_callbacks_total") == {}
    text = service.metrics_text()
    statuses = _samples(text, "twilio_message_status_total")
    assert sum(statuses.values()) == expected["twilio_message_status_total"] == stream["accepted"]
    assert {dict(labels)["status"] for labels in statuses} <= {
        "queued", "sent", "delivered", "undelivered", "failed", "read"
    }  # fmt: skip
    out_of_order = sum(_samples(text, "twilio_status_callbacks_out_of_order_total").values())
    assert out_of_order == expected["twilio_status_callbacks_out_of_order_total"] > 0


def test_simulated_callbacks_and_events_for_the_same_statuses_count_each_once(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    service = service_factory(workers=3)

    summary = _simulate(service, tmp_path / "summary.json", "--input", "both", *DISORDER)

    assert summary["unexpected"] == dict.fromkeys(summary["unexpected"], 0)
    expected = summary["expected"]
    callbacks = expected["twilio_status_callbacks_total"]
    stream = expected["twilio_stream_events_total"]
    distinct = expected["twilio_message_status_total"]

    def counted() -> dict[str, dict[str, float]] | None:
        found = {
            "callbacks": _by_outcome(service, "twilio_status_callbacks_total"),
            "events": _by_outcome(service, "twilio_stream_events_total"),
        }
        delivered = sum(found["callbacks"].get(o, 0) for o in ("accepted", "duplicate"))
        delivered += sum(found["events"].get(o, 0) for o in ("accepted", "duplicate"))
        total = callbacks["accepted+duplicate"] + stream["accepted+duplicate"]
        return found if delivered == total else None

    found = wait_for(counted, timeout=30, what="the exporter to count every delivery")
    by_callback, by_event = found["callbacks"], found["events"]
    assert by_callback["accepted"] + by_callback["duplicate"] == callbacks["accepted+duplicate"]
    assert by_callback["invalid_signature"] == callbacks["invalid_signature"] > 0
    assert by_event["accepted"] + by_event["duplicate"] == stream["accepted+duplicate"]
    assert set(by_callback) == {"accepted", "duplicate", "invalid_signature"}
    assert set(by_event) == {"accepted", "duplicate"}
    # Every (message, status) is counted once, whichever input delivered it first.
    text = service.metrics_text()
    assert sum(_samples(text, "twilio_message_status_total").values()) == distinct
    assert by_callback["accepted"] + by_event["accepted"] == distinct
    assert by_event["duplicate"] > 0 and by_callback["duplicate"] > 0
    requests = _by_outcome(service, "twilio_stream_requests_total")
    assert requests == expected["twilio_stream_requests_total"]
