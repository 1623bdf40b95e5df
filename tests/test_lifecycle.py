"""The lifecycle core: order, duplicates, out-of-order arrivals, finals, unknown statuses."""

from __future__ import annotations

import itertools

import pytest

from exporter import model
from exporter.lifecycle import decide


def replay(statuses: list[str], origin: float | None = None) -> tuple[str, list[model.Transition]]:
    """Feed statuses one second apart, skipping repeats as the store does."""
    history: dict[str, float] = {}
    current: str | None = None
    transitions = []
    for second, status in enumerate(statuses, start=1):
        if status in history:
            continue
        transition = decide(history, current, status, float(second), origin)
        history[status] = float(second)
        current = transition.current_status
        transitions.append(transition)
    assert current is not None
    return current, transitions


def test_in_order_lifecycle_advances_through_every_stage() -> None:
    current, transitions = replay(["queued", "sending", "sent", "delivered"])
    assert current == "delivered"
    assert [t.from_status for t in transitions] == [None, "queued", "sending", "sent"]
    assert not any(t.out_of_order for t in transitions)
    assert [t.reached_final for t in transitions] == [False, False, False, True]


@pytest.mark.parametrize(
    "statuses",
    list(itertools.permutations(["queued", "sent", "delivered", "read"])),
    ids="-".join,
)
def test_every_ordering_ends_at_the_highest_status(statuses: tuple[str, ...]) -> None:
    current, transitions = replay(list(statuses))
    assert current == "read"
    # Exactly the arrivals below an already-seen higher rank are out of order.
    seen_rank = -1
    for transition in transitions:
        rank = model.RANKS[transition.status]
        assert transition.out_of_order == (rank < seen_rank)
        seen_rank = max(seen_rank, rank)
    assert sum(t.reached_final for t in transitions) == 1


@pytest.mark.parametrize(
    "statuses",
    list(itertools.permutations(["accepted", "queued", "sent", "undelivered"])),
    ids="-".join,
)
def test_final_status_is_never_overwritten_by_a_lower_one(statuses: tuple[str, ...]) -> None:
    current, _ = replay(list(statuses))
    assert current == "undelivered"


def test_a_second_final_of_the_same_rank_does_not_replace_the_first() -> None:
    current, transitions = replay(["sent", "delivered", "undelivered"])
    assert current == "delivered"
    assert not transitions[-1].out_of_order


def test_read_follows_delivered() -> None:
    current, transitions = replay(["sent", "delivered", "read"])
    assert current == "read"
    assert transitions[-1].from_status == "delivered"
    assert not transitions[-1].reached_final  # the root span already ended at delivered


def test_out_of_order_stage_starts_at_latest_lower_ranked_stage() -> None:
    _, transitions = replay(["queued", "delivered", "sent"])
    sent = transitions[-1]
    assert sent.out_of_order
    assert (sent.from_status, sent.started_at, sent.at) == ("queued", 1.0, 3.0)
    assert sent.current_status == "delivered"


def test_out_of_order_without_lower_stage_starts_at_origin() -> None:
    _, transitions = replay(["delivered", "sent"], origin=0.5)
    assert (transitions[-1].from_status, transitions[-1].started_at) == (None, 0.5)


def test_unknown_status_is_kept_raw_and_never_moves_current() -> None:
    current, transitions = replay(["sent", "Teleported", "delivered"])
    assert current == "delivered"
    unknown = transitions[1]
    assert unknown.status == "Teleported"
    assert unknown.current_status == "sent"
    assert not unknown.out_of_order
    assert model.status_label("Teleported") == "other"


def test_unknown_first_status_is_replaced_by_the_first_known_one() -> None:
    current, _ = replay(["mystery", "queued"])
    assert current == "queued"


def test_partially_delivered_is_not_final_and_yields_to_delivered() -> None:
    current, transitions = replay(["sent", "partially_delivered", "delivered"])
    assert current == "delivered"
    assert [t.reached_final for t in transitions] == [False, False, True]


def test_scheduled_then_canceled_is_final() -> None:
    current, transitions = replay(["scheduled", "canceled"])
    assert current == "canceled"
    assert transitions[-1].reached_final


def test_normalize_status_lowercases_known_values_only() -> None:
    assert model.normalize_status(" Delivered ") == "delivered"
    assert model.normalize_status("Weird") == "Weird"


def test_origin_after_arrival_is_clamped() -> None:
    transition = decide({}, None, "sent", at=10.0, origin=20.0)
    assert transition.started_at == 10.0
    assert transition.first_sight
