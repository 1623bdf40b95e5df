"""The bench results as Markdown: medians of interleaved rounds, the service against bare
Falcon and the Express peers."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata

from exposition import merge, quantile
from ingester_ceiling import IngesterCeiling
from measure import LongRun, Measurement, ScrapeResult, median
from profiling import Profile
from targets import ALL, LABELS


def environment(workers: int, worker_settings: dict[str, object]) -> list[str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    settings = ", ".join(f"{k}={v}" for k, v in worker_settings.items())
    return [
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, load average at start {load}",
        f"- Python {platform.python_version()}, gunicorn {version('gunicorn')}, "
        f"falcon {version('falcon')}, twilio {version('twilio')}, {wrk}",
        f"- gunicorn: {workers} workers, {settings} (service's exporter/server/gunicorn_conf.py; "
        f"bare Falcon gets the same flags); Node {_node_version()} (Express peers, one process)",
    ]


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "-"


def throughput_table(measurements: Sequence[Measurement]) -> list[str]:
    """Rows = targets, columns per connection count: medians over rounds, paired ratios."""
    conns_list = sorted({m.connections for m in measurements})
    header = "| target |" + "".join(
        f" c{c} callbacks/s | c{c} p99 ms | c{c} CPU µs/cb | c{c} ÷ bare | c{c} ÷ Express val. |"
        for c in conns_list
    )
    lines = [header, "|---|" + "---:|" * 5 * len(conns_list)]
    for target in _targets(measurements):
        cells = []
        for conns in conns_list:
            runs = _runs(measurements, target, conns)
            if not runs:
                cells.append(" - | - | - | - | - |")
                continue
            rate = median([m.rate for m in runs])
            p99 = median([m.wrk.p99 for m in runs])
            cpu = median([m.cpu_us for m in runs])
            cells.append(
                f" {rate:,.0f} | {p99:.1f} | {cpu:,.0f} "
                f"| {_ratio(measurements, target, 'bare', conns)} "
                f"| {_ratio(measurements, target, 'express-validating', conns)} |"
            )
        lines.append(f"| {LABELS.get(target, target)} |" + "".join(cells))
    lines += [
        "",
        "callbacks/s: for the service the *completed* rate, callbacks answered 2xx in the wrk "
        "window / (window + the time until its ingest and span export backlogs were both 0 "
        "afterwards); for the others 2xx / window. CPU: all processes of the target (gunicorn "
        "master, workers, the ingester; Node) over the same time, per 2xx callback. Ratios: "
        "median over rounds of the paired ratios of completed rates (same round, back to back).",
    ]
    pg_ratios = [
        f"c{c}: {_ratio(measurements, 'service-pg', 'service', c)}"
        for c in conns_list
        if _runs(measurements, "service-pg", c)
    ]
    if pg_ratios:
        lines += ["", f"PostgreSQL ÷ SQLite (completed rates): {', '.join(pg_ratios)}."]
    return lines


def details_table(measurements: Sequence[Measurement]) -> list[str]:
    """Every target at every connection count: the raw wrk figures and the service's drain."""
    lines = [
        "| conns | target | wrk callbacks/s | completed/s | drain s | backlog at end "
        "| drain rows/s | ingest lag p50/p99 s | span lag p50/p99 s | spans/callback "
        "| p50 ms | non-2xx | errors | wrk CPU µs/cb | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conns in sorted({m.connections for m in measurements}):
        for target in _targets(measurements):
            runs = _runs(measurements, target, conns)
            if not runs:
                continue
            drains = [m.drain for m in runs if m.drain is not None]
            spans = [m.spans / m.ok for m in runs if m.spans is not None and m.ok]
            drain_rates = [d.ingest_rate for d in drains if d.ingest_rate]
            lines.append(
                f"| {conns} | {LABELS.get(target, target)} "
                f"| {median([m.wrk.rate for m in runs]):,.0f} "
                f"| {median([m.rate for m in runs]):,.0f} "
                f"| {_num([d.seconds for d in drains], '.2f')} "
                f"| {_num([d.entries for d in drains], ',.0f')} "
                f"| {_num(drain_rates, ',.0f')} "
                f"| {_ingest_lag(runs)} | {_span_lag(runs)} "
                f"| {_num(spans, '.2f')} | {median([m.wrk.p50 for m in runs]):.2f} "
                f"| {sum(m.wrk.non_2xx for m in runs)} "
                f"| {sum(m.wrk.socket_errors for m in runs)} "
                f"| {median([m.wrk_cpu_us for m in runs]):.0f} "
                f"| {median([m.peak_rss_kb / 1024 for m in runs]):.1f} |"
            )
    lines += [
        "",
        "drain: after the window, until ingest and span export backlogs (read from /metrics "
        "every 0.1 s) were 0; drain rows/s = ingest backlog at the end of the window / time "
        "until it was 0 (only meaningful when the backlog was large). Ingest lag: quantiles of "
        "`twilio_exporter_ingest_lag_seconds` (200 -> applied) over the window and drain, "
        "interpolated in the histogram's buckets (all rounds merged), so as coarse as its "
        "buckets. Span lag: at the OTLP receiver, arrival minus the span's end time (the "
        "arrival of the callback that closed it), medians over rounds of per-round p50/p99.",
    ]
    return lines


def ingester_table(results: Sequence[IngesterCeiling]) -> list[str]:
    lines = [
        "| target | callbacks held | applied rows/s | applied + spans exported rows/s "
        "| ingester CPU µs/row | spans exported | stopped with no lock held | burst non-2xx |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {LABELS.get(r.target, r.target)} | {r.entries:,.0f} | {r.rows_per_second:,.0f} "
            f"| {r.completed_per_second:,.0f} | {r.cpu_us_per_row:.0f} "
            f"| {r.spans if r.spans is not None else '-'} | {'yes' if r.held_back else 'NO'} "
            f"| {r.non_2xx} |"
        )
    lines += [
        "",
        "The ingester process was stopped (SIGSTOP, at a moment it held no store transaction), "
        "a burst was sent at 64 connections until the inbox held it all, then the ingester was "
        "resumed: rows/s = entries held / seconds until the ingest backlog was 0 (the request "
        "path idle, so this is the ingester's own ceiling on this machine).",
    ]
    return lines


def _targets(measurements: Sequence[Measurement]) -> list[str]:
    present = {m.target for m in measurements}
    return [t for t in (*ALL, *sorted(present - set(ALL))) if t in present]


def _runs(measurements: Sequence[Measurement], target: str, conns: int) -> list[Measurement]:
    return [m for m in measurements if m.target == target and m.connections == conns]


def _ratio(measurements: Sequence[Measurement], target: str, base: str, conns: int) -> str:
    """Median over rounds of target's completed rate / base's, paired within each round."""
    if target == base:
        return "1"
    ratios = []
    for round_ in sorted({m.round for m in measurements}):
        pair = {m.target: m for m in measurements if m.connections == conns and m.round == round_}
        if target in pair and base in pair and pair[base].rate:
            ratios.append(pair[target].rate / pair[base].rate)
    return f"{median(ratios):.2f}" if ratios else "-"


def _num(values: Sequence[float], spec: str) -> str:
    return format(median(list(values)), spec) if values else "-"


def _ingest_lag(runs: Sequence[Measurement]) -> str:
    histograms = [m.ingest_lag for m in runs if m.ingest_lag]
    if not histograms:
        return "-"
    merged = merge(histograms)
    p50, p99 = quantile(0.5, merged), quantile(0.99, merged)
    if p50 is None or p99 is None:
        return "-"
    return f"{p50:.3f} / {p99:.3f}"


def _span_lag(runs: Sequence[Measurement]) -> str:
    stats = [m.span_lag for m in runs if m.span_lag and m.span_lag.get("lag_count")]
    if not stats:
        return "-"
    p50 = median([s["lag_p50"] for s in stats])
    p99 = median([s["lag_p99"] for s in stats])
    return f"{p50:.3f} / {p99:.3f}"


def rounds_table(measurements: Sequence[Measurement]) -> list[str]:
    lines = [
        "| round | conns | target | wrk callbacks/s | completed/s | drain s | p99 ms "
        "| requests | server CPU s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        drain = f"{m.drain.seconds:.2f}" if m.drain else "-"
        lines.append(
            f"| {m.round} | {m.connections} | {LABELS.get(m.target, m.target)} "
            f"| {m.wrk.rate:,.0f} | {m.rate:,.0f} | {drain} | {m.wrk.p99:.2f} "
            f"| {m.wrk.requests:,} | {m.server_cpu:.2f} |"
        )
    return lines


def scrape_section(result: ScrapeResult) -> list[str]:
    times = sorted(result.times_ms)
    return [
        f"{result.workers} workers, after {result.callbacks:,} distinct callbacks to every "
        f"region: {result.samples:,} `twilio_*` time series (exposition lines; "
        f"{result.series:,} distinct label sets), {result.bytes / 1024:,.0f} KiB per scrape.",
        "",
        "| scrapes | median ms | p90 ms | max ms |",
        "|---:|---:|---:|---:|",
        f"| {len(times)} | {median(times):.1f} | {times[int(0.9 * (len(times) - 1))]:.1f} "
        f"| {times[-1]:.1f} |",
    ]


def long_run_section(result: LongRun) -> list[str]:
    lines = [
        f"{result.callbacks:,} distinct callbacks through one service (wrk, 16 connections, "
        f"{result.rate:,.0f}/s while busy, {result.non_2xx} non-2xx). Memory of the master's "
        "descendants (workers and the ingester) after:",
        "",
        "| process | RSS MiB | peak RSS MiB |",
        "|---|---:|---:|",
    ]
    workers = [m for m in result.memory_kb if not m.get("ingester")]
    ingesters = [m for m in result.memory_kb if m.get("ingester")]
    named = [(f"worker {i}", m) for i, m in enumerate(workers)] + [
        ("ingester", m) for m in ingesters
    ]
    for name, memory in named:
        rss, peak = memory.get("VmRSS", 0) / 1024, memory.get("VmHWM", 0) / 1024
        lines.append(f"| {name} | {rss:.1f} | {peak:.1f} |")
    return lines


def profile_section(result: Profile) -> list[str]:
    lines = [
        f"py-spy on one {result.process} process, {result.seconds:.0f} s per view under wrk "
        "-c16 (`--keep` keeps the raw stacks). *Wall*: every sample of a non-idle thread "
        f"({result.samples:,}); time in "
        "a blocking call or waiting for the GIL counts. *GIL*: only samples holding the GIL "
        f"({result.gil_samples:,}), i.e. where the CPU goes.",
        "",
        "| wall: own time | function | GIL: own time | function |",
        "|---:|---|---:|---|",
    ]
    for index in range(max(len(result.wall_self), len(result.gil_self))):
        wall = result.wall_self[index] if index < len(result.wall_self) else ("", 0.0)
        gil = result.gil_self[index] if index < len(result.gil_self) else ("", 0.0)
        lines.append(f"| {wall[1]:.1%} | `{wall[0]}` | {gil[1]:.1%} | `{gil[0]}` |")
    lines += ["", "By component (a sample goes to the innermost non-stdlib frame):", ""]
    lines += ["| component | wall | GIL (CPU) |", "|---|---:|---:|"]
    gil_shares = dict(result.gil_components)
    for name, share in result.wall_components:
        lines.append(f"| {name} | {share:.1%} | {gil_shares.get(name, 0.0):.1%} |")
    return lines
