"""Every dashboard query and rule runs against a real Prometheus scraping the real service.

One module-scoped run: the exporter under gunicorn, a Prometheus scraping it every second with
dashboards/rules loaded, and two waves of signed, realistic callbacks and Event Streams
deliveries (so every counter and histogram series moves between scrapes and rate() has
something to see). The tests then send each panel, template-variable and rule query to
Prometheus's HTTP API, with Grafana's variables substituted, and check it parses and, for the
panels that show this traffic, returns data.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import dashboard_queries as dq
from tests.integration.prometheus import Prometheus, start_prometheus
from tests.integration.service import Service, start_service
from tests.support import AUTH_TOKEN, callback_params, cloud_event, sid, wait_for

JOB = "twilio-status-exporter"

# Panels that stay empty after a short, healthy run: nothing goes stale within minutes, the
# store never fails, no OTLP endpoint is configured to drop spans, and reconcile never runs.
# (Every other panel, the Event Streams ones included, must show the run's traffic.)
NEEDS_RARE_EVENTS = {
    "Last successful reconcile",
    "Reconciled messages by result",
    "Went stale",
    "Messages going stale by last status",
    "Answered 503 (store unavailable)",
    "Store errors by operation",
    "Spans dropped",
}
# Each wave: recipient (To), channel prefix, final status, error code.
LIFECYCLES = [
    ("+14155550100", "", "delivered", ""),
    ("+14155550100", "", "delivered", ""),
    ("+447700900123", "", "delivered", ""),
    ("+4915112345678", "", "delivered", ""),
    ("+14155550100", "", "undelivered", "30007"),
    ("+447700900123", "", "undelivered", "30003"),
    ("+4915112345678", "", "failed", "30001"),
    ("whatsapp:+5511987654321", "whatsapp", "delivered", ""),
    ("whatsapp:+5511987654321", "whatsapp", "read", ""),
    ("whatsapp:+5511987654321", "whatsapp", "failed", "63016"),
    ("+14155550100", "", "sent", ""),  # stays in flight
]
# Senders: messages to GB go through a messaging service, WhatsApp ones from the WhatsApp
# sender, the rest (and every Event Streams message) from callback_params' From number.
SERVICE = sid("MG", 1)
WHATSAPP_SENDER = "whatsapp:+14155238886"
NUMBER_SENDER = "+14155550100"
# The callbacks Twilio sends on the way to each final status.
STATUSES_TO = {
    "delivered": ("queued", "sent", "delivered"),
    "undelivered": ("queued", "sent", "undelivered"),
    "failed": ("queued", "failed"),
    "read": ("queued", "sent", "delivered", "read"),
    "sent": ("queued", "sent"),
}
INVALID_SIGNATURES = (2, 12)  # per wave: at least 10 in 5 minutes fires the burst alert
# Event Streams deliveries per wave: messages reported by events only (queued, sent,
# delivered), events repeating statuses callbacks already brought (duplicates), the sink's
# test event (ignored), an event without a messageSid (malformed; its batch is accepted), a
# body that is no JSON (a malformed request) and a delivery with a bad signature.
EVENT_MESSAGES = 4
EVENT_BATCH = 5


@dataclass
class Run:
    """The running processes and what was sent."""

    prometheus: Prometheus
    service: Service
    callbacks: int  # every POST to /twilio/status, any outcome
    deliveries: int  # every POST to /twilio/events, any outcome
    started: float

    def api(self, path: str, **params: Any) -> Any:
        body = requests.get(f"{self.prometheus.url}/api/v1/{path}", params=params, timeout=30)
        payload = body.json()
        assert payload.get("status") == "success", f"{path} {params}: {payload.get('error')}"
        return payload["data"]

    def query(self, expr: str, *, instant: bool) -> list[dict[str, Any]]:
        if instant:
            return self.api("query", query=expr)["result"]
        # Steps fall on start + k * step: end on a step, so the last point includes everything.
        end = time.time()
        start = end - math.ceil(end - self.started)
        data = self.api("query_range", query=expr, start=start, end=end, step="1s")
        return data["result"]


def _raw_dlr_done_date() -> str:
    """RawDlrDoneDate as carriers report it: YYMMDDhhmm, UTC, minute precision."""
    return datetime.now(UTC).strftime("%y%m%d%H%M")


def _callbacks(wave: int) -> Iterator[tuple[dict[str, str], bool]]:
    """(form, correctly signed) for one wave of lifecycles, duplicates and rejects."""
    for n, (to, prefix, final, error_code) in enumerate(LIFECYCLES):
        message = sid("SM", wave * 1000 + n)
        extra = {"To": to, **({"ChannelPrefix": prefix} if prefix else {})}
        if prefix:
            extra["From"] = WHATSAPP_SENDER
        if to.startswith("+44"):
            extra["MessagingServiceSid"] = SERVICE
        for status in STATUSES_TO[final]:
            form = callback_params(message, status, **extra)
            if status in {"undelivered", "failed"}:
                form["ErrorCode"] = error_code
            if status in {"delivered", "undelivered"}:
                form["RawDlrDoneDate"] = _raw_dlr_done_date()
            yield form, True
            if status == "delivered" and n % 3 == 0:
                yield form, True  # Twilio retried: a duplicate
    # Out of order: `delivered` arrives before `sent`.
    late = sid("SM", wave * 1000 + 999)
    yield callback_params(late, "queued"), True
    delivered = callback_params(late, "delivered", RawDlrDoneDate=_raw_dlr_done_date())
    yield delivered, True
    yield callback_params(late, "sent"), True
    # Malformed: signed, but without a status.
    malformed = callback_params(sid("SM", wave * 1000 + 998), "queued")
    del malformed["MessageStatus"], malformed["SmsStatus"]
    yield malformed, True
    for n in range(INVALID_SIGNATURES[wave]):
        yield callback_params(sid("SM", wave * 1000 + 900 + n), "sent"), False


def _iso(at: float) -> str:
    """An Event Streams timestamp: RFC 3339, UTC, milliseconds."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _deliveries(wave: int) -> Iterator[tuple[object, bool, int]]:
    """(events or raw body, correctly signed, expected status) for one wave's Event Streams
    deliveries."""
    now = time.time()
    events: list[object] = []
    for n in range(EVENT_MESSAGES):
        message = sid("SM", wave * 1000 + 500 + n)
        for status, ago in (("queued", 4.5), ("sent", 3.25), ("delivered", 0.5 + n)):
            events.append(cloud_event(message, status, _iso(now - ago), to="+447700900123"))
    # Statuses the callbacks of this wave already recorded: duplicates.
    for n in range(0, 4, 3):
        for status in ("queued", "sent"):
            events.append(cloud_event(sid("SM", wave * 1000 + n), status, _iso(now - 5)))
    events.append(
        {
            "specversion": "1.0",
            "type": "com.twilio.eventstreams.test-event",
            "source": "Sink",
            "id": f"EZ{wave:032x}",
            "time": _iso(now),
            "data": {"test_id": "dashboards-e2e"},
        }
    )
    events.append(cloud_event(sid("SM", wave * 1000 + 599), "sent", _iso(now), messageSid=""))
    for start in range(0, len(events), EVENT_BATCH):
        yield events[start : start + EVENT_BATCH], True, 200
    yield b"not json", True, 400
    yield events[:1], False, 403


