"""Turns planned messages into the time-ordered stream of callbacks and Event Streams events
Twilio would send."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from exporter.simulation.arrivals import Arrival, arrival_order, expected_outcomes, plan_arrivals
from exporter.simulation.lifecycles import MessagePlan, NumberBook, Stage, lognormal, plan_message
from exporter.simulation.model import (
    Input,
    Scheduled,
    ScheduledCallback,
    ScheduledEvent,
    TrafficProfile,
    rfc3339,
)
from exporter.simulation.streams import EventPlanner, published_stages

TAG_VALUES = {
    "campaign": ("welcome", "otp", "black-friday", "reminders"),
    "tenant": ("acme", "globex", "initech"),
}


@dataclass(frozen=True)
class _Shape:
    """Averages of the planned traffic, used to turn a delivery rate into a message rate."""

    deliveries_per_message: float  # callbacks and events, copies included, of enabled inputs
    overtakable_share: float  # share of callbacks that have a later one to be overtaken by
    event_overtakable_share: float  # the same for events


def generate_callbacks(
    seed: int, messages: int | None, profile: TrafficProfile | None = None
) -> Iterator[ScheduledCallback]:
    """Yield the callbacks of `messages` messages (None: without end) in order of `due`.

    Everything, including SIDs, numbers and timestamps, follows from `seed` and `profile`.
    These are the callbacks of `generate_traffic` (all of its traffic with the default inputs).
    """
    for item in generate_traffic(seed, messages, profile):
        if isinstance(item, ScheduledCallback):
            yield item


def generate_traffic(
    seed: int, messages: int | None, profile: TrafficProfile | None = None
) -> Iterator[Scheduled]:
    """Yield the callbacks and events (as `profile.inputs` asks) of `messages` messages (None:
    without end) in order of `due`.

    A seed makes the same messages whatever the inputs: the events of a `both` run are those of
    an `events` run, its callbacks those of a `callbacks` run (only expected outcomes differ,
    since each status is then counted once across both inputs).
    """
    profile = profile or TrafficProfile()
    rng = random.Random(seed)
    numbers = NumberBook(profile.regions, seed)
    shape = _estimate_shape(numbers, profile)
    builder = _MessageBuilder(rng, profile, shape, seed)
    interval = _message_interval(profile, shape)
    pending: list[tuple[float, int, Scheduled]] = []
    order = itertools.count()
    start = 0.0
    for _ in itertools.count() if messages is None else range(messages):
        start += rng.expovariate(1.0 / interval)
        horizon = start / profile.time_compression
        while pending and pending[0][0] <= horizon:
            yield heapq.heappop(pending)[2]
        for item in builder.message(plan_message(rng, numbers), start):
            heapq.heappush(pending, (item.due, next(order), item))
    while pending:
        yield heapq.heappop(pending)[2]


def _estimate_shape(numbers: NumberBook, profile: TrafficProfile) -> _Shape:
    rng = random.Random(0)
    callbacks = events = overtakable = event_overtakable = 0.0
    sample = 1000
    for _ in range(sample):
        plan = plan_message(rng, numbers)
        stages = [s for s in plan.stages if not s.initial]
        published = published_stages(plan)
        callbacks += len(stages) + profile.initial_status_rate
        overtakable += max(0, len(stages) - 1)
        events += len(published)
        event_overtakable += max(0, len(published) - 1)
    copies = 1.0 + profile.duplicate_rate + profile.invalid_signature_rate
    sent = (callbacks if Input.CALLBACKS in profile.inputs else 0.0) + (
        events if Input.EVENTS in profile.inputs else 0.0
    )
    return _Shape(
        sent * copies / sample,
        overtakable / callbacks if callbacks else 0.0,
        event_overtakable / events if events else 0.0,
    )


def _message_interval(profile: TrafficProfile, shape: _Shape) -> float:
    """Mean lifecycle seconds between message creations that yields `profile.rate`."""
    if profile.rate == 0:
        return 1.0  # as fast as possible: `due` only orders the stream
    return profile.time_compression * shape.deliveries_per_message / profile.rate


class _MessageBuilder:
    def __init__(
        self, rng: random.Random, profile: TrafficProfile, shape: _Shape, seed: int
    ) -> None:
        self.rng = rng
        self.profile = profile
        share = shape.overtakable_share
        self.overtake_probability = min(1.0, profile.out_of_order_rate / share) if share else 0.0
        self.account_sid = "AC" + self._hex32()
        self.service_sids = ("MG" + self._hex32(), "MG" + self._hex32())
        self.callbacks = Input.CALLBACKS in profile.inputs
        self.events = (
            EventPlanner(seed, profile, shape.event_overtakable_share)
            if Input.EVENTS in profile.inputs
            else None
        )

    def _hex32(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def message(self, plan: MessagePlan, start: float) -> list[Scheduled]:
        sid = ("MM" if plan.channel == "mms" else "SM") + self._hex32()
        query = self._query(start)
        base = self._base_params(plan, sid)
        # The callbacks are planned (and draw from `rng`) even when they are not sent, so a
        # seed makes the same messages whatever the inputs.
        callback_arrivals = self._callback_arrivals(plan)
        forms = [self._params(base, a.stage, self._due(start, a)) for a in callback_arrivals]
        arrivals = list(callback_arrivals) if self.callbacks else []
        payloads = {}
        if self.events is not None:
            arrivals += self.events.arrivals(plan)
            payloads = self.events.payloads(plan, base, query, start)
        # Stable: each input's arrivals keep their order, so `forms` line up with callbacks.
        ordered = sorted(arrivals, key=arrival_order)
        form = iter(forms)
        encoded = urlencode(query)
        scheduled: list[Scheduled] = []
        for arrival, expected in zip(ordered, expected_outcomes(ordered), strict=True):
            due = self._due(start, arrival)
            status = arrival.stage.status
            if arrival.input is Input.CALLBACKS:
                scheduled.append(
                    ScheduledCallback(
                        due=due,
                        lifecycle_time=arrival.at,
                        message_sid=sid,
                        status=status,
                        params=next(form),
                        query=query,
                        expected=expected,
                        concurrent_copy=arrival.concurrent,
                    )
                )
            else:
                envelope, data = payloads[status]
                scheduled.append(
                    ScheduledEvent(
                        due=due,
                        lifecycle_time=arrival.at,
                        message_sid=sid,
                        status=status,
                        envelope=envelope,
                        data=data,
                        query=encoded,
                        expected=expected,
                        concurrent_copy=arrival.concurrent,
                    )
                )
        return scheduled

    def _due(self, start: float, arrival: Arrival) -> float:
        return (start + arrival.at) / self.profile.time_compression

    def _callback_arrivals(self, plan: MessagePlan) -> list[Arrival]:
        share = self.profile.initial_status_rate
        stages = [s for s in plan.stages if not s.initial or self.rng.random() < share]
        return plan_arrivals(self.rng, stages, self.overtake_probability, self.profile)

    def _query(self, start: float) -> dict[str, str]:
        rng, features = self.rng, self.profile.query
        query: dict[str, str] = {}
        trace_id, span_id = rng.getrandbits(128) | 1, rng.getrandbits(64) | 1
        created = self.profile.epoch + start / self.profile.time_compression
        as_unix = rng.random() < 0.5
        tags = {name: rng.choice(values) for name, values in TAG_VALUES.items()}
        if "traceparent" in features:
            query["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-01"
        if "created" in features:
            query["created"] = str(int(created)) if as_unix else rfc3339(created)
        if "tags" in features:
            query.update({f"tag.{name}": value for name, value in tags.items()})
        return query

    def _base_params(self, plan: MessagePlan, sid: str) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": plan.sender,
            "To": plan.to,
            "MessageSid": sid,
            "SmsSid": sid,
        }
        if plan.via_service:
            params["MessagingServiceSid"] = self.rng.choice(self.service_sids)
        if plan.channel == "whatsapp":
            params["ChannelPrefix"] = "whatsapp"
            params["ChannelInstallSid"] = "XE" + self._hex32()
            params["StructuredMessage"] = "false"
        if plan.num_media:
            params["NumMedia"] = str(plan.num_media)
        return params

    def _params(self, base: dict[str, str], stage: Stage, due: float) -> dict[str, str]:
        params = {**base, "MessageStatus": stage.status, "SmsStatus": stage.status}
        if stage.error_code is not None:
            params["ErrorCode"] = str(stage.error_code)
        if stage.raw_dlr:
            carrier_lag = lognormal(self.rng, 2.0, 1.0) / self.profile.time_compression
            done = datetime.fromtimestamp(self.profile.epoch + due - carrier_lag, tz=UTC)
            params["RawDlrDoneDate"] = done.strftime("%y%m%d%H%M")
        if stage.status == "read":
            params["EventType"] = "READ"
        return params
