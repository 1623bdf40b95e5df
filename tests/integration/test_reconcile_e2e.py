"""`twilio-status-exporter reconcile` end to end: the real CLI against a local server that
answers like Twilio's Messages API, on the SQLite store the real service (gunicorn) uses."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_twilio_api import AUTH_TOKEN, FakeTwilioApi
from tests.integration.service import Service
from tests.support import callback_params, sid

pytestmark = pytest.mark.integration
RunCli = Callable[..., str]


@pytest.fixture
def fake_api() -> Iterator[FakeTwilioApi]:
    fake = FakeTwilioApi().start()
    yield fake
    fake.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and wanted <= set(s.labels.items())
    )


def send(service: Service, message_sid: str, *statuses: str) -> None:
    for status in statuses:
        assert service.post_callback(callback_params(message_sid, status)).status_code == 200


def reconcile(
    run_cli: RunCli, service: Service, fake: FakeTwilioApi, *, share_metrics: bool
) -> dict[str, object]:
    """Run the CLI as cron would, on the service's store; with `share_metrics`, also in its
    multiprocess metrics directory, as when it runs inside the service's container."""
    env = {
        k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"
    } | {
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE": fake.base_url,
        "EXPORTER_STORE": service.store_url,
        "OTEL_TRACES_EXPORTER": "none",
    }  # fmt: skip
    if share_metrics:
        env["PROMETHEUS_MULTIPROC_DIR"] = service.env["PROMETHEUS_MULTIPROC_DIR"]
    now = datetime.now(UTC)
    since, until = (now - timedelta(hours=2)).isoformat(), (now + timedelta(hours=1)).isoformat()
    out = run_cli(
        "reconcile", "--stuck-after", "0s", "--since", since, "--until", until, "--json", env=env
    )
    summary: dict[str, object] = json.loads(out)
    return summary


def test_reconcile_recovers_lost_callbacks_and_the_service_reports_it(
    service_factory: Callable[..., Service],
    fake_api: FakeTwilioApi,
    run_cli: RunCli,
    tmp_path: Path,
) -> None:
    # A metrics directory of our choosing, as in a container where cron runs reconcile too.
    service = service_factory(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")})
    stuck, done, still, missed = sid("SM", 1), sid("SM", 2), sid("SM", 3), sid("SM", 4)
    send(service, stuck, "queued", "sent")  # its "delivered" callback was lost
    send(service, done, "queued", "sent", "delivered")
    send(service, still, "sent")
    sent = datetime.now(UTC) - timedelta(minutes=30)
    fake_api.add_message(stuck, "delivered", sent, date_updated=sent + timedelta(seconds=20))
    fake_api.add_message(done, "delivered", sent)
    fake_api.add_message(still, "sent", sent)
    fake_api.add_message(missed, "delivered", sent)  # no callback ever reached the service
    fake_api.add_message(sid("SM", 5), "undelivered", sent, error_code=30003)
    fake_api.add_message(sid("SM", 6), "received", sent, direction="inbound")

    summary = reconcile(run_cli, service, fake_api, share_metrics=True)

    assert summary["succeeded"] is True
    assert (summary["missed"], summary["updated"], summary["still_stuck"]) == (2, 1, 1)
    assert sorted(summary["missed_sids"]) == [missed, sid("SM", 5)]  # type: ignore[call-overload]
    text = service.metrics_text()  # reconcile has exited: its figures are in the store
    assert metric(text, "twilio_reconcile_messages_total", result="missed") == 2
    assert metric(text, "twilio_reconcile_messages_total", result="updated") == 1
    assert metric(text, "twilio_reconcile_messages_total", result="still_stuck") == 1
    assert metric(text, "twilio_reconcile_messages_total", result="error") == 0
    assert metric(text, "twilio_reconcile_runs_total", outcome="success") == 1
    assert metric(text, "twilio_reconcile_last_success_timestamp_seconds") > sent.timestamp()
    # Same multiprocess directory: the polled statuses join the service's per-status counts.
    assert metric(text, "twilio_message_status_total", status="delivered") == 3
    assert metric(text, "twilio_message_status_total", status="undelivered") == 1
    assert metric(text, "twilio_messages_in_flight", status="sent") == 1
    shown = run_cli("show", stuck, env={**service.env})
    assert "delivered" in shown and "poll" in shown


def test_reconcile_run_elsewhere_still_reports_through_the_store(
    service_factory: Callable[..., Service], fake_api: FakeTwilioApi, run_cli: RunCli
) -> None:
    service = service_factory(workers=2)
    stuck = sid("SM", 1)
    send(service, stuck, "sent")
    fake_api.add_message(stuck, "delivered", datetime.now(UTC) - timedelta(minutes=5))

    summary = reconcile(run_cli, service, fake_api, share_metrics=False)

    assert summary["updated"] == 1
    text = service.metrics_text()
    # A CronJob's own counters leave with its pod; the store-backed figures do not.
    assert metric(text, "twilio_reconcile_messages_total", result="updated") == 1
    assert metric(text, "twilio_message_status_total", status="delivered") == 0
    assert metric(text, "twilio_messages_in_flight", status="sent") == 0
