"""Pytest plugin: a real PostgreSQL server for the session, and a fresh, empty store per test.

The server comes from Debian's `postgresql` package (`scripts/test` installs it), started with
its own `initdb` + `pg_ctl` in a temporary directory, listening on a free loopback port only.
PostgreSQL refuses to run as root, so under root every server command runs as the `postgres`
system user, which then owns the data directory. Durability is switched off (fsync, full page
writes): the tests check transactions and locking, not crash safety, and need to be quick.
Each test's store is a schema of its own in one test database (its URL sets the search_path):
as empty as a new database, without CREATE DATABASE's cost.

Not pytest-postgresql: its `postgresql_proc` runs `pg_ctl` as the current user and puts the
data directory under pytest's base temporary directory, and under root (scripts/test, CI
containers) PostgreSQL refuses the first and the `postgres` user cannot enter the second.
Its per-test fixture is a database cloned from a template, where a schema does here.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import free_port

SUPERUSER = "postgres"
TEST_DATABASE = "exporter_tests"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: no socket file to place or clean up
    "max_connections": "300",  # two replicas x workers x pools, plus racing test processes
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
}


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A private PostgreSQL server: start, stop (for outage tests) and fresh, empty stores."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.port = port
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            "initdb",
            "--pgdata", str(self.data_dir),
            "--username", SUPERUSER,
            "--auth", "trust",  # loopback only, throwaway data
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        self._run(
            "pg_ctl", "start", "--wait", "--timeout", "30",
            "--pgdata", str(self.data_dir),
            "--log", str(self.log_path),
            "--options", f"-p {self.port} {options}",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop now: sessions are terminated, as when a database server goes down."""
        self._run("pg_ctl", "stop", "--wait", "--mode", "fast", "--pgdata", str(self.data_dir))

    def running(self) -> bool:
        result = subprocess.run(
            [*self._as_owner(), str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def create_store(self) -> str:
        """The URL of a new, empty place for a store: a schema of its own in the test database.

        The URL makes it the search_path, so the store sees nothing else. A schema is far
        quicker to create than a database, which matters on a busy machine."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(TEST_DATABASE), autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(TEST_DATABASE)}?options=-csearch_path%3D{name}"

    def drop_store(self, url: str) -> None:
        name = url.rsplit("%3D", 1)[1]
        with psycopg.connect(self.url(TEST_DATABASE), autocommit=True) as admin:
            # Services under test may still hold sessions; they find the tables gone.
            admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_owner(), str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args[:1])} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}{log[-2000:]}"
            )

    @staticmethod
    def _as_owner() -> list[str]:
        return ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, removed at the end."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "apt-get install postgresql, or run scripts/test, which installs it"
        )
    # Not pytest's tmp_path: its parents are private to root and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="twilio-status-exporter-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user=SUPERUSER)
    server = PostgresServer(bin_dir, root, free_port())
    try:
        server.init()
        server.start()
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {TEST_DATABASE}")
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty store (its own schema), dropped after the test."""
    if not postgres_server.running():  # an outage test that failed half-way
        postgres_server.start()
    url = postgres_server.create_store()
    yield url
    if postgres_server.running():
        postgres_server.drop_store(url)
