"""The embedded store: one SQLite file in WAL mode shared by every gunicorn worker.

Writers are serialised by an flock on a lock file beside the database before they open a
write transaction. SQLite's own busy handler sleeps with growing back-off when the write lock
is taken, and two workers writing in tight loops can starve each other for seconds; a blocked
flock wakes the moment the holder releases it. `BEGIN IMMEDIATE` then never waits on us, and
the duplicate check and the write happen under one lock: one atomic step across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping

from exporter import lifecycle
from exporter.events import StatusEvent
from exporter.store import MessageHistory, MessageState, Recorded, StoreUnavailable
from exporter.store.records import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    event_from_row,
    event_row,
    in_flight,
    message_from_row,
    message_row,
    next_state,
)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_sid TEXT PRIMARY KEY,
    status TEXT NOT NULL,              -- current status: never moves backwards
    in_flight INTEGER NOT NULL,        -- 1 while neither final nor stale
    first_seen_at REAL NOT NULL,       -- arrival of the first event (Unix seconds)
    updated_at REAL NOT NULL,          -- time of the latest event
    created_at REAL,                   -- sender's creation time (?created= on the callback URL)
    final_at REAL,
    stale_at REAL,
    channel TEXT NOT NULL,
    country TEXT NOT NULL,
    to_number TEXT,
    from_number TEXT,
    account_sid TEXT,
    messaging_service_sid TEXT,
    error_code TEXT,
    traceparent TEXT,
    tags TEXT                          -- JSON object
);
-- Small (only in-flight rows): serves the in-flight gauge and the stale sweep.
CREATE INDEX IF NOT EXISTS messages_in_flight ON messages (updated_at, status) WHERE in_flight = 1;
CREATE INDEX IF NOT EXISTS messages_updated_at ON messages (updated_at);
CREATE TABLE IF NOT EXISTS status_events (
    id INTEGER PRIMARY KEY,
    message_sid TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,              -- callback | poll | event_stream
    out_of_order INTEGER NOT NULL,
    error_code TEXT,
    reported_at REAL,                  -- carrier's RawDlrDoneDate, read as UTC
    params TEXT NOT NULL,              -- every posted parameter, JSON
    query TEXT NOT NULL,               -- the callback URL's query string as received
    UNIQUE (message_sid, status)
);
CREATE TABLE IF NOT EXISTS readiness (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL);
"""
_SELECT_MESSAGE = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages WHERE message_sid = ?"
_UPSERT_MESSAGE = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}, in_flight) "
    f"VALUES ({', '.join('?' * (len(MESSAGE_COLUMNS) + 1))}) "
    "ON CONFLICT (message_sid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*MESSAGE_COLUMNS[1:], "in_flight"))
)
_INSERT_EVENT = (
    f"INSERT INTO status_events (message_sid, {', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)


class SQLiteStore:
    """Store backed by one SQLite file; safe to share between processes and threads."""

    def __init__(self, path: str, *, synchronous: str = "NORMAL", busy_timeout: float = 10.0):
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        with self._write() as conn:
            conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def record(self, event: StatusEvent) -> Recorded:
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                recorded = self._record(conn, event)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return recorded

    def _record(self, conn: sqlite3.Connection, event: StatusEvent) -> Recorded:
        row = conn.execute(_SELECT_MESSAGE, (event.message_sid,)).fetchone()
        existing = message_from_row(row) if row else None
        history = dict(
            conn.execute(
                "SELECT status, received_at FROM status_events WHERE message_sid = ?",
                (event.message_sid,),
            ).fetchall()
        )
        if existing is not None and event.status in history:  # a retry or a copy: no write
            return Recorded(message=existing, transition=None)
        transition = lifecycle.decide(
            history,
            existing.status if existing else None,
            event.status,
            event.received_at,
            origin=_origin(existing, event),
        )
        state = next_state(existing, event, transition)
        conn.execute(_INSERT_EVENT, (event.message_sid, *event_row(event, transition)))
        conn.execute(_UPSERT_MESSAGE, (*message_row(state), in_flight(state)))
        return Recorded(message=state, transition=transition)

    def in_flight_counts(self) -> Mapping[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM messages WHERE in_flight = 1 GROUP BY status"
            ).fetchall()
        return dict(rows)

    def sweep_stale(
        self, updated_before: float, now: float, limit: int = 500
    ) -> list[MessageState]:
        with self._write() as conn:
            rows = conn.execute(
                f"UPDATE messages SET in_flight = 0, stale_at = ? WHERE message_sid IN ("
                f"SELECT message_sid FROM messages WHERE in_flight = 1 AND updated_at < ? "
                f"LIMIT ?) RETURNING {', '.join(MESSAGE_COLUMNS)}",
                (now, updated_before, limit),
            ).fetchall()
        return [message_from_row(row) for row in rows]

    def purge(self, updated_before: float, limit: int = 5000) -> int:
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                sids = [
                    (sid,)
                    for (sid,) in conn.execute(
                        "SELECT message_sid FROM messages WHERE updated_at < ? LIMIT ?",
                        (updated_before, limit),
                    )
                ]
                conn.executemany("DELETE FROM status_events WHERE message_sid = ?", sids)
                conn.executemany("DELETE FROM messages WHERE message_sid = ?", sids)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(sids)

    def history(self, message_sid: str) -> MessageHistory | None:
        with self._read() as conn:
            row = conn.execute(_SELECT_MESSAGE, (message_sid,)).fetchone()
            if row is None:
                return None
            events = conn.execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM status_events "
                "WHERE message_sid = ? ORDER BY received_at, id",
                (message_sid,),
            ).fetchall()
        return MessageHistory(message_from_row(row), [event_from_row(e) for e in events])

    def check_writable(self) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO readiness (id, checked_at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                (time.time(),),
            )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.Error as ex:
            raise StoreUnavailable(f"SQLite store {self.path}: {ex}") from ex

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._connection()
            fcntl.flock(self._local.lock_fd, fcntl.LOCK_EX)
            try:
                yield conn
            finally:
                fcntl.flock(self._local.lock_fd, fcntl.LOCK_UN)
        except (sqlite3.Error, OSError) as ex:
            raise StoreUnavailable(f"SQLite store {self.path}: {ex}") from ex

    def _connection(self) -> sqlite3.Connection:
        # One connection (and lock-file descriptor) per thread and per process: a connection
        # or an flock inherited across gunicorn's fork must never be used by the child.
        local = self._local
        if getattr(local, "conn", None) is None or local.pid != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=True
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            local.lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            local.conn, local.pid = conn, os.getpid()
        conn_: sqlite3.Connection = local.conn
        return conn_


def _origin(existing: MessageState | None, event: StatusEvent) -> float | None:
    """Creation time if any callback told us, else first sight (None: this is the first)."""
    if existing is not None and existing.created_at is not None:
        return existing.created_at
    if event.context.created_at is not None:
        return event.context.created_at
    return existing.first_seen_at if existing is not None else None