def _send_wave(service: Service, wave: int) -> tuple[int, int]:
    """Send one wave; (callback requests, Event Streams requests) sent."""
    sent = 0
    with requests.Session() as session:
        for form, signed in _callbacks(wave):
            token = AUTH_TOKEN if signed else "not-the-auth-token"
            response = service.post_callback(form, token=token, session=session)
            expected = 200 if signed else 403
            if "MessageStatus" not in form and signed:
                expected = 400
            assert response.status_code == expected, (
                f"{form} answered {response.status_code} {response.text}\n{service.log()[-3000:]}"
            )
            sent += 1
        deliveries = 0
        for events, signed, expected in _deliveries(wave):
            token = AUTH_TOKEN if signed else "not-the-auth-token"
            response = service.post_events(events, token=token, session=session)
            assert response.status_code == expected, (
                f"delivery answered {response.status_code} {response.text}\n{service.log()[-3000:]}"
            )
            deliveries += 1
    return sent, deliveries


def _scraped_totals(prometheus: Prometheus) -> tuple[float, float]:
    """(callback requests, Event Streams requests) in Prometheus's latest scrape."""

    def total(metric: str) -> float:
        result = prometheus.query(f'sum({metric}{{job="{JOB}"}})')
        return float(result[0]["value"][1]) if result else -1.0

    return total("twilio_status_callbacks_total"), total("twilio_stream_requests_total")


