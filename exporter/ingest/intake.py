"""The door of the write path: a verified webhook request is appended to the inbox, exactly
as posted, and that one insert is all the request waits for. A 200 after `accept_*` means
the request is durable; the ingester applies it within moments."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exporter.ingest.outcomes import Outcomes
from exporter.inputs.event_streams import StreamItem
from exporter.model import CALLBACK, EVENT_STREAM, InboxEntry
from exporter.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class Intake:
    """Appends accepted requests and counts the ones refused at the door."""

    def __init__(self, store: Store, outcomes: Outcomes) -> None:
        self._store = store
        self.outcomes = outcomes

    def accept_callback(self, body: bytes, query: str, received_at: float) -> None:
        """Log a verified StatusCallback; StoreUnavailable (counted) if it was not logged."""
        try:
            self._store.append(InboxEntry(CALLBACK, received_at, body, query))
        except Exception as ex:
            _log_not_recorded("callback", ex)
            self.outcomes.callback_not_recorded()
            raise

    def accept_delivery(
        self, body: bytes, query: str, received_at: float, items: Sequence[StreamItem]
    ) -> None:
        """Log a verified Event Streams delivery made of `items`; its unusable ones are counted
        now. StoreUnavailable (counted) if it was not logged. Nothing to log without a
        usable event (a batch of the sink's test events, say)."""
        if not any(item.event is not None for item in items):
            self.outcomes.delivery_accepted(items)
            return
        try:
            self._store.append(InboxEntry(EVENT_STREAM, received_at, body, query))
        except Exception as ex:
            _log_not_recorded("Event Streams delivery", ex)
            self.outcomes.delivery_not_recorded(items)
            raise
        self.outcomes.delivery_accepted(items)


def _log_not_recorded(what: str, ex: Exception) -> None:
    # A bug's traceback is logged by the app's error handler.
    if isinstance(ex, StoreUnavailable):
        log.error("%s not recorded, answering 503: %s", what, ex)
