"""What became of every webhook request and event, counted in one place.

Refusals are known at the door (a bad signature, a malformed body, a store that cannot take
the request); acceptance and duplicates only once the ingester applied the request, since
deciding them needs the message's history.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.inputs.event_streams import StreamItem
from exporter.model import CALLBACK, Recorded, StatusEvent
from exporter.telemetry.metrics import Metrics


class Outcomes:
    """`twilio_status_callbacks_total`, `twilio_stream_requests_total` and
    `twilio_stream_events_total`, for every input."""

    def __init__(self, metrics: Metrics) -> None:
        self._callbacks = metrics.callbacks
        self._requests = metrics.stream_requests
        self._events = metrics.stream_events
        self._store_errors = metrics.store_errors

    def callback_refused(self, outcome: str) -> None:
        """invalid_signature (403) or malformed (400/413/415)."""
        self._callbacks(outcome).inc()

    def callback_not_recorded(self) -> None:
        """The store could not take a verified callback (503: Twilio retries it)."""
        self._callbacks("error").inc()
        self._store_errors("record").inc()

    def delivery_refused(self, outcome: str) -> None:
        """An Event Streams request refused whole: invalid_signature or malformed."""
        self._requests(outcome).inc()

    def delivery_not_recorded(self, items: Iterable[StreamItem]) -> None:
        """The store could not take a verified delivery (503): its usable events count as
        errors, Twilio redelivers them."""
        self._requests("error").inc()
        self._store_errors("record").inc()
        for item in items:
            if item.event is not None:
                self._events(item.type_label, "error").inc()

    def delivery_accepted(self, items: Iterable[StreamItem]) -> None:
        """An Event Streams request logged: its unusable events count now, the usable ones
        when applied."""
        self._requests("accepted").inc()
        for item in items:
            if item.event is None:
                self._events(item.type_label, "ignored" if item.ignored else "malformed").inc()

    def applied(self, event: StatusEvent, recorded: Recorded, type_label: str | None) -> None:
        """An event applied: accepted, or a duplicate of a status already recorded. Polls
        count in neither counter: they were no webhook request."""
        outcome = "duplicate" if recorded.duplicate else "accepted"
        if type_label is not None:
            self._events(type_label, outcome).inc()
        elif event.source == CALLBACK:
            self._callbacks(outcome).inc()