def _rules_evaluated_since(prometheus: Prometheus, since: float) -> bool:
    groups = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    evaluated = [_timestamp(r["lastEvaluation"]) for g in groups for r in g["rules"]]
    return bool(evaluated) and min(evaluated) > since


def _timestamp(rfc3339: str) -> float:
    """Prometheus's RFC 3339 times carry nanoseconds; datetime takes microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp_path: Path = tmp_path_factory.mktemp("dashboards-e2e")
    service = start_service(tmp_path, workers=2)
    rule_files = sorted(dq.RULES.glob("*.yaml"))
    prometheus = start_prometheus(
        tmp_path, [f"127.0.0.1:{service.port}"], job=JOB, rule_files=rule_files
    )
    try:
        started = time.time()
        wait_for(lambda: prometheus.scraped(JOB), timeout=30, what="a first scrape")
        callbacks = deliveries = 0
        for wave in (0, 1):
            sent = _send_wave(service, wave)
            callbacks, deliveries = callbacks + sent[0], deliveries + sent[1]
            wait_for(
                lambda expected=(callbacks, deliveries): _scraped_totals(prometheus) == expected,
                timeout=30,
                what=f"prometheus to scrape wave {wave} ({callbacks} callbacks, "
                f"{deliveries} Event Streams deliveries)",
            )
        scraped_at = time.time()
        wait_for(
            lambda: _rules_evaluated_since(prometheus, scraped_at),
            timeout=30,
            what="every rule to be evaluated on the final data",
        )
        yield Run(prometheus, service, callbacks, deliveries, started)
    finally:
        prometheus.stop()
        service.stop()


def _has_finite_value(result: list[dict[str, Any]]) -> bool:
    values = [s["value"] for s in result if "value" in s]
    values += [v for s in result for v in s.get("values", [])]
    return any(math.isfinite(float(v[1])) for v in values)


PANEL_QUERIES = [pytest.param(q, id=str(q)) for q in dq.panel_queries()]


@pytest.mark.parametrize("query", PANEL_QUERIES)
def test_panel_query_runs_and_shows_the_traffic(run: Run, query: dq.Query) -> None:
    result = run.query(dq.substitute(query.expr), instant=query.instant)
    if query.title not in NEEDS_RARE_EVENTS:
        assert _has_finite_value(result), f"no data for {query}: {dq.substitute(query.expr)}"


def test_exemplar_queries_are_accepted(run: Run) -> None:
    """Panels with exemplars on ask /api/v1/query_exemplars too; those queries must parse."""
    exprs = {
        target["expr"]
        for dashboard in dq.dashboards().values()
        for panel in dq.visual_panels(dashboard)
        for target in panel["targets"]
        if target.get("exemplar")
    }
    assert exprs
    end = time.time()
    for expr in sorted(exprs):
        run.api("query_exemplars", query=dq.substitute(expr), start=run.started, end=end)


@pytest.mark.parametrize(
    "values",
    [
        {"job": JOB, "channel": "sms", "country": "US"},
        {"job": JOB, "channel": "(sms|whatsapp)", "country": "(US|BR)"},
        {"from_status": "sent", "to_status": "delivered", "channel": "sms"},
    ],
    ids=["single values", "multi-value regex", "one stage"],
)
def test_panel_queries_run_with_concrete_variable_values(run: Run, values: dict) -> None:
    for query in dq.panel_queries():
        run.query(dq.substitute(query.expr, values), instant=query.instant)  # raises on error


@pytest.mark.parametrize("query", [pytest.param(q, id=str(q)) for q in dq.variable_queries()])
def test_template_variable_lists_values(run: Run, query: dq.Query) -> None:
    selector, label = dq.label_values_call(query.expr)
    values = run.api(f"label/{label}/values", **{"match[]": dq.substitute(selector)})
    assert values, f"{query}: no {label} values"


def test_channel_and_country_variables_list_what_was_sent(run: Run) -> None:
    selector = 'twilio_message_status_total{job=~".*"}'
    assert {"sms", "whatsapp"} <= set(run.api("label/channel/values", **{"match[]": selector}))
    countries = set(run.api("label/country/values", **{"match[]": selector}))
    assert {"US", "GB", "DE", "BR"} <= countries


@pytest.mark.parametrize("query", [pytest.param(q, id=q.title) for q in dq.rule_queries()])
def test_rule_expression_runs(run: Run, query: dq.Query) -> None:
    result = run.query(query.expr, instant=True)
    if query.ref == "record":
        assert _has_finite_value(result), f"{query.title} returned no data"


def test_every_rule_evaluates_without_error(run: Run) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = run.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else None

    rules = wait_for(evaluated, timeout=30, what="every rule to be evaluated")
    assert len(rules) == sum(1 for _ in dq.rules())
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken


def test_recorded_delivery_rate_is_between_zero_and_one(run: Run) -> None:
    result = wait_for(
        lambda: run.query(f'job:twilio_delivery_rate:ratio_rate1h{{job="{JOB}"}}', instant=True),
        timeout=30,
        what="the delivery-rate recording rule",
    )
    assert 0 < float(result[0]["value"][1]) < 1


def test_the_generated_slo_rules_are_loaded_and_record_their_series(run: Run) -> None:
    """The SLO rules file sits beside the hand-written one and is loaded with it; its recorded
    series exist for the job, so the SLO row of the delivery overview has data."""
    files = {Path(group["file"]).name for group in run.api("rules")["groups"]}
    assert files == {path.name for path in dq.RULES.glob("*.rules.yaml")}
    assert "twilio-status-exporter-slo.rules.yaml" in files

    def recorded(name: str) -> float:
        result = wait_for(
            lambda: run.query(f'{name}{{job="{JOB}"}}', instant=True),
            timeout=30,
            what=f"the recording rule {name}",
        )
        return float(result[0]["value"][1])

    assert recorded("job:twilio_delivery_slo:objective") == 0.95
    for window in ("5m", "30m", "1h", "6h", "3d"):
        # Both waves finalized delivered, undelivered and failed messages.
        assert 0 < recorded(f"job:twilio_delivery_errors:ratio_rate{window}") < 1


def _by_label(run: Run, expr: str, label: str) -> dict[str, float]:
    return {s["metric"][label]: float(s["value"][1]) for s in run.query(expr, instant=True)}


def test_event_streams_figures_are_what_was_sent(run: Run) -> None:
    """What the Event Streams panels show, against what the two waves sent."""
    waves = 2
    events = _by_label(
        run, f'sum by (outcome) (twilio_stream_events_total{{job="{JOB}"}})', "outcome"
    )
    assert events == {
        "accepted": waves * EVENT_MESSAGES * 3,
        "duplicate": waves * 4,  # queued and sent of two messages the callbacks brought
        "ignored": waves * 1,  # the sink's test event
        "malformed": waves * 1,  # no messageSid; its batch was still accepted
    }
    requests_ = _by_label(
        run, f'sum by (outcome) (twilio_stream_requests_total{{job="{JOB}"}})', "outcome"
    )
    batches = -(-(EVENT_MESSAGES * 3 + 4 + 2) // EVENT_BATCH)
    assert {k: v for k, v in requests_.items() if v} == {
        "accepted": waves * batches,
        "malformed": waves * 1,  # not JSON
        "invalid_signature": waves * 1,
    }
    assert sum(requests_.values()) == run.deliveries


def test_per_sender_figures_name_each_sender(run: Run) -> None:
    """What the Senders row shows: each final status under its sender (the messaging
    service where the message had one, else From), each (message, status) once."""
    waves = 2
    finalized = _by_label(
        run,
        "sum by (sender) (twilio_sender_message_status_total"
        f'{{job="{JOB}", status=~"delivered|undelivered|failed"}})',
        "sender",
    )
    # From the number: 4 delivered, 1 undelivered, 1 failed per wave by callbacks (the
    # out-of-order message included) and 4 delivered by Event Streams.
    assert finalized == {
        NUMBER_SENDER: waves * 10,
        SERVICE: waves * 2,
        WHATSAPP_SENDER: waves * 3,
    }
    codes = run.query(
        "sum by (sender, error_code) (twilio_sender_message_status_total"
        f'{{job="{JOB}", status=~"undelivered|failed"}})',
        instant=True,
    )
    by_code = {
        (s["metric"]["sender"], s["metric"]["error_code"]): float(s["value"][1]) for s in codes
    }
    assert by_code == {
        (NUMBER_SENDER, "30007"): waves,
        (NUMBER_SENDER, "30001"): waves,
        (SERVICE, "30003"): waves,
        (WHATSAPP_SENDER, "63016"): waves,
    }
    read = _by_label(
        run,
        f'sum by (sender) (twilio_sender_message_status_total{{job="{JOB}", status="read"}})',
        "sender",
    )
    assert read == {WHATSAPP_SENDER: waves}


def test_source_split_adds_up_to_every_recorded_status(run: Run) -> None:
    """Stacked, the accepted reports by input are every status recorded, each once."""
    by_input = run.query(
        f'sum(twilio_status_callbacks_total{{job="{JOB}", outcome="accepted"}})'
        f' + sum(twilio_stream_events_total{{job="{JOB}", outcome="accepted"}})',
        instant=True,
    )
    recorded = run.query(f'sum(twilio_message_status_total{{job="{JOB}"}})', instant=True)
    assert float(by_input[0]["value"][1]) == float(recorded[0]["value"][1]) > 0


def test_invalid_signature_burst_alert_fires(run: Run) -> None:
    def firing() -> bool:
        alerts = run.api("alerts")["alerts"]
        return any(
            a["labels"]["alertname"] == "TwilioInvalidSignatureBurst" and a["state"] == "firing"
            for a in alerts
        )

    wait_for(firing, timeout=30, what="TwilioInvalidSignatureBurst to fire")
    alerts = {a["labels"]["alertname"] for a in run.api("alerts")["alerts"]}
    assert "TwilioStatusExporterDown" not in alerts
    assert "TwilioSignatureValidationDisabled" not in alerts


def test_one_ingester_applies_everything_and_the_write_path_alerts_stay_quiet(run: Run) -> None:
    """What the Write path row shows after a healthy run: one ingester for the deployment,
    every accepted request applied, and the ingest lag observed."""
    leaders = _by_label(
        run, f'sum by (job) (twilio_exporter_ingester_leader{{job="{JOB}"}})', "job"
    )
    assert leaders == {JOB: 1}
    wait_for(
        lambda: (
            _by_label(
                run, f'max by (job) (twilio_exporter_ingest_backlog_entries{{job="{JOB}"}})', "job"
            )
            == {JOB: 0}
        ),
        timeout=30,
        what="the ingest backlog to be worked off",
    )
    applied = run.query(
        f'sum(twilio_exporter_ingest_lag_seconds_count{{job="{JOB}"}})', instant=True
    )
    assert float(applied[0]["value"][1]) > 0
    firing = {
        a["labels"]["alertname"] for a in run.api("alerts")["alerts"] if a["state"] == "firing"
    }
    assert not firing & {
        "TwilioExporterIngestBacklogGrowing",
        "TwilioExporterNoIngester",
        "TwilioExporterSpanExportBehind",
    }
