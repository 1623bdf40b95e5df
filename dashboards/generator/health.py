"""Twilio / Exporter health: targets, version, validation, requests, latency, dependencies."""

from __future__ import annotations

from generator.grafana import (
    ANY_IS_BAD,
    GREEN,
    HEALTH_UID,
    JOB,
    OK_ONLY,
    ORANGE,
    OVERVIEW_UID,
    RED,
    RI,
    Json,
    dashboard,
    dashboard_link,
    heatmap,
    layout,
    quantiles,
    row,
    stat,
    target,
    thresholds,
    timeseries,
    variables,
)

CALLBACKS = "twilio_status_callbacks_total"
REJECTED = 'outcome=~"invalid_signature|malformed|error"'
AT_LEAST_ONE = thresholds((None, RED), (1, GREEN))


def targets_up() -> Json:
    return stat(
        "Targets up",
        "Scrape targets of the selected jobs that answered the last scrape.",
        [target(f"sum(up{{{JOB}}})", "up", instant=True)],
        "short",
        AT_LEAST_ONE,
        decimals=0,
    )


def version() -> Json:
    return stat(
        "Version",
        "twilio_exporter_build_info: the running version(s).",
        [
            target(
                f"count by (version) (twilio_exporter_build_info{{{JOB}}})",
                "{{version}}",
                instant=True,
            )
        ],
        "none",
        text_mode="name",
    )


def signature_validation() -> Json:
    enabled = {
        "0": {"text": "DISABLED", "color": RED, "index": 0},
        "1": {"text": "Enabled", "color": GREEN, "index": 1},
    }
    return stat(
        "Signature validation",
        "0 means EXPORTER_INSECURE_SKIP_SIGNATURE is on: anyone can forge "
        "callbacks. Alert: TwilioSignatureValidationDisabled.",
        [
            target(
                f"min(twilio_exporter_signature_validation_enabled{{{JOB}}})",
                "validation",
                instant=True,
            )
        ],
        "none",
        AT_LEAST_ONE,
        mappings=[{"type": "value", "options": enabled}],
    )


def callbacks_per_second() -> Json:
    return stat(
        "Callbacks per second",
        "All status callbacks handled, any outcome.",
        [target(f"sum(rate({CALLBACKS}{{{JOB}}}{RI}))", "callbacks/s")],
        "reqps",
        graph=True,
    )


def rejected_share() -> Json:
    return stat(
        "Rejected share",
        "Share of callbacks rejected (invalid signature, malformed, store "
        "unavailable) over the selected range.",
        [
            target(
                f"sum(increase({CALLBACKS}{{{JOB}, {REJECTED}}}[$__range]))\n/\n"
                f"sum(increase({CALLBACKS}{{{JOB}}}[$__range]))",
                "rejected",
                instant=True,
            )
        ],
        "percentunit",
        thresholds((None, GREEN), (0.01, ORANGE), (0.05, RED)),
        decimals=2,
    )


def answered_503() -> Json:
    return stat(
        "Answered 503 (store unavailable)",
        "Callbacks answered 503 in the selected range because the store could "
        "not be written. Alert: TwilioStatusExporterStoreUnavailable.",
        [
            target(
                f'sum(increase({CALLBACKS}{{{JOB}, outcome="error"}}[$__range]))',
                "503",
                instant=True,
            )
        ],
        "short",
        ANY_IS_BAD,
        decimals=0,
    )


def by_outcome() -> Json:
    return timeseries(
        "Callbacks by outcome",
        "Status callbacks per second by outcome: accepted, duplicate, "
        "invalid_signature (403), malformed (400), error (503, store unavailable).",
        [target(f"sum by (outcome) (rate({CALLBACKS}{{{JOB}}}{RI}))", "{{outcome}}")],
        "reqps",
        stack=True,
    )


def rejected_by_reason() -> Json:
    return timeseries(
        "Rejected callbacks by reason",
        "Rejected callbacks per second. invalid_signature: wrong auth token or "
        "public URL (or probing); malformed: missing MessageSid/MessageStatus; "
        "error: store unavailable, answered 503.",
        [target(f"sum by (outcome) (rate({CALLBACKS}{{{JOB}, {REJECTED}}}{RI}))", "{{outcome}}")],
        "reqps",
        ANY_IS_BAD,
        stack=True,
    )


