"""What one more status does to a message: every lifecycle rule, pure, no I/O.

Twilio's callbacks are unordered and repeat. A message's history is the set of statuses
recorded for it, each with the time it was reached; `decide` places a newly arrived status in
that history, `apply_event` turns that into the message's next state (or a duplicate).
Unknown statuses are kept by their raw value but have no rank: they never move the current
status and are never out of order. The statuses and their ranks are in `exporter.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from exporter.model import RANKS, MessageState, Recorded, StatusEvent, Transition, is_final


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


def next_state(
    existing: MessageState | None, event: StatusEvent, transition: Transition
) -> MessageState:
    """The message after `event`: the first sender context wins, gaps are filled, time moves
    forward only, and a final status is stamped once."""
    context = event.context
    if existing is None:
        return MessageState(
            message_sid=event.message_sid,
            status=transition.current_status,
            first_seen_at=event.at,
            updated_at=transition.at,
            created_at=context.created_at,
            final_at=transition.at if transition.reached_final else None,
            channel=event.channel,
            country=event.country,
            to=event.to,
            from_=event.from_,
            account_sid=event.account_sid,
            messaging_service_sid=event.messaging_service_sid,
            error_code=event.error_code,
            traceparent=context.traceparent,
            tags=dict(context.tags),
        )
    return replace(
        existing,
        status=transition.current_status,
        updated_at=max(existing.updated_at, transition.at),
        created_at=existing.created_at if existing.created_at is not None else context.created_at,
        final_at=transition.at if transition.reached_final else existing.final_at,
        country=existing.country or event.country,
        to=existing.to or event.to,
        from_=existing.from_ or event.from_,
        account_sid=existing.account_sid or event.account_sid,
        messaging_service_sid=existing.messaging_service_sid or event.messaging_service_sid,
        error_code=event.error_code or existing.error_code,
        traceparent=existing.traceparent or context.traceparent,
        tags=existing.tags or dict(context.tags),
    )


def apply_event(
    existing: MessageState | None, history: Mapping[str, float], event: StatusEvent
) -> Recorded:
    """What `event` does to a message found with `history` (status -> time reached): nothing
    for a retry or a copy (a duplicate), else its transition and the message after it."""
    if existing is not None and event.status in history:
        return Recorded(message=existing, transition=None)
    transition = decide(
        history,
        existing.status if existing else None,
        event.status,
        event.at,
        origin=origin_of(existing, event),
    )
    return Recorded(message=next_state(existing, event, transition), transition=transition)


# A message as a store found it: its state (None: never seen) and history (status -> time).
Known = tuple[MessageState | None, dict[str, float]]


def apply_all(
    known: Mapping[str, Known], events: Sequence[StatusEvent]
) -> tuple[list[Recorded], dict[str, MessageState]]:
    """`apply_event` for each event in order, each seeing what the ones before it did: what
    each did, and every message's state after the last of them (only those that changed).
    A store reads the messages once, applies a whole batch here, and writes once."""
    states = {sid: state for sid, (state, _) in known.items()}
    histories = {sid: dict(history) for sid, (_, history) in known.items()}
    recorded: list[Recorded] = []
    changed: dict[str, MessageState] = {}
    for event in events:
        sid = event.message_sid
        history = histories.setdefault(sid, {})
        outcome = apply_event(states.get(sid), history, event)
        if outcome.transition is not None:
            history[event.status] = event.at
            states[sid] = changed[sid] = outcome.message
        recorded.append(outcome)
    return recorded, changed


def origin_of(existing: MessageState | None, event: StatusEvent) -> float | None:
    """Creation time if any callback told us, else first sight (None: this is the first)."""
    if existing is not None and existing.created_at is not None:
        return existing.created_at
    if event.context.created_at is not None:
        return event.context.created_at
    return existing.first_seen_at if existing is not None else None


def in_flight(state: MessageState) -> bool:
    return not is_final(state.status) and state.stale_at is None
