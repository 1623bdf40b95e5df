"""The Grafana dashboards and provisioning files under dashboards/ import as they are."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

from exporter.error_codes import ERRORS
from tests import dashboard_queries as dq

# Stable uids: users bookmark /d/<uid> and link to these from their own dashboards.
EXPECTED_UIDS = {
    "twilio-delivery-overview.json": "twilio-delivery-overview",
    "twilio-callback-latency.json": "twilio-callback-latency",
    "twilio-exporter-health.json": "twilio-exporter-health",
}
# Variables Grafana defines itself.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__url_time_range", "__value"}
# The histograms whose buckets carry trace-id exemplars (SPEC section 7).
EXEMPLAR_HISTOGRAMS = (
    "twilio_message_stage_duration_seconds",
    "twilio_message_time_to_status_seconds",
    "twilio_callback_lag_seconds",
)
OVERVIEW = "twilio-delivery-overview.json"
# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) used here.
KNOWN_UNITS = {"percentunit", "short", "none", "s", "cps", "reqps", "ops", "string"}

DASHBOARD_NAMES = sorted(dq.dashboards())
PANELS = [
    pytest.param(name, panel, id=f"{name}:{panel['title']}")
    for name in DASHBOARD_NAMES
    for panel in dq.visual_panels(dq.dashboards()[name])
]
QUERIES = [pytest.param(q, id=str(q)) for q in dq.panel_queries()]


def schema(path: str) -> Draft7Validator:
    validator = Draft7Validator(json.loads((dq.SCHEMAS / path).read_text(encoding="utf-8")))
    validator.check_schema(validator.schema)
    return validator


def describe(errors: list[Any]) -> str:
    error = best_match(errors)
    return f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"


def test_there_are_the_three_dashboards_of_the_spec() -> None:
    assert set(EXPECTED_UIDS) <= set(DASHBOARD_NAMES)


def test_dashboard_json_files_match_their_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(dq.DASHBOARDS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_dashboard_validates_against_grafana_dashboard_schema(name: str) -> None:
    errors = list(schema("dashboard.schema.json").iter_errors(dq.dashboards()[name]))
    assert not errors, describe(errors)


@pytest.mark.parametrize(("name", "panel"), PANELS)
def test_panel_options_validate_against_their_plugin_schema(name: str, panel: dict) -> None:
    options = dq.SCHEMAS / "panels" / f"{panel['type']}.options.schema.json"
    assert options.exists(), f"no schema for panel type {panel['type']}: add it to generate.sh"
    errors = list(schema(f"panels/{options.name}").iter_errors(panel["options"]))
    assert not errors, describe(errors)
    custom = panel["fieldConfig"]["defaults"].get("custom")
    field_schema = dq.SCHEMAS / "panels" / f"{panel['type']}.fieldconfig.schema.json"
    if custom is not None and field_schema.exists():
        errors = list(schema(f"panels/{field_schema.name}").iter_errors(custom))
        assert not errors, describe(errors)


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_dashboard_has_a_recent_schema_version_and_stable_uid(name: str) -> None:
    dashboard = dq.dashboards()[name]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == EXPECTED_UIDS[name]
    assert dashboard.get("id") is None, "an id makes Grafana overwrite another dashboard"


def test_dashboard_uids_and_titles_are_unique() -> None:
    uids = [d["uid"] for d in dq.dashboards().values()]
    titles = [d["title"] for d in dq.dashboards().values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_panel_ids_are_unique_and_panels_do_not_overlap(name: str) -> None:
    all_panels = list(dq.panels(dq.dashboards()[name]))
    ids = [p["id"] for p in all_panels]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_datasource_is_a_prometheus_datasource_variable(name: str) -> None:
    variables = {v["name"]: v for v in dq.dashboards()[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "__inputs" not in dq.dashboards()[name], "imports must not ask for a datasource"


@pytest.mark.parametrize(("name", "panel"), PANELS)
def test_panel_and_its_targets_use_the_datasource_variable(name: str, panel: dict) -> None:
    expected = {"type": "prometheus", "uid": "${datasource}"}
    assert panel["datasource"] == expected
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["datasource"] == expected, target["refId"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_query_variables_use_the_datasource_variable(name: str) -> None:
    for variable in dq.dashboards()[name]["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize(("name", "panel"), PANELS)
def test_panel_has_a_unit_description_and_thresholds(name: str, panel: dict) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults.get("unit") in KNOWN_UNITS, f"unit {defaults.get('unit')!r}"
    assert len(panel.get("description", "")) >= 20, "say what the panel shows"
    steps = defaults["thresholds"]["steps"]
    assert steps[0]["value"] is None, "the first threshold step is the base colour"
    values = [s["value"] for s in steps[1:]]
    assert values == sorted(values)


@pytest.mark.parametrize("query", QUERIES)
def test_rate_and_increase_use_rate_interval(query: dq.Query) -> None:
    windows = re.findall(r"\b(?:rate|increase)\s*\([^\[]*\[([^\]]+)\]", query.expr)
    for window in windows:
        if window == "$__range":
            assert query.instant, "$__range belongs in instant (whole-range) queries"
        else:
            assert window == "$__rate_interval", f"window [{window}] in {query.expr}"


@pytest.mark.parametrize("query", QUERIES)
def test_queries_use_only_defined_variables(query: dq.Query) -> None:
    dashboard = dq.dashboards()[query.source]
    defined = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN_VARIABLES
    assert dq.variables_used(query.expr) <= defined


@pytest.mark.parametrize("query", QUERIES)
def test_queries_filter_by_the_job_variable(query: dq.Query) -> None:
    assert 'job=~"$job"' in query.expr


@pytest.mark.parametrize(
    "query", [*QUERIES, *(pytest.param(q, id=str(q)) for q in dq.variable_queries())]
)
def test_metric_names_exist_in_the_contract_or_the_recording_rules(query: dq.Query) -> None:
    expr = dq.label_values_call(query.expr)[0] if query.ref == "variable" else query.expr
    names = dq.metric_names(expr)
    assert names, f"no metric in {expr}"
    unknown = {n for n in names if dq.labels_of(n) is None}
    assert not unknown, f"not in the metric contract nor recorded by dashboards/rules: {unknown}"


@pytest.mark.parametrize("query", QUERIES)
def test_label_matchers_name_labels_the_metric_has(query: dq.Query) -> None:
    for metric, label in dq.label_matchers(query.expr):
        allowed = dq.labels_of(metric)
        assert allowed is not None and label in allowed, f"{metric} has no label {label!r}"
    known = set().union(*(dq.labels_of(n) or set() for n in dq.metric_names(query.expr)))
    assert dq.grouping_labels(query.expr) <= known | {""}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt prometheus)")
def test_every_panel_and_variable_query_parses_as_promql(tmp_path) -> None:
    """promtool check rules parses every query, with Grafana's variables substituted."""
    exprs = [dq.substitute(q.expr) for q in dq.panel_queries()]
    exprs += [dq.substitute(dq.label_values_call(q.expr)[0]) for q in dq.variable_queries()]
    rules = [{"record": f"dashboard:query_{i}:check", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_histogram_quantiles_aggregate_by_le_over_buckets() -> None:
    for query in dq.panel_queries():
        for match in re.finditer(r"histogram_quantile\(([^,]+),\s*sum by \(([^)]*)\)", query.expr):
            assert "le" in [x.strip() for x in match.group(2).split(",")], str(query)
        if "histogram_quantile" in query.expr:
            assert "_bucket{" in query.expr, str(query)


def test_dashboards_link_to_each_other() -> None:
    for name, dashboard in dq.dashboards().items():
        assert dq.TAG_FOR_LINKS in dashboard["tags"], name
        link = next(x for x in dashboard["links"] if x["type"] == "dashboards")
        assert link["tags"] == [dq.TAG_FOR_LINKS]
        assert link["keepTime"] and link["includeVars"]
    uids = {d["uid"] for d in dq.dashboards().values()}
    data_links = [
        link["url"]
        for dashboard in dq.dashboards().values()
        for panel in dq.visual_panels(dashboard)
        for link in panel["fieldConfig"]["defaults"].get("links", [])
    ]
    targets = {m.group(1) for url in data_links if (m := re.match(r"/d/([^?/]+)", url))}
    assert targets, "no data link between dashboards"
    assert targets <= uids


def test_latency_panels_offer_exemplars_for_trace_links() -> None:
    quantile_targets = [
        target
        for dashboard in dq.dashboards().values()
        for panel in dq.visual_panels(dashboard)
        for target in panel["targets"]
        if "histogram_quantile" in target["expr"]
    ]
    assert quantile_targets
    assert all(t.get("exemplar") for t in quantile_targets)


def test_every_percentile_and_heatmap_of_a_traced_histogram_asks_for_exemplars() -> None:
    """The exporter attaches a trace_id exemplar to these histograms' buckets: every panel
    built on them (percentiles and heatmaps, on any dashboard) shows the dots."""
    seen = {name: 0 for name in EXEMPLAR_HISTOGRAMS}
    kinds = set()
    for name, dashboard in dq.dashboards().items():
        for panel in dq.visual_panels(dashboard):
            for target in panel["targets"]:
                for histogram in EXEMPLAR_HISTOGRAMS:
                    if f"{histogram}_bucket" in target["expr"]:
                        assert target.get("exemplar") is True, f"{name} / {panel['title']}"
                        seen[histogram] += 1
                        kinds.add(panel["type"])
    assert all(seen.values()), seen
    assert {"timeseries", "heatmap"} <= kinds


def _explore_pane(url: str) -> dict[str, Any]:
    """The one Explore pane a data link opens, with Grafana's ${...} left in place."""
    parts = urlsplit(url)
    assert parts.path == "/explore"
    params = parse_qs(parts.query)
    assert params["schemaVersion"] == ["1"]
    assert params["orgId"] == ["${__org}"]
    # Grafana substitutes ${...} and percent-encodes what it inserts; the rest is encoded
    # already, so decoding gives the JSON Explore reads.
    (panes,) = params["panes"]
    assert unquote(panes) == panes, "parse_qs decoded it once: nothing left encoded"
    (pane,) = json.loads(panes).values()
    return pane


def test_error_code_panels_link_to_the_traces_with_that_code() -> None:
    failures = {
        panel["title"]: panel
        for panel in dq.visual_panels(dq.dashboards()[OVERVIEW])
        if panel["title"].startswith("Failures by error code")
    }
    (column,) = [
        o
        for o in failures["Failures by error code and meaning"]["fieldConfig"]["overrides"]
        if o["matcher"]["options"] == "Error code"
    ]
    (table_links,) = [p["value"] for p in column["properties"] if p["id"] == "links"]
    series_links = failures["Failures by error code"]["fieldConfig"]["defaults"]["links"]
    for links, code in [
        (table_links, "${__value.raw}"),
        (series_links, "${__field.labels.error_code}"),
    ]:
        (link,) = [x for x in links if x["title"] == "Traces with this error code"]
        pane = _explore_pane(link["url"])
        assert pane["datasource"] == "${traces}"
        (query,) = pane["queries"]
        assert query["datasource"] == {"type": "tempo", "uid": "${traces}"}
        assert query["queryType"] == "traceql"
        assert query["query"] == f'{{ span.twilio.error_code = "{code}" }}'
        assert pane["range"] == {"from": "${__from}", "to": "${__to}"}
    # The attribute the search names is the one the exporter's spans carry.
    spans = (dq.REPO / "exporter/telemetry/tracing/spans.py").read_text(encoding="utf-8")
    assert '"twilio.error_code"' in spans


def test_the_tracing_datasource_is_a_variable_defaulting_to_tempo() -> None:
    variables = {v["name"]: v for v in dq.dashboards()[OVERVIEW]["templating"]["list"]}
    traces = variables["traces"]
    assert traces["type"] == "datasource"
    assert traces["query"] == "tempo"
    assert "current" not in traces, "Grafana picks the default Tempo, whatever it is called"


def test_the_delivery_slo_panels_read_the_objective_from_the_rules() -> None:
    panels = {p["title"]: p for p in dq.panels(dq.dashboards()[OVERVIEW])}
    objective = panels["Delivery SLO objective"]
    budget = panels["Error budget remaining (3 days)"]
    burn = panels["Error budget burn rate"]
    assert _exprs(objective).startswith("job:twilio_delivery_slo:objective{")
    assert "job:twilio_delivery_errors:ratio_rate3d" in _exprs(budget)
    assert "1 - job:twilio_delivery_slo:objective" in _exprs(budget)
    for window in ("5m", "30m", "1h", "6h"):
        assert f"job:twilio_delivery_errors:ratio_rate{window}" in _exprs(burn)
    assert "/ on (job)" in _exprs(burn)
    for panel in (objective, budget, burn):
        assert "0.95" not in _exprs(panel), "the objective comes from the rules, never hard-coded"
    assert budget["fieldConfig"]["defaults"]["unit"] == "percentunit"
    steps = [s["value"] for s in burn["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 6, 14.4], "the alerts' burn rates, drawn as threshold lines"
    # Added after the first release: ids of their own, the panels below keep theirs.
    assert [panels[t]["id"] for t in ("Delivery SLO", "Delivery SLO objective")] == [40, 41]
    assert panels["Volume"]["id"] == 11
    assert panels["Time to delivered p90 by channel"]["id"] == 20


def test_overview_explains_every_common_error_code() -> None:
    overview = dq.dashboards()["twilio-delivery-overview.json"]
    meanings: dict[str, str] = {}
    for panel in dq.visual_panels(overview):
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "mappings":
                    for mapping in prop["value"]:
                        if mapping["type"] == "value":
                            meanings |= {k: v["text"] for k, v in mapping["options"].items()}
    codes = "30001 30002 30003 30004 30005 30006 30007 30008 30009 30010 30034 21610 21408 21211"
    assert set((codes + " 21614 63016 63003 63018").split()) <= set(meanings)
    assert meanings["30007"] == ERRORS["30007"].meaning  # the same table the spans use


def _panel(name: str, title: str) -> dict:
    (panel,) = [p for p in dq.visual_panels(dq.dashboards()[name]) if p["title"] == title]
    return panel


def _exprs(panel: dict) -> str:
    return "\n".join(t["expr"] for t in panel["targets"])


HEALTH = "twilio-exporter-health.json"


def test_health_shows_the_source_split_by_input() -> None:
    accepted = _panel(HEALTH, "Accepted status reports by input")
    legends = {t["legendFormat"] for t in accepted["targets"]}
    assert {"StatusCallback", "Event Streams", "Reconcile polls"} <= legends
    exprs = _exprs(accepted)
    assert 'twilio_status_callbacks_total{job=~"$job", outcome="accepted"}' in exprs
    assert 'twilio_stream_events_total{job=~"$job", outcome="accepted"}' in exprs
    assert "twilio_reconcile_messages_total" in exprs
    duplicates = _panel(HEALTH, "Duplicate share by input")
    assert {"StatusCallback", "Event Streams"} <= {t["legendFormat"] for t in duplicates["targets"]}
    assert {"twilio_status_callbacks_total", "twilio_stream_events_total"} <= dq.metric_names(
        _exprs(duplicates)
    )
    # Both inputs for the same messages: half the reports are duplicates, by design.
    assert "about half" in duplicates["description"]
    assert duplicates["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_health_shows_event_streams_requests_next_to_callbacks() -> None:
    callbacks = _panel(HEALTH, "Callbacks by outcome")
    requests = _panel(HEALTH, "Event Streams requests by outcome")
    assert requests["gridPos"]["y"] == callbacks["gridPos"]["y"], "side by side"
    assert "sum by (outcome) (rate(twilio_stream_requests_total" in _exprs(requests)
    events = _panel(HEALTH, "Event Streams events by type and outcome")
    assert "sum by (type, outcome) (rate(twilio_stream_events_total" in _exprs(events)


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_rejection_panels_cover_both_inputs(name: str) -> None:
    """A panel about rejected callbacks shows rejected Event Streams requests too."""
    for panel in dq.visual_panels(dq.dashboards()[name]):
        exprs = _exprs(panel)
        if "twilio_status_callbacks_total" in exprs and re.search(
            r"invalid_signature|malformed|outcome=\"error\"", exprs
        ):
            assert "twilio_stream_requests_total" in exprs, panel["title"]


def test_panels_added_later_keep_the_ids_of_the_panels_before() -> None:
    """viewPanel links and Grafana alerts name panels by id: added panels must not shift
    the ids of the panels that were there first."""
    ids = {p["title"]: p["id"] for p in dq.panels(dq.dashboards()[HEALTH])}
    assert ids["Callbacks by outcome"] == 9
    assert ids["Handler latency (p50, p90, p99)"] == 11
    assert ids["Reconciled messages by result"] == 19
    assert ids["Event Streams requests by outcome"] > 19


def test_health_shows_the_write_path() -> None:
    """Issue #14: ingest backlog and its age, ingest lag, span export backlog and its age,
    exports against failures, and the ingester count (exactly 1 per deployment)."""
    ingesters = _panel(HEALTH, "Ingesters")
    assert "sum by (job) (twilio_exporter_ingester_leader" in _exprs(ingesters)
    steps = ingesters["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [(None, "red"), (1, "green"), (2, "red")]
    shown = set().union(*(dq.metric_names(q.expr) for q in dq.panel_queries()))
    assert {
        "twilio_exporter_ingest_backlog_entries",
        "twilio_exporter_ingest_backlog_seconds",
        "twilio_exporter_ingest_lag_seconds_bucket",
        "twilio_exporter_span_export_backlog_spans",
        "twilio_exporter_span_export_backlog_seconds",
        "twilio_exporter_spans_exported_total",
        "twilio_exporter_span_export_failures_total",
        "twilio_exporter_ingester_leader",
    } <= shown
    assert _panel(HEALTH, "Ingest backlog age")["fieldConfig"]["defaults"]["unit"] == "s"
    assert _panel(HEALTH, "Span export backlog")["fieldConfig"]["defaults"]["unit"] == "short"


def test_every_event_streams_metric_is_on_a_dashboard() -> None:
    shown = set().union(*(dq.metric_names(q.expr) for q in dq.panel_queries()))
    assert {"twilio_stream_requests_total", "twilio_stream_events_total"} <= shown


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("twilio-delivery-overview.json", "delivery rate"),
        ("twilio-callback-latency.json", "callback lag"),
        ("twilio-exporter-health.json", "handler latency"),
    ],
)
def test_each_dashboard_covers_its_subject(name: str, subject: str) -> None:
    titles = " ".join(p["title"].lower() for p in dq.visual_panels(dq.dashboards()[name]))
    assert subject in titles


def test_dashboard_provider_is_a_file_provider_on_the_documented_path() -> None:
    config = yaml.safe_load(
        (dq.DASHBOARDS / "provisioning/dashboards/twilio-status-exporter.yaml").read_text()
    )
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path.startswith(("/var/lib/grafana/dashboards", "/etc/grafana/dashboards"))
    assert path in (dq.DASHBOARDS / "README.md").read_text(), "document the mount"


def test_datasource_provisioning_defines_a_prometheus_datasource() -> None:
    config = yaml.safe_load(
        (dq.DASHBOARDS / "provisioning/datasources/twilio-status-exporter.yaml").read_text()
    )
    assert config["apiVersion"] == 1
    by_type = {d["type"]: d for d in config["datasources"]}
    prometheus = by_type["prometheus"]
    assert prometheus["url"].startswith("http")
    destinations = prometheus["jsonData"].get("exemplarTraceIdDestinations", [])
    uids = {d.get("uid") for d in config["datasources"]}
    assert all(d["datasourceUid"] in uids for d in destinations if "datasourceUid" in d)


def test_schemas_record_where_they_come_from() -> None:
    versions = json.loads((dq.SCHEMAS / "versions.json").read_text())
    assert versions["@grafana/schema"]
    readme = (dq.DASHBOARDS / "README.md").read_text()
    assert versions["@grafana/schema"] in readme


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt prometheus)")
def test_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(dq.DASHBOARDS / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout
    config = yaml.safe_load((dq.DASHBOARDS / "prometheus.yml").read_text())
    assert config["scrape_configs"][0]["job_name"] == "twilio-status-exporter"


OVERVIEW = "twilio-delivery-overview.json"


def test_overview_breaks_delivery_and_failures_down_by_sender() -> None:
    """Issue #15: delivery rate by sender, worst first and with its volume; top error codes
    by sender. The ids of the panels that were there before do not move."""
    ids = {p["title"]: p["id"] for p in dq.panels(dq.dashboards()[OVERVIEW])}
    assert ids["Time to delivered p90 by channel"] == 20
    assert (ids["Senders"], ids["Delivery rate by sender"], ids["Top error codes by sender"]) == (
        21,
        22,
        23,
    )
    rate = _panel(OVERVIEW, "Delivery rate by sender")
    assert rate["options"]["sortBy"] == [{"displayName": "Delivery rate", "desc": False}]
    exprs = _exprs(rate)
    assert "sum by (sender) (increase(twilio_sender_message_status_total" in exprs
    assert "* 0" in exprs, "a sender without a delivered message must still be listed"
    columns = rate["transformations"][1]["options"]["renameByName"].values()
    assert {"Sender", "Delivery rate", "Finalized"} <= set(columns)
    codes = _panel(OVERVIEW, "Top error codes by sender")
    assert codes["options"]["sortBy"] == [{"displayName": "Messages", "desc": True}]
    assert "sum by (sender, error_code)" in _exprs(codes)
    assert {o["matcher"]["options"] for o in codes["fieldConfig"]["overrides"]} >= {
        "Sender",
        "Error code",
        "Meaning",
    }