def handler_latency() -> Json:
    return timeseries(
        "Handler latency (p50, p90, p99)",
        "Time to handle a status callback, including the durable write before "
        "the 200. Twilio waits at most 15 s for an answer.",
        quantiles("twilio_status_callback_request_duration_seconds", JOB),
        "s",
        thresholds((None, GREEN), (0.25, ORANGE), (1, RED)),
        line_thresholds=True,
    )


def handler_latency_heatmap() -> Json:
    return heatmap(
        "Handler latency distribution",
        "Distribution of callback handling time.",
        "twilio_status_callback_request_duration_seconds",
        JOB,
        "s",
    )


def store_errors() -> Json:
    return timeseries(
        "Store errors by operation",
        "Failed store operations per second: record (callback writes), read "
        "(scrape-time in-flight counts), sweep (stale marking).",
        [
            target(
                f"sum by (operation) (rate(twilio_exporter_store_errors_total{{{JOB}}}{RI}))",
                "{{operation}}",
            )
        ],
        "ops",
        ANY_IS_BAD,
    )


def spans_dropped() -> Json:
    return timeseries(
        "Spans dropped",
        "Spans the OTLP exporter could not deliver, per second. Callbacks are "
        "unaffected; traces are incomplete.",
        [target(f"sum(rate(twilio_exporter_spans_dropped_total{{{JOB}}}{RI}))", "dropped")],
        "cps",
        ANY_IS_BAD,
    )


def scrape_duration() -> Json:
    return timeseries(
        "Scrape duration",
        "How long Prometheus takes to scrape /metrics; the in-flight gauge is "
        "read from the store at scrape time, so a slow store shows here first.",
        [target(f"max by (instance) (scrape_duration_seconds{{{JOB}}})", "{{instance}}")],
        "s",
        thresholds((None, GREEN), (1, ORANGE), (5, RED)),
        links=[dashboard_link("Delivery overview", OVERVIEW_UID)],
    )


def last_reconcile() -> Json:
    return stat(
        "Last successful reconcile",
        "Time since `twilio-status-exporter reconcile` last finished without errors (read "
        "from the store). Empty until it first runs. Alert: TwilioReconcileNotSucceeding.",
        [
            target(
                f"time() - max(twilio_reconcile_last_success_timestamp_seconds{{{JOB}}})",
                "since last success",
                instant=True,
            )
        ],
        "s",
        thresholds((None, GREEN), (86400 + 7200, ORANGE), (2 * 86400, RED)),
    )


def reconcile_results() -> Json:
    return timeseries(
        "Reconciled messages by result",
        "What reconcile runs found, per second (daily runs show as spikes): missed = "
        "messages never seen, updated = statuses only the API knew; both are lost "
        "callbacks. Alert: TwilioCallbacksLost.",
        [
            target(
                # Every replica reports the same store-backed totals: max, not sum.
                f"max by (result) (rate(twilio_reconcile_messages_total{{{JOB}}}{RI}))",
                "{{result}}",
            )
        ],
        "cps",
        OK_ONLY,
    )


def build() -> Json:
    panels = layout(
        [
            [(row("Status"), 24, 1)],
            [
                (targets_up(), 4, 4),
                (version(), 4, 4),
                (signature_validation(), 4, 4),
                (callbacks_per_second(), 4, 4),
                (rejected_share(), 4, 4),
                (answered_503(), 4, 4),
            ],
            [(row("Requests"), 24, 1)],
            [(by_outcome(), 12, 8), (rejected_by_reason(), 12, 8)],
            [(handler_latency(), 12, 8), (handler_latency_heatmap(), 12, 8)],
            [(row("Dependencies"), 24, 1)],
            [(store_errors(), 8, 8), (spans_dropped(), 8, 8), (scrape_duration(), 8, 8)],
            [(row("Reconciliation"), 24, 1)],
            [(last_reconcile(), 6, 8), (reconcile_results(), 18, 8)],
        ]
    )
    return dashboard(
        HEALTH_UID,
        "Twilio / Exporter health",
        "twilio-status-exporter's own health: targets, version, signature validation, request "
        "rate and rejects by reason, handler latency, store errors, dropped spans and "
        "reconciliation with Twilio's API.",
        panels,
        variables(),
    )
