"""Twilio / Callback lag & latency: lag, stage latencies, ordering, in-flight and stale."""

from __future__ import annotations

from generator.grafana import (
    CHANNEL,
    CHANNEL_VAR,
    GREEN,
    HEALTH_UID,
    JOB,
    LATENCY_UID,
    ORANGE,
    OVERVIEW_UID,
    RED,
    RI,
    VALID,
    Json,
    dashboard,
    dashboard_link,
    heatmap,
    layout,
    quantiles,
    query_variable,
    row,
    target,
    thresholds,
    timeseries,
    variables,
)

STAGES = 'job=~"$job", channel=~"$channel", from_status=~"$from_status", to_status=~"$to_status"'
LAG = thresholds((None, GREEN), (60, ORANGE), (300, RED))
SHARE = thresholds((None, GREEN), (0.05, ORANGE), (0.2, RED))
CALLBACKS = "twilio_status_callbacks_total"


def p90_by(metric: str, selector: str, by: str, legend: str) -> Json:
    """A 90th-percentile target per value of `by` (with exemplars)."""
    return target(
        f"histogram_quantile(0.9, sum by (le, {by}) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
        legend,
        exemplar=True,
    )


def lag_percentiles() -> Json:
    return timeseries(
        "Callback lag (p50, p90, p99)",
        "Arrival minus the time the status happened: for Event Streams events their own "
        "timestamp (exact to the millisecond), for status callbacks the carrier's "
        "RawDlrDoneDate (minute precision, treated as UTC). Tells carrier and Twilio "
        "delays apart from delivery itself.",
        quantiles("twilio_callback_lag_seconds", JOB),
        "s",
        LAG,
        line_thresholds=True,
    )


def lag_heatmap() -> Json:
    return heatmap(
        "Callback lag distribution",
        "Distribution of callback and Event Streams lag over time; the sub-second buckets "
        "fill from Event Streams, whose timestamps are exact.",
        "twilio_callback_lag_seconds",
        JOB,
        "s",
    )


def lag_by_status() -> Json:
    return timeseries(
        "Callback lag p90 by status",
        "90th percentile of callback (and Event Streams event) lag per reported status.",
        [p90_by("twilio_callback_lag_seconds", JOB, "status", "{{status}}")],
        "s",
        LAG,
    )


def stage_by_stage() -> Json:
    return timeseries(
        "Stage latency p90 by stage",
        "Time between consecutive statuses of a message (for example sent -> "
        "delivered is the carrier's part), 90th percentile per stage.",
        [
            p90_by(
                "twilio_message_stage_duration_seconds",
                STAGES,
                "from_status, to_status",
                "{{from_status}} → {{to_status}}",
            )
        ],
        "s",
        LAG,
    )


def stage_percentiles() -> Json:
    return timeseries(
        "Stage latency (p50, p90, p99) of the selected stages",
        "Percentiles over all stages matching the from/to status variables.",
        quantiles("twilio_message_stage_duration_seconds", STAGES),
        "s",
        LAG,
    )


def stage_heatmap() -> Json:
    return heatmap(
        "Stage latency distribution of the selected stages",
        "Distribution of the time between the selected statuses.",
        "twilio_message_stage_duration_seconds",
        STAGES,
        "s",
    )


def time_to_status() -> Json:
    return timeseries(
        "Time to status p90 by status",
        "90th percentile from creation (or first sight) to each status.",
        [p90_by("twilio_message_time_to_status_seconds", CHANNEL, "status", "{{status}}")],
        "s",
        LAG,
        links=[dashboard_link("Delivery overview", OVERVIEW_UID)],
    )


