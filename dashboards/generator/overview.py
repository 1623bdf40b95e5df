"""Twilio / Delivery overview: delivery rate vs baseline, volume, failures, senders, time to
delivered."""

from __future__ import annotations

from exporter.error_codes import ERRORS
from generator import slo_rules
from generator.grafana import (
    BLUE,
    CHANNEL,
    CHANNEL_VAR,
    COUNTRY,
    COUNTRY_VAR,
    DELIVERY_RATE,
    FAILED,
    FINAL,
    GREEN,
    JOB,
    LATENCY_UID,
    MSG,
    ORANGE,
    OVERVIEW_UID,
    RED,
    TRACES_VAR,
    Json,
    dashboard,
    dashboard_link,
    heatmap,
    layout,
    override,
    quantiles,
    row,
    stat,
    table,
    table_columns,
    target,
    thresholds,
    timeseries,
    trace_search_link,
    variables,
    with_id,
)

# What each error code means, from the table the exporter's spans use (one source of truth).
ERROR_CODES: dict[str, str] = {
    **{code: error.meaning for code, error in sorted(ERRORS.items())},
    "other": "Not a Twilio error code",
}

DELIVERED = f'{MSG}, status="delivered"'
# twilio_sender_message_status_total has no country: the per-sender panels follow $channel only.
SENDER_DELIVERED = f'{CHANNEL}, status="delivered"'
SENDER_FINAL = f"{CHANNEL}, {FINAL}"
SENDER_FAILED = f"{CHANNEL}, {FAILED}"
# Delivery rate of the trailing 7 days, from the recording rules in dashboards/rules.
BASELINE = (
    'sum(job:twilio_messages_delivered:rate1h_avg7d{job=~"$job"})\n/\n'
    'sum(job:twilio_messages_finalized:rate1h_avg7d{job=~"$job"})'
)
TIME_TO_DELIVERED = thresholds((None, GREEN), (60, ORANGE), (300, RED))
SOME_FAILED = thresholds((None, GREEN), (1, ORANGE))
LATENCY_LINK = [dashboard_link("Callback lag & latency", LATENCY_UID)]
# Panels added after the first release: fixed ids after the original 20, so that the ids of
# the panels below them do not move.
SENDERS_ROW_ID, RATE_BY_SENDER_ID, FAILURES_BY_SENDER_ID = 21, 22, 23
# The span attribute that carries the error code (exporter/telemetry/tracing/spans.py): on the
# failed or undelivered stage span and on the root span of a message that ended so.
ERROR_CODE_ATTRIBUTE = "twilio.error_code"


def traces_with_error_code(code: str) -> Json:
    """A data link to the traces of the messages that failed with `code` (a link variable)."""
    return trace_search_link(
        "Traces with this error code", f'{{ span.{ERROR_CODE_ATTRIBUTE} = "{code}" }}'
    )


def ratio(num: str, den: str, by: str = "") -> str:
    agg = f"sum by ({by}) " if by else "sum "
    return f"{agg}({num})\n/\n{agg}({den})"


def rate_of(selector: str) -> str:
    return f"rate(twilio_message_status_total{{{selector}}}[$__rate_interval])"


def increase_of(selector: str) -> str:
    return f"increase(twilio_message_status_total{{{selector}}}[$__range])"


def sender_increase(selector: str) -> str:
    return f"increase(twilio_sender_message_status_total{{{selector}}}[$__range])"


def delivery_rate() -> Json:
    return stat(
        "Delivery rate",
        "Delivered / (delivered + undelivered + failed) over the selected time "
        "range, for the selected channels and countries.",
        [
            target(
                ratio(increase_of(DELIVERED), increase_of(f"{MSG}, {FINAL}")),
                "delivery rate",
                instant=True,
            )
        ],
        "percentunit",
        DELIVERY_RATE,
        decimals=2,
    )


def baseline() -> Json:
    return stat(
        "7-day baseline",
        "Traffic-weighted delivery rate of the trailing 7 days, from the "
        "recording rules in dashboards/rules (all channels and countries). "
        "TwilioDeliveryRateDrop fires below 90 % of it.",
        [target(BASELINE, "7-day baseline", instant=True)],
        "percentunit",
        DELIVERY_RATE,
        decimals=2,
    )


def delivered() -> Json:
    return stat(
        "Delivered",
        "Messages that reached delivered in the selected time range.",
        [target(f"sum({increase_of(DELIVERED)})", "delivered", instant=True)],
        "short",
        decimals=0,
    )


