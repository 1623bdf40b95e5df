"""Upkeep that must happen without traffic: stale messages and retention. The ingester runs it
(one per deployment), so each stale message is counted and its root span queued once."""

from __future__ import annotations

import time
from collections.abc import Callable

from exporter.store import Store
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing.outbox import SpanOutbox

# Small batches keep each write transaction short, so appends never wait long behind a sweep.
SWEEP_BATCH = 500
PURGE_BATCH = 5000


class Sweeper:
    """Marks messages stale after `stale_after` without news (their root spans queued in the
    same transaction), and deletes records older than `retention` (0 keeps them forever)."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        spans: SpanOutbox | None,
        *,
        stale_after: float,
        retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._spans = spans
        self._stale_after = stale_after
        self._retention = retention
        self._clock = clock

    def run_once(self) -> int:
        """One sweep; returns how many messages it marked stale."""
        now = self._clock()
        encode = self._spans.encode_stale if self._spans is not None else None
        marked = 0
        while True:
            batch = self._store.sweep_stale(now - self._stale_after, now, SWEEP_BATCH, spans=encode)
            for message in batch:
                self._metrics.record_stale(message)
            marked += len(batch)
            if len(batch) < SWEEP_BATCH:
                break
        if self._retention > 0:
            while self._store.purge(now - self._retention, PURGE_BATCH) >= PURGE_BATCH:
                pass
            # Spans that waited past the horizon for a collector that never came back.
            self._metrics.spans_dropped.inc(self._store.purge_spans(now - self._retention))
        return marked
