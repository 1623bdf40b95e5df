"""Realistic, correctly signed Twilio status traffic (StatusCallbacks and Event Streams
events): the `simulate` verb's engine."""

from exporter.simulation.batching import Dispatch, EventBatch, dispatches
from exporter.simulation.expectations import expected_metrics
from exporter.simulation.generator import generate_callbacks, generate_traffic
from exporter.simulation.model import (
    Input,
    Outcome,
    PlannedRequest,
    Scheduled,
    ScheduledCallback,
    ScheduledEvent,
    TrafficProfile,
)
from exporter.simulation.report import summary_json, summary_table
from exporter.simulation.requests import RequestBuilder, events_url_for
from exporter.simulation.sender import CallbackSender, SendResults
from exporter.simulation.signing import Signer, sign
from exporter.simulation.streams import PUBLISHED_STATUSES, event_id

__all__ = [
    "PUBLISHED_STATUSES",
    "CallbackSender",
    "Dispatch",
    "EventBatch",
    "Input",
    "Outcome",
    "PlannedRequest",
    "RequestBuilder",
    "Scheduled",
    "ScheduledCallback",
    "ScheduledEvent",
    "SendResults",
    "Signer",
    "TrafficProfile",
    "dispatches",
    "event_id",
    "events_url_for",
    "expected_metrics",
    "generate_callbacks",
    "generate_traffic",
    "sign",
    "summary_json",
    "summary_table",
]
