"""What the exporter's counters should show after a run, from what the run sent: exact when
every request got its expected answer and, for `both`, every planned delivery was sent."""

from __future__ import annotations

from collections import Counter

from exporter.simulation.model import Input, Outcome
from exporter.simulation.sender import SendResults

FIRST_COPIES = (Outcome.ACCEPTED.value, Outcome.OUT_OF_ORDER.value)


def expected_metrics(results: SendResults) -> dict[str, dict[str, int] | int]:
    """The increase of each exporter counter the run should cause, by metric name.

    Over one input, each status's first delivery is accepted and the others are duplicates.
    Over both, which input's copy lands first is a race, so per input only accepted and
    duplicate together are exact; the statuses counted (twilio_message_status_total) are
    every distinct (message, status) either input delivered.
    """
    used = {name for (name, _, _), n in results.requests.items() if n}
    both = len(used) > 1
    expected: dict[str, dict[str, int] | int] = {}
    distinct = out_of_order = 0
    for input_, metric in (
        (Input.CALLBACKS, "twilio_status_callbacks_total"),
        (Input.EVENTS, "twilio_stream_events_total"),
    ):
        if input_.value not in used:
            continue
        planned = _planned(results.counts, input_)
        # With both inputs the plan marks the later delivery of a status a duplicate, so
        # the first copies of both inputs together are the distinct statuses.
        first = sum(planned[o] for o in FIRST_COPIES)
        duplicate = planned[Outcome.DUPLICATE.value]
        counts = {"accepted+duplicate": first + duplicate}
        if not both:
            counts |= {"accepted": first, "duplicate": duplicate}
        if input_ is Input.CALLBACKS:
            counts["invalid_signature"] = planned[Outcome.INVALID_SIGNATURE.value]
        expected[metric] = counts
        distinct += first
        out_of_order += planned[Outcome.OUT_OF_ORDER.value]
    if Input.EVENTS.value in used:
        expected["twilio_stream_requests_total"] = {
            "accepted": _requests(results.requests, "signed"),
            "invalid_signature": _requests(results.requests, "forged"),
        }
    expected["twilio_message_status_total"] = distinct
    if not both:
        # Only a single input's arrival order is the planned one (batching delays events).
        expected["twilio_status_callbacks_out_of_order_total"] = out_of_order
    return expected


def _planned(counts: Counter[tuple[str, str, str]], input_: Input) -> Counter[str]:
    """Statuses sent over `input_`, by planned outcome."""
    planned: Counter[str] = Counter()
    for (name, outcome, _), n in counts.items():
        if name == input_.value:
            planned[outcome] += n
    return planned


def _requests(requests: Counter[tuple[str, str, str]], signing: str) -> int:
    return sum(
        n for (name, how, _), n in requests.items() if name == Input.EVENTS and how == signing
    )
