"""The processes a bench run starts: gunicorn targets, the OTLP receiver, wrk; /proc and
/metrics readings."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# gunicorn settings that shape a worker; the ceiling copies the service's values of these.
WORKER_SETTINGS = ("worker_class", "threads", "timeout", "keepalive", "worker_connections")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def service_worker_settings() -> dict[str, object]:
    """The literal worker settings in exporter/server/gunicorn_conf.py (read, not imported)."""
    tree = ast.parse((REPO / "exporter" / "server" / "gunicorn_conf.py").read_text())
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in WORKER_SETTINGS:
                    try:
                        found[target.id] = ast.literal_eval(node.value)  # type: ignore[arg-type]
                    except ValueError:
                        continue
    return found


def proc_cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime + stime of a process (plus its reaped children's when asked)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """Direct children of a process (all of its threads' children)."""
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of a process: gunicorn's workers and its ingester."""
    parents = _parents()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current:
                found.append(child)
                frontier.append(child)
    return found


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc/PID/stat."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        found[int(entry.name)] = int(fields[1])
    return found


def is_ingester(pid: int) -> bool:
    """The exporter's ingester process (`python -m exporter.server.ingester`)."""
    try:
        return b"exporter.server.ingester" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Server:
    """A target started by the bench: a gunicorn master with its workers (and the service's
    ingester), or one Node process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: str | None = "/readyz"  # None: ready once the port accepts connections
    store_url: str | None = None  # the service's store

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """The gunicorn workers (the master's children but its ingester)."""
        return [pid for pid in children(self.process.pid) if not is_ingester(pid)]

    def ingester(self) -> int | None:
        """The service's ingester process, a child of the gunicorn master, when it runs."""
        return next((pid for pid in children(self.process.pid) if is_ingester(pid)), None)

    def cpu_seconds(self) -> float:
        """CPU of the master and of every descendant (workers, ingester), reaped ones included."""
        total = proc_cpu_seconds(self.process.pid, reaped_children=True)
        for pid in descendants(self.process.pid):
            try:
                total += proc_cpu_seconds(pid, reaped_children=True)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return total

    def worker_memory_kb(self) -> list[dict[str, int]]:
        """VmRSS/VmHWM of every descendant (workers and ingester) or of the process itself."""
        found = []
        for pid in descendants(self.process.pid) or [self.process.pid]:
            try:
                found.append(proc_memory_kb(pid) | ({"ingester": 1} if is_ingester(pid) else {}))
            except FileNotFoundError:
                continue
        return found

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            if self.ready_path is None:
                return port_open(self.port)
            return http_get(self.base_url + self.ready_path, timeout=2) is not None

        wait_until(ready, timeout, f"{self.name} on port {self.port}")
        wait_until(lambda: len(self.workers()) >= workers, timeout, f"{workers} workers")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(
    port: int, workers: int, env: Mapping[str, str], log_path: Path, name: str = "service"
) -> Server:
    """`twilio-status-exporter serve` as a user runs it."""
    beside = Path(sys.executable).with_name("twilio-status-exporter")  # the same virtualenv
    executable = str(beside) if beside.exists() else shutil.which("twilio-status-exporter")
    if executable is None:
        raise RuntimeError("twilio-status-exporter is not installed: pip install -e .")
    command = [executable, "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    return Server(name, port, process, log_path)


def start_bare(
    port: int,
    workers: int,
    log_path: Path,
    app: str = "bare_app",
    env: Mapping[str, str] | None = None,
) -> Server:
    """bench/bare_app.py (or another app of bench/) under gunicorn with the service's worker
    settings."""
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(BENCH_DIR)]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    for setting, value in service_worker_settings().items():
        command += [f"--{setting.replace('_', '-')}", str(value)]
    command += [f"{app}:app"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
    return Server(app.removesuffix("_app"), port, process, log_path)


@dataclass
class Receiver:
    """The OTLP/gRPC receiver the service exports spans to."""

    port: int
    stats_port: int
    process: subprocess.Popen[bytes]
    source: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self, reset: bool = False) -> dict[str, float]:
        """Spans received so far, and span lags since the last reset (see otlp_receiver.py)."""
        if self.stats_port == 0:
            return {}
        path = "/reset" if reset else "/"
        data: dict[str, float] = json.loads(http_get(f"http://127.0.0.1:{self.stats_port}{path}"))
        return data

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.process.pid, reaped_children=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_receiver(log_path: Path) -> Receiver:
    """bench/otlp_receiver.py in its own process (its CPU is not the service's)."""
    command = [sys.executable, str(BENCH_DIR / "otlp_receiver.py")]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line:
        process.wait()
        raise RuntimeError(f"the OTLP receiver did not start:\n{log_path.read_text()}")
    ready = json.loads(line)
    return Receiver(ready["grpc_port"], ready["stats_port"], process, ready["source"])


@dataclass
class WrkResult:
    """What wrk reported, plus its own CPU time."""

    requests: int
    duration: float
    non_2xx: int
    socket_errors: int
    p50: float
    p90: float
    p99: float
    max: float
    cpu_seconds: float
    raw: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.duration if self.duration else 0.0


def run_wrk(
    server_url: str,
    data: Path,
    first: int,
    count: int,
    host: str,
    *,
    connections: int,
    duration: float,
    once: bool = False,
    until: Callable[[], bool] | None = None,
) -> WrkResult:
    """Run wrk with bench/callbacks.lua on a slice of the data file.

    With `until`, wrk gets SIGINT as soon as `until()` is true (polled every 0.5 s).
    """
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "--timeout", "10s"]
    command += ["-s", str(BENCH_DIR / "callbacks.lua"), server_url, "--"]
    command += [str(data), str(first), str(count), host] + (["once"] if once else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while until is not None and process.poll() is None:
            try:
                if until():
                    process.send_signal(signal.SIGINT)
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert process.stdout is not None
        output = process.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    line = next((x for x in output.splitlines() if x.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    socket_errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors"))
    return WrkResult(
        requests=raw["requests"],
        duration=raw["duration_us"] / 1e6,
        non_2xx=raw["non_2xx"],
        socket_errors=socket_errors + raw["timeouts"],
        p50=raw["p50_us"] / 1e3,
        p90=raw["p90_us"] / 1e3,
        p99=raw["p99_us"] / 1e3,
        max=raw["max_us"] / 1e3,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        raw=raw,
    )
