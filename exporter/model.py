"""The domain's vocabulary and value types: statuses, status events, messages, what recording an
event did, and reconcile's bookkeeping. Pure data: no I/O, no framework, nothing else of the
package imported, so every layer can name these types."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Twilio's order: accepted/scheduled < queued < sending < sent < delivered/undelivered/failed
# < read. canceled ends a scheduled message; partially_delivered shares delivery's rank but is
# not final. Inbound messages go receiving -> received.
RANKS: Mapping[str, int] = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "receiving": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "partially_delivered": 4,
    "received": 4,
    "read": 5,
}


KNOWN_STATUSES = frozenset(RANKS)


# `received` ends an inbound message the way `delivered` ends an outbound one; without it,
# every inbound message would sit "in flight" until it went stale.
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "canceled", "read", "received"})


FAILED_STATUSES = frozenset({"failed", "undelivered"})


IN_FLIGHT_STATUSES = tuple(sorted(KNOWN_STATUSES - FINAL_STATUSES, key=lambda s: (RANKS[s], s)))


OTHER = "other"


def normalize_status(raw: str) -> str:
    """The status as recorded: known statuses in lower case, anything else as received."""
    lowered = raw.strip().lower()
    return lowered if lowered in KNOWN_STATUSES else raw


def status_label(status: str) -> str:
    """Bounded metric label for a status: unknown values become `other`."""
    return status if status in KNOWN_STATUSES else OTHER


def is_final(status: str | None) -> bool:
    return status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Transition:
    """What one newly recorded status did to its message."""

    status: str
    at: float
    previous_status: str | None
    current_status: str
    out_of_order: bool
    # The stage this one started from (latest recorded lower-ranked stage), None = the origin.
    from_status: str | None
    started_at: float
    # True when this status is the message's first final one (the trace's root span ends here).
    reached_final: bool
    # True when nothing was recorded for the message before this status.
    first_sight: bool


ERROR_CODE = re.compile(r"^[0-9]{5}$")


@dataclass(frozen=True, slots=True)
class CallbackContext:
    """What the sender put in the StatusCallback URL's query string."""

    traceparent: str | None = None
    created_at: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One reported status of one message, from a callback, a poll or an event stream."""

    message_sid: str
    status: str
    received_at: float
    source: str = "callback"
    error_code: str | None = None
    channel: str = "sms"
    to: str | None = None
    from_: str | None = None
    country: str = ""
    account_sid: str | None = None
    messaging_service_sid: str | None = None
    # Carrier's delivery-receipt time (RawDlrDoneDate): minute precision, treated as UTC.
    reported_at: float | None = None
    raw_dlr_done_date: str | None = None
    # When the status was reached, where the source says so (an Event Streams event's own
    # timestamp); None means at arrival, as for a StatusCallback.
    occurred_at: float | None = None
    context: CallbackContext = field(default_factory=CallbackContext)
    # Every posted parameter (a callback's form), or an event's fields: the audit trail.
    params: Mapping[str, object] = field(default_factory=dict)
    query: str = ""
    # Reported by Event Streams only: message segments and the network codes.
    segments: int | None = None
    mcc: str | None = None
    mnc: str | None = None

    @property
    def at(self) -> float:
        """The status's time in the lifecycle: when it occurred if known, else its arrival
        (never later than its arrival: a sender's clock running fast moves nothing forward)."""
        if self.occurred_at is None:
            return self.received_at
        return min(self.occurred_at, self.received_at)

    @property
    def lag_reference(self) -> float | None:
        """The event time Twilio reports, for callback lag: an event's own timestamp, else
        the carrier's RawDlrDoneDate."""
        return self.occurred_at if self.occurred_at is not None else self.reported_at

    @property
    def status_label(self) -> str:
        return status_label(self.status)

    @property
    def error_code_label(self) -> str:
        """Five-digit code on failed/undelivered, `other` if not a code, "" on other statuses."""
        if self.status not in FAILED_STATUSES:
            return ""
        if self.error_code and ERROR_CODE.match(self.error_code):
            return self.error_code
        return OTHER if self.error_code else ""


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


# Where a status report came from: the two webhook inputs are logged as received and applied
# later; a poll (reconcile) is applied as it is made.
CALLBACK = "callback"
EVENT_STREAM = "event_stream"
POLL = "poll"


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A webhook request as accepted: durable before its 200, applied later by the ingester.

    `body` is exactly what Twilio posted (a StatusCallback form, or an Event Streams batch of
    CloudEvents), `query` the URL's query string: everything needed to decode it again.
    """

    source: str  # CALLBACK or EVENT_STREAM
    received_at: float
    body: bytes
    query: str
    id: int | None = None  # assigned by the store


@dataclass(frozen=True, slots=True)
class Backlog:
    """Work accepted but not done yet: inbox entries not applied, spans not exported."""

    entries: int = 0
    oldest_entry_at: float | None = None  # received_at of the oldest unapplied entry
    spans: int = 0
    oldest_span_at: float | None = None  # when the oldest unexported span was recorded