def failed() -> Json:
    return stat(
        "Undelivered + failed",
        "Messages that ended undelivered or failed in the selected time range; "
        "see Failures by error code below for why.",
        [target(f"sum({increase_of(f'{MSG}, {FAILED}')})", "failed", instant=True)],
        "short",
        SOME_FAILED,
        decimals=0,
    )


def in_flight() -> Json:
    return stat(
        "In flight",
        "Messages whose current status is not final and that are not stale, read "
        "from the exporter's store (max across replicas: each reports the "
        "store-wide number).",
        [
            target(
                f"sum(max by (status) (twilio_messages_in_flight{{{JOB}}}))",
                "in flight",
                instant=True,
            )
        ],
        "short",
        decimals=0,
    )


def went_stale() -> Json:
    return stat(
        "Went stale",
        "Messages that stayed non-final past the stale timeout (default 72 h) in "
        "the selected time range: Twilio will most likely never report them again.",
        [
            target(
                f"sum(increase(twilio_messages_stale_total{{{JOB}}}[$__range]))",
                "stale",
                instant=True,
            )
        ],
        "short",
        SOME_FAILED,
        decimals=0,
    )


def rate_vs_baseline() -> Json:
    threshold_line = "alert threshold (90 % of baseline)"
    return timeseries(
        "Delivery rate vs 7-day baseline",
        "Delivery rate of all messages of the selected jobs, against the "
        "trailing 7-day average from the recording rules (load "
        "dashboards/rules for the baseline lines). The dashed line is the "
        "TwilioDeliveryRateDrop threshold, 90 % of the baseline.",
        [
            target(
                ratio(rate_of(f'{JOB}, status="delivered"'), rate_of(f"{JOB}, {FINAL}")),
                "delivery rate",
                "A",
            ),
            target(BASELINE, "7-day baseline", "B"),
            target(f"0.9 * (\n{BASELINE}\n)", threshold_line, "C"),
        ],
        "percentunit",
        DELIVERY_RATE,
        maximum=1,
        overrides=[
            override(
                threshold_line,
                **{
                    "custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                    "color": {"mode": "fixed", "fixedColor": RED},
                },
            ),
            override("7-day baseline", color={"mode": "fixed", "fixedColor": BLUE}),
        ],
    )


def rate_by_channel() -> Json:
    return timeseries(
        "Delivery rate by channel",
        "Delivered / finalized per channel, for the selected channels and countries.",
        [
            target(
                ratio(rate_of(DELIVERED), rate_of(f"{MSG}, {FINAL}"), "channel"),
                "{{channel}}",
            )
        ],
        "percentunit",
        DELIVERY_RATE,
        maximum=1,
    )


def rate_by_country() -> Json:
    country_baseline = (
        "sum by (country) ("
        "job_country:twilio_messages_delivered:rate1h_avg7d"
        f"{{{COUNTRY}}})\n/\n"
        "sum by (country) ("
        "job_country:twilio_messages_finalized:rate1h_avg7d"
        f"{{{COUNTRY}}})"
    )
    return table(
        "Delivery rate by country vs 7-day baseline",
        "Per recipient country: delivery rate over the selected range, the 7-day "
        "baseline from the recording rules and the number of finalized messages. "
        "Sorted by volume.",
        [
            target(
                ratio(increase_of(DELIVERED), increase_of(f"{MSG}, {FINAL}"), "country"),
                "",
                "A",
                instant=True,
                fmt="table",
            ),
            target(country_baseline, "", "B", instant=True, fmt="table"),
            target(
                f"sum by (country) ({increase_of(f'{MSG}, {FINAL}')})",
                "",
                "C",
                instant=True,
                fmt="table",
            ),
        ],
        "percentunit",
        DELIVERY_RATE,
        transformations=table_columns(
            {
                "country": "Country",
                "Value #A": "Delivery rate",
                "Value #B": "7-day baseline",
                "Value #C": "Finalized",
            },
            merge=True,
        ),
        overrides=[
            override("Finalized", unit="short", decimals=0, thresholds=thresholds((None, GREEN))),
            override("Country", unit="string"),
            override("Delivery rate", **{"custom.cellOptions": {"type": "color-text"}}),
        ],
        sort_by="Finalized",
    )


