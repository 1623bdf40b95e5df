#!/usr/bin/env python3
"""Soak: the real service under steady, realistic traffic for a long time, sampled every
interval for memory (RSS per worker), open file descriptors and database size.

    python scripts/soak.py                       # 30 minutes at 200 callbacks/s
    python scripts/soak.py --duration 60 --sample-interval 5 --rate 100   # CI's short run

Fails (exit 1) when a worker's RSS grows more than --max-rss-growth-mb after warm-up, when
its descriptors grow by more than --max-fd-growth, or when the simulator saw any callback
refused with a 5xx or lost to a connection error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.service import Service, start_service  # noqa: E402
from tests.support import AUTH_TOKEN  # noqa: E402


@dataclass
class Sample:
    elapsed_s: float
    rss_mb: dict[int, float]  # per worker pid
    open_fds: dict[int, int]
    db_mb: float
    accepted: float


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        service = start_service(Path(tmp), workers=args.workers)
        try:
            return soak(service, args, Path(tmp))
        finally:
            service.stop()


def soak(service: Service, args: argparse.Namespace, tmp: Path) -> int:
    summary_path = tmp / "simulator.json"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "simulate", "--url", service.status_url,
         "--auth-token", AUTH_TOKEN, "--rate", str(args.rate), "--duration", str(args.duration),
         "--concurrency", "8", "--time-compression", "600", "--quiet",
         "--summary-json", str(summary_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.monotonic()
    samples = [take_sample(service, 0.0)]
    while simulator.poll() is None:
        deadline = started + len(samples) * args.sample_interval
        while simulator.poll() is None and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        samples.append(take_sample(service, time.monotonic() - started))
        print(format_sample(samples[-1]), flush=True)
    failures = judge(samples, args)
    simulated = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if simulator.returncode != 0:
        failures.append(f"the simulator exited {simulator.returncode}: 5xx or connection errors")
    report = {"samples": [asdict(s) for s in samples], "simulator": simulated,
              "failures": failures, "settings": vars(args)}  # fmt: skip
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("soak passed" if not failures else "soak failed")
    return 1 if failures else 0


def take_sample(service: Service, elapsed: float) -> Sample:
    rss, fds = {}, {}
    for pid in service.worker_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
        rss[pid] = round(rss_kb / 1024, 1)
        fds[pid] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    database = Path(service.store_url.removeprefix("sqlite:///"))
    db_bytes = sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))
    accepted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in service.metrics_text().splitlines()
        if line.startswith("twilio_status_callbacks_total{") and "accepted" in line
    )
    return Sample(round(elapsed, 1), rss, fds, round(db_bytes / 2**20, 2), accepted)


def judge(samples: list[Sample], args: argparse.Namespace) -> list[str]:
    """Growth is measured from the first sample after warm-up to the last, per worker."""
    warm = samples[min(len(samples) - 1, max(1, len(samples) // 4))]
    last = samples[-1]
    failures = []
    for pid, rss in last.rss_mb.items():
        if pid in warm.rss_mb and rss - warm.rss_mb[pid] > args.max_rss_growth_mb:
            failures.append(f"worker {pid} RSS grew {warm.rss_mb[pid]} -> {rss} MB")
        if pid in warm.open_fds and last.open_fds[pid] - warm.open_fds[pid] > args.max_fd_growth:
            failures.append(
                f"worker {pid} descriptors grew {warm.open_fds[pid]} -> {last.open_fds[pid]}"
            )
        if rss > args.max_rss_mb:
            failures.append(f"worker {pid} RSS {rss} MB is over {args.max_rss_mb} MB")
    if last.accepted <= samples[0].accepted:
        failures.append("no callback was accepted")
    return failures


def format_sample(sample: Sample) -> str:
    rss = " ".join(f"{v:.0f}" for v in sample.rss_mb.values())
    fds = " ".join(str(v) for v in sample.open_fds.values())
    return (f"t={sample.elapsed_s:>7.0f}s accepted={sample.accepted:>9.0f} "
            f"rss_mb=[{rss}] fds=[{fds}] db_mb={sample.db_mb}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--rate", type=float, default=200, help="callbacks/s (default 200)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-interval", type=float, default=60, help="seconds (default 60)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=15)
    parser.add_argument("--max-rss-mb", type=float, default=100)
    parser.add_argument("--max-fd-growth", type=int, default=5)
    parser.add_argument("--report", help="write samples and verdict as JSON here")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
