"""The scale-out store: PostgreSQL shared by any number of replicas, each with several workers.

Transactions. `record_all` (the ingester's batches, reconcile's polls) first takes a
transaction-scoped advisory lock on each MessageSid of the batch
(`pg_advisory_xact_lock(hashtextextended(sid, 0))`, in sorted order, so two batches never
deadlock), then reads the messages (`FOR UPDATE`) and their histories in one statement,
decides the lifecycle in memory and writes the new events and changed messages. The locks
serialise every writer of one message, including its very first event, when there is no
message row yet to lock: two first callbacks (say `queued` and `sent`) applied together
would otherwise both see "new message" and the second upsert would overwrite the first. A
unique constraint and a row gate alone (`INSERT ... ON CONFLICT DO NOTHING` plus `FOR
UPDATE`) would catch a repeated (message, status) but not that. Writers of different messages
never wait for each other (a hash collision only serialises two messages), and the locks are
released by COMMIT or ROLLBACK, even if the connection dies. The UNIQUE (message_sid, status)
constraint stays as the backstop. `FOR UPDATE` on the message rows orders a batch against
the stale sweep and the purge, which claim rows with `FOR UPDATE SKIP LOCKED`. A webhook
request costs one round trip: its append to the inbox, in autocommit.

Fork safety. gunicorn forks workers after the master has opened (and closed) the store to
run migrations. The pool is opened lazily, on first use, in the process that uses it; a pool
found to belong to another pid is abandoned, never used or closed (closing it would send
Terminate on sockets the parent still owns).

Timeouts. A dead database must become a quick 503, not a hung worker: connecting gives up
after CONNECT_TIMEOUT, waiting for a pooled connection after POOL_TIMEOUT, and a statement
(advisory-lock waits included) after STATEMENT_TIMEOUT. The pool reconnects by itself in the
background when the server comes back; work that meets a pooled connection that died with the
old server moves on to another, so the first callbacks after an outage do not fail needlessly.
A worker started while the server is down still boots (and answers 503); the schema is
checked on the first call that reaches the server.

Time columns are double precision Unix seconds, as in SQLite, so both backends share one
row mapping (`records.py`); params and tags are JSONB, read back as text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextLoader

from exporter.lifecycle import Known, apply_all
from exporter.model import (
    Backlog,
    InboxEntry,
    MessageHistory,
    MessageState,
    Recorded,
    StatusEvent,
)
from exporter.store import Leadership, SpanEncoder, StaleSpanEncoder, StoreUnavailable
from exporter.store.migrations import Migration, latest_version, pending_steps, upgrade
from exporter.store.postgres_reconcile import RECONCILE_SCHEMA, PostgresReconcile
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
    MARK_READY,
    OUTBOX_BACKLOG,
    PENDING,
    PURGE_SPANS,
    UNEXPORTED_SPANS,
    for_libpq,
    for_psycopg,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3  # seconds; libpq's minimum is 2
POOL_TIMEOUT = 3.0  # wait for a pooled connection; only a down server makes anyone wait
STATEMENT_TIMEOUT_MS = 5000  # far beyond any callback's statements: a stuck server
# A worker killed mid-transaction must not keep a message locked for long.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30000
# A sync worker uses one connection per request, plus a scrape; the ingester one more for
# the span shipper.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
# psycopg_pool backs off exponentially while the server is down; giving up after a few
# seconds lets the next request start a fresh attempt instead of waiting out a long back-off.
RECONNECT_TIMEOUT = 10.0
# Keepalives detect a server that vanished without closing the socket (host down, partition).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}  # fmt: skip
# Any constant works: it only has to differ from the per-message keys, which are hashes.
MIGRATION_LOCK_KEY = 0x7477696C696F  # "twilio"
INGESTER_LOCK_KEY = MIGRATION_LOCK_KEY + 1

# Each step runs once, in order, with the schema_version row that records it, all in one
# transaction under MIGRATION_LOCK_KEY (see migrations.py).
MIGRATIONS = (
    Migration(
        1,
        """