def by_status() -> Json:
    return timeseries(
        "Messages by status",
        "Status changes per second; each (message, status) pair counts once, whichever "
        "input reported it (StatusCallback, Event Streams, reconcile poll); duplicates do "
        "not count.",
        [target(f"sum by (status) ({rate_of(MSG)})", "{{status}}")],
        "cps",
        stack=True,
    )


def finalized_by_channel() -> Json:
    return timeseries(
        "Finalized messages by channel",
        "Messages reaching a final status (delivered, undelivered, failed) per second, by channel.",
        [target(f"sum by (channel) ({rate_of(f'{MSG}, {FINAL}')})", "{{channel}}")],
        "cps",
        stack=True,
    )


def failures_by_code() -> Json:
    return timeseries(
        "Failures by error code",
        "Undelivered and failed messages per second by Twilio error code. The "
        "table on the right says what each code means; 30007 (carrier filtering) "
        "spiking is the classic. Click a line for the traces of messages that failed "
        "with its code (Traces variable: your Tempo).",
        [target(f"sum by (error_code) ({rate_of(f'{MSG}, {FAILED}')})", "{{error_code}}")],
        "cps",
        stack=True,
        links=[traces_with_error_code("${__field.labels.error_code}")],
    )


def with_meaning(expr: str) -> str:
    """`expr` with its error_code copied into a `meaning` label, which the value mappings of
    `meaning_mappings` translate; only what is above zero."""
    return f'label_replace(\n  {expr},\n  "meaning", "$1", "error_code", "(.*)"\n) > 0'


def meaning_mappings() -> list[Json]:
    """What each error code means; any other five-digit code points to Twilio's page."""
    meanings = {
        code: {"text": text, "index": i} for i, (code, text) in enumerate(ERROR_CODES.items())
    }
    any_other_code = {
        "type": "regex",
        "options": {
            "pattern": "^\\d{5}$",
            "result": {"text": "See Twilio's page for this code", "index": len(meanings)},
        },
    }
    return [{"type": "value", "options": meanings}, any_other_code]


TWILIO_DOCS = {
    "title": "Twilio: error ${__value.raw}",
    "url": "https://www.twilio.com/docs/api/errors/${__value.raw}",
    "targetBlank": True,
}


def failures_with_meanings() -> Json:
    expr = with_meaning(f"sum by (error_code, status, channel) ({increase_of(f'{MSG}, {FAILED}')})")
    columns = {"error_code": "Error code", "meaning": "Meaning", "status": "Status"}
    columns |= {"channel": "Channel", "Value": "Messages"}
    return table(
        "Failures by error code and meaning",
        "Undelivered and failed messages in the selected range by error code, "
        "with what the code means. Click a code for Twilio's page on it, or for the "
        "traces of the messages that failed with it (Traces variable: your Tempo).",
        [target(expr, "", instant=True, fmt="table")],
        "short",
        SOME_FAILED,
        transformations=table_columns(columns, ordered=True),
        overrides=[
            override(
                "Error code",
                unit="string",
                links=[TWILIO_DOCS, traces_with_error_code("${__value.raw}")],
            ),
            override("Meaning", unit="string", mappings=meaning_mappings()),
            override("Messages", decimals=0),
        ],
        sort_by="Messages",
    )


def rate_by_sender() -> Json:
    finalized = f"sum by (sender) ({sender_increase(SENDER_FINAL)})"
    delivered = f"sum by (sender) ({sender_increase(SENDER_DELIVERED)})"
    failed = f"sum by (sender) ({sender_increase(SENDER_FAILED)})"
    # A sender without a single delivered (or failed) message has no such series: `or` its
    # finalized count times zero keeps it in the table at 0, so the worst sender never drops out.
    rate = f"(\n  {delivered}\n  or\n  {finalized} * 0\n)\n/\n{finalized}"
    failures = f"{failed}\nor\n{finalized} * 0"
    return table(
        "Delivery rate by sender",
        "Per sender (the messaging service, else the From number or address): delivery rate "
        "over the selected range, worst first, with the finalized and the undelivered + failed "
        "messages, so a low rate on a handful of messages is told apart from a real problem. "
        "For the selected channels (there is no country per sender). Senders past "
        "EXPORTER_SENDERS_MAX are counted together as other.",
        [
            target(rate, "", "A", instant=True, fmt="table"),
            target(finalized, "", "B", instant=True, fmt="table"),
            target(failures, "", "C", instant=True, fmt="table"),
        ],
        "percentunit",
        DELIVERY_RATE,
        transformations=table_columns(
            {
                "sender": "Sender",
                "Value #A": "Delivery rate",
                "Value #B": "Finalized",
                "Value #C": "Undelivered + failed",
            },
            merge=True,
        ),
        overrides=[
            override("Sender", unit="string"),
            override("Delivery rate", **{"custom.cellOptions": {"type": "color-text"}}),
            override("Finalized", unit="short", decimals=0, thresholds=thresholds((None, GREEN))),
            override("Undelivered + failed", unit="short", decimals=0, thresholds=SOME_FAILED),
        ],
        sort_by="Delivery rate",
        ascending=True,
    )


