"""Plans one message's lifecycle the way Twilio produces it: statuses, delays, errors."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import phonenumbers

from exporter.simulation.model import DEFAULT_REGIONS

K = TypeVar("K")
E164 = phonenumbers.PhoneNumberFormat.E164

# Error codes seen on real traffic, weighted by how common they are in a typical mix.
# failed: Twilio could not send (before the carrier); undelivered: the carrier said no.
SMS_FAILED_CODES = {30034: 4.0, 21610: 3.0, 21408: 2.0, 30001: 1.0, 30032: 1.0, 30010: 0.5}
SMS_UNDELIVERED_CODES = {
    30003: 4.0,
    30005: 3.0,
    30007: 3.0,
    30008: 3.0,
    30006: 2.0,
    30004: 1.0,
}
WHATSAPP_FAILED_CODES = {63016: 5.0, 63003: 1.0, 63024: 1.0}
WHATSAPP_UNDELIVERED_CODES = {63024: 2.0, 30008: 1.0, 63049: 1.0}

MESSAGE_KINDS = {"sms": 45.0, "service_sms": 20.0, "whatsapp": 20.0, "mms": 10.0, "scheduled": 5.0}
MAX_DELAY = 24 * 3600.0  # no planned stage waits longer than a day

SMS_SENDERS = ("+14155550100", "+14155550101", "+12125550142", "+13105550177")
WHATSAPP_SENDER = "whatsapp:+14155238886"


@dataclass(frozen=True)
class Stage:
    """One status the message reaches, `at` seconds after its creation."""

    at: float
    status: str
    error_code: int | None = None
    raw_dlr: bool = False  # the callback carries RawDlrDoneDate
    initial: bool = False  # the status a message is created with (normally no callback)


@dataclass(frozen=True)
class MessagePlan:
    """A message and every status it goes through, in lifecycle order."""

    kind: str
    channel: str  # sms, mms or whatsapp
    to: str
    sender: str
    via_service: bool
    stages: tuple[Stage, ...]
    num_media: int = 0
    extras: dict[str, str] = field(default_factory=dict)
    region: str = ""  # ISO region of the destination number


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    """A delay with median `median` seconds and a long right tail, capped at MAX_DELAY."""
    return min(MAX_DELAY, median * math.exp(rng.gauss(0.0, sigma)))


def weighted(rng: random.Random, weights: Mapping[K, float]) -> K:
    """One key of `weights`, drawn proportionally to its weight."""
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def regions_for(countries: str | None) -> tuple[tuple[str, float], ...]:
    """Destination regions, equally weighted, from `--countries`: ISO codes separated by
    commas, `all` (every region phonenumbers has a mobile example for), or none (a default
    mix)."""
    if not countries:
        return DEFAULT_REGIONS
    if countries.strip().lower() == "all":
        codes = sorted(phonenumbers.SUPPORTED_REGIONS)
        mobile = phonenumbers.PhoneNumberType.MOBILE
        return tuple((c, 1.0) for c in codes if phonenumbers.example_number_for_type(c, mobile))
    codes = [c.strip().upper() for c in countries.split(",") if c.strip()]
    unknown = [c for c in codes if c not in phonenumbers.SUPPORTED_REGIONS]
    if unknown or not codes:
        raise ValueError(f"--countries: unknown ISO regions {unknown}; e.g. US,GB,IN or 'all'")
    return tuple((c, 1.0) for c in codes)


class NumberBook:
    """Valid mobile numbers per region (phonenumbers agrees on the region), drawn reproducibly."""

    def __init__(self, regions: tuple[tuple[str, float], ...], seed: int, size: int = 40) -> None:
        rng = random.Random(f"numbers:{seed}")
        self.regions = [region for region, _ in regions]
        self.weights = [weight for _, weight in regions]
        self.numbers = {region: self._valid_numbers(rng, region, size) for region in self.regions}

    @staticmethod
    def _valid_numbers(rng: random.Random, region: str, size: int) -> list[str]:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is None:
            raise ValueError(f"region {region!r} has no example mobile number; pick another")
        national = str(example.national_number)
        found: list[str] = []
        for _ in range(size * 5):
            digits = national[:-4] + f"{rng.randrange(10_000):04d}"
            number = phonenumbers.parse(f"+{example.country_code}{digits}")
            if phonenumbers.region_code_for_number(number) == region:
                found.append(phonenumbers.format_number(number, E164))
            if len(found) == size:
                break
        return found or [phonenumbers.format_number(example, E164)]

    def draw(self, rng: random.Random) -> tuple[str, str]:
        """A number and its region."""
        region = rng.choices(self.regions, weights=self.weights)[0]
        return rng.choice(self.numbers[region]), region


def plan_message(rng: random.Random, numbers: NumberBook) -> MessagePlan:
    """Draw one message: its kind, destination and the stages Twilio would report."""
    kind = weighted(rng, MESSAGE_KINDS)
    channel = {"whatsapp": "whatsapp", "mms": "mms"}.get(kind, "sms")
    service_whatsapp = kind == "whatsapp" and rng.random() < 0.5
    via_service = kind in ("service_sms", "scheduled") or service_whatsapp
    to, region = numbers.draw(rng)
    sender = rng.choice(SMS_SENDERS)
    if channel == "whatsapp":
        to, sender = "whatsapp:" + to, WHATSAPP_SENDER
    stages = _stages(rng, kind, channel, via_service)
    return MessagePlan(
        kind=kind,
        channel=channel,
        to=to,
        sender=sender,
        via_service=via_service,
        stages=tuple(stages),
        num_media=rng.randint(1, 3) if channel == "mms" else 0,
        region=region,
    )


def _stages(rng: random.Random, kind: str, channel: str, via_service: bool) -> list[Stage]:
    if kind == "scheduled":
        send_at = rng.uniform(300.0, 7200.0)
        stages = [Stage(0.0, "scheduled", initial=True)]
        if rng.random() < 0.25:
            return [*stages, Stage(rng.uniform(30.0, send_at), "canceled")]
        t = send_at
    elif via_service:
        stages = [Stage(0.0, "accepted", initial=True)]
        t = lognormal(rng, 0.3, 0.8)
    else:
        stages = []
        t = 0.0
    stages.append(Stage(t, "queued", initial=not via_service))
    if rng.random() < 0.15:
        t += lognormal(rng, 0.2, 0.7)
        stages.append(Stage(t, "sending"))
    whatsapp = channel == "whatsapp"
    roll = rng.random()
    if roll < (0.05 if whatsapp else 0.03):
        codes = WHATSAPP_FAILED_CODES if whatsapp else SMS_FAILED_CODES
        code = weighted(rng, codes)
        return [*stages, Stage(t + lognormal(rng, 0.6, 0.8), "failed", error_code=code)]
    t += lognormal(rng, 1.0, 0.9)
    stages.append(Stage(t, "sent"))
    never_final = 0.2 if channel == "mms" else 0.01  # US MMS often stays in sent
    if rng.random() < never_final:
        return stages
    dlr_share = 0.0 if whatsapp else (0.5 if channel == "mms" else 0.9)
    if rng.random() < 0.07:
        codes = WHATSAPP_UNDELIVERED_CODES if whatsapp else SMS_UNDELIVERED_CODES
        code = weighted(rng, codes)
        t += lognormal(rng, 20.0, 1.4)
        raw_dlr = rng.random() < dlr_share
        return [*stages, Stage(t, "undelivered", error_code=code, raw_dlr=raw_dlr)]
    if rng.random() < 0.03:  # the long tail: carriers that report minutes to hours later
        t += rng.uniform(300.0, 6 * 3600.0)
    else:
        t += lognormal(rng, 1.5 if whatsapp else 4.0, 1.2)
    stages.append(Stage(t, "delivered", raw_dlr=rng.random() < dlr_share))
    if whatsapp and rng.random() < 0.6:
        stages.append(Stage(t + lognormal(rng, 300.0, 1.6), "read"))
    return stages
