"""The Prometheus rules under dashboards/rules load, follow conventions and are unit-tested."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests import dashboard_queries as dq

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing (Debian package prometheus)"
)

RULE_FILES = sorted(dq.RULES.glob("*.yaml"))
RULE_TEST_FILES = sorted(dq.RULE_TESTS.glob("*.yaml"))
ALERTS = [pytest.param(alert, id=alert["alert"]) for alert in dq.alerts()]
RULE_QUERIES = [pytest.param(q, id=q.title) for q in dq.rule_queries()]

# The alerts users rely on, by purpose.
REQUIRED_ALERTS = {
    "TwilioDeliveryRateDrop",  # below 90 % of its trailing 7-day average
    "TwilioErrorCodeSpike",  # one error code spiking (30007 carrier filtering)
    "TwilioMessagesStuckInSent",
    "TwilioStatusCallbacksStopped",  # while messages are still in flight
    "TwilioStreamEventsStopped",  # the same for the Event Streams input
    "TwilioInvalidSignatureBurst",  # on either input: callbacks and Event Streams
    "TwilioStreamEventsMalformed",  # Event Streams events or requests rejected as malformed
    "TwilioSignatureValidationDisabled",
    "TwilioExporterIngestBacklogGrowing",  # accepted requests not applied
    "TwilioExporterNoIngester",  # no replica holds the ingester lock
    "TwilioExporterSpanExportBehind",  # spans queued, the collector down
    "TwilioStatusExporterDown",  # up == 0
    "TwilioStatusExporterAbsent",  # absent(up)
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, check=False, cwd=dq.RULES
    )


def promtool_test_cases() -> list[dict]:
    return [
        case
        for path in RULE_TEST_FILES
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]
    ]


def test_rule_files_exist() -> None:
    assert RULE_FILES
    assert RULE_TEST_FILES


@needs_promtool
def test_rule_files_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path) -> None:
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_required_alerts_exist() -> None:
    assert {alert["alert"] for alert in dq.alerts()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_is_camel_case_with_severity_summary_description_and_runbook(alert: dict) -> None:
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", alert["alert"])
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"]) >= 40
    assert annotations["runbook_url"].startswith("https://")
    anchor = annotations["runbook_url"].rsplit("#", 1)[1]
    assert anchor == alert["alert"].lower(), "runbook anchors are the lower-cased alert name"
    readme = (dq.DASHBOARDS / "README.md").read_text(encoding="utf-8")
    assert f"### {alert['alert']}" in readme, "every alert has a runbook section"


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_has_a_firing_and_a_silent_promtool_case(alert: dict) -> None:
    checks = [
        check
        for case in promtool_test_cases()
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == alert["alert"]
    ]
    assert any(check["exp_alerts"] for check in checks), "no case where it fires"
    assert any(not check["exp_alerts"] for check in checks), "no case where it stays silent"


@pytest.mark.parametrize(
    "name", ["TwilioInvalidSignatureBurst", "TwilioStatusExporterStoreUnavailable"]
)
def test_request_rejection_alerts_watch_both_inputs(name: str) -> None:
    """A rotated token or a store outage hits StatusCallback and Event Streams alike; an
    Event Streams-only sender must be alerted too."""
    (alert,) = [a for a in dq.alerts() if a["alert"] == name]
    metrics = dq.metric_names(alert["expr"])
    assert {"twilio_status_callbacks_total", "twilio_stream_requests_total"} <= metrics
    assert "label_replace" in alert["expr"], "keep the inputs apart, or `or` drops one"


def test_event_streams_malformed_alert_watches_events_and_requests() -> None:
    (alert,) = [a for a in dq.alerts() if a["alert"] == "TwilioStreamEventsMalformed"]
    assert alert["labels"]["severity"] == "warning"
    assert {
        "job:twilio_stream_events_malformed:ratio_rate15m",
        "job:twilio_stream_requests_malformed:ratio_rate15m",
    } <= dq.metric_names(alert["expr"])


def test_recording_rules_follow_level_metric_operation_naming() -> None:
    for name in dq.recorded_names():
        level, metric, operation = name.split(":")
        assert re.fullmatch(r"[a-z_]+", level) and level.startswith("job")
        assert metric.startswith("twilio_")
        assert re.fullmatch(r"[a-z0-9_]+", operation)


def test_every_recording_rule_has_a_promtool_test_or_feeds_one_that_has() -> None:
    tested = " ".join(
        check["expr"]
        for case in promtool_test_cases()
        for check in case.get("promql_expr_test", [])
    )
    ratios = {n for n in dq.recorded_names() if ":ratio_" in n or "failures" in n}
    assert ratios
    assert all(name in tested for name in ratios), ratios - set(tested.split())


@pytest.mark.parametrize("query", RULE_QUERIES)
def test_rule_metric_names_exist_in_the_contract_or_the_recording_rules(query: dq.Query) -> None:
    unknown = {n for n in dq.metric_names(query.expr) if dq.labels_of(n) is None}
    assert not unknown


@pytest.mark.parametrize("query", RULE_QUERIES)
def test_rule_label_matchers_name_labels_the_metric_has(query: dq.Query) -> None:
    for metric, label in dq.label_matchers(query.expr):
        allowed = dq.labels_of(metric)
        assert allowed is not None and label in allowed, f"{metric} has no label {label!r}"
    known = set().union(*(dq.labels_of(n) or set() for n in dq.metric_names(query.expr)))
    assert dq.grouping_labels(query.expr) <= known | {""}


@pytest.mark.parametrize("query", RULE_QUERIES)
def test_rules_name_no_job_except_through_the_twilio_job_matcher(query: dq.Query) -> None:
    for metric, label in dq.label_matchers(query.expr):
        if label == "job":
            assert metric == "up", "only the up-based alerts may select a job"
    if "job" in query.expr and "up{" in query.expr:
        assert 'job=~".*twilio.*"' in query.expr


def test_rules_keep_the_job_label_so_deployments_stay_apart() -> None:
    for _, rule in dq.rules():
        expr = rule["expr"]
        for clause in re.findall(r"\bsum by \(([^)]*)\)", expr):
            assert "job" in clause, f"{rule.get('alert') or rule['record']}: sum by ({clause})"


# Gauges read from the (shared) store at scrape time: every replica reports the same number.
STORE_WIDE_GAUGES = (
    r"twilio_messages_in_flight|twilio_exporter_ingest_backlog_\w+"
    r"|twilio_exporter_span_export_backlog_\w+"
)


def test_store_wide_gauges_are_aggregated_with_max_not_sum() -> None:
    """Every replica reports the store-wide count, so summing replicas would multiply it."""
    aggregated = re.compile(rf"(\w+)(?: by \([^)]*\))?\s*\(\s*(?:{STORE_WIDE_GAUGES})\b")
    for _, rule in dq.rules():
        for match in aggregated.finditer(rule["expr"]):
            assert match.group(1) == "max", rule.get("alert") or rule["record"]
    for query in dq.panel_queries():
        for match in aggregated.finditer(query.expr):
            assert match.group(1) == "max", str(query)


def test_no_ingester_alert_does_not_need_the_leader_gauge_to_exist() -> None:
    """A deployment where no process reports the leader gauge at all must fire too, and a
    takeover (one scrape without a leader) must not: it starts from the replicas and looks
    at the leader over a window longer than a scrape interval."""
    (alert,) = [a for a in dq.alerts() if a["alert"] == "TwilioExporterNoIngester"]
    assert alert["expr"].lstrip().startswith("count by (job) (twilio_exporter_build_info)")
    assert "unless on (job)" in alert["expr"]
    assert "max_over_time(twilio_exporter_ingester_leader[" in alert["expr"]
