"""Read the shipped dashboards and rules: their queries, metric names and label matchers.

Shared by tests/test_dashboards.py, tests/test_rules.py and
tests/integration/test_dashboards_e2e.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "dashboards"
RULES = DASHBOARDS / "rules"
RULE_TESTS = RULES / "tests"
SCHEMAS = DASHBOARDS / ".schema"
TAG_FOR_LINKS = "twilio-status-exporter"  # dashboards link to all dashboards with this tag

# The metrics users rely on plus the exporter-health ones: name -> (type, labels).
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "twilio_status_callbacks_total": ("counter", frozenset({"outcome"})),
    "twilio_status_callbacks_out_of_order_total": ("counter", frozenset({"status"})),
    # Event Streams (POST /twilio/events): per webhook request, and per CloudEvent in it.
    "twilio_stream_requests_total": ("counter", frozenset({"outcome"})),
    "twilio_stream_events_total": ("counter", frozenset({"type", "outcome"})),
    "twilio_message_status_total": (
        "counter",
        frozenset({"status", "channel", "error_code", "country"}),
    ),
    # Final statuses per sender (messaging service, else From), a bounded set of senders.
    "twilio_sender_message_status_total": (
        "counter",
        frozenset({"sender", "status", "error_code", "channel"}),
    ),
    "twilio_message_stage_duration_seconds": (
        "histogram",
        frozenset({"from_status", "to_status", "channel"}),
    ),
    "twilio_message_time_to_status_seconds": ("histogram", frozenset({"status", "channel"})),
    "twilio_callback_lag_seconds": ("histogram", frozenset({"status"})),
    "twilio_status_callback_request_duration_seconds": ("histogram", frozenset()),
    "twilio_messages_in_flight": ("gauge", frozenset({"status"})),
    "twilio_messages_stale_total": ("counter", frozenset({"status"})),
    "twilio_exporter_build_info": ("gauge", frozenset({"version"})),
    "twilio_exporter_signature_validation_enabled": ("gauge", frozenset()),
    "twilio_exporter_store_errors_total": ("counter", frozenset({"operation"})),
    "twilio_exporter_spans_dropped_total": ("counter", frozenset()),
    # The write path: the inbox the ingester applies and the span outbox the shipper exports.
    # The backlog gauges are read from the store at scrape time (the same on every replica).
    "twilio_exporter_ingest_backlog_entries": ("gauge", frozenset()),
    "twilio_exporter_ingest_backlog_seconds": ("gauge", frozenset()),
    "twilio_exporter_ingest_lag_seconds": ("histogram", frozenset()),
    "twilio_exporter_ingest_batches_total": ("counter", frozenset()),
    "twilio_exporter_ingester_leader": ("gauge", frozenset()),
    "twilio_exporter_span_export_backlog_spans": ("gauge", frozenset()),
    "twilio_exporter_span_export_backlog_seconds": ("gauge", frozenset()),
    "twilio_exporter_spans_exported_total": ("counter", frozenset()),
    "twilio_exporter_span_export_failures_total": ("counter", frozenset()),
    # Reconcile runs' figures, read from the store at scrape time (exporter/telemetry/metrics.py).
    "twilio_reconcile_messages_total": ("counter", frozenset({"result"})),
    "twilio_reconcile_runs_total": ("counter", frozenset({"outcome"})),
    "twilio_reconcile_last_success_timestamp_seconds": ("gauge", frozenset()),
    "twilio_reconcile_last_run_timestamp_seconds": ("gauge", frozenset()),
    "twilio_reconcile_duration_seconds": ("gauge", frozenset()),
}
# Series Prometheus itself attaches to every scrape target.
SYNTHETIC = {"up": frozenset(), "scrape_duration_seconds": frozenset()}
TARGET_LABELS = frozenset({"job", "instance"})

# Values for Grafana's variables when a query is sent to Prometheus directly.
DEFAULT_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "datasource": "prometheus",
    "job": ".*",
    "channel": ".*",
    "country": ".*",
    "from_status": ".*",
    "to_status": ".*",
}

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(rf"({_IDENT})?\s*\{{([^}}]*)\}}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_VARIABLE = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}?")


@dataclass(frozen=True)
class Query:
    """One PromQL expression shipped in a dashboard or a rules file."""

    source: str  # dashboard file or rules file
    title: str  # panel title, variable name or rule name
    ref: str
    expr: str
    instant: bool = False

    def __str__(self) -> str:
        return f"{self.source} / {self.title} / {self.ref}"


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def visual_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dashboard) if p["type"] != "row")


def panel_queries() -> Iterator[Query]:
    for name, dashboard in dashboards().items():
        for panel in visual_panels(dashboard):
            for target in panel.get("targets", []):
                yield Query(
                    name,
                    panel["title"],
                    target["refId"],
                    target["expr"],
                    target.get("instant", False),
                )


def variable_queries() -> Iterator[Query]:
    """Template variables of type query, as (metric selector, label) label_values() calls."""
    for name, dashboard in dashboards().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                yield Query(name, variable["name"], "variable", variable["query"])


@cache
def rule_groups() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for path in sorted(RULES.glob("*.yaml"))
    }


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for file, groups in rule_groups().items():
        for group in groups:
            for rule in group["rules"]:
                yield file, rule


def alerts() -> list[dict[str, Any]]:
    return [rule for _, rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for _, rule in rules() if "record" in rule}


def rule_queries() -> Iterator[Query]:
    for file, rule in rules():
        kind = "alert" if "alert" in rule else "record"
        yield Query(file, rule.get("alert") or rule["record"], kind, rule["expr"])


def label_values_call(query: str) -> tuple[str, str]:
    """Split `label_values(selector, label)` into its selector and label."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query)
    if not match:
        raise ValueError(f"not a label_values(selector, label) query: {query!r}")
    return match.group(1), match.group(2)


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana variables ($name, ${name}, ${name:format}) with concrete values."""
    values = {**DEFAULT_VARIABLES, **(values or {})}
    return _VARIABLE.sub(lambda m: values[m.group(1)], expr)


def variables_used(expr: str) -> set[str]:
    return {m.group(1) for m in _VARIABLE.finditer(expr)}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers that are not functions or keywords)."""
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    names = set()
    for match in re.finditer(rf"(?<![\w:.$]){_IDENT}", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group(0) in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def label_matchers(expr: str) -> list[tuple[str, str]]:
    """(metric name, label name) for every matcher in a selector (metric "" when nameless)."""
    text = _STRING.sub('""', expr)
    found = []
    for selector in _SELECTOR.finditer(text):
        for matcher in _MATCHER.finditer(selector.group(2)):
            found.append((selector.group(1) or "", matcher.group(1)))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names used in by(...), without(...), on(...), ignoring(...), group_*(...)."""
    text = _STRING.sub('""', expr)
    labels = set()
    for clause in _GROUPING.finditer(text):
        inside = clause.group(0)[clause.group(0).index("(") + 1 : -1]
        labels.update(x.strip() for x in inside.split(",") if x.strip())
    return labels


def base_metric(name: str) -> str:
    """The contract name behind a histogram series (`_bucket`, `_sum`, `_count`)."""
    for suffix in ("_bucket", "_sum", "_count"):
        stem = name.removesuffix(suffix)
        if stem != name and CONTRACT.get(stem, ("",))[0] == "histogram":
            return stem
    return name


def labels_of(name: str) -> frozenset[str] | None:
    """Labels a series may carry, or None if no such metric is known."""
    stem = base_metric(name)
    if stem in CONTRACT:
        extra = {"le"} if name.endswith("_bucket") else set()
        return CONTRACT[stem][1] | TARGET_LABELS | extra
    if name in SYNTHETIC:
        return SYNTHETIC[name] | TARGET_LABELS
    if name in recorded_names():
        # level:metric:operation -- the level lists the labels kept, e.g. job_channel.
        return frozenset(re.findall(r"error_code|[a-z]+", name.split(":")[0]))
    return None
