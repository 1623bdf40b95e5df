"""Span export that never makes a callback wait: a bounded hand-off to the SDK's batch processor,
every lost span counted, and a shutdown that gives up after a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import Counter

from exporter.telemetry.tracing.config import DEFAULT_MAX_EXPORT_BATCH_SIZE

log = logging.getLogger(__name__)
# A worker leaving gracefully flushes what it holds, but gunicorn kills it after its
# graceful_timeout (10 s): spans still unsent after this long are dropped, and counted.
SHUTDOWN_FLUSH_SECONDS = 3.0
# With the collector down every callback loses a span; one warning a minute says so.
DROP_LOG_INTERVAL_SECONDS = 60.0

EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk._shared_internal",
)

ReportDropped = Callable[[int, str], None]


class DropReporter:
    """Counts lost spans in twilio_exporter_spans_dropped_total; logs at most once an interval."""

    def __init__(
        self,
        spans_dropped: Counter,
        *,
        interval: float = DROP_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counter = spans_dropped
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._unlogged = 0
        self._last_logged: float | None = None

    def __call__(self, count: int, reason: str) -> None:
        self._counter.inc(count)
        with self._lock:
            self._unlogged += count
            now = self._clock()
            if self._last_logged is not None and now - self._last_logged < self._interval:
                return
            self._last_logged, unlogged, self._unlogged = now, self._unlogged, 0
        log.warning(
            "dropped %d span(s) (%s); twilio_exporter_spans_dropped_total counts them all, "
            "this is logged at most every %.0f s",
            unlogged,
            reason,
            self._interval,
        )


class RateLimitFilter(logging.Filter):
    """Lets each distinct message through at most once an interval. The OTLP exporters log
    every failed batch and every retry; with the collector down that is several lines a second
    per worker, saying the same thing."""

    def __init__(
        self,
        interval: float = DROP_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, object], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = (record.name, record.msg), self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return False
            if len(self._last) > 256:  # formats are few; this only bounds the unexpected
                self._last.clear()
            self._last[key] = now
        return True


def quiet_exporter_logs(interval: float = DROP_LOG_INTERVAL_SECONDS) -> None:
    """Rate-limit the OTLP exporters' own warnings (called once per worker)."""
    limit = RateLimitFilter(interval)
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(limit)


class BoundedBatchSpanProcessor(SpanProcessor):
    """The SDK's BatchSpanProcessor behind a hand-off that drops, rather than queues, a span
    when `max_queue_size` spans are already waiting or being exported.

    The SDK's own queue also drops when full, but silently for our counter, and it builds a log
    record per dropped span. Counting spans handed over against spans the exporter has finished
    with (the exporter is wrapped to tell us) keeps the SDK queue from ever filling.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        report_dropped: ReportDropped,
        *,
        max_queue_size: int,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
        shutdown_timeout: float = SHUTDOWN_FLUSH_SECONDS,
    ) -> None:
        self._report = report_dropped
        self._capacity = max_queue_size
        self._shutdown_timeout = shutdown_timeout
        self._lock = threading.Lock()
        self._pending = 0  # handed to the batch processor, not yet through the exporter
        self._closed = False
        self._exporter = _AccountingExporter(exporter, self._finished, report_dropped)
        if max_export_batch_size is None and max_queue_size < DEFAULT_MAX_EXPORT_BATCH_SIZE:
            max_export_batch_size = max_queue_size  # else the SDK's default of 512 is refused
        self._batch = BatchSpanProcessor(
            self._exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            if self._closed:
                reason = "tracing is shut down"
            elif self._pending >= self._capacity:
                reason = "export queue full: the collector is down or too slow"
            else:
                self._pending += 1
                reason = ""
        if reason:
            self._report(1, reason)
            return
        self._batch.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush for at most `shutdown_timeout` seconds; whatever is left is counted as dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._exporter.give_up_after(time.monotonic() + self._shutdown_timeout)
        flush = threading.Thread(target=self._batch.shutdown, name="span-flush", daemon=True)
        flush.start()
        flush.join(self._shutdown_timeout)
        if flush.is_alive():
            self._exporter.shutdown()  # interrupts an export stuck retrying a dead collector
            flush.join(1.0)
        with self._lock:
            left, self._pending = self._pending, 0
        if left > 0:
            self._report(left, "not exported before the worker stopped")

    def _finished(self, count: int) -> None:
        with self._lock:
            self._pending = max(0, self._pending - count)


class _AccountingExporter(SpanExporter):
    """Wraps the real exporter: reports every batch done, counts failed ones as dropped, never
    raises, and after a shutdown deadline drops batches instead of sending them."""

    def __init__(
        self, inner: SpanExporter, finished: Callable[[int], None], report: ReportDropped
    ) -> None:
        self._inner = inner
        self._finished = finished
        self._report = report
        self._deadline: float | None = None
        self._shut = threading.Lock()
        self._inner_shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result, reason = SpanExportResult.FAILURE, "export failed: collector unreachable or refused"
        try:
            if self._deadline is not None and time.monotonic() > self._deadline:
                reason = "not exported before the worker stopped"
            else:
                result = self._inner.export(spans)
        except Exception:
            log.debug("span exporter raised", exc_info=True)
            reason = "span exporter raised"
        finally:
            self._finished(len(spans))
        if result is not SpanExportResult.SUCCESS:
            self._report(len(spans), reason)
        return result

    def give_up_after(self, deadline: float) -> None:
        self._deadline = deadline

    def shutdown(self) -> None:
        with self._shut:
            if self._inner_shut_down:
                return
            self._inner_shut_down = True
        try:
            self._inner.shutdown()
        except Exception:
            log.warning("span exporter failed to shut down", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
