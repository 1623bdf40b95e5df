"""The simulator's vocabulary: what traffic to generate, what one planned callback or event
is, and what one planned HTTP request is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlencode

QUERY_FEATURES = frozenset({"traceparent", "created", "tags"})

# Destination mix (ISO region, weight): several countries, US-heavy like most senders.
DEFAULT_REGIONS: tuple[tuple[str, float], ...] = (
    ("US", 40.0),
    ("GB", 10.0),
    ("IN", 10.0),
    ("DE", 8.0),
    ("BR", 8.0),
    ("MX", 6.0),
    ("CA", 5.0),
    ("FR", 5.0),
    ("AU", 4.0),
    ("NG", 4.0),
)


class Input(StrEnum):
    """How Twilio reports a status to the exporter: a StatusCallback or an Event Streams event."""

    CALLBACKS = "callbacks"
    EVENTS = "events"


class Outcome(StrEnum):
    """How the exporter should count a callback: its `outcome` label on
    twilio_status_callbacks_total."""

    ACCEPTED = "accepted"
    OUT_OF_ORDER = "out_of_order"  # accepted, and also counted as out of order
    DUPLICATE = "duplicate"
    INVALID_SIGNATURE = "invalid_signature"


@dataclass(frozen=True)
class TrafficProfile:
    """What traffic to generate. Rates are probabilities per callback.

    `rate` is the target statuses delivered per real second, callbacks and events together
    (0 = as fast as possible: `due` is then only an ordering). `time_compression` divides
    every lifecycle delay: 60 shows one minute of lifecycle per real second. `epoch` is the
    wall-clock time of the simulation's start. `inputs` are the ways statuses are reported;
    the rates of disorder, duplicates and forgeries apply to each input on its own.
    """

    rate: float = 20.0
    time_compression: float = 60.0
    duplicate_rate: float = 0.02
    out_of_order_rate: float = 0.02
    invalid_signature_rate: float = 0.0
    initial_status_rate: float = 0.02
    query: frozenset[str] = QUERY_FEATURES
    regions: tuple[tuple[str, float], ...] = DEFAULT_REGIONS
    epoch: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z: reproducible unless told otherwise
    inputs: frozenset[Input] = frozenset({Input.CALLBACKS})

    def __post_init__(self) -> None:
        probabilities = (
            "duplicate_rate",
            "out_of_order_rate",
            "invalid_signature_rate",
            "initial_status_rate",
        )
        for name in probabilities:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0 callbacks/s, got {self.rate}")
        if self.time_compression <= 0:
            raise ValueError(f"time_compression must be > 0, got {self.time_compression}")
        unknown = self.query - QUERY_FEATURES
        if unknown:
            raise ValueError(f"unknown query features {sorted(unknown)}; use {QUERY_FEATURES}")
        if not self.inputs:
            raise ValueError("inputs must name at least one of callbacks, events")


@dataclass(frozen=True)
class ScheduledCallback:
    """One StatusCallback request Twilio would make, and when (real seconds after start)."""

    due: float
    lifecycle_time: float  # uncompressed seconds since the message was created
    message_sid: str
    status: str
    params: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)
    expected: Outcome = Outcome.ACCEPTED
    concurrent_copy: bool = False  # a duplicate sent at the same moment on another connection

    def url(self, base: str) -> str:
        """The full callback URL (the signed one): `base` plus this message's query."""
        return with_query(base, self.query)

    def body(self) -> bytes:
        """The form-encoded request body, as Twilio posts it."""
        return urlencode(self.params).encode("ascii")


@dataclass(frozen=True)
class ScheduledEvent:
    """One Event Streams CloudEvent reporting a status, and when it is due (real seconds after
    start). Copies of an event (retries, forgeries) share its `envelope` and `data`."""

    due: float
    lifecycle_time: float  # uncompressed seconds since the message was created
    message_sid: str
    status: str
    envelope: dict[str, str]  # the CloudEvent's attributes: specversion, type, id, time, ...
    data: dict[str, object]  # without statusCallBackUrl, which depends on the callback URL
    query: str = ""  # the message's StatusCallback query, encoded (once per message: it is hot)
    expected: Outcome = Outcome.ACCEPTED
    concurrent_copy: bool = False  # a redelivery sent at the same moment on another connection

    @property
    def id(self) -> str:
        """The CloudEvent id: the same for every delivery of this (message, status)."""
        return self.envelope["id"]

    def cloud_event(self, callback_url: str) -> dict[str, object]:
        """The event as posted: `data.statusCallBackUrl` is `callback_url` with the message's
        query, the URL the message named as its StatusCallback."""
        data = {**self.data, "statusCallBackUrl": with_query(callback_url, self.query)}
        return {**self.envelope, "data": data}


Scheduled = ScheduledCallback | ScheduledEvent


@dataclass(frozen=True)
class PlannedRequest:
    """One HTTP request of the run: where it goes, what it carries, what the answer should be.

    `expected` has one outcome per status it reports: one for a callback, one per event."""

    input: Input
    url: str  # the full URL, query included: the one that is signed
    body: bytes
    headers: dict[str, str]
    expected: tuple[Outcome, ...]

    @property
    def forged(self) -> bool:
        """Signed with the wrong token on purpose: the answer should be a 403."""
        return all(e is Outcome.INVALID_SIGNATURE for e in self.expected)


def with_query(url: str, query: Mapping[str, str] | str) -> str:
    """`url` with `query` (parameters, or already encoded) appended, after `&` when it
    already has a query."""
    if not query:
        return url
    separator = "&" if "?" in url else "?"
    return url + separator + (query if isinstance(query, str) else urlencode(query))


def rfc3339(timestamp: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds and a Z, as Twilio writes times."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
