"""The delivery SLO's Prometheus rules (dashboards/rules/twilio-status-exporter-slo.rules.yaml).

The SLO: of the messages that reach a final status, at least `objective` are delivered. Its
error ratio is (undelivered + failed) / (delivered + undelivered + failed), recorded per job
over the windows the alerts and the dashboard need, next to the objective itself. The alerts
are the multi-window, multi-burn-rate alerts of Google's SRE workbook: a page when the last
hour and the last 5 minutes both burn the error budget 14.4 times faster than the objective
allows, a ticket when the last 6 hours and the last 30 minutes both burn it 6 times faster.

The objective is chosen when the file is generated (`generate.py --slo-objective 0.99`), so
the alert thresholds are plain constants Prometheus never has to look up.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any

DEFAULT_OBJECTIVE = 0.95
FILE_NAME = "twilio-status-exporter-slo.rules.yaml"

# Burn rates: how many times faster than the objective allows the budget is spent. At 14.4
# for an hour a 30-day budget loses 2 %, at 6 for six hours 5 %: the workbook's page and ticket.
FAST_BURN, FAST_LONG, FAST_SHORT = 14.4, "1h", "5m"
SLOW_BURN, SLOW_LONG, SLOW_SHORT = 6.0, "6h", "30m"
# The dashboard's error budget covers the trailing 3 days: a 30-day window needs the raw
# counters for longer than Prometheus keeps them by default (15 days).
BUDGET_WINDOW, BUDGET_HOURS = "3d", 72
WINDOWS = (FAST_SHORT, SLOW_SHORT, FAST_LONG, SLOW_LONG, BUDGET_WINDOW)
# Below this many finalized messages in an alert's long window, a ratio says little: one
# failed message out of two is a 50 % error ratio. Nobody is paged for a handful.
MIN_MESSAGES = 10
SPOKEN = {"5m": "5 minutes", "30m": "30 minutes", "1h": "hour", "6h": "6 hours"}

COUNTER = "twilio_message_status_total"
FINAL = 'status=~"delivered|undelivered|failed"'
ERRORS = 'status=~"undelivered|failed"'
RUNBOOK = (
    "https://github.com/twilio-status-exporter/twilio-status-exporter/blob/main/"
    "dashboards/README.md#"
)
OBJECTIVE_RECORD = "job:twilio_delivery_slo:objective"
FAST_ALERT = "TwilioDeliveryErrorBudgetFastBurn"
SLOW_ALERT = "TwilioDeliveryErrorBudgetSlowBurn"


def error_ratio_record(window: str) -> str:
    return f"job:twilio_delivery_errors:ratio_rate{window}"


def parse_objective(text: str) -> float:
    """The objective as a ratio strictly between 0 and 1 (0.99 for 99 %)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a number: give the objective as a ratio, e.g. 0.99 for 99 %"
        ) from None
    if not 0 < value < 1:  # also rejects nan
        raise ValueError(
            f"{text} is not between 0 and 1 (exclusive): give the objective as a ratio, "
            "e.g. 0.99 for 99 %, not 99"
        )
    return value


def unreachable_alerts(objective: float) -> list[str]:
    """The burn-rate alerts whose threshold is above 100 % errors under this objective."""
    return [
        name
        for name, burn in ((FAST_ALERT, FAST_BURN), (SLOW_ALERT, SLOW_BURN))
        if burn * (1 - objective) >= 1
    ]


@dataclass(frozen=True)
class Rule:
    """One rule and the comment written above it (why it is there)."""

    why: str
    fields: dict[str, Any]


def _rate(selector: str, window: str) -> str:
    return f"sum by (job) (rate({COUNTER}{{{selector}}}[{window}]))"


def _error_ratio(window: str) -> str:
    # Failures are a separate series per error code that only exists once a message failed
    # with it: `or 0 *` makes the ratio 0, not absent, while nothing failed.
    return (
        "(\n"
        f"  {_rate(ERRORS, window)}\n"
        "  or on (job)\n"
        f"  0 * {_rate(FINAL, window)}\n"
        ")\n"
        "/\n"
        f"{_rate(FINAL, window)}"
    )


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.4g} %"


def recording_rules(objective: float) -> list[Rule]:
    rules = [
        Rule(
            f"Error ratio per window: {FAST_SHORT} and {FAST_LONG} for the page, {SLOW_SHORT} "
            f"and {SLOW_LONG} for the ticket, {BUDGET_WINDOW} for the dashboard's error budget. "
            "0 while nothing failed; with no finalized message it is 0/0 = NaN, which no "
            "comparison passes, so no traffic never reads as an outage."
            if window == WINDOWS[0]
            else "",
            {"record": error_ratio_record(window), "expr": _error_ratio(window)},
        )
        for window in WINDOWS
    ]
    rules.append(
        Rule(
            "The objective, one series per job the SLO covers, so dashboards compute the "
            f"budget without hard-coding it: divide by 1 - {OBJECTIVE_RECORD} on (job).",
            {
                "record": OBJECTIVE_RECORD,
                "expr": (
                    f"{objective!r} + 0 * count by (job) ({error_ratio_record(BUDGET_WINDOW)})"
                ),
            },
        )
    )
    return rules


