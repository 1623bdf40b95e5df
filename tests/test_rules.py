"""The Prometheus rules under dashboards/rules load, follow conventions and are unit-tested."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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
    # The delivery SLO's multi-window, multi-burn-rate alerts (generated rules).
    "TwilioDeliveryErrorBudgetFastBurn",  # 1h and 5m above 14.4x the budget: page
    "TwilioDeliveryErrorBudgetSlowBurn",  # 6h and 30m above 6x the budget: ticket
}
SLO_RULES = dq.RULES / "twilio-status-exporter-slo.rules.yaml"


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


# --- The delivery SLO rules, generated by dashboards/generate.py --------------------------


@pytest.fixture(scope="module")
def slo() -> ModuleType:
    """dashboards/generator/slo_rules.py (a script directory, imported by bare name)."""
    if str(dq.DASHBOARDS) not in sys.path:
        sys.path.insert(0, str(dq.DASHBOARDS))
    return importlib.import_module("generator.slo_rules")


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(dq.DASHBOARDS / "generate.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_slo_rules_file_is_the_generated_one_for_the_default_objective(slo) -> None:
    assert slo.DEFAULT_OBJECTIVE == 0.95
    assert SLO_RULES.name == slo.FILE_NAME
    assert SLO_RULES in RULE_FILES, "promtool check and the e2e Prometheus load it"
    assert SLO_RULES.read_text(encoding="utf-8") == slo.render(0.95)
    assert generate("--check").returncode == 0


@pytest.mark.parametrize("objective", [0.95, 0.99, 0.999, 0.5])
def test_the_generated_yaml_reads_back_as_the_rules_it_was_made_from(slo, objective) -> None:
    """The generator writes YAML without PyYAML: PyYAML must read exactly the rules."""
    assert yaml.safe_load(slo.render(objective)) == slo.as_data(objective)


def test_the_slo_records_error_ratios_over_the_burn_rate_windows_and_the_objective() -> None:
    recorded = {rule["record"]: rule["expr"] for _, rule in dq.rules() if "record" in rule}
    for window in ("5m", "30m", "1h", "6h", "3d"):
        expr = recorded[f"job:twilio_delivery_errors:ratio_rate{window}"]
        assert f'{{status=~"undelivered|failed"}}[{window}]' in expr
        assert f'{{status=~"delivered|undelivered|failed"}}[{window}]' in expr
        assert "or on (job)" in expr, "0, not absent, while nothing failed"
    assert recorded["job:twilio_delivery_slo:objective"].startswith("0.95 + 0 * count by (job)")


def test_burn_rate_alerts_pair_a_long_and_a_short_window_above_the_same_threshold() -> None:
    alerts = {alert["alert"]: alert for alert in dq.alerts()}
    for name, burn, long, short, severity in [
        ("TwilioDeliveryErrorBudgetFastBurn", "14.4", "1h", "5m", "critical"),
        ("TwilioDeliveryErrorBudgetSlowBurn", "6", "6h", "30m", "warning"),
    ]:
        alert = alerts[name]
        threshold = f"({burn} * (1 - 0.95))"
        assert f"job:twilio_delivery_errors:ratio_rate{long} > {threshold}" in alert["expr"]
        assert f"job:twilio_delivery_errors:ratio_rate{short} > {threshold}" in alert["expr"]
        assert f"[{long}])) >= 10" in alert["expr"], "a minimum volume in the long window"
        assert alert["labels"]["severity"] == severity
        assert "for" not in alert, "the long window is the wait"


def test_another_objective_moves_the_thresholds_and_the_objective_series(slo) -> None:
    rules = {
        rule.get("alert") or rule["record"]: rule
        for group in slo.as_data(0.99)["groups"]
        for rule in group["rules"]
    }
    assert rules["job:twilio_delivery_slo:objective"]["expr"].startswith("0.99 + ")
    fast = rules["TwilioDeliveryErrorBudgetFastBurn"]
    assert "> (14.4 * (1 - 0.99))" in fast["expr"]
    assert "more than 14.4 % in the last 5 minutes" in fast["annotations"]["description"]
    slow = rules["TwilioDeliveryErrorBudgetSlowBurn"]
    assert "> (6 * (1 - 0.99))" in slow["expr"]
    assert "the 1 % the 99 % delivery objective allows" in slow["annotations"]["description"]


@pytest.mark.parametrize("value", ["0", "1", "99", "-0.5", "1.5", "nan", "ninety"])
def test_an_objective_outside_zero_to_one_is_refused_with_a_clear_error(value: str) -> None:
    result = generate("--check", "--slo-objective", value)
    assert result.returncode == 2
    assert "--slo-objective" in result.stderr
    assert "0.99 for 99 %" in result.stderr, result.stderr


def test_an_objective_that_makes_the_page_unreachable_is_warned_about(slo) -> None:
    # 14.4 x a 10 % budget is 144 % errors: the page could never fire.
    assert slo.unreachable_alerts(0.9) == ["TwilioDeliveryErrorBudgetFastBurn"]
    assert slo.unreachable_alerts(0.95) == []
    result = generate("--check", "--slo-objective", "0.9")
    assert "TwilioDeliveryErrorBudgetFastBurn" in result.stderr
    assert "can never fire" in result.stderr


def _series(status: str, error_code: str, values: str) -> dict[str, str]:
    labels = f'job="twilio-status-exporter",instance="a:8080",status="{status}",channel="sms"'
    return {
        "series": f'twilio_message_status_total{{{labels},error_code="{error_code}",country="US"}}',
        "values": values,
    }


@needs_promtool
@pytest.mark.parametrize(
    ("objective", "ticket"),
    [(0.99, True), (0.95, False)],
    ids=["99 % objective: 10 % errors open a ticket", "95 %: 10 % errors are in budget"],
)
def test_the_same_failures_fire_under_a_stricter_objective_only(
    slo, tmp_path: Path, objective: float, ticket: bool
) -> None:
    """10 % of messages failing for 7 hours: over 6x a 1 % budget (6 %) but under 14.4x
    (14.4 %), so a 99 % objective opens a ticket and does not page; a 95 % objective (ticket
    at 30 %) stays silent."""
    rules = tmp_path / slo.FILE_NAME
    rules.write_text(slo.render(objective), encoding="utf-8")
    (alert,) = [
        rule
        for group in slo.as_data(objective)["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "TwilioDeliveryErrorBudgetSlowBurn"
    ]
    annotations = dict(alert["annotations"])
    annotations["description"] = (
        annotations["description"]
        .replace("{{ $value | humanizePercentage }}", "10%")
        .replace("{{ $labels.job }}", "twilio-status-exporter")
    )
    expected = [
        {
            "exp_labels": {"severity": "warning", "job": "twilio-status-exporter"},
            "exp_annotations": annotations,
        }
    ]
    case = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "group_eval_order": [name for name, _ in slo.groups(objective)],
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    _series("delivered", "", "0+54x420"),
                    _series("undelivered", "30007", "0+6x420"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "420m",
                        "alertname": "TwilioDeliveryErrorBudgetSlowBurn",
                        "exp_alerts": expected if ticket else [],
                    },
                    {
                        "eval_time": "420m",
                        "alertname": "TwilioDeliveryErrorBudgetFastBurn",
                        "exp_alerts": [],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "objective.test.yaml"
    test_file.write_text(yaml.safe_dump(case), encoding="utf-8")
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