def duplicate_rate() -> Json:
    return timeseries(
        "Duplicate callback rate",
        "Share of valid callbacks that repeated a (MessageSid, status) already "
        "recorded. Twilio retries and multi-region delivery cause a few; a jump "
        "means Twilio did not see our 200 in time (slow store?). A sender that also "
        "subscribes Event Streams to the same messages sees about half of its callbacks "
        "as duplicates, as expected: see Duplicate share by input on the exporter health "
        "dashboard.",
        [
            target(
                f'sum(rate({CALLBACKS}{{{JOB}, outcome="duplicate"}}{RI}))\n/\n'
                f"sum(rate({CALLBACKS}{{{JOB}, {VALID}}}{RI}))",
                "duplicates",
            )
        ],
        "percentunit",
        SHARE,
        line_thresholds=True,
        links=[dashboard_link("Exporter health", HEALTH_UID)],
    )


def out_of_order_rate() -> Json:
    return timeseries(
        "Out-of-order status rate",
        "Share of recorded statuses (from callbacks, Event Streams or reconcile polls) "
        "that ranked below one already recorded (recorded in history; the current status "
        "never moves backwards).",
        [
            target(
                f"sum(rate(twilio_status_callbacks_out_of_order_total{{{JOB}}}{RI}))\n/\n"
                f"sum(rate(twilio_message_status_total{{{JOB}}}{RI}))",
                "out of order",
            )
        ],
        "percentunit",
        SHARE,
        line_thresholds=True,
    )


def out_of_order_by_status() -> Json:
    return timeseries(
        "Out-of-order reports by status",
        "Out-of-order status reports (any input) per second by the late status they carried.",
        [
            target(
                f"sum by (status) (rate(twilio_status_callbacks_out_of_order_total{{{JOB}}}{RI}))",
                "{{status}}",
            )
        ],
        "cps",
        stack=True,
    )


def in_flight() -> Json:
    return timeseries(
        "Messages in flight by status",
        "Messages whose current status is not final, read from the store at "
        "scrape time (max across replicas: each reports the store-wide count). "
        "A growing `sent` band means delivery receipts are late.",
        [target(f"max by (status) (twilio_messages_in_flight{{{JOB}}})", "{{status}}")],
        "short",
        stack=True,
    )


def going_stale() -> Json:
    return timeseries(
        "Messages going stale by last status",
        "Messages that stayed non-final past the stale timeout (default 72 h), "
        "per second, by the last status seen. Mostly `sent` where carriers send "
        "no receipts (US/Canada long-code MMS).",
        [
            target(
                f"sum by (status) (rate(twilio_messages_stale_total{{{JOB}}}{RI}))",
                "{{status}}",
            )
        ],
        "cps",
        stack=True,
    )


def stage_variable(name: str, label: str, description: str) -> Json:
    return query_variable(
        name,
        label,
        f'label_values(twilio_message_stage_duration_seconds_bucket{{job=~"$job"}}, {name})',
        description,
    )


def build() -> Json:
    panels = layout(
        [
            [(row("Callback lag"), 24, 1)],
            [(lag_percentiles(), 12, 9), (lag_heatmap(), 12, 9)],
            [(lag_by_status(), 24, 8)],
            [(row("Stage latency"), 24, 1)],
            [(stage_by_stage(), 12, 9), (stage_percentiles(), 12, 9)],
            [(stage_heatmap(), 12, 9), (time_to_status(), 12, 9)],
            [(row("Ordering"), 24, 1)],
            [
                (duplicate_rate(), 8, 8),
                (out_of_order_rate(), 8, 8),
                (out_of_order_by_status(), 8, 8),
            ],
            [(row("Messages in flight"), 24, 1)],
            [(in_flight(), 12, 8), (going_stale(), 12, 8)],
        ]
    )
    return dashboard(
        LATENCY_UID,
        "Twilio / Callback lag & latency",
        "Callback and Event Streams lag, stage latencies, duplicate and out-of-order statuses, "
        "messages in flight and stale, from twilio-status-exporter.",
        panels,
        variables(
            CHANNEL_VAR,
            stage_variable("from_status", "From status", "Earlier status of a stage."),
            stage_variable("to_status", "To status", "Later status of a stage."),
        ),
    )
