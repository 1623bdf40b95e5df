"""Background upkeep that must happen without traffic: stale messages and retention."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from exporter.store import Store, StoreUnavailable
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing import MessageTracer

log = logging.getLogger(__name__)
# Small batches keep each write transaction short, so callbacks never wait long behind a sweep.
SWEEP_BATCH = 500
PURGE_BATCH = 5000


class Sweeper:
    """Marks messages stale after `stale_after` without news, and deletes records older than
    `retention` (0 keeps them forever). Every worker runs one; the store hands each stale
    message to exactly one of them."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        tracer: MessageTracer,
        *,
        stale_after: float,
        retention: float,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._tracer = tracer
        self._stale_after = stale_after
        self._retention = retention
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One sweep; returns how many messages it marked stale."""
        now = self._clock()
        marked = 0
        while True:
            batch = self._store.sweep_stale(now - self._stale_after, now, SWEEP_BATCH)
            for message in batch:
                self._metrics.record_stale(message)
                self._tracer.record_stale(message, now)
            marked += len(batch)
            if len(batch) < SWEEP_BATCH:
                break
        if self._retention > 0:
            while self._store.purge(now - self._retention, PURGE_BATCH) >= PURGE_BATCH:
                pass
        return marked

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="exporter-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
            except StoreUnavailable as ex:
                self._metrics.store_errors("sweep").inc()
                log.warning("stale sweep skipped, store unavailable: %s", ex)
            except Exception:
                self._metrics.store_errors("sweep").inc()
                log.exception("stale sweep failed")
