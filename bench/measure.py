"""One measurement each: throughput round, /metrics scrape, long-run memory, profile."""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from processes import (
    Receiver,
    Server,
    WrkResult,
    http_get,
    run_wrk,
    start_bare,
    start_service,
)
from workload import distinct_callbacks, write_requests

STALL_SECONDS = 5.0


@dataclass
class Context:
    """What every measurement shares: where things are and how the targets start."""

    workdir: Path
    port: int
    token: str
    workers: int
    data: Path
    main_count: int
    warm_count: int
    receiver: Receiver | None
    # A postgresql:// database to measure on (each run gets a fresh schema in it, since the
    # same pre-signed callbacks are replayed every run); None: a fresh SQLite file per run.
    store_url: str | None = None
    counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"http://{self.host}/twilio/status"

    def _fresh_store(self, run: int) -> str:
        if self.store_url is None:
            return f"sqlite:///{self.workdir / f'store-{run}.db'}"
        import psycopg

        schema = f"bench_{os.getpid()}_{run}"
        with psycopg.connect(self.store_url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in self.store_url else "?"
        return f"{self.store_url}{separator}options=-csearch_path%3D{schema}"

    def service_env(self, run: int) -> dict[str, str]:
        env = {
            "TWILIO_AUTH_TOKEN": self.token,
            "EXPORTER_STORE": self._fresh_store(run),
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"metrics-{run}"),
            "OTEL_TRACES_EXPORTER": "none",
            "EXPORTER_LOG_LEVEL": "warning",
        }
        if self.receiver is not None:
            env |= {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            }
        return env

    def start(self, target: str, workers: int | None = None) -> Server:
        """A fresh target (new store, new metrics directory), ready to serve."""
        run = next(self.counter)
        workers = workers or self.workers
        log = self.workdir / f"{target}-{run}.log"
        if target == "full":
            server = start_service(self.port, workers, self.service_env(run), log)
        else:
            server = start_bare(self.port, workers, log)
        try:
            server.wait_ready(workers)
        except BaseException:
            server.stop()
            raise
        return server


@dataclass(frozen=True)
class Measurement:
    target: str
    connections: int
    round: int
    wrk: WrkResult
    server_cpu: float  # seconds during the measured window
    peak_rss_kb: int  # the largest worker's VmHWM
    spans: int | None

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def wrk_cpu_us(self) -> float:
        return self.wrk.cpu_seconds / self.wrk.requests * 1e6 if self.wrk.requests else 0.0


def throughput(
    ctx: Context, target: str, connections: int, round_: int, duration: float, warmup: float
) -> Measurement:
    """Start the target fresh, warm it up, then measure `duration` seconds of wrk load."""
    spans_before = _spans(ctx.receiver)
    server = ctx.start(target)
    try:
        if warmup > 0:
            run_wrk(
                server.base_url,
                ctx.data,
                ctx.main_count,
                ctx.warm_count,
                ctx.host,
                connections=connections,
                duration=warmup,
            )
        cpu_before = server.cpu_seconds()
        result = run_wrk(
            server.base_url,
            ctx.data,
            0,
            ctx.main_count,
            ctx.host,
            connections=connections,
            duration=duration,
        )
        cpu = server.cpu_seconds() - cpu_before
        memory = server.worker_memory_kb()
    finally:
        server.stop()  # flushes the service's span queue before we count
    spans = None
    if target == "full" and ctx.receiver is not None:
        spans = _spans(ctx.receiver) - spans_before
    peak = max((m.get("VmHWM", 0) for m in memory), default=0)
    return Measurement(target, connections, round_, result, cpu, peak, spans)


def _spans(receiver: Receiver | None) -> int:
    return receiver.stats().get("spans", 0) if receiver is not None else 0


def callbacks_counted(server: Server) -> float:
    """Total of twilio_status_callbacks_total over all outcomes, from /metrics."""
    total = 0.0
    for line in http_get(server.base_url + "/metrics").decode().splitlines():
        if line.startswith("twilio_status_callbacks_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def feed(ctx: Context, server: Server, data: Path, count: int, connections: int = 16) -> WrkResult:
    """Send every line of `data` once; stop wrk when the service has counted them all.

    A request lost to a socket error never gets counted, so a count that stays put for
    STALL_SECONDS also ends the feed (the shortfall shows as wrk's errors).
    """
    target = callbacks_counted(server) + count
    progress = {"count": -1.0, "since": time.monotonic()}

    def done() -> bool:
        counted = callbacks_counted(server)
        if counted != progress["count"]:
            progress["count"], progress["since"] = counted, time.monotonic()
        return counted >= target or time.monotonic() - progress["since"] > STALL_SECONDS

    return run_wrk(
        server.base_url, data, 0, count, ctx.host, connections=connections,
        duration=3600, once=True, until=done,
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
    server = ctx.start("full", workers)
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
    server = ctx.start("full")
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
