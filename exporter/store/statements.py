"""SQL that both backends run as written: one text, in qmark style (`?`) for sqlite3;
PostgreSQL's psycopg takes each through `for_psycopg`. Statements that differ by dialect
(booleans, FILTER, ANY, SKIP LOCKED) stay with their backend."""

from __future__ import annotations

from exporter.store.records import EVENT_COLUMNS

# Each reconcile run's figures: columns of reconcile_runs, fields of ReconcileRun.
RUN_COUNTS = ("checked", "updated", "missed", "still_stuck", "not_found", "errors")

# A message's events in lifecycle order: when each happened (Event Streams), else arrival.
HISTORY_EVENTS = (
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM status_events "
    "WHERE message_sid = ? ORDER BY coalesce(occurred_at, received_at), id"
)
# The inbox: webhook requests as received, until applied.
APPEND = "INSERT INTO inbox (source, received_at, body, query) VALUES (?, ?, ?, ?)"
PENDING = "SELECT id, source, received_at, body, query FROM inbox ORDER BY id LIMIT ?"
INBOX_BACKLOG = "SELECT count(*), min(received_at) FROM inbox"
# The span outbox: spans of applied events, until exported.
QUEUE_SPAN = "INSERT INTO span_outbox (queued_at, span) VALUES (?, ?)"
UNEXPORTED_SPANS = "SELECT id, span FROM span_outbox ORDER BY id LIMIT ?"
OUTBOX_BACKLOG = "SELECT count(*), min(queued_at) FROM span_outbox"
PURGE_SPANS = "DELETE FROM span_outbox WHERE queued_at < ?"
MARK_READY = (
    "INSERT INTO readiness (id, checked_at) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
)
PRUNE_POLLS = "DELETE FROM reconcile_polls WHERE polled_at < ?"
LOAD_CHECKPOINT = (
    "SELECT name, next_page_url, completed, updated_at FROM reconcile_checkpoints WHERE name = ?"
)
SAVE_CHECKPOINT = (
    "INSERT INTO reconcile_checkpoints (name, next_page_url, completed, updated_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
    "next_page_url = excluded.next_page_url, completed = excluded.completed, "
    "updated_at = excluded.updated_at"
)
# Values: started_at, finished_at, succeeded, then RUN_COUNTS (and the id, to update).
INSERT_RUN = (
    f"INSERT INTO reconcile_runs (started_at, finished_at, succeeded, {', '.join(RUN_COUNTS)}) "
    f"VALUES ({', '.join('?' * (3 + len(RUN_COUNTS)))}) RETURNING id"
)
UPDATE_RUN = (
    "UPDATE reconcile_runs SET started_at = ?, finished_at = ?, succeeded = ?, "
    + ", ".join(f"{c} = ?" for c in RUN_COUNTS)
    + " WHERE id = ?"
)


def for_psycopg(statement: str) -> str:
    """The statement with psycopg's `%s` placeholders (none of these texts holds a literal
    `?` or `%`)."""
    return statement.replace("?", "%s")


def for_libpq(statement: str) -> bytes:
    """The statement with libpq's own numbered placeholders, `$1, $2, ...`, as libpq takes it
    (psycopg's `pq` layer, for the request path's append)."""
    first, *rest = statement.split("?")
    return (first + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))).encode()
