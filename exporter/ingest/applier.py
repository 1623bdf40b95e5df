"""Applying status events: record them (deduplicated, lifecycle advanced, spans queued in the
same transaction), then update the per-status metrics. The ingester applies the inbox with it;
reconcile applies the statuses it polls with it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from exporter.model import Recorded, StatusEvent
from exporter.store import Store
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing.outbox import SpanOutbox

log = logging.getLogger(__name__)
# A reporting bug would otherwise log a traceback per event.
REPORT_ERROR_LOG_INTERVAL = 60.0


class Applier:
    """Records events and reports what they did. Raises StoreUnavailable when the store is
    down, before anything is counted, so the work can be retried."""

    def __init__(self, store: Store, metrics: Metrics, spans: SpanOutbox | None) -> None:
        self.store = store
        self.metrics = metrics
        self._spans = spans  # None: tracing is off, no span is queued
        self._report_error_logged_at = float("-inf")

    def apply(self, events: Sequence[StatusEvent], consumed: Sequence[int] = ()) -> list[Recorded]:
        """Record the events in one transaction (all or none) that also removes the inbox
        entries `consumed` and queues the spans; then update the metrics of each."""
        encode = self._spans.encode if self._spans is not None else None
        recorded = self.store.record_all(events, consumed=consumed, spans=encode)
        for event, outcome in zip(events, recorded, strict=True):
            self._report(event, outcome)
        # Where the scrape finds them (multiprocess mode), about once a second: once per
        # batch at most, never per event.
        self.metrics.exemplars.save_if_due()
        return recorded

    def _report(self, event: StatusEvent, recorded: Recorded) -> None:
        try:
            self.metrics.record_outcome(event, recorded)
        except Exception:
            # The event is committed: its sender got its 200 whatever happens to reporting.
            now = time.monotonic()
            if now - self._report_error_logged_at >= REPORT_ERROR_LOG_INTERVAL:
                self._report_error_logged_at = now
                log.exception("recorded %s but could not report it", event.message_sid)
