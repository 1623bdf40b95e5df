"""Reconcile's bookkeeping on PostgreSQL (the `ReconcileStore` half of `PostgresStore`).

Kept apart from postgres.py, which holds the callback path: these tables and queries serve
`twilio-status-exporter reconcile` and the `twilio_reconcile_*` metrics only. Semantics
follow the SQLite store's methods of the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from exporter.model import Checkpoint, KnownMessage, MessageState, ReconcileRun, ReconcileTotals
from exporter.store.records import MESSAGE_COLUMNS, message_from_row
from exporter.store.statements import (
    INSERT_RUN,
    LOAD_CHECKPOINT,
    PRUNE_POLLS,
    RUN_COUNTS,
    SAVE_CHECKPOINT,
    UPDATE_RUN,
    for_psycopg,
)

T = TypeVar("T")

# Step 2 of postgres.MIGRATIONS.
RECONCILE_SCHEMA = """
-- When each stuck message was last polled (so a message stuck for days is asked about once
-- per --stuck-after, not every run), how far each listing walk got, and each run's figures.
CREATE TABLE IF NOT EXISTS reconcile_polls (
    message_sid text PRIMARY KEY,
    polled_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS reconcile_checkpoints (
    name text PRIMARY KEY,                 -- list:ACCOUNT_SID:SINCE:UNTIL
    next_page_url text,                    -- the page to read next (NULL: start, or completed)
    completed boolean NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS reconcile_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at double precision NOT NULL,
    finished_at double precision,          -- NULL while running, and forever after a crash
    succeeded boolean NOT NULL,
    checked integer NOT NULL,
    updated integer NOT NULL,
    missed integer NOT NULL,
    still_stuck integer NOT NULL,
    not_found integer NOT NULL,
    errors integer NOT NULL
);
"""
_PRUNE_POLLS = for_psycopg(PRUNE_POLLS)
_LOAD_CHECKPOINT = for_psycopg(LOAD_CHECKPOINT)
_SAVE_CHECKPOINT = for_psycopg(SAVE_CHECKPOINT)
_INSERT_RUN = for_psycopg(INSERT_RUN)
_UPDATE_RUN = for_psycopg(UPDATE_RUN)
_STUCK_MESSAGES = (
    f"SELECT {', '.join('m.' + c for c in MESSAGE_COLUMNS)} FROM messages m "
    "LEFT JOIN reconcile_polls p ON p.message_sid = m.message_sid "
    "WHERE m.in_flight AND m.updated_at < %s AND (p.polled_at IS NULL OR p.polled_at < %s) "
    "AND (%s::text IS NULL OR m.account_sid IS NULL OR m.account_sid = %s::text) "
    "AND m.message_sid > %s ORDER BY m.message_sid LIMIT %s"
)
_RECONCILE_TOTALS = (
    "SELECT "
    "count(*) FILTER (WHERE finished_at IS NOT NULL AND succeeded), "
    "count(*) FILTER (WHERE finished_at IS NOT NULL AND NOT succeeded), "
    + ", ".join(f"coalesce(sum({c}), 0)" for c in RUN_COUNTS)
    + ", max(finished_at), max(finished_at) FILTER (WHERE succeeded), "
    "(SELECT finished_at - started_at FROM reconcile_runs "
    "WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1) "
    "FROM reconcile_runs"
)


class PostgresReconcile:
    """Reconcile's methods; the class that mixes this in provides `_run`."""

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        raise NotImplementedError

    def stuck_messages(
        self,
        updated_before: float,
        polled_before: float,
        *,
        account_sid: str | None = None,
        after_sid: str = "",
        limit: int = 500,
    ) -> list[MessageState]:
        values = (updated_before, polled_before, account_sid, account_sid, after_sid, limit)
        rows = self._run(lambda conn: conn.execute(_STUCK_MESSAGES, values).fetchall())
        return [message_from_row(row) for row in rows]

    def known_messages(self, message_sids: Sequence[str]) -> Mapping[str, KnownMessage]:
        sids = list(message_sids)

        def read(conn: psycopg.Connection[Any]) -> Mapping[str, KnownMessage]:
            with conn.transaction():  # one snapshot for the messages and their statuses
                states = {
                    row[0]: message_from_row(row)
                    for row in conn.execute(
                        f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages "
                        "WHERE message_sid = ANY(%s)",
                        (sids,),
                    )
                }
                statuses: dict[str, set[str]] = {}
                for sid, status in conn.execute(
                    "SELECT message_sid, status FROM status_events WHERE message_sid = ANY(%s)",
                    (sids,),
                ):
                    statuses.setdefault(sid, set()).add(status)
            return {
                sid: KnownMessage(state, frozenset(statuses.get(sid, ())))
                for sid, state in states.items()
            }

        return self._run(read)

    def mark_polled(self, message_sids: Sequence[str], at: float) -> None:
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO reconcile_polls (message_sid, polled_at) "
                "SELECT DISTINCT unnest(%s::text[]), %s "
                "ON CONFLICT (message_sid) DO UPDATE SET polled_at = excluded.polled_at",
                (list(message_sids), at),
            )
        )

    def prune_polls(self, polled_before: float) -> int:
        return self._run(lambda conn: conn.execute(_PRUNE_POLLS, (polled_before,)).rowcount)

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        row = self._run(lambda conn: conn.execute(_LOAD_CHECKPOINT, (name,)).fetchone())
        return None if row is None else Checkpoint(row[0], row[1], bool(row[2]), row[3])

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._run(
            lambda conn: conn.execute(
                _SAVE_CHECKPOINT,
                (
                    checkpoint.name,
                    checkpoint.next_page_url,
                    checkpoint.completed,
                    checkpoint.updated_at,
                ),
            )
        )

    def save_reconcile_run(self, run: ReconcileRun) -> int:
        values = (
            run.started_at,
            run.finished_at,
            run.succeeded,
            *(getattr(run, c) for c in RUN_COUNTS),
        )

        def write(conn: psycopg.Connection[Any]) -> int:
            if run.id is None:
                row = conn.execute(_INSERT_RUN, values).fetchone()
                assert row is not None  # INSERT ... RETURNING always returns the row
                return int(row[0])
            conn.execute(_UPDATE_RUN, (*values, run.id))
            return run.id

        return self._run(write)

    def reconcile_totals(self) -> ReconcileTotals:
        row = self._run(lambda conn: conn.execute(_RECONCILE_TOTALS).fetchone())
        assert row is not None  # an aggregate always returns one row
        succeeded, failed, *counts, last_run_at, last_success_at, last_duration = row
        return ReconcileTotals(
            runs_succeeded=succeeded,
            runs_failed=failed,
            messages={name: int(count) for name, count in zip(RUN_COUNTS, counts, strict=True)},
            last_run_at=last_run_at,
            last_success_at=last_success_at,
            last_duration=last_duration,
        )
