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
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from exporter.lifecycle import Known, apply_all
from exporter.model import (
    Backlog,
    Checkpoint,
    InboxEntry,
    KnownMessage,
    MessageHistory,
    MessageState,
    ReconcileRun,
    ReconcileTotals,
    Recorded,
    StatusEvent,
)
from exporter.store import Leadership, SpanEncoder, StaleSpanEncoder, StoreUnavailable
from exporter.store.migrations import Migration, upgrade
from exporter.store.records import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    event_from_row,
    message_from_row,
    written_rows,
)
from exporter.store.statements import (
    APPEND,
    HISTORY_EVENTS,
    INBOX_BACKLOG,
    INSERT_RUN,
    LOAD_CHECKPOINT,
    MARK_READY,
    OUTBOX_BACKLOG,
    PENDING,
    PRUNE_POLLS,
    PURGE_SPANS,
    QUEUE_SPAN,
    RUN_COUNTS,
    SAVE_CHECKPOINT,
    UNEXPORTED_SPANS,
    UPDATE_RUN,
)

log = logging.getLogger(__name__)
# Each step runs once, in order, in one transaction with the user_version that records it
# (see migrations.py). Step 1 is the schema as the first release created it.
MIGRATIONS = (
    Migration(
        1,
        """
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
""",
    ),
    Migration(
        2,
        # Reconciliation with Twilio's REST API (`reconcile`): when each stuck message was
        # last polled (so a message stuck for days is asked about once per --stuck-after, not
        # every run), how far each listing walk got, and each run's figures (read by /metrics
        # at scrape time). Some databases at version 1 already have these tables.
        """
CREATE TABLE IF NOT EXISTS reconcile_polls (
    message_sid TEXT PRIMARY KEY,
    polled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reconcile_checkpoints (
    name TEXT PRIMARY KEY,             -- list:ACCOUNT_SID:SINCE:UNTIL
    next_page_url TEXT,                -- the page to read next (NULL: start, or completed)
    completed INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reconcile_runs (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,                  -- NULL while running, and forever after a crash
    succeeded INTEGER NOT NULL,
    checked INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    missed INTEGER NOT NULL,
    still_stuck INTEGER NOT NULL,
    not_found INTEGER NOT NULL,
    errors INTEGER NOT NULL
);
-- The event's own time (Event Streams); NULL: the status was reached at arrival.
ALTER TABLE status_events ADD COLUMN occurred_at REAL;
""",
    ),
    # Every write had to maintain this index, for the purge alone (which now walks by rowid).
    Migration(3, "DROP INDEX IF EXISTS messages_updated_at;"),
    Migration(
        4,
        """
-- Webhook requests as received, until the ingester applies them (and deletes them).
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,              -- callback | event_stream
    received_at REAL NOT NULL,
    body BLOB NOT NULL,                -- exactly as posted
    query TEXT NOT NULL
);
-- Spans of applied events, until they are exported (and deleted).
CREATE TABLE IF NOT EXISTS span_outbox (
    id INTEGER PRIMARY KEY,
    queued_at REAL NOT NULL,
    span TEXT NOT NULL                 -- encoded span, see telemetry/tracing/outbox.py
);
""",
    ),
)
_SELECT_MESSAGES = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages"
_SELECT_MESSAGE = f"{_SELECT_MESSAGES} WHERE message_sid = ?"
# Messages with their history: a row per recorded status.
_SELECT_MESSAGES_WITH_HISTORY = (
    f"SELECT {', '.join('m.' + c for c in MESSAGE_COLUMNS)}, e.status, "
    "coalesce(e.occurred_at, e.received_at) "
    "FROM messages m JOIN status_events e ON e.message_sid = m.message_sid "
    "WHERE m.message_sid IN ({marks})"
)
# SQLite's default limit on a statement's parameters is far above this.
_READ_CHUNK = 500
_UPSERT_MESSAGE = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}, in_flight) "
    f"VALUES ({', '.join('?' * (len(MESSAGE_COLUMNS) + 1))}) "
    "ON CONFLICT (message_sid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*MESSAGE_COLUMNS[1:], "in_flight"))
)
_STUCK_MESSAGES = (
    f"SELECT {', '.join('m.' + c for c in MESSAGE_COLUMNS)} FROM messages m "
    "LEFT JOIN reconcile_polls p ON p.message_sid = m.message_sid "
    "WHERE m.in_flight = 1 AND m.updated_at < ? AND (p.polled_at IS NULL OR p.polled_at < ?) "
    "AND (? IS NULL OR m.account_sid IS NULL OR m.account_sid = ?) AND m.message_sid > ? "
    "ORDER BY m.message_sid LIMIT ?"
)
_RECONCILE_TOTALS = (
    "SELECT "
    "coalesce(sum(CASE WHEN finished_at IS NOT NULL AND succeeded = 1 THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(CASE WHEN finished_at IS NOT NULL AND succeeded = 0 THEN 1 ELSE 0 END), 0), "
    + ", ".join(f"coalesce(sum({c}), 0)" for c in RUN_COUNTS)
    + ", max(finished_at), max(CASE WHEN succeeded = 1 THEN finished_at END) "
    "FROM reconcile_runs"
)
_SWEEP_STALE = (
    f"UPDATE messages SET in_flight = 0, stale_at = ? WHERE message_sid IN ("
    f"SELECT message_sid FROM messages WHERE in_flight = 1 AND updated_at < ? "
    f"LIMIT ?) RETURNING {', '.join(MESSAGE_COLUMNS)}"
)
# How often a writer re-checks that the database file may still be written (see _write).
WRITABLE_CHECK_INTERVAL = 1.0
_INSERT_EVENT = (
    f"INSERT INTO status_events (message_sid, {', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)
# The retention purge walks messages in rowid order, the order they were stored in, so no
# index on updated_at is needed (maintaining one cost every callback a page write). A message
# is never first seen after it was stored, so the first one first seen at or after the horizon
# ends the walk: everything stored later is newer still, bar events recorded late.
_PURGE_WALK = "SELECT message_sid, updated_at, first_seen_at FROM messages ORDER BY rowid"


# The ingester checkpoints this often (see _checkpoint_when_due); SQLite's own threshold is
# raised well above what a second of traffic writes, so it only acts without an ingester.
CHECKPOINT_INTERVAL = 1.0
WAL_AUTOCHECKPOINT_PAGES = 20_000


class SQLiteStore:
    """Store backed by one SQLite file; safe to share between processes and threads."""

    def __init__(self, path: str, *, synchronous: str = "NORMAL", busy_timeout: float = 10.0):
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._writable_checked_at = 0.0
        self._checkpointed_at = 0.0
        self.schema_version = 0  # known once the schema was checked, by the first write
        try:
            with self._write():
                pass  # creates or upgrades the schema
        except StoreUnavailable as ex:
            # A worker (re)started during an outage must still boot and answer 503s; the
            # schema is created by the first write that succeeds.
            log.info("store not writable yet, callbacks get 503 until it is: %s", ex)

    def append(self, entry: InboxEntry) -> None:
        with self._write() as conn:  # one statement: its own transaction
            conn.execute(APPEND, (entry.source, entry.received_at, entry.body, entry.query))

    def pending(self, limit: int) -> list[InboxEntry]:
        with self._read() as conn:
            rows = conn.execute(PENDING, (limit,)).fetchall()
        return [InboxEntry(source, at, body, query, id_) for id_, source, at, body, query in rows]

    def record(self, event: StatusEvent) -> Recorded:
        return self.record_all((event,))[0]

    def record_all(
        self,
        events: Sequence[StatusEvent],
        *,
        consumed: Sequence[int] = (),
        spans: SpanEncoder | None = None,
    ) -> list[Recorded]:
        # The batch is decided before the write lock is taken and checked under it: every
        # webhook worker's append waits for that lock, so it is held only to write. Should
        # another writer have changed these messages in between (a reconcile run, a sweep),
        # the batch is decided again under the lock.
        message_sids = {e.message_sid for e in events}
        batch = None
        if self.schema_version:  # else the first write creates the tables
            with self._read() as conn:
                batch = _DecidedBatch(_known(conn, message_sids), events, spans)
        with self._transaction() as conn:
            known = _known(conn, message_sids)
            if batch is None or batch.known != known:
                batch = _DecidedBatch(known, events, spans)
            self._write_batch(conn, batch, consumed)
        self._checkpoint_when_due()
        return batch.recorded

    def _write_batch(
        self, conn: sqlite3.Connection, batch: _DecidedBatch, consumed: Sequence[int]
    ) -> None:
        """Write what `batch` decided, remove the inbox entries it came from, queue its spans:
        in the caller's transaction."""
        conn.executemany(_INSERT_EVENT, batch.event_rows)
        conn.executemany(_UPSERT_MESSAGE, batch.message_rows)
        conn.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in consumed])
        _queue_spans(conn, batch.spans)

    def _checkpoint_when_due(self) -> None:
        """Copy the write-ahead log into the database every CHECKPOINT_INTERVAL, here, outside
        the write lock. Left to SQLite, the checkpoint runs inside whichever commit crosses
        its threshold, often a webhook append, while every other writer waits for the lock.
        A passive checkpoint never blocks writers. Connections checkpoint by themselves only
        past WAL_AUTOCHECKPOINT_PAGES: when no ingester applies batches."""
        now = time.monotonic()
        if now - self._checkpointed_at < CHECKPOINT_INTERVAL:
            return
        self._checkpointed_at = now
        try:
            with self._read() as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except StoreUnavailable as ex:
            # The batch is committed: its caller must go on to count it. The next checkpoint
            # (or SQLite's own) does this one's work.
            log.warning("WAL checkpoint failed, retried in %.0f s: %s", CHECKPOINT_INTERVAL, ex)

    def in_flight_counts(self) -> Mapping[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM messages WHERE in_flight = 1 GROUP BY status"
            ).fetchall()
        return dict(rows)

    def sweep_stale(
        self,
        updated_before: float,
        now: float,
        limit: int = 500,
        *,
        spans: StaleSpanEncoder | None = None,
    ) -> list[MessageState]:
        with self._transaction() as conn:
            rows = conn.execute(_SWEEP_STALE, (now, updated_before, limit)).fetchall()
            stale = [message_from_row(row) for row in rows]
            if spans is not None and stale:
                _queue_spans(conn, spans(stale, now))
        return stale

    def unexported_spans(self, limit: int) -> list[tuple[int, str]]:
        with self._read() as conn:
            rows: list[tuple[int, str]] = conn.execute(UNEXPORTED_SPANS, (limit,)).fetchall()
        return rows

    def remove_spans(self, ids: Sequence[int]) -> None:
        with self._write() as conn:
            conn.execute(
                f"DELETE FROM span_outbox WHERE id IN ({', '.join('?' * len(ids))})", list(ids)
            )

    def backlog(self) -> Backlog:
        with self._read() as conn:
            entries, oldest_entry = conn.execute(INBOX_BACKLOG).fetchone()
            spans, oldest_span = conn.execute(OUTBOX_BACKLOG).fetchone()
        return Backlog(entries, oldest_entry, spans, oldest_span)

    def leadership(self) -> Leadership:
        return FileLeadership(f"{self.path}.ingester.lock")

    def purge(self, updated_before: float, limit: int = 5000) -> int:
        """Delete messages last updated before `updated_before`, oldest stored first. One
        stored after a message first seen at or after the horizon waits for a later purge:
        only an event recorded long after its own time (a late poll) can be in that case."""
        with self._transaction() as conn:
            sids = _purge_candidates(conn, updated_before, limit)
            conn.executemany("DELETE FROM status_events WHERE message_sid = ?", sids)
            conn.executemany("DELETE FROM messages WHERE message_sid = ?", sids)
        return len(sids)

    def purge_spans(self, queued_before: float) -> int:
        with self._write() as conn:
            purged: int = conn.execute(PURGE_SPANS, (queued_before,)).rowcount
        return purged

    def history(self, message_sid: str) -> MessageHistory | None:
        with self._read() as conn:
            row = conn.execute(_SELECT_MESSAGE, (message_sid,)).fetchone()
            if row is None:
                return None
            events = conn.execute(HISTORY_EVENTS, (message_sid,)).fetchall()
        return MessageHistory(message_from_row(row), [event_from_row(e) for e in events])

    def check_writable(self) -> None:
        with self._write() as conn:
            conn.execute(MARK_READY, (time.time(),))

    def stuck_messages(
        self,
        updated_before: float,
        polled_before: float,
        *,
        account_sid: str | None = None,
        after_sid: str = "",
        limit: int = 500,
    ) -> list[MessageState]:
        with self._read() as conn:
            rows = conn.execute(
                _STUCK_MESSAGES,
                (updated_before, polled_before, account_sid, account_sid, after_sid, limit),
            ).fetchall()
        return [message_from_row(row) for row in rows]

    def known_messages(self, message_sids: Sequence[str]) -> Mapping[str, KnownMessage]:
        states: dict[str, MessageState] = {}
        statuses: dict[str, set[str]] = {}
        with self._read() as conn:
            for start in range(0, len(message_sids), 500):
                chunk = list(message_sids[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                for row in conn.execute(
                    f"{_SELECT_MESSAGES} WHERE message_sid IN ({marks})", chunk
                ):
                    states[row[0]] = message_from_row(row)
                for sid, status in conn.execute(
                    f"SELECT message_sid, status FROM status_events WHERE message_sid IN ({marks})",
                    chunk,
                ):
                    statuses.setdefault(sid, set()).add(status)
        return {
            sid: KnownMessage(state, frozenset(statuses.get(sid, ())))
            for sid, state in states.items()
        }

    def mark_polled(self, message_sids: Sequence[str], at: float) -> None:
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO reconcile_polls (message_sid, polled_at) VALUES (?, ?) "
                "ON CONFLICT (message_sid) DO UPDATE SET polled_at = excluded.polled_at",
                [(sid, at) for sid in message_sids],
            )

    def prune_polls(self, polled_before: float) -> int:
        with self._write() as conn:
            cursor = conn.execute(PRUNE_POLLS, (polled_before,))
        return cursor.rowcount

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        with self._read() as conn:
            row = conn.execute(LOAD_CHECKPOINT, (name,)).fetchone()
        return None if row is None else Checkpoint(row[0], row[1], bool(row[2]), row[3])

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._write() as conn:
            conn.execute(
                SAVE_CHECKPOINT,
                (
                    checkpoint.name,
                    checkpoint.next_page_url,
                    checkpoint.completed,
                    checkpoint.updated_at,
                ),
            )

    def save_reconcile_run(self, run: ReconcileRun) -> int:
        values = (
            run.started_at,
            run.finished_at,
            run.succeeded,
            *(getattr(run, c) for c in RUN_COUNTS),
        )
        with self._write() as conn:
            if run.id is None:
                row = conn.execute(INSERT_RUN, values).fetchone()
                run_id: int = row[0]
                return run_id
            conn.execute(UPDATE_RUN, (*values, run.id))
            return run.id

    def reconcile_totals(self) -> ReconcileTotals:
        with self._read() as conn:
            row = conn.execute(_RECONCILE_TOTALS).fetchone()
            last = conn.execute(
                "SELECT finished_at - started_at FROM reconcile_runs "
                "WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1"
            ).fetchone()
        succeeded, failed, *counts, last_run_at, last_success_at = row
        return ReconcileTotals(
            runs_succeeded=succeeded,
            runs_failed=failed,
            messages=dict(zip(RUN_COUNTS, counts, strict=True)),
            last_run_at=last_run_at,
            last_success_at=last_success_at,
            last_duration=last[0] if last else None,
        )

    def close(self) -> None:
        local = self._local
        if getattr(local, "conn", None) is None:
            return
        if local.pid == os.getpid():  # never touch a connection inherited across a fork
            with contextlib.suppress(sqlite3.Error):
                local.conn.close()
            os.close(local.lock_fd)
        local.conn = None

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.Error as ex:
            self.close()  # a connection that failed is reopened afresh on the next call
            raise StoreUnavailable(f"SQLite store {self.path}: {ex}") from ex

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._check_writable_file()
            conn = self._connection()
            if not self._local.opened_writable:
                # SQLite silently opens a write-protected file read-only; a connection opened
                # during an outage (by a scrape, say) must not be the one that writes after it.
                self.close()
                conn = self._connection()
            fcntl.flock(self._local.lock_fd, fcntl.LOCK_EX)
            try:
                if not self.schema_version:
                    self.schema_version = _upgrade_schema(conn)
                yield conn
            finally:
                fcntl.flock(self._local.lock_fd, fcntl.LOCK_UN)
        except (sqlite3.Error, OSError) as ex:
            self.close()
            raise StoreUnavailable(f"SQLite store {self.path}: {ex}") from ex

    def _check_writable_file(self) -> None:
        """Refuse writes once the file was made read-only (chmod, chattr +i, a read-only
        remount). A connection opened before keeps a writable descriptor and would go on
        appending to the WAL, so SQLite alone would not notice until its next checkpoint."""
        now = time.monotonic()
        if now - self._writable_checked_at < WRITABLE_CHECK_INTERVAL:
            return
        if os.path.exists(self.path) and not os.access(self.path, os.W_OK):
            raise OSError(f"{self.path} is not writable")
        self._writable_checked_at = now

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
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            local.lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            local.conn, local.pid = conn, os.getpid()
            local.opened_writable = os.access(self.path, os.W_OK)
        conn_: sqlite3.Connection = local.conn
        return conn_


class FileLeadership:
    """The ingester's lock on one machine: an flock on a file beside the database, released by
    the kernel when the process holding it dies, however it dies."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _known(conn: sqlite3.Connection, message_sids: set[str]) -> dict[str, Known]:
    """The messages among `message_sids` that the store has, with their histories."""
    known: dict[str, Known] = {}
    sids = list(message_sids)
    for start in range(0, len(sids), _READ_CHUNK):
        chunk = sids[start : start + _READ_CHUNK]
        query = _SELECT_MESSAGES_WITH_HISTORY.format(marks=", ".join("?" * len(chunk)))
        for row in conn.execute(query, chunk):
            entry = known.get(row[0])
            if entry is None:
                entry = known[row[0]] = (message_from_row(row[:-2]), {})
            entry[1][row[-2]] = row[-1]
    return known


class _DecidedBatch:
    """What a batch of events does to the messages found as `known`: the rows to write, the
    spans to queue, what each event did."""

    def __init__(
        self, known: Mapping[str, Known], events: Sequence[StatusEvent], spans: SpanEncoder | None
    ) -> None:
        self.known = known
        self.recorded, changed = apply_all(known, events)
        self.event_rows, self.message_rows = written_rows(events, self.recorded, changed)
        self.spans = spans(events, self.recorded) if spans is not None else ()


def _queue_spans(conn: sqlite3.Connection, spans: Sequence[str]) -> None:
    now = time.time()
    conn.executemany(QUEUE_SPAN, [(now, span) for span in spans])


def _purge_candidates(
    conn: sqlite3.Connection, updated_before: float, limit: int
) -> list[tuple[str]]:
    """Up to `limit` messages last updated before the horizon, oldest stored first. Walked in
    Python rather than bounded by a subquery, so that each call reads only the rows it deletes
    and the few it skips (messages first seen before the horizon, updated after it), however
    much of an old table is past the horizon."""
    sids: list[tuple[str]] = []
    walk = conn.execute(_PURGE_WALK)
    try:
        for sid, updated_at, first_seen_at in walk:
            if first_seen_at >= updated_before or len(sids) >= limit:
                break
            if updated_at < updated_before:
                sids.append((sid,))
    finally:
        walk.close()  # before the deletes: never modify a table a statement is still reading
    return sids


class _SQLiteSchema:
    """The schema version as SQLite records it: the database header's user_version, which a
    transaction changes atomically with the tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def read_version(self) -> int:
        version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    def apply(self, step: Migration) -> None:
        # One script, one transaction: executescript commits before it runs, so the step
        # cannot join a transaction opened by an execute() call.
        try:
            self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{step.script}\n;PRAGMA user_version = {step.version};\nCOMMIT;"
            )
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise


def _upgrade_schema(conn: sqlite3.Connection) -> int:
    """Create the tables, or bring a database made by an earlier release up to date; returns
    the schema version. Runs under the write flock: workers starting together never race."""
    return upgrade("SQLite", MIGRATIONS, _SQLiteSchema(conn))
