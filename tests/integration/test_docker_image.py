"""The image, built and run as a user runs it: `docker build .`, then `docker run` read-only
with a tmpfs and a data volume, on a bind address other than the default.

Needs a Docker engine: one that is running is used; else `dockerd` is started when installed
(and stopped afterwards); the tests skip only where none can run. No registry is needed: the
Python base image is made locally by scripts/docker-base. Containers use the host's network
and bind to 127.0.0.1 on a free port, so nothing is published beyond this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import AUTH_TOKEN, callback_params, free_port, sid, signed_request, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE = "twilio-status-exporter:test"
# The image's own HEALTHCHECK command, polled more often than its 15 s so the tests need not
# wait for it.
HEALTH_OPTIONS = ("--health-interval=1s", "--health-start-period=30s")

# A cold build (debootstrap of the base, then pip installing the wheel's dependencies) takes
# minutes; later runs reuse the base image and the layer cache.
pytestmark = pytest.mark.timeout(1200)


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stdout}{result.stderr}")
    return result.stdout.strip()


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker engine that answers: the running one, else a `dockerd` started here."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client (apt-get install docker.io); scripts/test installs it")
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.skip("no Docker engine running, and none can be started here (needs root + dockerd)")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not engine_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.skip(f"dockerd cannot run on this machine:\n{tail}")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def image(docker_engine: None) -> str:
    """The image built from this checkout, on the locally made base."""
    base = subprocess.run(
        [str(ROOT / "scripts" / "docker-base")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert base.returncode == 0, base.stderr
    base_image = base.stdout.strip()
    build = subprocess.run(
        ["docker", "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base_image}",
         "-t", IMAGE, str(ROOT)],
        capture_output=True, text=True, timeout=1200, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return IMAGE


@dataclass
class Container:
    name: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> str:
        return docker("inspect", "--format", "{{.State.Health.Status}}", self.name)

    def wait_healthy(self) -> None:
        wait_for(lambda: self.health() == "healthy", timeout=60, what=f"{self.name} healthy")

    def exec(self, *command: str) -> str:
        return docker("exec", self.name, *command)

    def post_callback(self, params: dict[str, str], signed: bool = True) -> requests.Response:
        url = f"{self.base_url}/twilio/status"
        body, headers = signed_request(url, params)
        if not signed:
            del headers["X-Twilio-Signature"]
        return requests.post(url, data=body, headers=headers, timeout=30)

    def callbacks_counted(self, outcome: str) -> float:
        text = requests.get(f"{self.base_url}/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "twilio_status_callbacks_total"
                    and sample.labels.get("outcome") == outcome
                ):
                    return sample.value
        return 0.0

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.name], capture_output=True, text=True, timeout=60
        )
        return result.stdout + result.stderr


@pytest.fixture
def run_container(image: str) -> Iterator[Callable[..., Container]]:
    """`run_container()`: the image serving on 127.0.0.1:<free port> as a user runs it:
    read-only root, a tmpfs for the metric files, the store on a volume of its own."""
    names: list[str] = []

    def run() -> Container:
        name = f"tse-test-{uuid.uuid4().hex[:12]}"
        container = Container(name=name, port=free_port())
        names.append(name)
        docker(
            "run", "--detach", "--name", container.name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp", "--volume", f"{name}:/data",
            "--env", f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}", "--env", "OTEL_TRACES_EXPORTER=none",
            *HEALTH_OPTIONS,
            image, "serve", "--bind", f"127.0.0.1:{container.port}", "--workers", "2",
        )  # fmt: skip
        return container

    yield run
    for name in names:
        docker("rm", "--force", "--volumes", name, check=False)
        docker("volume", "rm", "--force", name, check=False)


def test_image_serves_signed_callbacks_read_only_as_uid_10001_on_another_port(
    run_container: Callable[..., Container],
) -> None:
    container = run_container()
    # Healthy although it does not listen on the default 8080: the check follows --bind.
    container.wait_healthy()
    healthcheck = docker("inspect", "--format", "{{json .Config.Healthcheck.Test}}", IMAGE)
    assert "/opt/twilio-status-exporter/healthcheck.py" in healthcheck

    response = container.post_callback(callback_params(sid("SM", 1), "delivered"))
    assert response.status_code == 200, container.logs()
    assert (
        container.post_callback(callback_params(sid("SM", 2), "sent"), signed=False).status_code
        == 403
    )
    wait_for(lambda: container.callbacks_counted("accepted") == 1, what="accepted counted")
    assert container.callbacks_counted("invalid_signature") == 1

    assert container.exec("id", "-u") == "10001"
    assert container.exec("id", "-g") == "10001"
    # Every file the service wrote on the volume belongs to the image's named user and group.
    owners = container.exec("stat", "--format", "%u:%g %U:%G %n", *sorted(
        f"/data/{name}" for name in container.exec("ls", "/data").split()
    ))  # fmt: skip
    assert owners, "nothing written on the volume"
    for line in owners.splitlines():
        assert line.startswith("10001:10001 exporter:exporter "), owners
    write = subprocess.run(
        ["docker", "exec", container.name, "touch", "/opt/written"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_records_survive_a_restart_and_stop_is_prompt_and_clean(
    run_container: Callable[..., Container],
) -> None:
    container = run_container()
    container.wait_healthy()
    params = callback_params(sid("SM", 3), "delivered")
    assert container.post_callback(params).status_code == 200
    wait_for(lambda: container.callbacks_counted("accepted") == 1, what="accepted counted")

    docker("restart", container.name, timeout=120)
    container.wait_healthy()
    # The same callback again: the record on the volume makes it a duplicate.
    assert container.post_callback(params).status_code == 200, container.logs()
    wait_for(lambda: container.callbacks_counted("duplicate") == 1, what="duplicate counted")
    assert container.callbacks_counted("accepted") == 0

    started = time.monotonic()
    docker("stop", "--time", "20", container.name, timeout=120)
    stopped_after = time.monotonic() - started
    assert stopped_after < 5, f"docker stop took {stopped_after:.1f}s: SIGTERM not honoured"
    assert docker("inspect", "--format", "{{.State.ExitCode}}", container.name) == "0"
