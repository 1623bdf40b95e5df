"""Fixtures: settings, store (every backend), registry, metrics and the app under test."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry

from exporter.settings import Settings
from exporter.store import Store, open_store
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.metrics import Metrics
from exporter.web.app import Telemetry
from tests.apps import inline_client
from tests.support import AUTH_TOKEN

# PostgreSQL joins every store test once tests/postgres_server.py provides `postgres_url`.
HAS_POSTGRES = importlib.util.find_spec("tests.postgres_server") is not None
if HAS_POSTGRES:
    pytest_plugins = ["tests.postgres_server"]
STORE_BACKENDS = ["sqlite", "postgres"] if HAS_POSTGRES else ["sqlite"]


@pytest.fixture
def settings() -> Settings:
    return Settings(auth_tokens=(AUTH_TOKEN,))


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'exporter.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    backend = open_store(store_url)
    yield backend
    backend.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    backend = SQLiteStore(str(tmp_path / "exporter.db"))
    yield backend
    backend.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


@pytest.fixture
def telemetry(registry: CollectorRegistry, metrics: Metrics) -> Telemetry:
    return Telemetry(registry, metrics)


@pytest.fixture
def client(
    settings: Settings, sqlite_store: SQLiteStore, telemetry: Telemetry
) -> falcon.testing.TestClient:
    return inline_client(settings, sqlite_store, telemetry)
