"""Every Prometheus metric the exporter exposes, with its HELP text and bucket rationale.

Label values always come from bounded sets (statuses, channels, five-digit error codes, ISO
regions); anything else is `other`, so a hostile or buggy sender cannot blow up cardinality.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__, model
from exporter.model import Backlog, MessageState, ReconcileTotals, Recorded, StatusEvent
from exporter.settings import DEFAULT_SENDERS_MAX, Settings
from exporter.telemetry.exemplars import Exemplars
from exporter.telemetry.label_cache import LabelCache
from exporter.telemetry.senders import SENDER_STATUSES, sender_value

# Message lifecycles run from seconds (queued -> sent) to hours (a handset off for the night)
# and Twilio gives up expecting a status after 72 h: 0.5 s up to 3 days.
LIFECYCLE_BUCKETS = (
    0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400,
    259200,
)  # fmt: skip
# Callback lag is usually seconds, minutes when Twilio or the carrier backs up. RawDlrDoneDate
# has minute precision (truncated), so lags under a minute blur; event streams report exact
# times, hence the sub-second buckets.
LAG_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# The handler commits to disk before answering, so the buckets start well under a millisecond;
# Twilio's 15 s timeout is the top of the range that matters.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)

# The ingester applies within a second normally; minutes mean it is down or overwhelmed,
# which the backlog gauges and their alerts show.
INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)

OUTCOMES = ("accepted", "duplicate", "invalid_signature", "malformed", "error")


class Metrics:
    """The exporter's metrics, registered on the registry passed in (never the global one).
    `exemplars` keeps the latency histograms' exemplars: in memory unless it is given a
    multiprocess directory to save them in."""

    def __init__(
        self,
        registry: CollectorRegistry,
        metric_tags: Iterable[str] = (),
        tag_values_max: int = 50,
        signature_validation: bool = True,
        senders_max: int = DEFAULT_SENDERS_MAX,
        exemplars: Exemplars | None = None,
    ) -> None:
        self.metric_tags = tuple(metric_tags)
        self._tag_values = BoundedValues(tag_values_max)
        self._senders = BoundedValues(senders_max)
        # Every labelled metric is reached through its LabelCache, the one place its children
        # are kept: no labels() checks and lock per update on the request path.
        self.callbacks = LabelCache(
            Counter(
                "twilio_status_callbacks_total",
                "Status callback requests by outcome: accepted (new status, including out of "
                "order), duplicate (status already recorded), invalid_signature (403), malformed "
                "(400/413/415), error (store unavailable, 503).",
                ["outcome"],
                registry=registry,
            ),
            known=[(outcome,) for outcome in OUTCOMES],
        )
        self.out_of_order = LabelCache(
            Counter(
                "twilio_status_callbacks_out_of_order_total",
                "Callbacks whose status ranks below the message's current status (recorded, "
                "counted, but the current status does not move back).",
                ["status"],
                registry=registry,
            )
        )
        self.message_status = LabelCache(
            Counter(
                "twilio_message_status_total",
                "Messages reaching each status, each (message, status) counted once.",
                [
                    "status",
                    "channel",
                    "error_code",
                    "country",
                    *(f"tag_{t}" for t in self.metric_tags),
                ],
                registry=registry,
            )
        )
        # Its own metric rather than a label of twilio_message_status_total: a sender label
        # there would multiply every status, channel, error code and country by the senders.
        self.sender_status = LabelCache(
            Counter(
                "twilio_sender_message_status_total",
                "Messages reaching a final status (delivered, undelivered, failed, canceled, "
                "read) by sender: the messaging service SID, else the From address; senders "
                "past EXPORTER_SENDERS_MAX, and values that are no sender address, are other. "
                "Each (message, status) counted once.",
                ["sender", "status", "error_code", "channel"],
                registry=registry,
            )
        )
        # The latency histograms name a trace per bucket (OpenMetrics exemplars): the message
        # behind a spike is one click away.
        self.exemplars = exemplars if exemplars is not None else Exemplars()
        self.stage_duration = self.exemplars.histogram(
            "twilio_message_stage_duration_seconds",
            "Time between a message's consecutive recorded stages.",
            ["from_status", "to_status", "channel"],
            LIFECYCLE_BUCKETS,
            registry,
        )
        self.time_to_status = self.exemplars.histogram(
            "twilio_message_time_to_status_seconds",
            "Time from the message's creation (or first sight) to reaching a status.",
            ["status", "channel"],
            LIFECYCLE_BUCKETS,
            registry,
        )
        self.callback_lag = self.exemplars.histogram(
            "twilio_callback_lag_seconds",
            "Callback (or Event Streams event) arrival minus the event time Twilio reports: "
            "the event's own timestamp, else RawDlrDoneDate (read as UTC, minute precision).",
            ["status"],
            LAG_BUCKETS,
            registry,
        )
        self.request_duration = Histogram(
            "twilio_status_callback_request_duration_seconds",
            "Time to handle a status callback request, commit included.",
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.stream_requests = LabelCache(
            Counter(
                "twilio_stream_requests_total",
                "Event Streams webhook requests by outcome: accepted (2xx, each event counted in "
                "twilio_stream_events_total), invalid_signature (401/403), malformed "
                "(400/413/415), error (store unavailable, 503).",
                ["outcome"],
                registry=registry,
            ),
            known=[(outcome,) for outcome in OUTCOMES if outcome != "duplicate"],
        )
        self.stream_events = LabelCache(
            Counter(
                "twilio_stream_events_total",
                "Event Streams events by type and outcome: accepted (new status), duplicate "
                "(status already recorded, by either input), ignored (not a message status "
                "event), malformed (unusable; the rest of its batch still counts), error (store "
                "unavailable: the request is answered 503 and Twilio retries it).",
                ["type", "outcome"],
                registry=registry,
            )
        )
        self.stale = LabelCache(
            Counter(
                "twilio_messages_stale_total",
                "Messages that stayed non-final past the stale limit, by the last status seen.",
                ["status"],
                registry=registry,
            )
        )
        self.store_errors = LabelCache(
            Counter(
                "twilio_exporter_store_errors_total",
                "Store operations that failed (record: callback answered 503).",
                ["operation"],
                registry=registry,
            )
        )
        self.spans_dropped = Counter(
            "twilio_exporter_spans_dropped_total",
            "Spans that could not be built, or were never exported before the retention "
            "horizon removed them.",
            registry=registry,
        )
        self.ingest_lag = Histogram(
            "twilio_exporter_ingest_lag_seconds",
            "Time from a webhook request's 200 to its events being applied: lifecycle "
            "updated, counted, spans queued for export.",
            buckets=INGEST_BUCKETS,
            registry=registry,
        )
        self.ingest_batches = Counter(
            "twilio_exporter_ingest_batches_total",
            "Batches of inbox entries the ingester applied (each one transaction).",
            registry=registry,
        )
        self.spans_exported = Counter(
            "twilio_exporter_spans_exported_total",
            "Spans the exporter accepted (at least once: a span may be sent again after a "
            "crash, with the same ids).",
            registry=registry,
        )
        self.span_export_failures = Counter(
            "twilio_exporter_span_export_failures_total",
            "Span export attempts that failed (collector down or refusing); the spans stay "
            "queued and are sent again.",
            registry=registry,
        )
        self.ingester_leader = Gauge(
            "twilio_exporter_ingester_leader",
            "1 in the process that is the deployment's ingester (holds its lock).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        Gauge(
            "twilio_exporter_build_info",
            "Exporter version.",
            ["version"],
            registry=registry,
            multiprocess_mode="max",
        ).labels(__version__).set(1)
        Gauge(
            "twilio_exporter_signature_validation_enabled",
            "1 when Twilio signatures are validated; 0 when EXPORTER_INSECURE_SKIP_SIGNATURE "
            "is on.",
            registry=registry,
            multiprocess_mode="min",
        ).set(1 if signature_validation else 0)

    @classmethod
    def for_settings(cls, registry: CollectorRegistry, settings: Settings) -> Metrics:
        """The metrics as `settings` configure them: tag labels, the label value caps, and
        exemplars kept beside the metric files of the process (under gunicorn)."""
        return cls(
            registry,
            settings.metric_tags,
            settings.metric_tag_values_max,
            signature_validation=not settings.insecure_skip_signature,
            senders_max=settings.senders_max,
            exemplars=Exemplars(settings.metrics_directory),
        )

    def record_outcome(self, event: StatusEvent, recorded: Recorded) -> None:
        """The per-status metrics of one recorded event (a duplicate moves none of them)."""
        transition = recorded.transition
        if transition is None:
            return
        status = event.status_label
        message = recorded.message
        channel = message.channel
        if transition.out_of_order:
            self.out_of_order(status).inc()
        self.message_status(
            status, channel, event.error_code_label, event.country, *self._tags(message)
        ).inc()
        if event.status in SENDER_STATUSES:
            sender = self._sender(recorded.message)
            self.sender_status(sender, status, event.error_code_label, channel).inc()
        # The histograms' exemplars name the message's trace whether or not spans are exported:
        # its id is derived from the message, the one its spans carry wherever they go (a
        # collector, the sender's trace through its traceparent); with tracing off a link
        # from an exemplar finds nothing.
        if transition.from_status is not None:
            self.stage_duration.observe(
                (model.status_label(transition.from_status), status, channel),
                max(0.0, transition.at - transition.started_at),
                message,
            )
        # Without a creation time, a message's first status is its first sight: its
        # time-to-status would be a meaningless zero, so it is not observed.
        if message.created_at is not None or not transition.first_sight:
            self.time_to_status.observe(
                (status, channel), max(0.0, transition.at - message.origin), message
            )
        reference = event.lag_reference
        if reference is not None:
            # Clock skew can put arrival a little before Twilio's time: clamp at zero.
            self.callback_lag.observe((status,), max(0.0, event.received_at - reference), message)

    def record_stale(self, message: MessageState) -> None:
        self.stale(model.status_label(message.status)).inc()

    def _tags(self, message: MessageState) -> list[str]:
        return [self._tag_values.label(t, message.tags.get(t, "")) for t in self.metric_tags]

    def _sender(self, message: MessageState) -> str:
        """The sender's label value: the first `senders_max` distinct senders of this process
        by name, later ones `other`."""
        sender = sender_value(message)
        return sender if sender == model.OTHER else self._senders.label("sender", sender)


class BoundedValues:
    """Admits the first `limit` distinct values of each label (a tag, the sender) as label
    values; later ones are `other`. Per process, so the bound on series is the processes that
    count x limit per label."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def label(self, tag: str, value: str) -> str:
        if not value:
            return ""
        seen = self._seen.setdefault(tag, set())
        if value in seen:
            return value
        with self._lock:
            if len(seen) < self._limit:
                seen.add(value)
                return value
        return "other"


