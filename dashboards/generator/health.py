"""Twilio / Exporter health: targets, version, validation, inputs, requests, latency, the
write path (ingest and span export backlogs), dependencies."""

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
    VALID,
    Json,
    dashboard,
    dashboard_link,
    heatmap,
    layout,
    override,
    quantiles,
    row,
    stat,
    target,
    thresholds,
    timeseries,
    variables,
    with_id,
)

CALLBACKS = "twilio_status_callbacks_total"
STREAM_REQUESTS = "twilio_stream_requests_total"
STREAM_EVENTS = "twilio_stream_events_total"
RECONCILED = "twilio_reconcile_messages_total"
REJECTED = 'outcome=~"invalid_signature|malformed|error"'
AT_LEAST_ONE = thresholds((None, RED), (1, GREEN))
SHARE = thresholds((None, GREEN), (0.05, ORANGE), (0.2, RED))
# Legends of the two inputs that post to the exporter.
STATUS_CALLBACK, EVENT_STREAMS = "StatusCallback", "Event Streams"

# Panels added after the first release: fixed ids after the original 19, so that the ids of
# the panels below them do not move.
INPUTS_ROW_ID, BY_INPUT_ID, DUPLICATES_BY_INPUT_ID = 20, 21, 22
STREAM_REQUESTS_ID, STREAM_EVENTS_ID = 23, 24
WRITE_PATH_ROW_ID, INGESTERS_ID, INGESTER_BY_REPLICA_ID = 25, 26, 27
INGEST_BACKLOG_ID, INGEST_BACKLOG_AGE_ID, INGEST_LAG_ID = 28, 29, 30
SPAN_BACKLOG_ID, SPAN_BACKLOG_AGE_ID, SPAN_EXPORT_ID = 31, 32, 33
# The backlog gauges are read from the store at scrape time: every replica sharing a store
# reports the same store-wide figure, so they are aggregated with max, never sum.
INGEST_BACKLOG_AGE = thresholds((None, GREEN), (10, ORANGE), (60, RED))  # alert: > 60 s
SPAN_BACKLOG_AGE = thresholds((None, GREEN), (60, ORANGE), (600, RED))  # alert: > 10 min


def both_inputs(fn: str, selector: str, window: str) -> str:
    """sum(fn(...)) over StatusCallback and Event Streams requests; an input that has no
    series yet (an exporter without Event Streams) counts as 0 instead of emptying the sum."""
    return (
        f"(sum({fn}({CALLBACKS}{{{selector}}}[{window}])) or vector(0))\n+\n"
        f"(sum({fn}({STREAM_REQUESTS}{{{selector}}}[{window}])) or vector(0))"
    )


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


def requests_per_second() -> Json:
    return stat(
        "Requests per second",
        "Requests handled per second, any outcome: status callbacks (one status each) and "
        "Event Streams deliveries (a batch of events each).",
        [
            target(f"sum(rate({CALLBACKS}{{{JOB}}}{RI}))", STATUS_CALLBACK, "A"),
            target(f"sum(rate({STREAM_REQUESTS}{{{JOB}}}{RI}))", EVENT_STREAMS, "B"),
        ],
        "reqps",
        text_mode="value_and_name",
        graph=True,
    )


