"""Plans when each status of one message reaches the exporter: disorder, duplicates, forgeries,
and what the exporter will make of each arrival."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.model import RANKS
from exporter.simulation.lifecycles import Stage, lognormal
from exporter.simulation.model import Input, Outcome, TrafficProfile


@dataclass(frozen=True)
class Arrival:
    """One delivery of a status over one input, `at` lifecycle seconds after creation."""

    at: float
    stage: Stage
    input: Input = Input.CALLBACKS
    copy: bool = False
    concurrent: bool = False
    forged: bool = False


def plan_arrivals(
    rng: random.Random,
    stages: Sequence[Stage],
    overtake_probability: float,
    profile: TrafficProfile,
    input_: Input = Input.CALLBACKS,
) -> list[Arrival]:
    """The deliveries of `stages` over one input, sorted by arrival: a status is overtaken by
    the next with `overtake_probability`, and copies and forgeries follow the profile's rates."""
    arrivals = [Arrival(s.at, s, input_) for s in stages]
    for i in range(len(arrivals) - 1):
        if rng.random() < overtake_probability:  # the next status overtakes this one
            late = arrivals[i + 1].at + lognormal(rng, 1.0, 1.0)
            arrivals[i] = Arrival(late, arrivals[i].stage, input_)
    extra = []
    for arrival in arrivals:
        if rng.random() < profile.duplicate_rate:
            concurrent = rng.random() < 0.5  # half arrive at once, half as later retries
            at = arrival.at if concurrent else arrival.at + lognormal(rng, 5.0, 1.2)
            extra.append(Arrival(at, arrival.stage, input_, copy=True, concurrent=concurrent))
        if rng.random() < profile.invalid_signature_rate:
            at = arrival.at + lognormal(rng, 0.5, 1.0)
            extra.append(Arrival(at, arrival.stage, input_, forged=True))
    return sorted([*arrivals, *extra], key=arrival_order)


def arrival_order(arrival: Arrival) -> tuple[float, bool, bool]:
    """Sort key: by time; at the same moment a callback before its event (Event Streams'
    pipeline is the longer one), and an original right before its simultaneous copy."""
    return (arrival.at, arrival.input is Input.EVENTS, arrival.copy)


def expected_outcomes(ordered: Sequence[Arrival]) -> list[Outcome]:
    """What the exporter will make of each arrival, in arrival order: a status ranked below
    one already recorded is out of order, a status recorded before is a duplicate.

    Both inputs report into one lifecycle: whichever delivery of a status comes first is
    counted, every later one (over either input) is a duplicate."""
    seen: set[str] = set()
    highest = -1
    outcomes = []
    for arrival in ordered:
        status = arrival.stage.status
        if arrival.forged:
            outcomes.append(Outcome.INVALID_SIGNATURE)
        elif status in seen:
            outcomes.append(Outcome.DUPLICATE)
        else:
            rank = RANKS[status]  # the service's own ranks: its verdict is the one counted
            outcomes.append(Outcome.OUT_OF_ORDER if rank < highest else Outcome.ACCEPTED)
            seen.add(status)
            highest = max(highest, rank)
    return outcomes
