"""Quiet span exporters: the OTLP exporters log every failed batch and every retry, which with
a collector down is several lines a second saying the same thing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# One warning a minute per distinct message says the collector is down.
LOG_INTERVAL_SECONDS = 60.0

EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk._shared_internal",
)


class RateLimitFilter(logging.Filter):
    """Lets each distinct message through at most once an interval. The OTLP exporters log
    every failed batch and every retry; with the collector down that is several lines a second
    per worker, saying the same thing."""

    def __init__(
        self,
        interval: float = LOG_INTERVAL_SECONDS,
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


def quiet_exporter_logs(interval: float = LOG_INTERVAL_SECONDS) -> None:
    """Rate-limit the OTLP exporters' own warnings (called once per process)."""
    limit = RateLimitFilter(interval)
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(limit)
