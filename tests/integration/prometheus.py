"""A real Prometheus server (Debian's `prometheus` package) for tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support import free_port, wait_for


@dataclass
class Prometheus:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query; raises on a PromQL error, returns the result vector."""
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = time
        body = requests.get(f"{self.url}/api/v1/query", params=params, timeout=30).json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scraped(self, job: str) -> bool:
        targets = requests.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]
        return any(
            t["labels"].get("job") == job and t["health"] == "up" and t.get("lastScrape")
            for t in targets["activeTargets"]
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_prometheus(
    tmp_path: Path,
    targets: Iterable[str],
    job: str = "twilio-status-exporter",
    rule_files: Iterable[Path] = (),
    scrape_interval: str = "1s",
    flags: Iterable[str] = (),
) -> Prometheus:
    """Start Prometheus scraping `targets` (host:port) every `scrape_interval`, with extra
    command-line `flags` (e.g. `--enable-feature=exemplar-storage`)."""
    executable = shutil.which("prometheus")
    if executable is None:
        raise AssertionError("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config = tmp_path / f"prometheus-{port}.yml"
    rules = "".join(f"\n  - {path}" for path in rule_files)
    config.write_text(
        f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
        f"rule_files:{rules or ' []'}\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
    )
    log_path = tmp_path / f"prometheus-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                executable,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / f'tsdb-{port}'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(port, process, log_path)
    try:
        wait_for(
            lambda: requests.get(f"{server.url}/-/ready", timeout=2).status_code == 200,
            timeout=30,
            what="prometheus to become ready",
        )
    except TimeoutError:
        server.stop()
        raise AssertionError(f"prometheus did not start:\n{log_path.read_text()}") from None
    return server
