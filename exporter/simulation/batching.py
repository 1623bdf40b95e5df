"""Groups the due-ordered stream of callbacks and events into what the sender posts, when and
on which connection: a callback per request, events in batches as Twilio's sinks send them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from exporter.simulation.model import Outcome, Scheduled, ScheduledCallback, ScheduledEvent

# How long (real seconds) a batch waits for more events after its first: Twilio's sinks hold
# events briefly to batch them; a second keeps a paced demo live.
BATCH_WINDOW = 1.0
DEFAULT_BATCH = 10


@dataclass(frozen=True)
class EventBatch:
    """The events of one Event Streams request, in the order they are posted."""

    events: tuple[ScheduledEvent, ...]

    @property
    def forged(self) -> bool:
        """Sent with a wrong signature (forged events are never batched with valid ones)."""
        return self.events[0].expected is Outcome.INVALID_SIGNATURE


Delivery = ScheduledCallback | EventBatch


@dataclass(frozen=True)
class Dispatch:
    """What one connection sends at `due`: the first delivery on it, and simultaneous
    duplicates of it that race it on a second connection."""

    due: float
    shard: int  # the connection: every delivery of a message uses the same one, in order
    deliveries: tuple[Delivery, ...]


def shard_of(message_sid: str, shards: int) -> int:
    """The connection (of `shards`) that carries every delivery of a message."""
    return int(message_sid[-8:], 16) % shards


def dispatches(
    stream: Iterable[Scheduled],
    shards: int,
    max_events: int = DEFAULT_BATCH,
    window: float = BATCH_WINDOW,
) -> Iterator[Dispatch]:
    """Group `stream` (in order of due) into dispatches, nearly in order of due.

    Events bound for one connection are batched while they come due within `window` seconds
    of the batch's first, up to `max_events`; a batch goes out at the due of its last event, so
    no event is sent before it happens. A redelivery of an event in the open batch starts a
    new batch (a retry is a later request), unless it is a simultaneous one, which races the
    batch on a second connection; its original is then the batch's first event.
    """
    if max_events < 1:
        raise ValueError(f"event batch must be >= 1 events, got {max_events}")
    batcher = _Batcher(shards, max_events, window)
    for item in stream:
        yield from batcher.add(item)
    yield from batcher.drain()


@dataclass
class _OpenBatch:
    shard: int
    first_due: float
    events: list[ScheduledEvent] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    racing: list[ScheduledEvent] = field(default_factory=list)

    def dispatch(self) -> Dispatch:
        deliveries: tuple[Delivery, ...] = (EventBatch(tuple(self.events)),)
        if self.racing:
            deliveries += (EventBatch(tuple(self.racing)),)
        return Dispatch(self.events[-1].due, self.shard, deliveries)


class _Batcher:
    def __init__(self, shards: int, max_events: int, window: float) -> None:
        self._shards = shards
        self._max = max_events
        self._window = window
        # Keyed by (connection, forged): a request is signed or forged as a whole. Insertion
        # order is opening order, hence order of first due, which expiry relies on.
        self._open: dict[tuple[int, bool], _OpenBatch] = {}
        self._callback: ScheduledCallback | None = None  # held until its copy may follow

    def add(self, item: Scheduled) -> list[Dispatch]:
        held, self._callback = self._callback, None
        if held is not None and isinstance(item, ScheduledCallback) and _races(item, held):
            return [Dispatch(held.due, shard_of(held.message_sid, self._shards), (held, item))]
        out = self._release(held) + self._expire(item.due)
        if isinstance(item, ScheduledCallback):
            self._callback = item
            return out
        shard = shard_of(item.message_sid, self._shards)
        forged = item.expected is Outcome.INVALID_SIGNATURE
        key = (shard, forged)
        batch = self._open.get(key)
        if batch is not None and item.concurrent_copy and batch.events[-1].id == item.id:
            if len(batch.events) > 1:
                # The copy may be recorded before anything of its request: its original
                # leads a request of its own, so the race cannot overtake an earlier status.
                original = batch.events.pop()
                batch.ids.discard(original.id)
                out.append(self._open.pop(key).dispatch())
                batch = self._open[key] = _OpenBatch(shard, original.due, [original], {original.id})
            batch.racing.append(item)
            return out
        if batch is not None and (len(batch.events) >= self._max or item.id in batch.ids):
            out.append(self._open.pop(key).dispatch())
            batch = None
        if batch is None:
            batch = self._open[key] = _OpenBatch(shard, item.due)
        batch.events.append(item)
        batch.ids.add(item.id)
        return out

    def drain(self) -> list[Dispatch]:
        held, self._callback = self._callback, None
        out = self._release(held) + [batch.dispatch() for batch in self._open.values()]
        self._open.clear()
        return out

    def _release(self, callback: ScheduledCallback | None) -> list[Dispatch]:
        if callback is None:
            return []
        return [Dispatch(callback.due, shard_of(callback.message_sid, self._shards), (callback,))]

    def _expire(self, now: float) -> list[Dispatch]:
        out = []
        while self._open:
            key, batch = next(iter(self._open.items()))
            if batch.first_due + self._window >= now:
                break
            out.append(self._open.pop(key).dispatch())
        return out


def _races(item: ScheduledCallback, original: ScheduledCallback) -> bool:
    """`item` is a simultaneous duplicate of `original`."""
    same = (item.message_sid, item.status) == (original.message_sid, original.status)
    return item.concurrent_copy and same
