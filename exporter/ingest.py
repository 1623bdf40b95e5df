"""One path for every status event, whatever brought it (callback, poll, event stream):
record it durably, then report it to metrics and traces."""

from __future__ import annotations

from exporter.events import StatusEvent
from exporter.metrics import Metrics
from exporter.store import Recorded, Store
from exporter.tracing import MessageTracer


class Ingestor:
    """Records events and reports what they did. Raises StoreUnavailable when the store is
    down, before anything is counted, so the sender can retry."""

    def __init__(self, store: Store, metrics: Metrics, tracer: MessageTracer) -> None:
        self.store = store
        self.metrics = metrics
        self.tracer = tracer

    def ingest(self, event: StatusEvent) -> Recorded:
        recorded = self.store.record(event)
        self.metrics.record_outcome(event, recorded)
        self.tracer.record(event, recorded)
        return recorded