CREATE TABLE IF NOT EXISTS messages (
    message_sid text PRIMARY KEY,
    status text NOT NULL,                  -- current status: never moves backwards
    in_flight boolean NOT NULL,            -- true while neither final nor stale
    first_seen_at double precision NOT NULL,  -- arrival of the first event (Unix seconds)
    updated_at double precision NOT NULL,  -- time of the latest event
    created_at double precision,           -- sender's creation time (?created=)
    final_at double precision,
    stale_at double precision,
    channel text NOT NULL,
    country text NOT NULL,
    to_number text,
    from_number text,
    account_sid text,
    messaging_service_sid text,
    error_code text,
    traceparent text,
    tags jsonb
);
-- Small (only in-flight rows): serves the in-flight gauge and the stale sweep.
CREATE INDEX IF NOT EXISTS messages_in_flight ON messages (updated_at, status) WHERE in_flight;
CREATE INDEX IF NOT EXISTS messages_updated_at ON messages (updated_at);
CREATE TABLE IF NOT EXISTS status_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_sid text NOT NULL,
    status text NOT NULL,
    received_at double precision NOT NULL,
    source text NOT NULL,                  -- callback | poll | event_stream
    out_of_order boolean NOT NULL,
    error_code text,
    reported_at double precision,          -- carrier's RawDlrDoneDate, read as UTC
    params jsonb NOT NULL,                 -- every posted parameter
    query text NOT NULL,                   -- the callback URL's query string as received
    UNIQUE (message_sid, status)
);
CREATE TABLE IF NOT EXISTS readiness (
    id integer PRIMARY KEY CHECK (id = 1),
    checked_at double precision
);
""",
    ),
    Migration(2, RECONCILE_SCHEMA),
    # The event's own time (Event Streams); NULL: the status was reached at arrival.
    Migration(3, "ALTER TABLE status_events ADD COLUMN IF NOT EXISTS occurred_at double precision"),
    Migration(
        4,
        """
-- Webhook requests as received, until the ingester applies them (and deletes them).
CREATE TABLE IF NOT EXISTS inbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL,                  -- callback | event_stream
    received_at double precision NOT NULL,
    body bytea NOT NULL,                   -- exactly as posted
    query text NOT NULL
);
-- Spans of applied events, until they are exported (and deleted).
CREATE TABLE IF NOT EXISTS span_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queued_at double precision NOT NULL,
    span text NOT NULL                     -- encoded span, see telemetry/tracing/outbox.py
);
""",
    ),
)
SCHEMA_VERSION = latest_version(MIGRATIONS)

_MESSAGE_FIELDS = ", ".join(MESSAGE_COLUMNS)
# Every message's lock, in the order of the (sorted) array: PostgreSQL evaluates a volatile
# function in the output list row by row, in the order the rows come.
_LOCK_MESSAGES = (
    "SELECT pg_advisory_xact_lock(hashtextextended(sid, 0)) FROM unnest(%s::text[]) AS sid"
)
_SELECT_MESSAGE = f"SELECT {_MESSAGE_FIELDS} FROM messages WHERE message_sid = %s"
# The messages' rows, locked against the sweep and the purge, with their histories (status
# and time reached, as two parallel arrays): a message with no row has no events either.
_SELECT_MESSAGES_AND_HISTORY = (
    f"SELECT {', '.join(f'm.{c}' for c in MESSAGE_COLUMNS)}, "
    "ARRAY(SELECT e.status FROM status_events e WHERE e.message_sid = m.message_sid "
    "ORDER BY e.id), "
    "ARRAY(SELECT coalesce(e.occurred_at, e.received_at) FROM status_events e "
    "WHERE e.message_sid = m.message_sid "
    "ORDER BY e.id) "
    "FROM messages m WHERE m.message_sid = ANY(%s) FOR UPDATE OF m"
)
# A batch's rows go in as one statement per table: each column as an array, unnested into
# rows. executemany would send a statement per row, and psycopg's work per statement is most
# of what the ingester spends on PostgreSQL.
_COLUMN_TYPES = {
    "message_sid": "text", "status": "text", "received_at": "float8", "source": "text",
    "out_of_order": "bool", "error_code": "text", "reported_at": "float8",
    "occurred_at": "float8", "params": "jsonb", "query": "text", "first_seen_at": "float8",
    "updated_at": "float8", "created_at": "float8", "final_at": "float8", "stale_at": "float8",
    "channel": "text", "country": "text", "to_number": "text", "from_number": "text",
    "account_sid": "text", "messaging_service_sid": "text", "traceparent": "text",
    "tags": "jsonb", "in_flight": "bool",
}  # fmt: skip


def _insert_rows(table: str, columns: Sequence[str]) -> str:
    """INSERT of rows given as one array per column (JSON as text, cast once unnested). The
    arrays go in binary (`%b`): psycopg's text format escapes every element."""
    arrays = ", ".join(
        f"%b::{'text' if _COLUMN_TYPES[c] == 'jsonb' else _COLUMN_TYPES[c]}[]" for c in columns
    )
    values = ", ".join(f"{c}::jsonb" if _COLUMN_TYPES[c] == "jsonb" else c for c in columns)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT {values} FROM unnest({arrays}) AS row ({', '.join(columns)})"
    )