class InFlightCollector(Collector):
    """`twilio_messages_in_flight`, read from the store at scrape time: the store is shared by
    every worker and replica, so it is the only place the true number lives."""

    def __init__(self, read_counts: Callable[[], dict[str, int]], on_error: Callable[[], None]):
        self._read_counts = read_counts
        self._on_error = on_error

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self._read_counts()
        except Exception:
            # A scrape must not fail because the store is down; the gap shows in the graph
            # and twilio_exporter_store_errors_total says why.
            self._on_error()
            return
        family = GaugeMetricFamily(
            "twilio_messages_in_flight",
            "Messages neither final nor stale, by current status (read from the store).",
            labels=["status"],
        )
        by_label = dict.fromkeys(model.IN_FLIGHT_STATUSES, 0)
        for status, count in counts.items():
            label = model.status_label(status)
            by_label[label] = by_label.get(label, 0) + count
        for label, count in by_label.items():
            family.add_metric([label], count)
        yield family


class BacklogCollector(Collector):
    """The write path's backlog, read from the store at scrape time: inbox entries not yet
    applied and spans not yet exported, with the age of the oldest of each."""

    def __init__(
        self,
        read_backlog: Callable[[], Backlog],
        on_error: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read_backlog = read_backlog
        self._on_error = on_error
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            backlog = self._read_backlog()
        except Exception:
            self._on_error()  # a gap, never a failed scrape
            return
        now = self._clock()
        yield GaugeMetricFamily(
            "twilio_exporter_ingest_backlog_entries",
            "Webhook requests accepted (answered 200) and not yet applied.",
            value=backlog.entries,
        )
        yield GaugeMetricFamily(
            "twilio_exporter_ingest_backlog_seconds",
            "Age of the oldest webhook request not yet applied (0 when none waits).",
            value=_age(now, backlog.oldest_entry_at),
        )
        yield GaugeMetricFamily(
            "twilio_exporter_span_export_backlog_spans",
            "Spans queued and not yet exported.",
            value=backlog.spans,
        )
        yield GaugeMetricFamily(
            "twilio_exporter_span_export_backlog_seconds",
            "How far span export is behind: age of the oldest span not yet exported (0 when "
            "none waits).",
            value=_age(now, backlog.oldest_span_at),
        )


def _age(now: float, since: float | None) -> float:
    return 0.0 if since is None else max(0.0, now - since)


# Reconcile's results, as counted by `twilio_reconcile_messages_total{result}`.
RECONCILE_RESULTS = {
    "checked": "checked",  # status read from the API (listed or fetched)
    "updated": "updated",  # a known message got a status it lacked (source=poll)
    "missed": "missed",  # listed, outbound, never seen: its callbacks were lost
    "still_stuck": "still_stuck",  # stuck past --stuck-after, and the API agrees
    "not_found": "not_found",  # stuck, and the API does not know it (404)
    "error": "errors",  # could not be read after retries
}


class ReconcileCollector(Collector):
    """`twilio_reconcile_*`, read from the store at scrape time. Reconcile runs as its own
    process (cron, a Kubernetes CronJob), so counters kept in its memory would vanish with
    it; every run saves its figures in the store, where any replica's scrape finds them."""

    def __init__(
        self, read_totals: Callable[[], ReconcileTotals], on_error: Callable[[], None]
    ) -> None:
        self._read_totals = read_totals
        self._on_error = on_error

    def collect(self) -> Iterator[Metric]:
        try:
            totals = self._read_totals()
        except Exception:
            self._on_error()  # as for the in-flight gauge: a gap, never a failed scrape
            return
        runs = CounterMetricFamily(
            "twilio_reconcile_runs",
            "Finished reconcile runs: success (everything checked, no errors) or failure.",
            labels=["outcome"],
        )
        runs.add_metric(["success"], totals.runs_succeeded)
        runs.add_metric(["failure"], totals.runs_failed)
        yield runs
        messages = CounterMetricFamily(
            "twilio_reconcile_messages",
            "Messages reconciled against Twilio's API, by result; missed = callbacks lost.",
            labels=["result"],
        )
        for result, field_name in RECONCILE_RESULTS.items():
            messages.add_metric([result], totals.messages.get(field_name, 0))
        yield messages
        yield from _gauge(
            "twilio_reconcile_last_run_timestamp_seconds",
            "When the latest reconcile run finished (Unix time).",
            totals.last_run_at,
        )
        yield from _gauge(
            "twilio_reconcile_last_success_timestamp_seconds",
            "When the latest successful reconcile run finished (Unix time): alert when old.",
            totals.last_success_at,
        )
        yield from _gauge(
            "twilio_reconcile_duration_seconds",
            "How long the latest finished reconcile run took.",
            totals.last_duration,
        )


def _gauge(name: str, documentation: str, value: float | None) -> Iterator[Metric]:
    """A gauge with its value, or nothing before the first run (absent, not a fake zero)."""
    if value is not None:
        yield GaugeMetricFamily(name, documentation, value=value)
