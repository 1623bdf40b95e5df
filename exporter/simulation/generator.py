"""Turns planned messages into the time-ordered stream of callbacks Twilio would send."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.simulation.lifecycles import MessagePlan, NumberBook, Stage, lognormal, plan_message
from exporter.simulation.model import STATUS_RANK, Outcome, ScheduledCallback, TrafficProfile

TAG_VALUES = {
    "campaign": ("welcome", "otp", "black-friday", "reminders"),
    "tenant": ("acme", "globex", "initech"),
}


@dataclass(frozen=True)
class _Arrival:
    at: float  # lifecycle seconds after the message's creation
    stage: Stage
    copy: bool = False
    concurrent: bool = False
    forged: bool = False


@dataclass(frozen=True)
class _Shape:
    """Averages of the planned traffic, used to turn a callback rate into a message rate."""

    callbacks_per_message: float
    overtakable_share: float  # share of callbacks that have a later one to be overtaken by


def generate_callbacks(
    seed: int, messages: int | None, profile: TrafficProfile | None = None
) -> Iterator[ScheduledCallback]:
    """Yield the callbacks of `messages` messages (None: without end) in order of `due`.

    Everything, including SIDs, numbers and timestamps, follows from `seed` and `profile`.
    """
    profile = profile or TrafficProfile()
    rng = random.Random(seed)
    numbers = NumberBook(profile.regions, seed)
    shape = _estimate_shape(numbers, profile)
    builder = _CallbackBuilder(rng, profile, shape)
    interval = _message_interval(profile, shape)
    pending: list[tuple[float, int, ScheduledCallback]] = []
    order = itertools.count()
    start = 0.0
    for _ in itertools.count() if messages is None else range(messages):
        start += rng.expovariate(1.0 / interval)
        horizon = start / profile.time_compression
        while pending and pending[0][0] <= horizon:
            yield heapq.heappop(pending)[2]
        for callback in builder.message(plan_message(rng, numbers), start):
            heapq.heappush(pending, (callback.due, next(order), callback))
    while pending:
        yield heapq.heappop(pending)[2]


def _estimate_shape(numbers: NumberBook, profile: TrafficProfile) -> _Shape:
    rng = random.Random(0)
    total = overtakable = 0.0
    sample = 1000
    for _ in range(sample):
        stages = [s for s in plan_message(rng, numbers).stages if not s.initial]
        total += len(stages) + profile.initial_status_rate
        overtakable += max(0, len(stages) - 1)
    copies = 1.0 + profile.duplicate_rate + profile.invalid_signature_rate
    return _Shape(total * copies / sample, overtakable / total if total else 0.0)


def _message_interval(profile: TrafficProfile, shape: _Shape) -> float:
    """Mean lifecycle seconds between message creations that yields `profile.rate`."""
    if profile.rate == 0:
        return 1.0  # as fast as possible: `due` only orders the stream
    return profile.time_compression * shape.callbacks_per_message / profile.rate


class _CallbackBuilder:
    def __init__(self, rng: random.Random, profile: TrafficProfile, shape: _Shape) -> None:
        self.rng = rng
        self.profile = profile
        share = shape.overtakable_share
        self.overtake_probability = min(1.0, profile.out_of_order_rate / share) if share else 0.0
        self.account_sid = "AC" + self._hex32()
        self.service_sids = ("MG" + self._hex32(), "MG" + self._hex32())

    def _hex32(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def message(self, plan: MessagePlan, start: float) -> list[ScheduledCallback]:
        sid = ("MM" if plan.channel == "mms" else "SM") + self._hex32()
        query = self._query(start)
        base = self._base_params(plan, sid)
        callbacks = []
        for arrival, expected in self._arrivals(plan):
            due = (start + arrival.at) / self.profile.time_compression
            callbacks.append(
                ScheduledCallback(
                    due=due,
                    lifecycle_time=arrival.at,
                    message_sid=sid,
                    status=arrival.stage.status,
                    params=self._params(base, arrival.stage, due),
                    query=query,
                    expected=expected,
                    concurrent_copy=arrival.concurrent,
                )
            )
        return callbacks

    def _arrivals(self, plan: MessagePlan) -> list[tuple[_Arrival, Outcome]]:
        rng, profile = self.rng, self.profile
        share = profile.initial_status_rate
        stages = [s for s in plan.stages if not s.initial or rng.random() < share]
        arrivals = [_Arrival(s.at, s) for s in stages]
        for i in range(len(arrivals) - 1):
            if rng.random() < self.overtake_probability:  # the next status overtakes this one
                late = arrivals[i + 1].at + lognormal(rng, 1.0, 1.0)
                arrivals[i] = _Arrival(late, arrivals[i].stage)
        extra = []
        for arrival in arrivals:
            if rng.random() < profile.duplicate_rate:
                concurrent = rng.random() < 0.5  # half arrive at once, half as later retries
                at = arrival.at if concurrent else arrival.at + lognormal(rng, 5.0, 1.2)
                extra.append(_Arrival(at, arrival.stage, copy=True, concurrent=concurrent))
            if rng.random() < profile.invalid_signature_rate:
                at = arrival.at + lognormal(rng, 0.5, 1.0)
                extra.append(_Arrival(at, arrival.stage, forged=True))
        ordered = sorted([*arrivals, *extra], key=lambda a: (a.at, a.copy))
        return list(zip(ordered, _expected_outcomes(ordered), strict=True))

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
            query["created"] = str(int(created)) if as_unix else _rfc3339(created)
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


def _expected_outcomes(ordered: list[_Arrival]) -> list[Outcome]:
    """What the exporter will make of each arrival, in arrival order (SPEC section 6)."""
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
            rank = STATUS_RANK[status]
            outcomes.append(Outcome.OUT_OF_ORDER if rank < highest else Outcome.ACCEPTED)
            seen.add(status)
            highest = max(highest, rank)
    return outcomes


def _rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
