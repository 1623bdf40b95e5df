"""The image's health check (deploy/docker/healthcheck.py): which address it asks, and that it
reports a live service healthy and a missing one unhealthy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import free_port

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "docker" / "healthcheck.py"


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = load_healthcheck()


def command_line(*arguments: str) -> bytes:
    """As /proc/PID/cmdline holds it: NUL-terminated arguments."""
    return b"".join(argument.encode() + b"\0" for argument in arguments)


ENTRY_POINT = ("/opt/twilio-status-exporter/bin/python", "/usr/bin/twilio-status-exporter")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (("serve", "--bind", "127.0.0.1:9100"), "127.0.0.1:9100"),
        (("serve", "--bind=0.0.0.0:9101", "--workers", "2"), "0.0.0.0:9101"),
        (("serve", "--bind", "1.2.3.4:1", "--bind", "[::]:9102"), "[::]:9102"),  # last wins
    ],
)
def test_bind_comes_from_the_service_command_line(
    arguments: tuple[str, ...], expected: str
) -> None:
    environ = {"EXPORTER_BIND": "10.0.0.1:7000"}
    line = command_line(*ENTRY_POINT, *arguments)
    assert healthcheck.configured_bind(line, environ) == expected


def test_bind_falls_back_to_the_environment_then_the_default() -> None:
    serve = command_line(*ENTRY_POINT, "serve", "--workers", "2")
    assert healthcheck.configured_bind(serve, {"EXPORTER_BIND": "127.0.0.1:9200"}) == (
        "127.0.0.1:9200"
    )
    assert healthcheck.configured_bind(serve, {}) == "0.0.0.0:8080"
    assert healthcheck.configured_bind(None, {"EXPORTER_BIND": " "}) == "0.0.0.0:8080"


def test_bind_is_found_behind_docker_init() -> None:
    # `docker run --init`: PID 1 is docker-init, with the entry point after its "--".
    line = command_line("/sbin/docker-init", "--", "twilio-status-exporter", "serve",
                        "--bind", "127.0.0.1:9300")  # fmt: skip
    assert healthcheck.configured_bind(line, {}) == "127.0.0.1:9300"


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("0.0.0.0:8080", "http://127.0.0.1:8080/healthz"),
        (":9000", "http://127.0.0.1:9000/healthz"),
        ("*:9000", "http://127.0.0.1:9000/healthz"),
        ("[::]:9001", "http://[::1]:9001/healthz"),
        ("::", "http://[::1]:8080/healthz"),
        ("127.0.0.1:9002", "http://127.0.0.1:9002/healthz"),
        ("[::1]:9003", "http://[::1]:9003/healthz"),
        ("10.1.2.3:9004", "http://10.1.2.3:9004/healthz"),
        ("exporter.local", "http://exporter.local:8080/healthz"),
        ("tcp://0.0.0.0:9005", "http://127.0.0.1:9005/healthz"),
    ],
)
def test_health_url_asks_loopback_for_wildcard_hosts(bind: str, url: str) -> None:
    assert healthcheck.health_url(bind) == url


@pytest.mark.parametrize("bind", ["unix:/run/exporter.sock", "fd://3", "127.0.0.1:http"])
def test_addresses_http_cannot_reach_are_refused(bind: str) -> None:
    with pytest.raises(ValueError, match="bind"):
        healthcheck.health_url(bind)


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # PID 1 here is not the service, so the address comes from EXPORTER_BIND.
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
        check=False,
    )


class Health(BaseHTTPRequestHandler):
    """Answers /healthz 200 and anything else 503, as the service's routes do."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def listening_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_script_reports_a_listener_on_the_configured_port_healthy(listening_port: int) -> None:
    result = run_script({"EXPORTER_BIND": f"0.0.0.0:{listening_port}"})
    assert result.returncode == 0, result.stderr
    assert f"http://127.0.0.1:{listening_port}/healthz: 200" in result.stdout


def test_script_reports_nothing_listening_unhealthy() -> None:
    result = run_script({"EXPORTER_BIND": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "unhealthy" in result.stderr
