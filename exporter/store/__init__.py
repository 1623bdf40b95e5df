"""The durable record: one row per message, one row per accepted status event.

Every backend keeps the same contract: `record` is one atomic step that either finds the
(MessageSid, status) pair already recorded (a duplicate, nothing written) or writes the event
and advances the message, and only returns once that is committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from exporter.model import (
    Checkpoint,
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


class Store(Protocol):
    """What the service needs from a backend (SQLite embedded, PostgreSQL for replicas)."""

    # The database's schema version (migrations.py), known once a call reached it; 0 before.
    schema_version: int

    def record(self, event: StatusEvent) -> Recorded:
        """Atomically deduplicate, store and apply one event; raise StoreUnavailable."""
        ...

    def record_all(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        """`record` for each event in order, in one transaction: all are committed, or none
        (StoreUnavailable). An Event Streams batch costs one commit instead of one each."""
        ...

    def in_flight_counts(self) -> Mapping[str, int]:
        """Messages neither final nor stale, by current status."""
        ...

    def sweep_stale(
        self, updated_before: float, now: float, limit: int = 500
    ) -> list[MessageState]:
        """Mark in-flight messages not updated since `updated_before` stale; return those this
        call claimed (each exactly once, whichever worker or replica sweeps)."""
        ...

    def purge(self, updated_before: float, limit: int = 5000) -> int:
        """Delete messages (and their events) last updated before the retention horizon."""
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