def failures_by_sender() -> Json:
    failures = f"sum by (sender, error_code) ({sender_increase(SENDER_FAILED)})"
    finalized = f"sum by (sender) ({sender_increase(SENDER_FINAL)})"
    share = f"{failures}\n/ on (sender) group_left ()\n{finalized}"
    columns = {"sender": "Sender", "error_code": "Error code", "meaning": "Meaning"}
    columns |= {"Value #A": "Messages", "Value #B": "Share of sender's finalized"}
    return table(
        "Top error codes by sender",
        "Undelivered and failed messages in the selected range by sender and Twilio error "
        "code, most first, with what the code means (click a code for Twilio's page) and the "
        "share of that sender's finalized messages it cost. For the selected channels.",
        [
            target(with_meaning(failures), "", "A", instant=True, fmt="table"),
            target(with_meaning(share), "", "B", instant=True, fmt="table"),
        ],
        "short",
        SOME_FAILED,
        transformations=table_columns(columns, merge=True, ordered=True),
        overrides=[
            override("Sender", unit="string"),
            override(
                "Error code",
                unit="string",
                links=[TWILIO_DOCS, traces_with_error_code("${__value.raw}")],
            ),
            override("Meaning", unit="string", mappings=meaning_mappings()),
            override("Messages", decimals=0),
            override(
                "Share of sender's finalized",
                unit="percentunit",
                decimals=1,
                thresholds=thresholds((None, GREEN), (0.01, ORANGE), (0.05, RED)),
            ),
        ],
        sort_by="Messages",
    )


def time_to_delivered() -> Json:
    return timeseries(
        "Time to delivered (p50, p90, p99)",
        "From creation (the callback URL's `created` parameter) or first sight to "
        "delivered. Exemplar dots link to the message's trace when the exporter "
        "exposes exemplars and the datasource has a trace destination.",
        quantiles("twilio_message_time_to_status_seconds", f'{CHANNEL}, status="delivered"'),
        "s",
        TIME_TO_DELIVERED,
        line_thresholds=True,
        links=LATENCY_LINK,
    )


def time_to_delivered_heatmap() -> Json:
    return heatmap(
        "Time to delivered distribution",
        "How long messages took to be delivered, per time bucket (histogram "
        "buckets as exposed by the exporter).",
        "twilio_message_time_to_status_seconds",
        f'{CHANNEL}, status="delivered"',
        "s",
    )


def time_to_delivered_by_channel() -> Json:
    return timeseries(
        "Time to delivered p90 by channel",
        "90th percentile of creation-to-delivered, per channel.",
        [
            target(
                "histogram_quantile(0.9, sum by (le, channel) "
                "(rate(twilio_message_time_to_status_seconds_bucket"
                f'{{{CHANNEL}, status="delivered"}}[$__rate_interval])))',
                "{{channel}}",
                exemplar=True,
            )
        ],
        "s",
        TIME_TO_DELIVERED,
        links=LATENCY_LINK,
    )


# The delivery SLO row, added after the first release: fixed ids in a block of their own, so
# the panels below keep theirs and panels added elsewhere on this dashboard do not collide.
SLO_ROW_ID, SLO_OBJECTIVE_ID, BUDGET_REMAINING_ID, BURN_RATE_ID = 40, 41, 42, 43
# 1 - objective, per job, from the generated SLO rules: the dashboard never hard-codes it.
ERROR_BUDGET = f"(1 - {slo_rules.OBJECTIVE_RECORD}{{{JOB}}})"
BUDGET_LEFT = thresholds((None, RED), (0, ORANGE), (0.25, GREEN))
BURN = thresholds((None, GREEN), (slo_rules.SLOW_BURN, ORANGE), (slo_rules.FAST_BURN, RED))


