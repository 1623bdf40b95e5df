"""Building blocks for Grafana dashboards: panels, targets, variables, layout.

Every panel built here queries the `${datasource}` variable, carries a unit, thresholds and a
description, and validates against the panel plugin's schema from @grafana/schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
TAG = "twilio-status-exporter"

OVERVIEW_UID = "twilio-delivery-overview"
LATENCY_UID = "twilio-callback-latency"
HEALTH_UID = "twilio-exporter-health"

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"

# Label selectors shared by the queries; `$job` and friends are the dashboards' variables.
JOB = 'job=~"$job"'
CHANNEL = 'job=~"$job", channel=~"$channel"'
COUNTRY = 'job=~"$job", country=~"$country"'
MSG = 'job=~"$job", channel=~"$channel", country=~"$country"'
FINAL = 'status=~"delivered|undelivered|failed"'
FAILED = 'status=~"undelivered|failed"'
VALID = 'outcome=~"accepted|duplicate"'
RI = "[$__rate_interval]"


def thresholds(*steps: tuple[float | None, str]) -> Json:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


OK_ONLY = thresholds((None, GREEN))
ANY_IS_BAD = thresholds((None, GREEN), (1e-9, RED))
DELIVERY_RATE = thresholds((None, RED), (0.9, ORANGE), (0.95, GREEN))


def target(
    expr: str,
    legend: str = "__auto",
    ref: str = "A",
    *,
    instant: bool = False,
    fmt: str = "time_series",
    exemplar: bool = False,
) -> Json:
    t: Json = {
        "datasource": DATASOURCE,
        "refId": ref,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }
    if exemplar:
        t["exemplar"] = True
    return t


def field_config(
    unit: str,
    steps: Json,
    *,
    custom: Json | None = None,
    mappings: list[Json] | None = None,
    overrides: list[Json] | None = None,
    links: list[Json] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    decimals: int | None = None,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "palette-classic" if custom is not None else "thresholds"},
        "thresholds": steps,
        "mappings": mappings or [],
    }
    if custom is not None:
        defaults["custom"] = custom
    if links:
        defaults["links"] = links
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"defaults": defaults, "overrides": overrides or []}


def dashboard_link(title: str, uid: str) -> Json:
    """A data link to another of our dashboards, carrying the time range and variables."""
    return {
        "title": title,
        "url": f"/d/{uid}?${{__url_time_range}}&${{datasource:queryparam}}&${{job:queryparam}}",
    }


# Grafana fills in `${...}` when a data link is clicked (percent-encoding what it inserts); the
# rest of the URL must already be encoded, the `${...}` left as they are for Grafana to find.
_LINK_VARIABLE = re.compile(r"(\$\{[^}]+\})")


def _encode_around_variables(text: str) -> str:
    return "".join(
        part if _LINK_VARIABLE.fullmatch(part) else quote(part, safe="")
        for part in _LINK_VARIABLE.split(text)
    )


def trace_search_link(title: str, traceql: str) -> Json:
    """A data link to Grafana Explore running a TraceQL search on the `${traces}` datasource
    over the dashboard's time range (Explore's URL format: schemaVersion 1, `panes`)."""
    pane = {
        "datasource": "${traces}",
        "queries": [
            {
                "refId": "A",
                "datasource": {"type": "tempo", "uid": "${traces}"},
                "queryType": "traceql",
                "query": traceql,
            }
        ],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    panes = json.dumps({"trc": pane}, separators=(",", ":"))
    return {
        "title": title,
        "url": f"/explore?schemaVersion=1&orgId=${{__org}}&panes={_encode_around_variables(panes)}",
        "targetBlank": True,
    }


def timeseries_custom(
    *, stack: bool = False, fill: int = 10, line_thresholds: bool = False
) -> Json:
    return {
        "drawStyle": "line",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "fillOpacity": fill,
        "gradientMode": "none",
        "showPoints": "never",
        "pointSize": 4,
        "spanNulls": False,
        "axisPlacement": "auto",
        "axisSoftMin": 0,
        "scaleDistribution": {"type": "linear"},
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if line_thresholds else "off"},
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
    }


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    steps: Json = OK_ONLY,
    *,
    stack: bool = False,
    line_thresholds: bool = False,
    legend_calcs: Iterable[str] = ("mean", "max", "lastNotNull"),
    overrides: list[Json] | None = None,
    links: list[Json] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": field_config(
            unit,
            steps,
            custom=timeseries_custom(stack=stack, line_thresholds=line_thresholds),
            overrides=overrides,
            links=links,
            minimum=minimum,
            maximum=maximum,
        ),
        "options": {
            "legend": {
                "showLegend": True,
                "displayMode": "table",
                "placement": "bottom",
                "calcs": list(legend_calcs),
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    steps: Json = OK_ONLY,
    *,
    mappings: list[Json] | None = None,
    text_mode: str = "value",
    graph: bool = False,
    decimals: int | None = None,
) -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": field_config(unit, steps, mappings=mappings, decimals=decimals),
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
        },
    }


def heatmap(title: str, description: str, metric: str, selector: str, unit: str) -> Json:
    expr = f"sum by (le) (increase({metric}_bucket{{{selector}}}[$__rate_interval]))"
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, "{{le}}", fmt="heatmap", exemplar=True)],
        "fieldConfig": field_config(
            unit,
            OK_ONLY,
            custom={
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                "scaleDistribution": {"type": "linear"},
            },
        ),
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "fill": "dark-orange",
                "scale": "exponential",
                "exponent": 0.5,
                "steps": 64,
                "reverse": False,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
        },
    }


def table(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    steps: Json = OK_ONLY,
    *,
    overrides: list[Json] | None = None,
    transformations: list[Json] | None = None,
    sort_by: str | None = None,
    ascending: bool = False,
) -> Json:
    options: Json = {"showHeader": True, "frameIndex": 0, "cellHeight": "sm"}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": not ascending}]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": field_config(
            unit,
            steps,
            custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
            overrides=overrides,
        ),
        "options": options,
        "transformations": transformations or [],
    }


def override(field: str, **properties: Any) -> Json:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": k, "value": v} for k, v in properties.items()],
    }


def quantiles(metric: str, selector: str, by: str = "", legend_prefix: str = "") -> list[Json]:
    """p50/p90/p99 targets of a histogram, with exemplars (trace links) where exposed."""
    group = f"le, {by}" if by else "le"
    return [
        target(
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{legend_prefix}p{round(q * 100)}",
            ref,
            exemplar=True,
        )
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def with_id(panel_id: int, panel: Json) -> Json:
    """A panel with a fixed id: for panels added to a released dashboard, so that the panels
    after them keep their ids (the `viewPanel` links and Grafana alerts that refer to them)."""
    return {"id": panel_id, **panel}


def layout(rows: list[list[tuple[Json, int, int]]]) -> list[Json]:
    """Place panels on Grafana's 24-column grid: each inner list is one line of panels.

    Panels are numbered in order, skipping those that carry a fixed id (`with_id`)."""
    panels, y, next_id = [], 0, 1
    for line in rows:
        x, height = 0, 0
        for panel, width, h in line:
            if "id" in panel:
                panel_id = panel["id"]
            else:
                panel_id, next_id = next_id, next_id + 1
            rest = {k: v for k, v in panel.items() if k != "id"}
            panel = {"id": panel_id, "gridPos": {"h": h, "w": width, "x": x, "y": y}, **rest}
            panels.append(panel)
            x += width
            height = max(height, h)
        if x > 24:
            raise ValueError(f"line wider than 24 columns: {[p['title'] for p, _, _ in line]}")
        y += height
    ids = [p["id"] for p in panels]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    return panels


def query_variable(name: str, label: str, query: str, description: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": DATASOURCE,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "hide": 0,
    }


def table_columns(
    names: dict[str, str], *, merge: bool = False, ordered: bool = False
) -> list[Json]:
    """The transformations that give a table of instant queries its columns: `merge` joins
    several queries' values into one row per series; Time is dropped; fields are renamed
    (`names`: field -> column) and, when `ordered`, put in that order."""
    options: Json = {"excludeByName": {"Time": True}}
    if ordered:
        options["indexByName"] = {name: i for i, name in enumerate(names)}
    options["renameByName"] = names
    organize: Json = {"id": "organize", "options": options}
    return [{"id": "merge", "options": {}}, organize] if merge else [organize]


def datasource_variable(name: str, label: str, kind: str, description: str) -> Json:
    """A variable choosing a datasource of type `kind` (Grafana's default one at first)."""
    return {
        "type": "datasource",
        "name": name,
        "label": label,
        "description": description,
        "query": kind,
        "refresh": 1,
        "regex": "",
        "hide": 0,
        "multi": False,
        "includeAll": False,
        "options": [],
    }


def variables(*extra: Json) -> Json:
    return {
        "list": [
            datasource_variable(
                "datasource",
                "Data source",
                "prometheus",
                "The Prometheus that scrapes twilio-status-exporter.",
            ),
            query_variable(
                "job",
                "Job",
                "label_values(twilio_exporter_build_info, job)",
                "Prometheus scrape job(s) of the exporter.",
            ),
            *extra,
        ]
    }


def dashboard(uid: str, title: str, description: str, panels: list[Json], tmpl: Json) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG, "twilio"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": 39,
        "version": 1,
        "links": [
            {
                "title": "Twilio dashboards",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": tmpl,
        "panels": panels,
    }


# The tracing datasource the data links search (type tempo: TraceQL). A variable, so that the
# links work after import whatever the datasource is called.
TRACES_VAR = datasource_variable(
    "traces",
    "Traces",
    "tempo",
    "The Tempo datasource that receives the exporter's spans; the 'Traces with this error "
    "code' links search it.",
)

CHANNEL_VAR = query_variable(
    "channel",
    "Channel",
    'label_values(twilio_message_status_total{job=~"$job"}, channel)',
    "Messaging channel (sms, mms, whatsapp, ...).",
)
COUNTRY_VAR = query_variable(
    "country",
    "Country",
    'label_values(twilio_message_status_total{job=~"$job", channel=~"$channel"}, country)',
    "ISO 3166 region of the recipient; All also includes unknown ('').",
)
