"""The ingester: applies the inbox in batches. One per deployment (a lock decides which), so
every accepted request is applied exactly once, in the order it was accepted.

An entry is decoded again from what was posted (a callback's form, an Event Streams batch),
its events applied with the entry's removal in one transaction: a crash either applied the
whole entry or left it for the next ingester. An entry that cannot be decoded any more (the
door already refused what it could not read, so only a changed parser gets here) is removed
and logged rather than retried forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.ingest.applier import Applier
from exporter.ingest.outcomes import Outcomes
from exporter.inputs.callback_form import MalformedCallback, parse_callback, parse_form
from exporter.inputs.event_streams import MalformedDelivery, parse_delivery
from exporter.model import CALLBACK, EVENT_STREAM, InboxEntry, StatusEvent

log = logging.getLogger(__name__)
BATCH = 256  # entries per transaction: long enough to amortise a commit, short enough that
# the webhook workers' appends never wait long behind it


@dataclass
class _Batch:
    """What a batch of entries decodes to: the events to apply, and for each event the
    Event Streams type it came as (None: a callback)."""

    events: list[StatusEvent] = field(default_factory=list)
    types: list[str | None] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)


class Ingester:
    """Drains the inbox: `apply_pending` applies what waits now, batch after batch."""

    def __init__(
        self,
        applier: Applier,
        outcomes: Outcomes,
        clock: Callable[[], float] = time.time,
        batch: int = BATCH,
    ) -> None:
        self._applier = applier
        self._outcomes = outcomes
        self._clock = clock
        self._batch = batch

    def apply_pending(self) -> int:
        """Apply every entry waiting now; returns how many were applied."""
        applied = 0
        while True:
            entries = self._applier.store.pending(self._batch)
            if entries:
                self.apply(entries)
                applied += len(entries)
            if len(entries) < self._batch:
                return applied

    def apply(self, entries: list[InboxEntry]) -> None:
        batch = _Batch()
        for entry in entries:
            assert entry.id is not None  # read back from the store
            batch.entry_ids.append(entry.id)
            batch.received_at.append(entry.received_at)
            _decode(entry, batch)
        recorded = self._applier.apply(batch.events, consumed=batch.entry_ids)
        for event, outcome, type_label in zip(batch.events, recorded, batch.types, strict=True):
            self._outcomes.applied(event, outcome, type_label)
        metrics = self._applier.metrics
        now = self._clock()
        for received_at in batch.received_at:
            metrics.ingest_lag.observe(max(0.0, now - received_at))
        metrics.ingest_batches.inc()


def _decode(entry: InboxEntry, batch: _Batch) -> None:
    try:
        if entry.source == CALLBACK:
            event = parse_callback(parse_form(entry.body), entry.query, entry.received_at)
            batch.events.append(event)
            batch.types.append(None)
        elif entry.source == EVENT_STREAM:
            for item in parse_delivery(entry.body, entry.query, entry.received_at):
                if item.event is not None:  # the rest was counted when it was accepted
                    batch.events.append(item.event)
                    batch.types.append(item.type_label)
        else:
            log.error("inbox entry %s has unknown source %r: removed", entry.id, entry.source)
    except (MalformedCallback, MalformedDelivery) as ex:
        log.error("inbox entry %s can no longer be decoded, removed: %s", entry.id, ex)
