"""Plans the Event Streams side of a message: which statuses Twilio publishes, when each event
arrives, and the CloudEvent (Messaging.MessageStatus schema) that reports it."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from datetime import UTC, datetime

from exporter.simulation.arrivals import Arrival, plan_arrivals
from exporter.simulation.lifecycles import MessagePlan, Stage, lognormal, weighted
from exporter.simulation.model import Input, TrafficProfile, rfc3339

# Event Streams publishes these message statuses; accepted, scheduled, canceled and sending
# have no event type, so on this input a message's lifecycle starts at queued.
PUBLISHED_STATUSES = frozenset({"queued", "sent", "delivered", "undelivered", "failed", "read"})
TYPE_PREFIX = "com.twilio.messaging.message."
DATASCHEMA = "https://events-schemas.twilio.com/Messaging.MessageStatus/7"
API_VERSION = "2010-04-01"
# Network codes (MCC, MNC) of a few large carriers per destination region; regions not listed
# get no mcc/mnc, as events do when Twilio does not know the network.
NETWORKS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "US": (("310", "410"), ("310", "260"), ("311", "480"), ("310", "090")),
    "GB": (("234", "10"), ("234", "15"), ("234", "30")),
    "IN": (("404", "10"), ("404", "45"), ("405", "854")),
    "DE": (("262", "01"), ("262", "02"), ("262", "03")),
    "BR": (("724", "02"), ("724", "05"), ("724", "06")),
    "MX": (("334", "020"), ("334", "030")),
    "CA": (("302", "220"), ("302", "610"), ("302", "720")),
    "FR": (("208", "01"), ("208", "10"), ("208", "20")),
    "AU": (("505", "01"), ("505", "02"), ("505", "03")),
    "NG": (("621", "20"), ("621", "30"), ("621", "50")),
}
SMS_SEGMENTS = {1: 85.0, 2: 12.0, 3: 3.0}  # most texts fit one segment; long ones take more


def event_type(status: str) -> str:
    """The CloudEvent type reporting `status`, e.g. com.twilio.messaging.message.delivered."""
    return TYPE_PREFIX + status


def event_id(message_sid: str, status: str) -> str:
    """The event's id: derived from (message, status), so a redelivery carries the same id,
    as Twilio's at-least-once retries do."""
    return "EZ" + hashlib.sha256(f"{message_sid}:{status}".encode()).hexdigest()[:32]


def published_stages(plan: MessagePlan) -> list[Stage]:
    """The stages of `plan` that Event Streams reports (all of them, initial queued too)."""
    return [s for s in plan.stages if s.status in PUBLISHED_STATUSES]


class EventPlanner:
    """Plans each message's events with its own random stream, so turning events on leaves
    the messages (and their callbacks) of a seed exactly as they are without."""

    def __init__(self, seed: int, profile: TrafficProfile, overtakable_share: float) -> None:
        self.rng = random.Random(f"events:{seed}")
        self.profile = profile
        share = overtakable_share
        self.overtake_probability = min(1.0, profile.out_of_order_rate / share) if share else 0.0

    def arrivals(self, plan: MessagePlan) -> list[Arrival]:
        """When each published status's event (and its copies and forgeries) arrives."""
        stages = published_stages(plan)
        return plan_arrivals(
            self.rng, stages, self.overtake_probability, self.profile, Input.EVENTS
        )

    def payloads(
        self, plan: MessagePlan, base: Mapping[str, str], query: Mapping[str, str], start: float
    ) -> dict[str, tuple[dict[str, str], dict[str, object]]]:
        """Per published status: the CloudEvent's attributes and its data (all but
        statusCallBackUrl). `base` is the message's callback form, `start` its creation in
        lifecycle seconds."""
        rng, profile = self.rng, self.profile
        sid = base["MessageSid"]
        segments = weighted(rng, SMS_SEGMENTS) if plan.channel == "sms" else 1
        network = self._network(plan)
        tags = {k.removeprefix("tag."): v for k, v in query.items() if k.startswith("tag.")}
        payloads = {}
        for stage in published_stages(plan):
            # When the status happened: the moment its callback is due, so stage durations
            # match whichever input the exporter hears first.
            happened = profile.epoch + (start + stage.at) / profile.time_compression
            timestamp = rfc3339(happened)
            kind = event_type(stage.status)
            envelope = {
                "specversion": "1.0",
                "type": kind,
                "source": f"/{API_VERSION}/Accounts/{base['AccountSid']}/Messages/{sid}.json",
                "id": event_id(sid, stage.status),
                "dataschema": DATASCHEMA,
                "datacontenttype": "application/json",
                "time": timestamp,
            }
            data: dict[str, object] = {
                "messageSid": sid,
                "timestamp": timestamp,
                "accountSid": base["AccountSid"],
                "eventName": kind,
                "apiVersion": API_VERSION,
                "from": base["From"],
                "to": base["To"],
                "messageStatus": stage.status.upper(),
            }
            if "MessagingServiceSid" in base:
                data["messagingServiceSid"] = base["MessagingServiceSid"]
            if stage.error_code is not None:
                data["errorCode"] = stage.error_code
            data["tags"] = dict(tags)
            if network is not None:
                data["mcc"], data["mnc"] = network
            if stage.raw_dlr:
                carrier_lag = lognormal(rng, 2.0, 1.0) / profile.time_compression
                done = datetime.fromtimestamp(happened - carrier_lag, tz=UTC)
                data["rawDlrDoneDate"] = done.strftime("%y%m%d%H%M")
            data["numberOfSegments"] = segments
            data["dateUpdated"] = timestamp
            payloads[stage.status] = (envelope, data)
        return payloads

    def _network(self, plan: MessagePlan) -> tuple[str, str] | None:
        if plan.channel == "whatsapp":
            return None  # no carrier network on WhatsApp
        networks = NETWORKS.get(plan.region)
        return self.rng.choice(networks) if networks else None