def burn_rate_of(window: str) -> str:
    """Errors over `window` as a multiple of the error budget (1: spent exactly as allowed)."""
    return f"{slo_rules.error_ratio_record(window)}{{{JOB}}}\n/ on (job)\n{ERROR_BUDGET}"


def slo_objective() -> Json:
    return stat(
        "Delivery SLO objective",
        "Share of the finalized messages (delivered, undelivered, failed) that must be "
        "delivered, as generated into the SLO rules (dashboards/generate.py "
        "--slo-objective). The error budget is the rest.",
        [target(f"{slo_rules.OBJECTIVE_RECORD}{{{JOB}}}", "{{job}}", instant=True)],
        "percentunit",
    )


def error_budget_remaining() -> Json:
    window = slo_rules.BUDGET_WINDOW
    return stat(
        "Error budget remaining (3 days)",
        "Share of the trailing 3 days' error budget not yet spent: 1 - (undelivered + failed "
        "share over 3 days) / (1 - objective). 100 %: nothing failed; 0: the 3 days failed "
        "exactly as many messages as the objective allows; below 0: the objective was missed. "
        "From the SLO recording rules in dashboards/rules.",
        [target(f"1 - (\n{burn_rate_of(window)}\n)", "{{job}}")],
        "percentunit",
        BUDGET_LEFT,
        graph=True,
        decimals=1,
    )


def burn_rate() -> Json:
    windows = (slo_rules.FAST_SHORT, slo_rules.SLOW_SHORT, slo_rules.FAST_LONG, slo_rules.SLOW_LONG)
    return timeseries(
        "Error budget burn rate",
        "Undelivered + failed share over each window, as a multiple of the error budget "
        "(1 - objective): 1 spends the budget exactly as fast as the objective allows. "
        f"TwilioDeliveryErrorBudgetFastBurn pages when the 1h and 5m lines are both above "
        f"{slo_rules.FAST_BURN:g} (red dashes); TwilioDeliveryErrorBudgetSlowBurn opens a "
        f"ticket when the 6h and 30m lines are both above {slo_rules.SLOW_BURN:g} (orange).",
        [
            target(burn_rate_of(window), f"{{{{job}}}} {window}", ref)
            for window, ref in zip(windows, "ABCD", strict=True)
        ],
        "none",
        BURN,
        line_thresholds=True,
    )


def slo_section() -> list[list[tuple[Json, int, int]]]:
    return [
        [(with_id(SLO_ROW_ID, row("Delivery SLO")), 24, 1)],
        [
            (with_id(SLO_OBJECTIVE_ID, slo_objective()), 4, 8),
            (with_id(BUDGET_REMAINING_ID, error_budget_remaining()), 8, 8),
            (with_id(BURN_RATE_ID, burn_rate()), 12, 8),
        ],
    ]


def build() -> Json:
    panels = layout(
        [
            [(row("Delivery rate"), 24, 1)],
            [
                (delivery_rate(), 4, 4),
                (baseline(), 4, 4),
                (delivered(), 4, 4),
                (failed(), 4, 4),
                (in_flight(), 4, 4),
                (went_stale(), 4, 4),
            ],
            [(rate_vs_baseline(), 24, 8)],
            [(rate_by_channel(), 12, 9), (rate_by_country(), 12, 9)],
            *slo_section(),
            [(row("Volume"), 24, 1)],
            [(by_status(), 12, 8), (finalized_by_channel(), 12, 8)],
            [(row("Failures"), 24, 1)],
            [(failures_by_code(), 12, 9), (failures_with_meanings(), 12, 9)],
            [(with_id(SENDERS_ROW_ID, row("Senders")), 24, 1)],
            [
                (with_id(RATE_BY_SENDER_ID, rate_by_sender()), 12, 9),
                (with_id(FAILURES_BY_SENDER_ID, failures_by_sender()), 12, 9),
            ],
            [(row("Time to delivered"), 24, 1)],
            [(time_to_delivered(), 12, 9), (time_to_delivered_heatmap(), 12, 9)],
            [(time_to_delivered_by_channel(), 24, 8)],
        ]
    )
    return dashboard(
        OVERVIEW_UID,
        "Twilio / Delivery overview",
        "Delivery rate against its 7-day baseline, message volume, failures by error code, "
        "delivery and failures by sender, and time to delivered, from twilio-status-exporter.",
        panels,
        variables(CHANNEL_VAR, COUNTRY_VAR, TRACES_VAR),
    )