_INSERT_EVENTS = _insert_rows("status_events", ("message_sid", *EVENT_COLUMNS))
_UPSERT_MESSAGES = (
    _insert_rows("messages", (*MESSAGE_COLUMNS, "in_flight"))
    + " ON CONFLICT (message_sid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*MESSAGE_COLUMNS[1:], "in_flight"))
)
_QUEUE_SPANS = "INSERT INTO span_outbox (queued_at, span) SELECT %s, unnest(%b::text[])"
_HISTORY_EVENTS = for_psycopg(HISTORY_EVENTS)
_APPEND_PQ = for_libpq(APPEND)
_APPEND_NAME = b"twilio_exporter_append"
_UNDEFINED_PREPARED_STATEMENT = b"26000"  # invalid_sql_statement_name
_APPEND_FORMATS = [pq.Format.TEXT, pq.Format.TEXT, pq.Format.BINARY, pq.Format.TEXT]
_PENDING = for_psycopg(PENDING)
_UNEXPORTED_SPANS = for_psycopg(UNEXPORTED_SPANS)
_PURGE_SPANS = for_psycopg(PURGE_SPANS)
_MARK_READY = for_psycopg(MARK_READY)
_SWEEP_STALE = (
    "UPDATE messages m SET in_flight = false, stale_at = %s FROM ("
    "SELECT message_sid FROM messages WHERE in_flight AND updated_at < %s "
    "ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED) claimed "
    "WHERE m.message_sid = claimed.message_sid "
    f"RETURNING {', '.join(f'm.{c}' for c in MESSAGE_COLUMNS)}"
)
_PURGE = (
    "WITH doomed AS (SELECT message_sid FROM messages WHERE updated_at < %s "
    "ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED), "
    "events AS (DELETE FROM status_events e USING doomed d WHERE e.message_sid = d.message_sid) "
    "DELETE FROM messages m USING doomed d WHERE m.message_sid = d.message_sid RETURNING 1"
)

# Pools abandoned in a forked child: kept referenced so that garbage collection never
# finalises their connections, which would close sockets the parent process still uses.
_ABANDONED: list[psycopg_pool.ConnectionPool[Any]] = []


