"""One path for every status event, whatever brought it (callback, poll, event stream):
record it durably, then report it to metrics and traces."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from exporter.model import Recorded, StatusEvent
from exporter.store import Store
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing import MessageTracer

log = logging.getLogger(__name__)
# A reporting bug would otherwise log a traceback per callback.
REPORT_ERROR_LOG_INTERVAL = 60.0


class Ingestor:
    """Records events and reports what they did. Raises StoreUnavailable when the store is
    down, before anything is counted, so the sender can retry."""

    def __init__(self, store: Store, metrics: Metrics, tracer: MessageTracer) -> None:
        self.store = store
        self.metrics = metrics
        self.tracer = tracer
        self._report_error_logged_at = float("-inf")

    def ingest(self, event: StatusEvent) -> Recorded:
        recorded = self.store.record(event)
        self._report(event, recorded)
        return recorded

    def ingest_all(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        """Record the events in one transaction (all or none), then report each."""
        recorded = self.store.record_all(events)
        for event, outcome in zip(events, recorded, strict=True):
            self._report(event, outcome)
        return recorded

    def _report(self, event: StatusEvent, recorded: Recorded) -> None:
        try:
            self.metrics.record_outcome(event, recorded)
            self.tracer.record(event, recorded)
        except Exception:
            # The event is committed: its sender gets its 200 whatever happens to reporting.
            now = time.monotonic()
            if now - self._report_error_logged_at >= REPORT_ERROR_LOG_INTERVAL:
                self._report_error_logged_at = now
                log.exception("recorded %s but could not report it", event.message_sid)
