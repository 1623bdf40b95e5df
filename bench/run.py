"""Benchmark: the full service against a bare-Falcon ceiling, same gunicorn settings, wrk load.

    pip install -e . && python bench/run.py        # the default run: a few minutes
    python bench/run.py --only ceiling             # the bare app alone (no service needed)
    python bench/run.py --rounds 5 --duration 10   # steadier numbers
    python bench/run.py --callbacks 1000000        # long run: worker memory after 1M callbacks
    python bench/run.py --profile                  # py-spy on one worker under load, top costs

Results go to bench/results/<UTC time>.md (and .json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the exporter package

import measure
import profiling
import report
from processes import Receiver, free_port, service_worker_settings, start_receiver
from workload import distinct_callbacks, write_requests

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--only", choices=("all", "full", "ceiling"), default="all", help="targets to measure")
    add("--workers", type=int, default=2, help="gunicorn workers for both targets (2)")
    add("--connections", default="1,16,64", help="wrk connection counts (1,16,64)")
    add("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (3)")
    add("--duration", type=float, default=5.0, help="seconds per measurement (5)")
    add("--warmup", type=float, default=1.0, help="seconds of warm-up before each (1)")
    add("--requests", type=int, default=60_000, help="distinct pre-signed requests (60000)")
    add("--callbacks", type=int, default=20_000, help="long run: callbacks to send (20000)")
    add("--scrape-workers", type=int, default=4, help="workers for the /metrics test (4)")
    add("--scrape-series", type=int, default=5_000, help="time series to build up for it (5000)")
    add("--skip", default="", help="comma list of parts to skip: throughput,scrape,long-run")
    add("--profile", action="store_true", help="only profile one worker with py-spy")
    add("--profile-seconds", type=float, default=10.0, help="profile length (10)")
    add("--output", type=Path, help="Markdown file (default bench/results/<time>.md)")
    add("--keep", action="store_true", help="keep the working directory (logs, stores)")
    add("--store-url", help="measure the service on this postgresql:// store instead of SQLite")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    if args.profile and shutil.which("py-spy") is None:
        print("bench: py-spy is missing: pip install py-spy", file=sys.stderr)
        return 2
    targets = ["full", "ceiling"] if args.only == "all" else [args.only]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "full" not in targets:
        skip |= {"scrape", "long-run"}
    workdir = Path(tempfile.mkdtemp(prefix="twilio-exporter-bench-"))
    started = datetime.now(UTC)
    lines = [f"# Benchmark {started:%Y-%m-%d %H:%M} UTC", ""]
    lines += report.environment(args.workers, service_worker_settings())
    lines.append(f"- store: {'PostgreSQL' if args.store_url else 'SQLite, a fresh file per run'}")
    data: dict[str, object] = {
        "started": started.isoformat(),
        "args": vars(args) | {"output": str(args.output)},
    }
    receiver = start_receiver(workdir / "otlp-receiver.log") if "full" in targets else None
    try:
        ctx = _context(args, workdir, receiver)
        lines += [
            f"- OTLP receiver: {receiver.source if receiver else 'none'}; wrk: 1 thread, "
            f"{args.requests:,} distinct pre-signed requests "
            f"(~{ctx.data.stat().st_size / (args.requests + ctx.warm_count):.0f} B per line), "
            "a fresh service (empty store) per measurement",
            "",
        ]
        if args.profile:
            result = profiling.profile(ctx, args.profile_seconds)
            lines += ["## Profile", "", *report.profile_section(result)]
            data["profile"] = asdict(result)
        else:
            lines += _run_parts(args, ctx, targets, skip, data)
    finally:
        if receiver is not None:
            receiver.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return _write(args, started, lines, data)


def _context(args: argparse.Namespace, workdir: Path, receiver: Receiver | None) -> measure.Context:
    port = free_port()
    token = "bench-auth-token-0123456789abcdef"
    warm = max(2_000, args.requests // 10)
    data = workdir / "requests.tsv"
    begin = time.monotonic()
    size = write_requests(
        data,
        distinct_callbacks(seed=2026),
        args.requests + warm,
        f"http://127.0.0.1:{port}/twilio/status",
        token,
    )
    print(
        f"bench: {args.requests + warm:,} signed requests ({size / 1e6:.0f} MB) "
        f"in {time.monotonic() - begin:.1f} s",
        file=sys.stderr,
    )
    return measure.Context(
        workdir, port, token, args.workers, data, args.requests, warm, receiver, args.store_url
    )


def _run_parts(
    args: argparse.Namespace,
    ctx: measure.Context,
    targets: list[str],
    skip: set[str],
    data: dict[str, object],
) -> list[str]:
    lines: list[str] = []
    if "throughput" not in skip:
        results = []
        connections = [int(c) for c in args.connections.split(",")]
        for round_ in range(args.rounds):
            for conns in connections:
                order = targets if round_ % 2 == 0 else targets[::-1]  # interleave, alternate
                for target in order:
                    m = measure.throughput(ctx, target, conns, round_, args.duration, args.warmup)
                    print(
                        f"bench: round {round_} c{conns} {target}: {m.wrk.rate:,.0f}/s "
                        f"p99 {m.wrk.p99:.1f} ms cpu {m.cpu_us:.0f} us/cb",
                        file=sys.stderr,
                    )
                    results.append(m)
        lines += [
            f"## Throughput ({args.rounds} interleaved rounds of {args.duration:.0f} s, medians)",
            "",
            *report.throughput_table(results),
            "",
            "<details><summary>every round</summary>",
            "",
            *report.rounds_table(results),
            "",
            "</details>",
            "",
        ]
        data["throughput"] = [asdict(m) for m in results]
    if "scrape" not in skip:
        scrape = measure.scrape(ctx, args.scrape_workers, args.scrape_series, 20)
        print(
            f"bench: scrape {scrape.samples} series: {measure.median(scrape.times_ms):.1f} ms",
            file=sys.stderr,
        )
        lines += ["## /metrics scrape", "", *report.scrape_section(scrape), ""]
        data["scrape"] = asdict(scrape)
    if "long-run" not in skip:
        run = measure.long_run(ctx, args.callbacks)
        lines += ["## Memory after a long run", "", *report.long_run_section(run), ""]
        data["long_run"] = asdict(run)
    return lines


def _write(
    args: argparse.Namespace, started: datetime, lines: list[str], data: dict[str, object]
) -> int:
    RESULTS.mkdir(exist_ok=True)
    output = args.output or RESULTS / f"{started:%Y%m%d-%H%M%S}.md"
    output.write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print("\n".join(lines))
    print(f"bench: wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