def rejected_share() -> Json:
    return stat(
        "Rejected share",
        "Share of requests rejected (invalid signature or credentials, malformed, store "
        "unavailable) over the selected range, status callbacks and Event Streams "
        "deliveries together.",
        [
            target(
                f"(\n{both_inputs('increase', f'{JOB}, {REJECTED}', '$__range')}\n)\n/\n"
                f"(\n{both_inputs('increase', JOB, '$__range')}\n)",
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
        "Requests (status callbacks and Event Streams deliveries) answered 503 in the "
        "selected range because the store could not be written. Alert: "
        "TwilioStatusExporterStoreUnavailable.",
        [
            target(
                both_inputs("increase", f'{JOB}, outcome="error"', "$__range"), "503", instant=True
            )
        ],
        "short",
        ANY_IS_BAD,
        decimals=0,
    )


def accepted_by_input() -> Json:
    return timeseries(
        "Accepted status reports by input",
        "New statuses recorded per second by the input that brought them first: "
        "StatusCallback requests, Event Streams events, and reconcile polls (statuses only "
        "Twilio's API knew, or messages never seen: lost reports; daily runs show as "
        "spikes). Stacked, the total is every status recorded (Messages by status on the "
        "delivery overview). Duplicates are not counted here.",
        [
            target(
                f'sum(rate({CALLBACKS}{{{JOB}, outcome="accepted"}}{RI}))', STATUS_CALLBACK, "A"
            ),
            target(
                f'sum(rate({STREAM_EVENTS}{{{JOB}, outcome="accepted"}}{RI}))', EVENT_STREAMS, "B"
            ),
            target(
                # Every replica reports the same store-backed reconcile totals: max, not sum.
                f"sum(max by (job, result) "
                f'(rate({RECONCILED}{{{JOB}, result=~"updated|missed"}}{RI})))',
                "Reconcile polls",
                "C",
            ),
        ],
        "cps",
        stack=True,
    )


def duplicates_by_input() -> Json:
    return timeseries(
        "Duplicate share by input",
        "Share of each input's valid reports that repeated a (MessageSid, status) already "
        "recorded, by either input. Alone, an input sees a few percent (Twilio retries; "
        "Event Streams delivers at least once). A sender that uses both StatusCallback and "
        "Event Streams for the same messages sees about half of all reports as duplicates: "
        "that is expected and harmless, each status is still counted once. Reconcile "
        "records only statuses the store lacks, so it has no duplicates.",
        [
            target(
                f'sum(rate({CALLBACKS}{{{JOB}, outcome="duplicate"}}{RI}))\n/\n'
                f"sum(rate({CALLBACKS}{{{JOB}, {VALID}}}{RI}))",
                STATUS_CALLBACK,
                "A",
            ),
            target(
                f'sum(rate({STREAM_EVENTS}{{{JOB}, outcome="duplicate"}}{RI}))\n/\n'
                f"sum(rate({STREAM_EVENTS}{{{JOB}, {VALID}}}{RI}))",
                EVENT_STREAMS,
                "B",
            ),
        ],
        "percentunit",
        SHARE,
        maximum=1,
    )


def by_outcome() -> Json:
    return timeseries(
        "Callbacks by outcome",
        "Status callbacks per second by outcome: accepted, duplicate, "
        "invalid_signature (403), malformed (400/413/415), error (503, store unavailable).",
        [target(f"sum by (outcome) (rate({CALLBACKS}{{{JOB}}}{RI}))", "{{outcome}}")],
        "reqps",
        stack=True,
    )


def stream_requests_by_outcome() -> Json:
    return timeseries(
        "Event Streams requests by outcome",
        "Event Streams webhook deliveries (POST /twilio/events, a batch of events each) per "
        "second by outcome: accepted (2xx; unusable events in it are counted as malformed "
        "events), invalid_signature (401/403), malformed (400/413/415: not CloudEvents JSON, "
        "too large, wrong content type, or no usable event), error (503, store unavailable; "
        "Twilio retries those for up to 4 hours, but never a 4xx).",
        [target(f"sum by (outcome) (rate({STREAM_REQUESTS}{{{JOB}}}{RI}))", "{{outcome}}")],
        "reqps",
        stack=True,
    )


def rejected_by_reason() -> Json:
    return timeseries(
        "Rejected requests by input and reason",
        "Rejected requests per second, StatusCallback and Event Streams. invalid_signature: "
        "wrong auth token, public URL or sink credentials (or probing); malformed: missing "
        "MessageSid/MessageStatus, or no usable CloudEvent; error: store unavailable, "
        "answered 503. Alerts: TwilioInvalidSignatureBurst, TwilioStreamEventsMalformed.",
        [
            target(
                f"sum by (outcome) (rate({CALLBACKS}{{{JOB}, {REJECTED}}}{RI}))",
                f"{STATUS_CALLBACK} {{{{outcome}}}}",
                "A",
            ),
            target(
                f"sum by (outcome) (rate({STREAM_REQUESTS}{{{JOB}, {REJECTED}}}{RI}))",
                f"{EVENT_STREAMS} {{{{outcome}}}}",
                "B",
            ),
        ],
        "reqps",
        ANY_IS_BAD,
        stack=True,
    )


def stream_events_by_type_and_outcome() -> Json:
    return timeseries(
        "Event Streams events by type and outcome",
        "CloudEvents received per second by type and outcome: accepted (new status), "
        "duplicate (status already recorded, by either input), ignored (not a message "
        "status, e.g. the sink's test event), malformed (unusable; the rest of its batch "
        "still counts), error (store unavailable). Types outside the known set are `other`.",
        [
            target(
                f"sum by (type, outcome) (rate({STREAM_EVENTS}{{{JOB}}}{RI}))",
                "{{type}} {{outcome}}",
            )
        ],
        "cps",
        stack=True,
    )


def handler_latency() -> Json:
    return timeseries(
        "Handler latency (p50, p90, p99)",
        "Time to handle a status callback, including the durable write before "
        "the 200 (status callbacks only). Twilio waits at most 15 s for an answer.",
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


def ingesters() -> Json:
    return stat(
        "Ingesters",
        "Processes holding the ingester lock, per job: exactly 1 in a healthy deployment (one "
        "ingester applies the inbox for all replicas; a standby takes over within seconds). "
        "0 means nothing applies the accepted requests. Alert: TwilioExporterNoIngester.",
        [
            target(
                f"sum by (job) (twilio_exporter_ingester_leader{{{JOB}}})",
                "{{job}}",
                instant=True,
            )
        ],
        "short",
        thresholds((None, RED), (1, GREEN), (2, RED)),
        text_mode="value_and_name",
        decimals=0,
    )


def ingester_by_replica() -> Json:
    return timeseries(
        "Ingester by replica",
        "1 on the replica whose ingester process holds the lock, 0 on the standbys: shows "
        "which replica applies the inbox and when the lock moved (a restart, a lost store "
        "connection).",
        [
            target(
                f"max by (instance) (twilio_exporter_ingester_leader{{{JOB}}})",
                "{{instance}}",
            )
        ],
        "short",
        maximum=1,
    )


def ingest_backlog() -> Json:
    return timeseries(
        "Ingest backlog",
        "Webhook requests answered 200 and not yet applied (read from the store at scrape "
        "time; every replica reports the same store-wide number). Near 0 while the ingester "
        "keeps up; a steady climb means it is down, stuck or overwhelmed.",
        [
            target(
                f"max by (job) (twilio_exporter_ingest_backlog_entries{{{JOB}}})",
                "{{job}}",
            )
        ],
        "short",
    )


def ingest_backlog_age() -> Json:
    return timeseries(
        "Ingest backlog age",
        "Age of the oldest webhook request not yet applied (0 when none waits): how far "
        "every delivery figure and alert is behind. Alert: TwilioExporterIngestBacklogGrowing "
        "(over 60 s for 5 minutes).",
        [
            target(
                f"max by (job) (twilio_exporter_ingest_backlog_seconds{{{JOB}}})",
                "{{job}}",
            )
        ],
        "s",
        INGEST_BACKLOG_AGE,
        line_thresholds=True,
    )


def ingest_lag() -> Json:
    return timeseries(
        "Ingest lag (p50, p90, p99)",
        "Time from a webhook request's 200 to its events being applied (lifecycle updated, "
        "counted, spans queued). Empty until the first request is applied.",
        quantiles("twilio_exporter_ingest_lag_seconds", JOB),
        "s",
        INGEST_BACKLOG_AGE,
        line_thresholds=True,
    )


def span_export_backlog() -> Json:
    return timeseries(
        "Span export backlog",
        "Spans queued in the store and not yet exported (every replica reports the same "
        "store-wide number). They stay queued while the collector is down and are sent "
        "when it is back, unless retention (EXPORTER_RETENTION) purges them first. 0 "
        "without tracing.",
        [
            target(
                f"max by (job) (twilio_exporter_span_export_backlog_spans{{{JOB}}})",
                "{{job}}",
            )
        ],
        "short",
    )


def span_export_backlog_age() -> Json:
    return timeseries(
        "Span export backlog age",
        "Age of the oldest span not yet exported (0 when none waits): how far traces are "
        "behind. Alert: TwilioExporterSpanExportBehind (over 10 minutes for 10 minutes).",
        [
            target(
                f"max by (job) (twilio_exporter_span_export_backlog_seconds{{{JOB}}})",
                "{{job}}",
            )
        ],
        "s",
        SPAN_BACKLOG_AGE,
        line_thresholds=True,
    )


def span_export() -> Json:
    return timeseries(
        "Spans exported and export failures",
        "Spans the collector accepted per second, and failed export attempts per second "
        "(collector down or refusing; the spans stay queued and are sent again).",
        [
            target(
                f"sum(rate(twilio_exporter_spans_exported_total{{{JOB}}}{RI}))", "exported", "A"
            ),
            target(
                f"sum(rate(twilio_exporter_span_export_failures_total{{{JOB}}}{RI}))",
                "failed attempts",
                "B",
            ),
        ],
        "cps",
        overrides=[override("failed attempts", color={"mode": "fixed", "fixedColor": RED})],
    )


def store_errors() -> Json:
    return timeseries(
        "Store errors by operation",
        "Failed store operations per second: record (requests appended to the inbox, "
        "answered 503), ingest (the ingester applying the inbox), read (scrape-time "
        "counts), sweep (stale marking, retention).",
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
        "Spans lost, per second: they could not be built, or retention purged them before "
        "they were exported. Callbacks are unaffected; traces are incomplete. Export "
        "failures alone lose nothing (Span export backlog).",
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
                (requests_per_second(), 4, 4),
                (rejected_share(), 4, 4),
                (answered_503(), 4, 4),
            ],
            [(with_id(INPUTS_ROW_ID, row("Inputs")), 24, 1)],
            [
                (with_id(BY_INPUT_ID, accepted_by_input()), 12, 8),
                (with_id(DUPLICATES_BY_INPUT_ID, duplicates_by_input()), 12, 8),
            ],
            [(row("Requests"), 24, 1)],
            [
                (by_outcome(), 12, 8),
                (with_id(STREAM_REQUESTS_ID, stream_requests_by_outcome()), 12, 8),
            ],
            [
                (rejected_by_reason(), 12, 8),
                (with_id(STREAM_EVENTS_ID, stream_events_by_type_and_outcome()), 12, 8),
            ],
            [(handler_latency(), 12, 8), (handler_latency_heatmap(), 12, 8)],
            [(with_id(WRITE_PATH_ROW_ID, row("Write path")), 24, 1)],
            [
                (with_id(INGESTERS_ID, ingesters()), 4, 8),
                (with_id(INGESTER_BY_REPLICA_ID, ingester_by_replica()), 6, 8),
                (with_id(INGEST_BACKLOG_ID, ingest_backlog()), 7, 8),
                (with_id(INGEST_BACKLOG_AGE_ID, ingest_backlog_age()), 7, 8),
            ],
            [
                (with_id(INGEST_LAG_ID, ingest_lag()), 6, 8),
                (with_id(SPAN_BACKLOG_ID, span_export_backlog()), 6, 8),
                (with_id(SPAN_BACKLOG_AGE_ID, span_export_backlog_age()), 6, 8),
                (with_id(SPAN_EXPORT_ID, span_export()), 6, 8),
            ],
            [(row("Dependencies"), 24, 1)],
            [(store_errors(), 8, 8), (spans_dropped(), 8, 8), (scrape_duration(), 8, 8)],
            [(row("Reconciliation"), 24, 1)],
            [(last_reconcile(), 6, 8), (reconcile_results(), 18, 8)],
        ]
    )
    return dashboard(
        HEALTH_UID,
        "Twilio / Exporter health",
        "twilio-status-exporter's own health: targets, version, signature validation, its "
        "inputs (StatusCallback, Event Streams, reconcile polls), requests and rejects by "
        "reason, handler latency, the write path (ingester, ingest and span export "
        "backlogs, ingest lag), store errors, dropped spans and reconciliation with "
        "Twilio's API.",
        panels,
        variables(),
    )
