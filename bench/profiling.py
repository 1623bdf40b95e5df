"""--profile: py-spy on one process of the full service under wrk load (a webhook worker, or
the ingester with --profile-process ingester), folded into top costs."""

from __future__ import annotations

import collections
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from targets import Context

IDLE_LEAVES = frozenset({"Condition.wait (threading.py)", "Event.wait (threading.py)"})


@dataclass(frozen=True)
class Profile:
    seconds: float
    process: str
    samples: int
    gil_samples: int
    wall_self: list[tuple[str, float]]  # leaf frames, sampled whenever the thread is not idle
    gil_self: list[tuple[str, float]]  # leaf frames, sampled only while holding the GIL (CPU)
    wall_components: list[tuple[str, float]]  # samples by the component that caused them
    gil_components: list[tuple[str, float]]
    raw_paths: list[Path]


def profile(
    ctx: Context,
    seconds: float,
    process: str = "worker",
    target: str = "service",
    connections: int = 16,
    top: int = 20,
) -> Profile:
    """py-spy on one process of the full service (`target`: service or service-pg) under wrk
    load (`process`: "worker" or "ingester"): a wall view and a GIL view."""
    server = ctx.start(target)
    wall, gil = ctx.workdir / "profile-wall.folded", ctx.workdir / "profile-gil.folded"
    try:
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{2 * seconds + 6:.0f}s", "-s",
             str(Path(__file__).with_name("callbacks.lua")), server.base_url, "--",
             str(ctx.data), "0", str(ctx.main_count), ctx.host],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(1.0)  # let the load reach steady state before sampling
            pid = server.workers()[0] if process == "worker" else server.ingester()
            assert pid is not None, f"no {process} process"
            for output, extra in ((wall, []), (gil, ["--gil"])):
                subprocess.run(
                    ["py-spy", "record", "--pid", str(pid), "--duration", f"{seconds:.0f}",
                     "--rate", "200", "--format", "raw", "--output", str(output), *extra],
                    check=True, capture_output=True,
                )  # fmt: skip
        finally:
            load.kill()
            load.wait()
    finally:
        server.stop()
    wall_total, wall_leaf, wall_components = _fold(wall)
    gil_total, gil_leaf, gil_components = _fold(gil)

    def share(counts: collections.Counter[str], total: int) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counts.most_common() if total][:top]

    return Profile(
        seconds,
        process,
        wall_total,
        gil_total,
        share(wall_leaf, wall_total),
        share(gil_leaf, gil_total),
        share(wall_components, wall_total),
        share(gil_components, gil_total),
        [wall, gil],
    )


def _fold(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Total samples, samples per leaf frame, samples per component (see _component)."""
    leaf: collections.Counter[str] = collections.Counter()
    components: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if _frame(frames[-1]) in IDLE_LEAVES:
            continue  # a thread parked on a condition (the span export thread between batches)
        total += count
        leaf[_frame(frames[-1])] += count
        found = (_component(f) for f in reversed(frames))
        components[next((c for c in found if c), "other (stdlib, interpreter)")] += count
    return total, leaf, components


def _component(frame: str) -> str | None:
    """The component a frame belongs to; None for the standard library (look further up)."""
    path = frame.partition(" (")[2]
    checks = (
        ("exporter/gunicorn_worker", "gunicorn: HTTP parsing, socket write and close"),
        ("exporter/store", "exporter: store (SQLite)"),
        ("exporter/telemetry/tracing", "exporter: tracing (span building, outbox, shipper)"),
        ("exporter/", "exporter: callback handling, metrics, lifecycle"),
        ("gunicorn", "gunicorn: HTTP parsing, socket write and close"),
        ("falcon", "falcon"),
        ("prometheus_client", "prometheus_client (multiprocess mmap values)"),
        ("twilio/", "twilio RequestValidator"),
    )
    for marker, name in checks:
        if path.startswith(marker) or f"/{marker}" in path:
            return name
    otel = ("_internal", "trace_encoder", "grpc", "trace/", "sdk/", "proto", "resources")
    if any(marker in path for marker in otel):
        return "opentelemetry SDK + OTLP/gRPC exporter"
    return None


def _frame(frame: str) -> str:
    """'function (path/to/module.py:123)' -> 'function (module.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if "site-packages" in path or "lib/python" in path else path
    if "/work/" in path or "exporter/" in path:
        short = "/".join(parts[parts.index("exporter") :]) if "exporter" in parts else parts[-1]
    return f"{name} ({short})"
