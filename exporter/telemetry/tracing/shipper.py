"""Exports the span outbox: the oldest queued spans, in batches, to every configured span
exporter; a batch leaves the outbox only once every exporter took it.

At least once: a process killed after an export and before the batch was removed sends that
batch again on restart, with the same span ids (Tempo and Jaeger keep one of the copies).
A collector that is down makes the exporters fail; the batch stays queued and the shipper
retries with a growing pause, so spans are delayed, never dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.resources import Resource

from exporter.store import Store
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing.outbox import ExportRequests, RequestExporter

log = logging.getLogger(__name__)
EXPORT_BATCH = 512  # OTLP receivers take a few thousand spans a request; keep requests small
IDLE_PAUSE = 0.2  # how often an empty outbox is looked at again
MAX_RETRY_PAUSE = 30.0


class SpanShipper:
    """Moves spans from the store's outbox to the exporters, in a thread of the ingester."""

    def __init__(
        self,
        store: Store,
        exporters: Sequence[RequestExporter],
        resource: Resource,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._exporters = exporters
        self._requests = ExportRequests(resource)
        self._metrics = metrics
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ship_once(self) -> int:
        """Export one batch; returns how many spans left the outbox (0: nothing queued).
        Raises ExportFailed when an exporter refused the batch (it stays queued)."""
        queued = self._store.unexported_spans(EXPORT_BATCH)
        if not queued:
            return 0
        batch = self._requests.build([encoded for _, encoded in queued])
        for exporter in self._exporters:
            if not exporter.export_batch(batch):
                self._metrics.span_export_failures.inc()
                raise ExportFailed(f"{type(exporter).__name__} did not take {batch.spans} spans")
        self._store.remove_spans([span_id for span_id, _ in queued])
        self._metrics.spans_exported.inc(batch.spans)
        return batch.spans

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="span-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception:
                log.debug("span exporter failed to shut down", exc_info=True)

    def _loop(self) -> None:
        pause = IDLE_PAUSE
        while not self._stop.is_set():
            try:
                shipped = self.ship_once()
            except Exception as ex:
                log.warning("span export failed, retrying in %.0f s: %s", pause, ex)
                self._stop.wait(pause)
                pause = min(MAX_RETRY_PAUSE, pause * 2)
                continue
            pause = IDLE_PAUSE
            if shipped < EXPORT_BATCH:
                self._stop.wait(IDLE_PAUSE)


class ExportFailed(RuntimeError):
    """An exporter did not take a batch (the collector is down or refused it)."""
