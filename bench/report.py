"""The bench results as Markdown: medians of interleaved rounds, full against ceiling."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata

from measure import LongRun, Measurement, ScrapeResult, median
from profiling import Profile


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
        "the ceiling gets the same flags)",
    ]


def throughput_table(measurements: Sequence[Measurement]) -> list[str]:
    """One row per (connections, target): medians over rounds; full/ceiling per round."""
    lines = [
        "| conns | target | callbacks/s | p50 ms | p99 ms | server CPU µs/callback "
        "| wrk CPU µs/callback | peak RSS/worker MiB | non-2xx | errors | spans/callback "
        "| full/ceiling (rate) | full/ceiling (CPU) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conns in sorted({m.connections for m in measurements}):
        for target in ("full", "ceiling"):
            runs = [m for m in measurements if m.connections == conns and m.target == target]
            if not runs:
                continue
            spans = [
                m.spans / m.wrk.requests for m in runs if m.spans is not None and m.wrk.requests
            ]
            rate, cpu = median([m.wrk.rate for m in runs]), median([m.cpu_us for m in runs])
            p50, p99 = median([m.wrk.p50 for m in runs]), median([m.wrk.p99 for m in runs])
            wrk_cpu = median([m.wrk_cpu_us for m in runs])
            rate_ratio, cpu_ratio = _ratios(measurements, conns) if target == "full" else ("", "")
            lines.append(
                f"| {conns} | {target} | {rate:,.0f} | {p50:.2f} | {p99:.2f} "
                f"| {cpu:,.0f} | {wrk_cpu:.0f} "
                f"| {median([m.peak_rss_kb / 1024 for m in runs]):.1f} "
                f"| {sum(m.wrk.non_2xx for m in runs)} | {sum(m.wrk.socket_errors for m in runs)} "
                f"| {f'{median(spans):.2f}' if spans else '-'} | {rate_ratio} | {cpu_ratio} |"
            )
    lines += [
        "",
        "Target: full >= 0.8 x ceiling in the same run; CPU ratio is "
        "server CPU per callback, full over ceiling.",
    ]
    return lines


def _ratios(measurements: Sequence[Measurement], conns: int) -> tuple[str, str]:
    """Median over rounds of the paired ratios (each round's full and ceiling ran back to back)."""
    rates, cpus = [], []
    for round_ in sorted({m.round for m in measurements}):
        pair = {m.target: m for m in measurements if m.connections == conns and m.round == round_}
        if {"full", "ceiling"} <= pair.keys() and pair["ceiling"].wrk.rate:
            rates.append(pair["full"].wrk.rate / pair["ceiling"].wrk.rate)
            if pair["full"].cpu_us:
                cpus.append(pair["full"].cpu_us / pair["ceiling"].cpu_us)
    return (f"{median(rates):.2f}" if rates else "-", f"{median(cpus):.2f}x" if cpus else "-")


def rounds_table(measurements: Sequence[Measurement]) -> list[str]:
    lines = [
        "| round | conns | target | callbacks/s | p99 ms | requests | server CPU s |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.round} | {m.connections} | {m.target} | {m.wrk.rate:,.0f} | {m.wrk.p99:.2f} "
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
        f"{result.rate:,.0f}/s while busy, {result.non_2xx} non-2xx). Worker memory after:",
        "",
        "| worker | RSS MiB | peak RSS MiB |",
        "|---:|---:|---:|",
    ]
    for index, memory in enumerate(result.memory_kb):
        rss, peak = memory.get("VmRSS", 0) / 1024, memory.get("VmHWM", 0) / 1024
        lines.append(f"| {index} | {rss:.1f} | {peak:.1f} |")
    return lines


def profile_section(result: Profile) -> list[str]:
    lines = [
        f"py-spy on one worker, {result.seconds:.0f} s per view under wrk -c16 (`--keep` keeps "
        f"the raw stacks). *Wall*: every sample of a non-idle thread ({result.samples:,}); time in "
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
