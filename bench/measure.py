"""One measurement each: a throughput round, /metrics scrape, long-run memory; draining."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import exposition
from exposition import Backlog
from processes import Receiver, Server, WrkResult, http_get, run_wrk
from targets import SERVICES, Context
from workload import distinct_callbacks, write_requests

STALL_SECONDS = 5.0
DRAIN_POLL = 0.1  # seconds between /metrics reads while waiting for the backlog to drain


@dataclass(frozen=True)
class Drain:
    """Waiting for the service to finish what it answered 200 to."""

    entries: float  # ingest backlog when the wait began (callbacks answered, not applied)
    spans: float  # span export backlog then
    ingest_seconds: float  # until the ingest backlog was 0
    seconds: float  # until both backlogs were 0

    @property
    def ingest_rate(self) -> float | None:
        """Rows applied per second while draining; None when there was nothing to drain."""
        return self.entries / self.ingest_seconds if self.entries and self.ingest_seconds else None


def drain(server: Server, timeout: float, first: Backlog | None = None) -> Drain:
    """Poll /metrics until the ingest and span export backlogs are both 0."""
    begin = time.monotonic()
    current = first or exposition.backlog(exposition.scrape(server.base_url))
    start, ingest_done = current, None
    while True:
        elapsed = time.monotonic() - begin
        if current.entries == 0 and ingest_done is None:
            ingest_done = elapsed
        if current.empty:
            return Drain(start.entries, start.spans, ingest_done or 0.0, elapsed)
        if elapsed > timeout:
            raise TimeoutError(
                f"{server.name}: backlog not drained after {timeout:.0f} s "
                f"({current.entries:.0f} entries, {current.spans:.0f} spans left; "
                f"log {server.log_path})"
            )
        time.sleep(DRAIN_POLL)
        current = exposition.backlog(exposition.scrape(server.base_url))


@dataclass(frozen=True)
class Measurement:
    target: str
    connections: int
    round: int
    wrk: WrkResult
    server_cpu: float  # seconds during the measured window (services: plus the drain)
    peak_rss_kb: int  # the largest process's VmHWM (worker, ingester or Node)
    spans: int | None  # received by the OTLP receiver in the window and drain (services)
    drain: Drain | None = None  # services only
    ingest_lag: dict[float, float] | None = None  # twilio_exporter_ingest_lag_seconds buckets
    span_lag: dict[str, float] | None = None  # the receiver's lag stats for the window

    @property
    def ok(self) -> int:
        """Requests answered 2xx in the measured window."""
        return self.wrk.requests - self.wrk.non_2xx

    @property
    def seconds(self) -> float:
        """The window, plus for a service the time it took to finish the work afterwards."""
        return self.wrk.duration + (self.drain.seconds if self.drain else 0.0)

    @property
    def rate(self) -> float:
        """Completed callbacks/s: 2xx in the window / (window + drain)."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.ok * 1e6 if self.ok else 0.0

    @property
    def wrk_cpu_us(self) -> float:
        return self.wrk.cpu_seconds / self.wrk.requests * 1e6 if self.wrk.requests else 0.0


def throughput(
    ctx: Context,
    target: str,
    connections: int,
    round_: int,
    duration: float,
    warmup: float,
    drain_timeout: float = 300.0,
) -> Measurement:
    """Start the target fresh, warm it up, then measure `duration` seconds of wrk load.

    A service is drained after the warm-up (so the window starts with an empty backlog) and
    after the window; CPU and time then cover everything the window's callbacks caused.
    """
    service = target in SERVICES
    data = ctx.data_for(target)
    server = ctx.start(target)
    drained = lag_before = lag_after = span_lag = spans = None
    try:
        if warmup > 0:
            run_wrk(
                server.base_url, data, ctx.main_count, ctx.warm_count, ctx.host,
                connections=connections, duration=warmup,
            )  # fmt: skip
        if service:
            drain(server, drain_timeout)
            lag_before = exposition.buckets(
                exposition.scrape(server.base_url), exposition.INGEST_LAG
            )
        spans_before = spans_received(ctx.receiver)
        if service and ctx.receiver is not None:
            ctx.receiver.stats(reset=True)
        cpu_before = server.cpu_seconds()
        result = run_wrk(
            server.base_url, data, 0, ctx.main_count, ctx.host,
            connections=connections, duration=duration,
        )  # fmt: skip
        if service:
            drained = drain(server, drain_timeout)
        cpu = server.cpu_seconds() - cpu_before
        if service:
            lag_after = exposition.buckets(
                exposition.scrape(server.base_url), exposition.INGEST_LAG
            )
            if ctx.receiver is not None:
                span_lag = ctx.receiver.stats()
                spans = int(span_lag.get("spans", 0)) - spans_before
        memory = server.worker_memory_kb()
    finally:
        server.stop()
    peak = max((m.get("VmHWM", 0) for m in memory), default=0)
    ingest_lag = None
    if lag_before is not None and lag_after is not None:
        ingest_lag = exposition.subtract(lag_after, lag_before)
    return Measurement(
        target, connections, round_, result, cpu, peak, spans, drained, ingest_lag, span_lag
    )


