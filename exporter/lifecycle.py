"""Message statuses, their order, and what one more status does to a message: pure, no I/O.

Twilio's callbacks are unordered and repeat. A message's history is the set of statuses
recorded for it, each with the time it was reached; `decide` places a newly arrived status in
that history. Unknown statuses are kept by their raw value but have no rank: they never move
the current status and are never out of order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


def decide(
    history: Mapping[str, float],
    current: str | None,
    status: str,
    at: float,
    origin: float | None,
) -> Transition:
    """Place `status`, reached at `at`, into a message's `history` (status -> time reached).

    `current` is the message's current status, `origin` its creation time if the sender told
    us, else its first sight. The caller has already made sure `status` is not in `history`.
    """
    start_origin = at if origin is None else min(origin, at)
    from_status, started_at = _previous_stage(history, status, start_origin)
    rank, current_rank = RANKS.get(status), RANKS.get(current) if current else None
    out_of_order = rank is not None and current_rank is not None and rank < current_rank
    new_current = _advance(current, status)
    return Transition(
        status=status,
        at=at,
        previous_status=current,
        current_status=new_current,
        out_of_order=out_of_order,
        from_status=from_status,
        started_at=min(started_at, at),
        reached_final=is_final(new_current) and not is_final(current),
        first_sight=not history,
    )


def _advance(current: str | None, status: str) -> str:
    """The message's current status after `status`: never backwards, a final one never replaced
    by one of the same rank (delivered then undelivered keeps delivered; read still follows)."""
    if current is None:
        return status
    rank, current_rank = RANKS.get(status), RANKS.get(current)
    if rank is None:
        return current
    if current_rank is None or rank > current_rank:
        return status
    if rank == current_rank and not is_final(current):
        return status
    return current


def _previous_stage(
    history: Mapping[str, float], status: str, origin: float
) -> tuple[str | None, float]:
    """The latest recorded stage ranked below `status` (any stage for unknown statuses)."""
    rank = RANKS.get(status)
    best: tuple[str | None, float] = (None, origin)
    for recorded, reached_at in history.items():
        recorded_rank = RANKS.get(recorded)
        if recorded_rank is None:
            continue
        if rank is not None and recorded_rank >= rank:
            continue
        if best[0] is None or (reached_at, recorded_rank) > (best[1], RANKS[best[0]]):
            best = (recorded, reached_at)
    return best
