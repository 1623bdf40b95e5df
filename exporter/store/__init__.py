"""The durable record: one row per message, one row per accepted status event.

Every backend keeps the same contract: `record` is one atomic step that either finds the
(MessageSid, status) pair already recorded (a duplicate, nothing written) or writes the event
and advances the message, and only returns once that is committed.

Two more parts of the record make the write path cheap and traces durable: the inbox, where
a webhook request is appended as received (one insert, before its 200) until the ingester
applies it, and the span outbox, where the spans an applied event produced wait for export.
Applying a batch, removing its inbox entries and queueing its spans is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

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


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or written; the callback must be retried later (503)."""


# Encoded spans for the outbox, from what recording some events did (called inside the
# transaction that records them, so the spans commit with the events or not at all).
SpanEncoder = Callable[[Sequence[StatusEvent], Sequence[Recorded]], Sequence[str]]
# Encoded root spans of messages a sweep just marked stale, at the given time.
StaleSpanEncoder = Callable[[Sequence[MessageState], float], Sequence[str]]


class Leadership(Protocol):
    """Which process is a deployment's one ingester: a lock held for the life of a process,
    released by the operating system or the database when that process dies."""

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True while this process holds it."""
        ...

    def still_held(self) -> bool:
        """False once the lock was lost (its connection died): stop ingesting."""
        ...

    def release(self) -> None: ...


class Store(Protocol):
    """What the service needs from a backend (SQLite embedded, PostgreSQL for replicas)."""

    # The database's schema version (migrations.py), known once a call reached it; 0 before.
    schema_version: int

    def append(self, entry: InboxEntry) -> None:
        """Durably log a webhook request as received (one insert, one commit)."""
        ...

    def pending(self, limit: int) -> list[InboxEntry]:
        """The oldest inbox entries not yet applied, by id, with their ids. Only the one
        ingester of a deployment reads it, so an entry that committed late (PostgreSQL
        hands out ids before commit) is simply found by a later call: nothing is skipped."""
        ...

    def record(self, event: StatusEvent) -> Recorded:
        """Atomically deduplicate, store and apply one event; raise StoreUnavailable."""
        ...

    def record_all(
        self,
        events: Sequence[StatusEvent],
        *,
        consumed: Sequence[int] = (),
        spans: SpanEncoder | None = None,
    ) -> list[Recorded]:
        """`record` for each event in order, in one transaction: all are committed, or none
        (StoreUnavailable). In the same transaction, the inbox entries `consumed` are removed
        and the spans `spans` encodes are queued for export."""
        ...

    def unexported_spans(self, limit: int) -> list[tuple[int, str]]:
        """The oldest queued spans (id, encoded span), by id."""
        ...

    def remove_spans(self, ids: Sequence[int]) -> None:
        """Forget spans that were exported."""
        ...

    def backlog(self) -> Backlog:
        """How much accepted work waits: inbox entries and unexported spans."""
        ...

    def leadership(self) -> Leadership:
        """The lock that makes one process the deployment's ingester."""
        ...

    def in_flight_counts(self) -> Mapping[str, int]:
        """Messages neither final nor stale, by current status."""
        ...

    def sweep_stale(
        self,
        updated_before: float,
        now: float,
        limit: int = 500,
        *,
        spans: StaleSpanEncoder | None = None,
    ) -> list[MessageState]:
        """Mark in-flight messages not updated since `updated_before` stale; return those this
        call claimed (each exactly once, whichever process sweeps), their root spans queued
        in the same transaction."""
        ...

    def purge(self, updated_before: float, limit: int = 5000) -> int:
        """Delete messages (and their events) last updated before the retention horizon."""
        ...

    def purge_spans(self, queued_before: float) -> int:
        """Forget spans queued before the retention horizon and never exported (the collector
        was down all that time); returns how many."""
        ...

    def history(self, message_sid: str) -> MessageHistory | None: ...

    def check_writable(self) -> None:
        """Raise StoreUnavailable unless a write would succeed now (readiness)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReconcileStore(Store, Protocol):
    """A store that also keeps reconcile's progress and figures (exporter.reconcile).

    Separate from `Store` so a backend can serve callbacks before it learns these; reconcile
    and the `twilio_reconcile_*` metrics check for it at run time.
    """

    def stuck_messages(
        self,
        updated_before: float,
        polled_before: float,
        *,
        account_sid: str | None = None,
        after_sid: str = "",
        limit: int = 500,
    ) -> list[MessageState]:
        """In-flight messages not updated since `updated_before` nor polled since
        `polled_before`, of `account_sid` (or of no known account), by MessageSid after
        `after_sid`: keyset paging, so messages that stay stuck are not returned again."""
        ...

    def known_messages(self, message_sids: Sequence[str]) -> Mapping[str, KnownMessage]:
        """The given messages the store has seen (absent ones never were), with statuses."""
        ...

    def mark_polled(self, message_sids: Sequence[str], at: float) -> None:
        """Remember that the API was asked about these messages at `at`."""
        ...

    def prune_polls(self, polled_before: float) -> int:
        """Forget polls older than `polled_before` (they no longer hold a message back)."""
        ...

    def load_checkpoint(self, name: str) -> Checkpoint | None: ...

    def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def save_reconcile_run(self, run: ReconcileRun) -> int:
        """Insert (id None) or update a run's figures; return its id."""
        ...

    def reconcile_totals(self) -> ReconcileTotals: ...


def open_store(url: str, *, synchronous: str = "NORMAL") -> Store:
    """The backend named by EXPORTER_STORE."""
    if url.startswith("sqlite:///"):
        from exporter.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), synchronous=synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from exporter.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]}")