def spans_received(receiver: Receiver | None) -> int:
    return int(receiver.stats().get("spans", 0)) if receiver is not None else 0


def backlog_entries(server: Server) -> Callable[[], float]:
    return lambda: exposition.backlog(exposition.scrape(server.base_url)).entries


def stalled_or(read: Callable[[], float], target: float) -> Callable[[], bool]:
    """A wrk `until`: true once read() reaches target or has not moved for STALL_SECONDS.

    A request lost to a socket error never gets counted, so a stalled count also ends the
    feed (the shortfall shows as wrk's errors)."""
    progress = {"value": -1.0, "since": time.monotonic()}

    def done() -> bool:
        value = read()
        if value != progress["value"]:
            progress["value"], progress["since"] = value, time.monotonic()
        return value >= target or time.monotonic() - progress["since"] > STALL_SECONDS

    return done


def callbacks_counted(server: Server) -> float:
    """Total of twilio_status_callbacks_total over all outcomes (moves once applied)."""
    return exposition.total(exposition.scrape(server.base_url), exposition.CALLBACKS)


def feed(ctx: Context, server: Server, data: Path, count: int, connections: int = 16) -> WrkResult:
    """Send every line of `data` once; stop wrk when the service has applied them all."""
    target = callbacks_counted(server) + count
    return run_wrk(
        server.base_url, data, 0, count, ctx.host, connections=connections,
        duration=3600, once=True, until=stalled_or(lambda: callbacks_counted(server), target),
    )  # fmt: skip


@dataclass(frozen=True)
class ScrapeResult:
    workers: int
    callbacks: int
    series: int  # distinct label sets of twilio_* metrics (histogram: one per label set)
    samples: int  # Prometheus time series: exposition lines with a value (each bucket one)
    bytes: int
    times_ms: list[float]


def scrape(ctx: Context, workers: int, series_target: int, scrapes: int) -> ScrapeResult:
    """Fill a `workers`-worker service with `series_target` time series, time GET /metrics.

    Time series as Prometheus counts them: one per exposition line (each bucket is one).
    """
    server = ctx.start("service", workers)
    sent = 0
    try:
        stream = distinct_callbacks(seed=77, countries="all")
        chunk = ctx.workdir / "scrape-requests.tsv"
        series = 0
        while series < series_target and sent < 400_000:
            write_requests(chunk, stream, 20_000, ctx.callback_url, ctx.token)
            result = feed(ctx, server, chunk, 20_000)
            sent += 20_000
            series = _series(http_get(server.base_url + "/metrics").decode())[1]
            rate = 20_000 / result.duration if result.duration else 0.0
            print(
                f"bench: scrape fill: {sent:,} callbacks ({rate:,.0f}/s, "
                f"{result.socket_errors} errors), {series:,} series",
                file=sys.stderr,
            )
        times, text = [], ""
        for _ in range(scrapes):
            begin = time.perf_counter()
            text = http_get(server.base_url + "/metrics").decode()
            times.append((time.perf_counter() - begin) * 1e3)
    finally:
        server.stop()
    series, samples = _series(text)
    return ScrapeResult(workers, sent, series, samples, len(text.encode()), times)


def _series(text: str) -> tuple[int, int]:
    label_sets, samples = set(), 0
    for line in text.splitlines():
        if not line.startswith("twilio_"):
            continue
        samples += 1
        name, _, rest = line.partition("{")
        labels = rest.rsplit("}", 1)[0]
        base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        labels = ",".join(x for x in labels.split(",") if not x.startswith("le="))
        label_sets.add((base.removesuffix("_created"), labels))
    return len(label_sets), samples


@dataclass(frozen=True)
class LongRun:
    callbacks: int
    seconds: float
    rate: float
    non_2xx: int
    memory_kb: list[dict[str, int]]


def long_run(ctx: Context, callbacks: int, chunk_size: int = 100_000) -> LongRun:
    """Send `callbacks` distinct callbacks through one service; report worker memory after."""
    server = ctx.start("service")
    stream = distinct_callbacks(seed=4242)
    chunk = ctx.workdir / "long-run-requests.tsv"
    sent = non_2xx = 0
    busy = 0.0
    try:
        while sent < callbacks:
            size = min(chunk_size, callbacks - sent)
            write_requests(chunk, stream, size, ctx.callback_url, ctx.token)
            result = feed(ctx, server, chunk, size)
            busy += result.duration
            sent += size
            non_2xx += result.non_2xx
        memory = server.worker_memory_kb()
    finally:
        server.stop()
    return LongRun(sent, busy, sent / busy if busy else 0.0, non_2xx, memory)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
