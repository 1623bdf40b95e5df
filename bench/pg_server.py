"""A private, durable PostgreSQL server for `--postgres`: Debian's initdb + pg_ctl in a
temporary directory, on a free loopback port, removed afterwards.

Durable as in production: fsync, synchronous_commit and full_page_writes on, so a 200 from the
service on PostgreSQL means what it means on SQLite. PostgreSQL refuses to run as root: under
root every server command runs as the `postgres` system user, which then owns the directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"
DATABASE = "exporter_bench"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: no socket file to place or clean up
    "max_connections": "200",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
}


def bin_dir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """initdb, start, a bench database, stop and remove: `with PostgresServer(port) as pg:`."""

    def __init__(self, port: int) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError(
                "--postgres: PostgreSQL server binaries not found "
                "(/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
            )
        self.bin_dir = found
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="twilio-exporter-bench-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "server.log"

    @property
    def url(self) -> str:
        """The bench database; each service run gets a fresh schema in it."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def settings(self) -> str:
        shown = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
        return ", ".join(f"{k}={SERVER_SETTINGS[k]}" for k in shown)

    def __enter__(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, user=SUPERUSER)
        try:
            self._run(
                "initdb", "--pgdata", str(self.data_dir), "--username", SUPERUSER,
                "--auth", "trust", "--encoding", "UTF8", "--locale", "C",
            )  # fmt: skip
            options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
            self._run(
                "pg_ctl", "start", "--wait", "--timeout", "60", "--pgdata", str(self.data_dir),
                "--log", str(self.log_path), "--options", f"-p {self.port} {options}",
            )  # fmt: skip
            import psycopg

            with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
                db.execute(f"CREATE DATABASE {DATABASE}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "--wait", "--mode", "fast", "--pgdata", str(self.data_dir))
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        owner = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*owner, str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"{log[-2000:]}"
            )
