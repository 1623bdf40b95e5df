"""Run the real service (`twilio-status-exporter serve`, gunicorn, several workers) in tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support import AUTH_TOKEN, free_port, signed_events_request, signed_request, wait_for


@dataclass
class Service:
    """A running exporter: its URL, store and process."""

    port: int
    store_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"{self.base_url}/twilio/status"

    def post_callback(
        self,
        params: Mapping[str, str],
        query: str = "",
        token: str = AUTH_TOKEN,
        session: requests.Session | None = None,
    ) -> requests.Response:
        url = f"{self.status_url}?{query}" if query else self.status_url
        body, headers = signed_request(url, params, token)
        return (session or requests).post(url, data=body, headers=headers, timeout=30)

    def post_events(
        self, events: object, token: str = AUTH_TOKEN, session: requests.Session | None = None
    ) -> requests.Response:
        """An Event Streams delivery (a list of CloudEvents), signed like Twilio's sinks."""
        url = f"{self.base_url}/twilio/events"
        query, body, headers = signed_events_request(url, events, token)
        return (session or requests).post(f"{url}?{query}", data=body, headers=headers, timeout=30)

    def metrics_text(self, settled: bool = True) -> str:
        """/metrics, by default once the ingester has applied everything answered so far
        (counters move when a callback is applied, moments after its 200)."""
        if settled:
            self.wait_applied()
        return self.scrape()

    def scrape(self) -> str:
        response = requests.get(f"{self.base_url}/metrics", timeout=30)
        response.raise_for_status()
        return response.text

    def wait_applied(self, timeout: float = 30.0, spans: bool = False) -> None:
        """Wait until the inbox is empty (and, with `spans`, the span outbox too)."""
        gauges = ["twilio_exporter_ingest_backlog_entries"]
        if spans:
            gauges.append("twilio_exporter_span_export_backlog_spans")

        def drained() -> bool:
            text = self.scrape()
            values = [backlog_value(text, gauge) for gauge in gauges]
            # No gauge at all: the store cannot be read (an outage test); nothing to wait for.
            return all(value is None or value == 0 for value in values)

        wait_for(drained, timeout=timeout, what="the ingester to apply every accepted request")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's children, less its ingester process."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        return [pid for pid in pids if pid != self.ingester_pid()]

    def ingester_pid(self) -> int | None:
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue  # gone since it was listed
                if b"exporter.server.ingester" in command:
                    return int(pid)
        return None

    def kill(self) -> None:
        """SIGKILL the master and every worker at once: a crash, not a shutdown."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def backlog_value(metrics_text: str, name: str) -> float | None:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def start_service(
    tmp_path: Path,
    *,
    workers: int = 3,
    env: Mapping[str, str] | None = None,
    store_url: str | None = None,
    port: int | None = None,
    command: Sequence[str] | None = None,
) -> Service:
    """Start `twilio-status-exporter serve` (or `command`, which must listen on `port`) and
    wait until /readyz answers 200."""
    port = port or free_port()
    store_url = store_url or f"sqlite:///{tmp_path / 'exporter.db'}"
    log_path = tmp_path / f"service-{port}.log"
    # No PROMETHEUS_MULTIPROC_DIR: `serve` must handle it for the user, as the README promises.
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "EXPORTER_STORE": store_url,
        "OTEL_TRACES_EXPORTER": "none",
        **(env or {}),
    }
    if command is None:
        command = [
            *cli_command(), "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)
        ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill() takes the workers too
        )
    service = Service(port, store_url, process, log_path, full_env)
    try:
        wait_for(
            lambda: _ready(service),
            timeout=30,
            what=f"service on port {port} to become ready",
        )
    except TimeoutError:
        service.stop()
        raise AssertionError(f"service did not start:\n{service.log()}") from None
    return service


def cli_command() -> list[str]:
    """How to run `twilio-status-exporter`: the console script, else `python -m exporter.cli`."""
    executable = shutil.which("twilio-status-exporter") or sys.executable
    return [executable] if executable.endswith("exporter") else [executable, "-m", "exporter.cli"]


def _ready(service: Service) -> bool:
    if service.process.poll() is not None:
        raise AssertionError(f"service exited:\n{service.log()}")
    return requests.get(f"{service.base_url}/readyz", timeout=2).status_code == 200
