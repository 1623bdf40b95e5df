"""Fixtures that start real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.service import Service, start_service


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start services with `service_factory(workers=3, env={...})`; all stop at teardown."""
    started: list[Service] = []

    def start(**kwargs: Any) -> Service:
        service = start_service(tmp_path, **kwargs)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def service(service_factory: Callable[..., Service]) -> Service:
    """The exporter under gunicorn with 3 workers on SQLite."""
    return service_factory(workers=3)


@pytest.fixture
def run_cli() -> Callable[..., str]:
    """Run `twilio-status-exporter ARGS...` as a user would; returns stdout, fails on error."""
    import subprocess
    import sys

    def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "exporter.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
        return result.stdout + result.stderr

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
