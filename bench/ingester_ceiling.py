"""The ingester's own ceiling: callbacks held in the inbox, then applied with the request
path idle."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from dataclasses import dataclass

import exposition
from measure import Drain, backlog_entries, drain, spans_received, stalled_or
from processes import Server, proc_cpu_seconds, run_wrk, wait_until
from targets import Context


@dataclass(frozen=True)
class IngesterCeiling:
    """The ingester alone: a burst held in the inbox (ingester stopped), then released."""

    target: str
    burst: int  # callbacks sent
    entries: float  # inbox entries waiting when the ingester was released
    non_2xx: int
    held_back: bool  # stopped while holding no store lock (else: stopped anyway, see report)
    drain: Drain
    ingester_cpu: float  # seconds of the ingester process during the drain
    spans: int | None  # spans the receiver got during the drain

    @property
    def rows_per_second(self) -> float:
        return self.entries / self.drain.ingest_seconds if self.drain.ingest_seconds else 0.0

    @property
    def completed_per_second(self) -> float:
        """Rows applied and their spans exported, per second."""
        return self.entries / self.drain.seconds if self.drain.seconds else 0.0

    @property
    def cpu_us_per_row(self) -> float:
        return self.ingester_cpu / self.entries * 1e6 if self.entries else 0.0


def measure(ctx: Context, target: str, burst: int, drain_timeout: float = 300.0) -> IngesterCeiling:
    """SIGSTOP the ingester, send `burst` callbacks as fast as wrk can (64 connections),
    SIGCONT it and time the inbox draining: rows/s with the request path idle."""
    server = ctx.start(target)
    try:
        run_wrk(
            server.base_url, ctx.data, ctx.main_count, min(ctx.warm_count, 2_000), ctx.host,
            connections=16, duration=1,
        )  # fmt: skip
        drain(server, drain_timeout)  # the ingester leads and has warmed up
        wait_until(lambda: server.ingester() is not None, 30, f"{target}'s ingester process")
        ingester = server.ingester()
        assert ingester is not None
        held_back = _hold(ingester, server)
        try:
            result = run_wrk(
                server.base_url, ctx.data, 0, burst, ctx.host, connections=64,
                duration=3600, once=True, until=stalled_or(backlog_entries(server), burst),
            )  # fmt: skip
            peak = exposition.backlog(exposition.scrape(server.base_url))
            spans_before = spans_received(ctx.receiver)
            cpu_before = proc_cpu_seconds(ingester)
        finally:
            os.kill(ingester, signal.SIGCONT)
        drained = drain(server, drain_timeout, first=peak)
        cpu = proc_cpu_seconds(ingester) - cpu_before
        spans = spans_received(ctx.receiver) - spans_before if ctx.receiver is not None else None
    finally:
        server.stop()
    return IngesterCeiling(
        target, burst, peak.entries, result.non_2xx, held_back, drained, cpu, spans
    )


def _hold(ingester: int, server: Server, attempts: int = 100) -> bool:
    """SIGSTOP the ingester at a moment it holds no write lock (else the request path would
    wait on it). True when such a moment was found; the process is stopped either way."""
    for _ in range(attempts):
        os.kill(ingester, signal.SIGSTOP)
        if _store_quiet(server.store_url or ""):
            return True
        os.kill(ingester, signal.SIGCONT)
        time.sleep(0.013)
    os.kill(ingester, signal.SIGSTOP)
    return False


def _store_quiet(store_url: str) -> bool:
    """No session of the store holds a transaction open (the service has no load now)."""
    if store_url.startswith("sqlite:///"):
        try:
            probe = sqlite3.connect(store_url.removeprefix("sqlite:///"), timeout=0)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.rollback()
            finally:
                probe.close()
        except sqlite3.OperationalError:
            return False
        return True
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as session:
        row = session.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND datname = current_database() AND backend_type = 'client backend' "
            "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
        ).fetchone()
    return row is not None and row[0] == 0