def _burn_alert(
    objective: float,
    *,
    name: str,
    burn: float,
    long: str,
    short: str,
    severity: str,
    summary: str,
) -> Rule:
    threshold = f"({burn:g} * (1 - {objective!r}))"
    budget = 1 - objective
    expr = (
        f"{error_ratio_record(long)} > {threshold}\n"
        "and on (job)\n"
        f"{error_ratio_record(short)} > {threshold}\n"
        "and on (job)\n"
        f"sum by (job) (increase({COUNTER}{{{FINAL}}}[{long}])) >= {MIN_MESSAGES}"
    )
    description = (
        f"{{{{ $value | humanizePercentage }}}} of the messages {{{{ $labels.job }}}} "
        f"finalized in the last {SPOKEN[long]} were undelivered or failed, and more than "
        f"{_percent(burn * budget)} in the last {SPOKEN[short]}: over {burn:g} times the "
        f"{_percent(budget)} the {_percent(objective)} delivery objective allows. At that "
        f"rate or faster a {BUDGET_HOURS // 24}-day error budget (Error budget remaining on "
        f"the delivery overview) is gone within {BUDGET_HOURS / burn:.2g} hours."
    )
    return Rule(
        f"Both windows above {burn:g}x the budget: the long one says enough budget is gone "
        "to matter, the short one that it is still going (so the alert resolves within "
        f"minutes of a fix), and at least {MIN_MESSAGES} finalized messages in the long "
        "window make the ratio mean something. No `for`: the long window already asks for "
        "a sustained burn, waiting longer would only delay the alert.",
        {
            "alert": name,
            "expr": expr,
            "labels": {"severity": severity},
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": RUNBOOK + name.lower(),
            },
        },
    )


def alerting_rules(objective: float) -> list[Rule]:
    return [
        _burn_alert(
            objective,
            name=FAST_ALERT,
            burn=FAST_BURN,
            long=FAST_LONG,
            short=FAST_SHORT,
            severity="critical",
            summary="Failed deliveries are burning the delivery SLO's error budget fast.",
        ),
        _burn_alert(
            objective,
            name=SLOW_ALERT,
            burn=SLOW_BURN,
            long=SLOW_LONG,
            short=SLOW_SHORT,
            severity="warning",
            summary="Failed deliveries are steadily burning the delivery SLO's error budget.",
        ),
    ]


def groups(objective: float) -> list[tuple[str, list[Rule]]]:
    return [
        ("twilio-status-exporter.slo", recording_rules(objective)),
        ("twilio-status-exporter.slo-alerts", alerting_rules(objective)),
    ]


def as_data(objective: float) -> dict[str, Any]:
    """The rules file as Prometheus reads it (what `render` writes, without the comments)."""
    return {
        "groups": [
            {"name": name, "rules": [rule.fields for rule in rules]}
            for name, rules in groups(objective)
        ]
    }


# --- YAML ---------------------------------------------------------------------------------
# The generator uses the standard library only, and this file has one shape: a tiny writer
# for it, checked against PyYAML's reading of it by the tests.

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:./#-]*")
WIDTH = 96


def _scalar(value: str) -> str:
    if _PLAIN.fullmatch(value) and value not in {"true", "false", "null", "yes", "no"}:
        return value
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted one


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, WIDTH - len(indent) - 2)]


def _mapping(fields: dict[str, Any], indent: str, first: str) -> list[str]:
    lines: list[str] = []
    for i, (key, value) in enumerate(fields.items()):
        lead = first if i == 0 else indent
        if isinstance(value, dict):
            lines.append(f"{lead}{key}:")
            lines += _mapping(value, indent + "  ", indent + "  ")
        elif key == "expr":
            lines.append(f"{lead}{key}: |-")
            lines += [f"{indent}  {line}" for line in value.splitlines()]
        elif key == "description":
            lines.append(f"{lead}{key}: >-")
            lines += textwrap.wrap(
                value, WIDTH, initial_indent=indent + "  ", subsequent_indent=indent + "  "
            )
        else:
            lines.append(f"{lead}{key}: {_scalar(value)}")
    return lines


def render(objective: float) -> str:
    budget = 1 - objective
    about = (
        "The delivery SLO: of the messages that reach a final status, at least "
        f"{_percent(objective)} are delivered; the error budget is the other "
        f"{_percent(budget)}. Recorded: the error ratio (undelivered + failed over "
        f"delivered + undelivered + failed) per job over {', '.join(WINDOWS)}, and the "
        f"objective. Alerts (SRE workbook, multi-window multi-burn-rate): {FAST_ALERT} "
        f"(critical) when the {FAST_LONG} and {FAST_SHORT} error ratios are both above "
        f"{FAST_BURN:g} x {_percent(budget)} = {_percent(FAST_BURN * budget)}; {SLOW_ALERT} "
        f"(warning) when the {SLOW_LONG} and {SLOW_SHORT} ones are both above {SLOW_BURN:g} x "
        f"{_percent(budget)} = {_percent(SLOW_BURN * budget)}. See dashboards/README.md."
    )
    lines = [
        f"# Generated by dashboards/generate.py --slo-objective {objective!r}: do not edit.",
        "# Another objective: python dashboards/generate.py --slo-objective 0.99",
        "#",
        *_comment(about, ""),
        "",
        "groups:",
    ]
    for name, rules in groups(objective):
        lines += [f"  - name: {name}", "    rules:"]
        for rule in rules:
            lines += _comment(rule.why, "      ") if rule.why else []
            lines += _mapping(rule.fields, "        ", "      - ")
    return "\n".join(lines) + "\n"