class PostgresStore(PostgresReconcile):
    """Store backed by PostgreSQL; safe to share between replicas, processes and threads.

    A `ReconcileStore`: the reconcile methods come from PostgresReconcile."""

    def __init__(
        self, url: str, *, migrate: bool = True, pool_timeout: float = POOL_TIMEOUT
    ) -> None:
        self.url = url
        self._pool_timeout = pool_timeout
        self._conninfo = _conninfo(url)
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pid = 0
        self.schema_version = 0
        self._schema_ready = not migrate
        if migrate:
            try:
                self.migrate()
            except StoreUnavailable as ex:
                # A worker (re)started during an outage must still boot and answer 503s; the
                # schema is brought up to date by the first call that reaches the server.
                log.info("store not reachable yet, callbacks get 503 until it is: %s", ex)

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; returns the version the database is at.

        Safe when every worker of every replica starts at once: the steps run under one
        advisory lock, each in the same transaction as the version row that records it.
        Raises SchemaTooNew for a database upgraded by a newer release."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                current = _PostgresSchema(conn).read_version()
                if pending_steps("PostgreSQL", MIGRATIONS, current):  # most starts: no lock
                    current = _apply_migrations(conn)
        except psycopg.Error as ex:
            raise StoreUnavailable(self._problem(ex)) from ex
        self.schema_version, self._schema_ready = current, True
        return current

    def append(self, entry: InboxEntry) -> None:
        # Autocommit: the insert is its own transaction, one round trip.
        values = [
            entry.source.encode(),
            repr(entry.received_at).encode(),  # the shortest text that reads back exactly
            entry.body,
            entry.query.encode(),
        ]
        self._run(lambda conn: _append(conn, values))

    def pending(self, limit: int) -> list[InboxEntry]:
        rows = self._run(lambda conn: conn.execute(_PENDING, (limit,)).fetchall())
        return [
            InboxEntry(source, at, bytes(body), query, id_) for id_, source, at, body, query in rows
        ]

    def record(self, event: StatusEvent) -> Recorded:
        return self.record_all((event,))[0]

    def record_all(
        self,
        events: Sequence[StatusEvent],
        *,
        consumed: Sequence[int] = (),
        spans: SpanEncoder | None = None,
    ) -> list[Recorded]:
        def record(conn: psycopg.Connection[Any]) -> list[Recorded]:
            with conn.transaction():
                recorded = self._record_batch(conn, events)
                if consumed:
                    conn.execute("DELETE FROM inbox WHERE id = ANY(%s)", (list(consumed),))
                if spans is not None:
                    _queue_spans(conn, spans(events, recorded))
                return recorded

        return self._run(record)

    def _record_batch(
        self, conn: psycopg.Connection[Any], events: Sequence[StatusEvent]
    ) -> list[Recorded]:
        """Apply `events` in the caller's transaction: their messages locked (in one order
        for every writer: no deadlock between two batches) and read once, the lifecycle
        decided in memory, the new events and the changed messages written a statement each."""
        sids = sorted({event.message_sid for event in events})
        conn.execute(_LOCK_MESSAGES, (sids,))
        # A statement of its own: its snapshot is taken once the locks are held.
        known: dict[str, Known] = {
            row[0]: (message_from_row(row[:-2]), dict(zip(row[-2], row[-1], strict=True)))
            for row in conn.execute(_SELECT_MESSAGES_AND_HISTORY, (sids,))
        }
        recorded, changed = apply_all(known, events)
        event_rows, message_rows = written_rows(events, recorded, changed)
        if event_rows:
            conn.execute(_INSERT_EVENTS, _columns(event_rows))
        if message_rows:
            conn.execute(_UPSERT_MESSAGES, _columns(message_rows))
        return recorded

    def in_flight_counts(self) -> Mapping[str, int]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT status, count(*) FROM messages WHERE in_flight GROUP BY status"
            ).fetchall()
        )
        return dict(rows)

    def sweep_stale(
        self,
        updated_before: float,
        now: float,
        limit: int = 500,
        *,
        spans: StaleSpanEncoder | None = None,
    ) -> list[MessageState]:
        def sweep(conn: psycopg.Connection[Any]) -> list[MessageState]:
            with conn.transaction():
                rows = conn.execute(_SWEEP_STALE, (now, updated_before, limit)).fetchall()
                stale = [message_from_row(row) for row in rows]
                if spans is not None and stale:
                    _queue_spans(conn, spans(stale, now))
            return stale

        return self._run(sweep)

    def purge(self, updated_before: float, limit: int = 5000) -> int:
        return self._run(lambda conn: len(conn.execute(_PURGE, (updated_before, limit)).fetchall()))

    def purge_spans(self, queued_before: float) -> int:
        return self._run(lambda conn: conn.execute(_PURGE_SPANS, (queued_before,)).rowcount)

    def unexported_spans(self, limit: int) -> list[tuple[int, str]]:
        rows = self._run(lambda conn: conn.execute(_UNEXPORTED_SPANS, (limit,)).fetchall())
        return [(id_, span) for id_, span in rows]

    def remove_spans(self, ids: Sequence[int]) -> None:
        self._run(
            lambda conn: conn.execute("DELETE FROM span_outbox WHERE id = ANY(%s)", (list(ids),))
        )

    def backlog(self) -> Backlog:
        def read(conn: psycopg.Connection[Any]) -> Backlog:
            entries, oldest_entry = conn.execute(INBOX_BACKLOG).fetchone() or (0, None)
            spans, oldest_span = conn.execute(OUTBOX_BACKLOG).fetchone() or (0, None)
            return Backlog(entries, oldest_entry, spans, oldest_span)

        return self._run(read)

    def leadership(self) -> Leadership:
        return AdvisoryLeadership(self._conninfo)

    def history(self, message_sid: str) -> MessageHistory | None:
        def read(conn: psycopg.Connection[Any]) -> MessageHistory | None:
            with conn.transaction():  # one snapshot for the message and its events
                row = conn.execute(_SELECT_MESSAGE, (message_sid,)).fetchone()
                if row is None:
                    return None
                events = conn.execute(_HISTORY_EVENTS, (message_sid,)).fetchall()
            return MessageHistory(message_from_row(row), [event_from_row(e) for e in events])

        return self._run(read)

    def check_writable(self) -> None:
        # A write, not a ping: a read-only standby or a full disk must also read as not ready.
        self._run(lambda conn: conn.execute(_MARK_READY, (time.time(),)))

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close()
        elif pool is not None:
            _ABANDONED.append(pool)

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run `work` on a pooled connection; database trouble becomes StoreUnavailable.

        Connections that died while idle in the pool (the server restarted) fail on first
        use, and are dropped; the work moves on to the next, or to a fresh one. Each attempt
        is one whole transaction, so a retry never applies an event twice."""
        if not self._schema_ready:
            self.migrate()
        pool = self._open_pool()
        attempts = POOL_MAX_SIZE + 1  # every pooled connection may be a dead one
        for attempt in range(1, attempts + 1):
            try:
                with pool.connection() as conn:
                    try:
                        return work(conn)
                    except psycopg.OperationalError:
                        if conn.broken and attempt < attempts:
                            continue  # the pool discards a broken connection
                        raise
            except psycopg.Error as ex:
                raise StoreUnavailable(self._problem(ex)) from ex
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _open_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        # One pool per process, created on first use: after gunicorn's fork, never before.
        if self._pool is not None and self._pid != os.getpid():
            _ABANDONED.append(self._pool)
            self._pool = None
        if self._pool is None:
            pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = (
                psycopg_pool.ConnectionPool(
                    self._conninfo,
                    kwargs={"autocommit": True},
                    min_size=POOL_MIN_SIZE,
                    max_size=POOL_MAX_SIZE,
                    open=False,
                    configure=_configure,
                    timeout=self._pool_timeout,
                    reconnect_timeout=RECONNECT_TIMEOUT,
                    num_workers=1,
                    name=f"twilio-status-exporter-{os.getpid()}",
                )
            )
            pool.open(wait=False)  # a down server must not stop the worker from starting
            self._pool, self._pid = pool, os.getpid()
        return self._pool

    def _problem(self, ex: BaseException) -> str:
        if isinstance(ex, psycopg_pool.PoolTimeout):
            detail = (
                f"no connection within {self._pool_timeout:g} s; check that the server is up and "
                "reachable from this host"
            )
        else:
            detail = " ".join(str(ex).split()) or type(ex).__name__  # libpq's are multi-line
        return f"PostgreSQL: {detail}"


class AdvisoryLeadership:
    """The ingester's lock across replicas: a session advisory lock on a connection of its
    own, released by the server when that connection ends, so a replica that dies hands the
    work to another within the lock's next poll."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (INGESTER_LOCK_KEY,)).fetchone()
        except psycopg.Error as ex:
            raise StoreUnavailable(f"PostgreSQL: {' '.join(str(ex).split())}") from ex
        if row and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _queue_spans(conn: psycopg.Connection[Any], spans: Sequence[str]) -> None:
    if spans:
        conn.execute(_QUEUE_SPANS, (time.time(), list(spans)))


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column, for a statement of `_insert_rows`."""
    return [list(column) for column in zip(*rows, strict=True)]


def _append(conn: psycopg.Connection[Any], values: list[bytes]) -> None:
    """The request path's one statement, through psycopg's libpq layer (`pq`): every webhook
    request pays for it, and psycopg's cursor machinery (a cursor, a transformer, its
    generators) costs more CPU than the round trip itself. A statement prepared once per
    connection (the server keeps it for the session; a connection that has not got it yet
    prepares it on first use) spares the server parsing and planning each insert. The body
    goes as binary, the rest as text the server parses into the columns' types."""
    pgconn = conn.pgconn
    result = pgconn.exec_prepared(_APPEND_NAME, values, _APPEND_FORMATS)
    if _sqlstate(result) == _UNDEFINED_PREPARED_STATEMENT:
        _check(conn, pgconn.prepare(_APPEND_NAME, _APPEND_PQ, None))
        result = pgconn.exec_prepared(_APPEND_NAME, values, _APPEND_FORMATS)
    _check(conn, result)


