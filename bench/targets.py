"""The targets a bench run compares, and how each starts fresh."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from peers import start_express
from processes import Receiver, Server, start_bare, start_service

SERVICES = ("service", "service-pg")
PEERS = ("express", "express-validating")
ALL = (*SERVICES, "bare", "floor", *PEERS)
LABELS = {
    "service": "service (SQLite)",
    "service-pg": "service (PostgreSQL)",
    "bare": "bare Falcon",
    "floor": "floor (validate + append)",
    "express": "Express plain",
    "express-validating": "Express validating",
}


@dataclass
class Context:
    """What every measurement shares: where things are and how the targets start."""

    workdir: Path
    port: int
    token: str
    workers: int
    data: Path  # requests signed for the bench URL (service, bare Falcon, plain Express)
    main_count: int
    warm_count: int
    receiver: Receiver | None
    # The same callbacks signed for the URL server_validating.js checks (None: not measured).
    validating_data: Path | None = None
    # A postgresql:// database for "service-pg" (each run gets a fresh schema in it, since the
    # same pre-signed callbacks are replayed every run).
    pg_url: str | None = None
    express_dir: Path | None = None  # the installed Express peers
    counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"http://{self.host}/twilio/status"

    def data_for(self, target: str) -> Path:
        if target == "express-validating":
            assert self.validating_data is not None
            return self.validating_data
        return self.data

    def fresh_store(self, target: str, run: int) -> str:
        if target == "service":
            return f"sqlite:///{self.workdir / f'store-{run}.db'}"
        if self.pg_url is None:
            raise RuntimeError("service-pg needs --postgres or --store-url postgresql://...")
        import psycopg

        schema = f"bench_{os.getpid()}_{run}"
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in self.pg_url else "?"
        return f"{self.pg_url}{separator}options=-csearch_path%3D{schema}"

    def service_env(self, store_url: str, run: int) -> dict[str, str]:
        env = {
            "TWILIO_AUTH_TOKEN": self.token,
            "EXPORTER_STORE": store_url,
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"metrics-{run}"),
            "OTEL_TRACES_EXPORTER": "none",
            "EXPORTER_LOG_LEVEL": "warning",
        }
        if self.receiver is not None:
            env |= {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            }
        return env

    def start(self, target: str, workers: int | None = None) -> Server:
        """A fresh target (new store, new metrics directory), ready to serve."""
        run = next(self.counter)
        workers = workers or self.workers
        log = self.workdir / f"{target}-{run}.log"
        if target in SERVICES:
            store_url = self.fresh_store(target, run)
            env = self.service_env(store_url, run)
            server = start_service(self.port, workers, env, log, name=target)
            server.store_url = store_url
        elif target == "bare":
            server = start_bare(self.port, workers, log)
        elif target == "floor":
            db = str(self.workdir / f"floor-{run}.db")
            env = {"BENCH_FLOOR_DB": db, "BENCH_FLOOR_TOKEN": self.token}
            server = start_bare(self.port, workers, log, app="floor_app", env=env)
        elif target in PEERS:
            if self.express_dir is None:
                raise RuntimeError(f"{target}: the Express peers are not installed")
            server = start_express(self.express_dir, target, self.port, self.token, log)
            workers = 0
        else:
            raise ValueError(f"unknown target {target!r}; one of {', '.join(ALL)}")
        try:
            server.wait_ready(workers)
        except BaseException:
            server.stop()
            raise
        return server
