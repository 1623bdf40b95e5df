"""Benchmark: the service against bare Falcon (same gunicorn settings) and the Express peers.

    pip install -e . && python bench/run.py               # SQLite service, bare Falcon, Express
    python bench/run.py --postgres                         # + the service on a private, durable
                                                           #   PostgreSQL server, in the same run
    python bench/run.py --rounds 1 --duration 2 --connections 16   # a quick check
    python bench/run.py --targets bare                     # bare Falcon alone (needs no service)
    python bench/run.py --callbacks 1000000 --skip throughput,ingester,scrape   # memory
    python bench/run.py --profile                          # py-spy on one worker under load

Results go to bench/results/<UTC time>.md (and .json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the exporter package

import ingester_ceiling
import measure
import peers
import profiling
import report
from pg_server import PostgresServer
from processes import Receiver, free_port, service_worker_settings, start_receiver
from targets import ALL, PEERS, SERVICES, Context
from workload import distinct_callbacks, write_requests

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("throughput", "ingester", "scrape", "long-run")
TOKEN = "bench-auth-token-0123456789abcdef"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="targets: service = the exporter on SQLite; service-pg = on PostgreSQL (added by "
        "--postgres or --store-url); bare = bench/bare_app.py under the same gunicorn settings; "
        "floor = bench/floor_app.py, the same plus twilio's signature check and a SQLite commit "
        "of the raw form (the least a handler that keeps a 200's promise does); "
        "express / express-validating = ../shared/peers/express server.js / "
        "server_validating.js (npm-installed once into bench/.cache/). The service's rate is "
        "its completed rate: 2xx in the window / (window + drain until its ingest and span "
        "export backlogs are 0).",
    )
    add = parser.add_argument
    add(
        "--targets",
        default="service,bare,floor,express,express-validating",
        help=f"comma list of targets to measure, of {','.join(ALL)} "
        "(service,bare,floor,express,express-validating)",
    )
    add(
        "--postgres",
        action="store_true",
        help="also measure service-pg on a private PostgreSQL server started for the run "
        "(/usr/lib/postgresql/*/bin, fsync and synchronous_commit on)",
    )
    add("--store-url", help="also measure service-pg, on this postgresql:// database instead")
    add("--workers", type=int, default=2, help="gunicorn workers for service and bare (2)")
    add("--connections", default="1,16,64", help="wrk connection counts (1,16,64)")
    add("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (3)")
    add("--duration", type=float, default=5.0, help="seconds per measurement (5)")
    add("--warmup", type=float, default=1.0, help="seconds of warm-up before each (1)")
    add("--requests", type=int, default=60_000, help="distinct pre-signed requests (60000)")
    add("--burst", type=int, default=20_000, help="ingester ceiling: callbacks held (20000)")
    add("--drain-timeout", type=float, default=300.0, help="max wait for a backlog (300 s)")
    add("--callbacks", type=int, default=20_000, help="long run: callbacks to send (20000)")
    add("--scrape-workers", type=int, default=4, help="workers for the /metrics test (4)")
    add("--scrape-series", type=int, default=5_000, help="time series to build up for it (5000)")
    add("--skip", default="", help=f"comma list of parts to skip: {','.join(PARTS)}")
    add("--express-dir", type=Path, default=peers.DEFAULT_DIR, help="the Express peers' folder")
    add("--profile", action="store_true", help="only profile one process under load with py-spy")
    add(
        "--profile-process",
        choices=("worker", "ingester"),
        default="worker",
        help="the process --profile samples (worker); with --postgres, of service-pg",
    )
    add("--profile-seconds", type=float, default=10.0, help="profile length (10)")
    add("--output", type=Path, help="Markdown file (default bench/results/<time>.md)")
    add("--keep", action="store_true", help="keep the working directory (logs, stores)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    if args.profile and shutil.which("py-spy") is None:
        print("bench: py-spy is missing: pip install py-spy", file=sys.stderr)
        return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in ALL]
    if unknown:
        print(f"bench: unknown targets {unknown}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    if (args.postgres or args.store_url) and "service-pg" not in targets:
        targets.insert(targets.index("service") + 1 if "service" in targets else 0, "service-pg")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "service" not in targets:
        skip |= {"scrape", "long-run"}
    if not set(SERVICES) & set(targets):
        skip |= {"ingester"}
    workdir = Path(tempfile.mkdtemp(prefix="twilio-exporter-bench-"))
    started = datetime.now(UTC)
    lines = [f"# Benchmark {started:%Y-%m-%d %H:%M} UTC", ""]
    lines += report.environment(args.workers, service_worker_settings())
    data: dict[str, object] = {
        "started": started.isoformat(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": targets,
    }
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        pg_url = args.store_url
        if args.postgres and not pg_url:
            pg = stack.enter_context(PostgresServer(free_port()))
            pg_url = pg.url
            lines.append(f"- PostgreSQL: private server, {pg.settings}")
        elif pg_url:
            lines.append("- PostgreSQL: --store-url (settings as that server has them)")
        receiver = None
        if set(SERVICES) & set(targets):
            receiver = start_receiver(workdir / "otlp-receiver.log")
            stack.callback(receiver.stop)
        express_dir = peers.install(args.express_dir) if set(PEERS) & set(targets) else None
        ctx = _context(args, workdir, receiver, targets, pg_url, express_dir)
        lines += [
            f"- stores: SQLite, a fresh file per run{'; PostgreSQL, a fresh schema per run' if pg_url else ''}",  # noqa: E501
            f"- OTLP receiver: {receiver.source if receiver else 'none'}; wrk: 1 thread, "
            f"{args.requests:,} distinct pre-signed requests "
            f"(~{ctx.data.stat().st_size / (args.requests + ctx.warm_count):.0f} B per line), "
            "a fresh target (empty store) per measurement",
            "",
        ]
        if args.profile:
            result = profiling.profile(
                ctx,
                args.profile_seconds,
                args.profile_process,
                "service-pg" if pg_url else "service",
            )
            lines += ["## Profile", "", *report.profile_section(result)]
            data["profile"] = asdict(result)
        else:
            lines += _run_parts(args, ctx, targets, skip, data)
    return _write(args, started, lines, data)


def _context(
    args: argparse.Namespace,
    workdir: Path,
    receiver: Receiver | None,
    targets: list[str],
    pg_url: str | None,
    express_dir: Path | None,
) -> Context:
    port = free_port()
    warm = max(2_000, args.requests // 10)
    data = workdir / "requests.tsv"
    begin = time.monotonic()
    base_url = f"http://127.0.0.1:{port}/twilio/status"
    size = write_requests(
        data, distinct_callbacks(seed=2026), args.requests + warm, base_url, TOKEN
    )
    validating = None
    if "express-validating" in targets:
        validating = workdir / "requests-validating.tsv"
        write_requests(
            validating,
            distinct_callbacks(seed=2026),
            args.requests + warm,
            base_url,
            TOKEN,
            signed_url=peers.VALIDATED_URL,
        )
    print(
        f"bench: {args.requests + warm:,} signed requests ({size / 1e6:.0f} MB) "
        f"in {time.monotonic() - begin:.1f} s",
        file=sys.stderr,
    )
    return Context(
        workdir, port, TOKEN, args.workers, data, args.requests, warm, receiver,
        validating_data=validating, pg_url=pg_url, express_dir=express_dir,
    )  # fmt: skip


def _run_parts(
    args: argparse.Namespace,
    ctx: Context,
    targets: list[str],
    skip: set[str],
    data: dict[str, object],
) -> list[str]:
    lines: list[str] = []
    if "throughput" not in skip:
        results = _throughput(args, ctx, targets)
        lines += [
            f"## Throughput ({args.rounds} interleaved rounds of {args.duration:.0f} s, medians)",
            "",
            *report.throughput_table(results),
            "",
            "### Details",
            "",
            *report.details_table(results),
            "",
            "<details><summary>every round</summary>",
            "",
            *report.rounds_table(results),
            "",
            "</details>",
            "",
        ]
        data["throughput"] = [_asdict(m) for m in results]
    if "ingester" not in skip:
        ceilings = []
        for target in (t for t in targets if t in SERVICES):
            ceiling = ingester_ceiling.measure(ctx, target, args.burst, args.drain_timeout)
            print(
                f"bench: ingester {target}: {ceiling.entries:,.0f} rows in "
                f"{ceiling.drain.ingest_seconds:.2f} s = {ceiling.rows_per_second:,.0f} rows/s",
                file=sys.stderr,
            )
            ceilings.append(ceiling)
        lines += ["## Ingester ceiling", "", *report.ingester_table(ceilings), ""]
        data["ingester"] = [_asdict(c) for c in ceilings]
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


def _throughput(
    args: argparse.Namespace, ctx: Context, targets: list[str]
) -> list[measure.Measurement]:
    """Every target at every connection count, rounds interleaved, the order rotating."""
    results = []
    connections = [int(c) for c in args.connections.split(",")]
    for round_ in range(args.rounds):
        for conns in connections:
            shift = round_ % len(targets)
            order = targets[shift:] + targets[:shift]
            for target in order if round_ % 2 == 0 else order[::-1]:
                m = measure.throughput(
                    ctx, target, conns, round_, args.duration, args.warmup, args.drain_timeout
                )
                drain = (
                    f" (wrk {m.wrk.rate:,.0f}/s, drain {m.drain.seconds:.2f} s)" if m.drain else ""
                )
                print(
                    f"bench: round {round_} c{conns} {target}: {m.rate:,.0f}/s{drain} "
                    f"p99 {m.wrk.p99:.1f} ms cpu {m.cpu_us:.0f} us/cb non-2xx {m.wrk.non_2xx}",
                    file=sys.stderr,
                )
                results.append(m)
    return results


def _asdict(result: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready data, with its derived figures (rates, per-callback CPU)."""
    found: dict[str, Any] = asdict(result)
    for name in ("ok", "rate", "cpu_us", "rows_per_second", "completed_per_second"):
        if hasattr(result, name):
            found[name] = getattr(result, name)
    return found


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