def _sqlstate(result: pq.abc.PGresult) -> bytes | None:
    return result.error_field(pq.DiagnosticField.SQLSTATE)


def _check(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> None:
    """Raise a failed libpq result as the psycopg error psycopg itself would raise."""
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Per new connection: server-side timeouts, and JSONB read as text for records.py."""
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}")
    conn.adapters.register_loader("jsonb", TextLoader)


def _conninfo(url: str) -> str:
    """The URL plus our timeouts, unless the URL sets its own (the operator knows best)."""
    given = conninfo_to_dict(url)
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "twilio-status-exporter",
        **KEEPALIVES,
    }
    return make_conninfo(url, **{k: v for k, v in defaults.items() if k not in given})


def _apply_migrations(conn: psycopg.Connection[Any]) -> int:
    """Run the missing migrations under the migration lock; returns the version reached."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        # The version is read again under the lock: another process may have just upgraded.
        return upgrade("PostgreSQL", MIGRATIONS, _PostgresSchema(conn))


class _PostgresSchema:
    """The schema version as PostgreSQL records it: a schema_version row per step applied,
    written in the transaction that ran the step."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def read_version(self) -> int:
        exists = self._conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        found = self._conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        row = found.fetchone()
        return int(row[0]) if row else 0

    def apply(self, step: Migration) -> None:
        self._conn.execute(step.script)  # no parameters: several statements in one go
        self._conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
            (step.version, time.time()),
        )
