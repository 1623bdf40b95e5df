"""The durable record: one row per message, one row per accepted status event.

Every backend keeps the same contract: `record` is one atomic step that either finds the
(MessageSid, status) pair already recorded (a duplicate, nothing written) or writes the event
and advances the message, and only returns once that is committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from exporter.events import StatusEvent
from exporter.lifecycle import Transition


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or written; the callback must be retried later (503)."""


@dataclass(frozen=True, slots=True)
class MessageState:
    """A message's lifecycle as recorded: current status, times and the sender's context."""

    message_sid: str
    status: str
    first_seen_at: float
    updated_at: float
    created_at: float | None = None
    final_at: float | None = None
    stale_at: float | None = None
    channel: str = "sms"
    country: str = ""
    to: str | None = None
    from_: str | None = None
    account_sid: str | None = None
    messaging_service_sid: str | None = None
    error_code: str | None = None
    traceparent: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> float:
        """Where the message's clock starts: its creation if known, else its first sight."""
        return self.created_at if self.created_at is not None else self.first_seen_at


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of recording one event: a duplicate, or the transition it caused."""

    message: MessageState
    transition: Transition | None  # None for a duplicate

    @property
    def duplicate(self) -> bool:
        return self.transition is None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored status event, as `show` prints it."""

    status: str
    received_at: float
    source: str
    out_of_order: bool
    error_code: str | None
    reported_at: float | None
    occurred_at: float | None  # the event's own time (Event Streams); None: at arrival
    params: Mapping[str, object]
    query: str


@dataclass(frozen=True, slots=True)
class MessageHistory:
    message: MessageState
    events: Sequence[EventRecord]


@dataclass(frozen=True, slots=True)
class KnownMessage:
    """A message as reconcile compares it with the API: its state and every recorded status."""

    message: MessageState
    statuses: frozenset[str]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far reconcile's walk of one listing got: the next page to read, or done."""

    name: str
    next_page_url: str | None
    completed: bool
    updated_at: float


@dataclass(frozen=True, slots=True)
class ReconcileRun:
    """One reconcile run's figures, saved as it goes so a crashed run still counts."""

    started_at: float
    finished_at: float | None = None  # None while running, or when the run crashed
    succeeded: bool = False
    checked: int = 0
    updated: int = 0
    missed: int = 0
    still_stuck: int = 0
    not_found: int = 0
    errors: int = 0
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ReconcileTotals:
    """Every reconcile run summed up, for the `twilio_reconcile_*` metrics at scrape time."""

    runs_succeeded: int = 0
    runs_failed: int = 0
    messages: Mapping[str, int] = field(default_factory=dict)  # result -> count
    last_run_at: float | None = None
    last_success_at: float | None = None
    last_duration: float | None = None


class Store(Protocol):
    """What the service needs from a backend (SQLite embedded, PostgreSQL for replicas)."""

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
