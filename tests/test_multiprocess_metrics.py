"""The scrape-time merge of the workers' metric files gives exactly what prometheus-client's
own MultiProcessCollector gives, for every metric type and gauge mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.telemetry.multiprocess_scrape import MergedFilesCollector

WORKER = textwrap.dedent(
    """
    import sys
    from prometheus_client import Counter, Gauge, Histogram
    n = int(sys.argv[1])
    c = Counter("calls_total", "Calls.", ["outcome"])
    c.labels("ok").inc(n + 1)
    c.labels('we"ird\\\\label').inc()
    h = Histogram("latency_seconds", "Latency.", ["route"], buckets=(0.1, 1, 10))
    for value in (0.05, 0.5, 5, 50)[: n + 2]:
        h.labels("/status").observe(value * (n + 1))
    for mode in ("max", "min", "sum", "all", "liveall", "livesum", "mostrecent"):
        Gauge(f"g_{mode}", f"Gauge {mode}.", ["k"], multiprocess_mode=mode).labels("a").set(10 - n)
    """
)


def write_worker_files(directory: Path, workers: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for n in range(workers):
        subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True, timeout=60)


def scrape(collector: object, openmetrics: bool = False) -> list[bytes]:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    text = (generate_openmetrics if openmetrics else generate_latest)(registry)
    return sorted(text.splitlines())


def test_merge_matches_the_library_for_every_type_and_mode(tmp_path: Path) -> None:
    write_worker_files(tmp_path, workers=3)
    library = MultiProcessCollector(None, path=str(tmp_path))  # type: ignore[no-untyped-call]
    ours = MergedFilesCollector(str(tmp_path))
    assert scrape(ours) == scrape(library)
    assert scrape(ours, openmetrics=True) == scrape(library, openmetrics=True)
    assert b'calls_total{outcome="ok"} 6.0' in scrape(ours)


def test_cached_keys_still_see_new_values_and_series(tmp_path: Path) -> None:
    write_worker_files(tmp_path, workers=1)
    ours = MergedFilesCollector(str(tmp_path))
    first = scrape(ours)
    write_worker_files(tmp_path, workers=2)  # more processes, more series, new values
    library = MultiProcessCollector(None, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert scrape(ours) == scrape(library) != first
