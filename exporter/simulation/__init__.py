"""Realistic, correctly signed Twilio StatusCallback traffic: the `simulate` verb's engine."""

from exporter.simulation.generator import generate_callbacks
from exporter.simulation.model import (
    STATUS_RANK,
    Outcome,
    ScheduledCallback,
    TrafficProfile,
)
from exporter.simulation.report import summary_json, summary_table
from exporter.simulation.sender import CallbackSender, SendResults
from exporter.simulation.signing import Signer, sign

__all__ = [
    "STATUS_RANK",
    "CallbackSender",
    "Outcome",
    "ScheduledCallback",
    "SendResults",
    "Signer",
    "TrafficProfile",
    "generate_callbacks",
    "sign",
    "summary_json",
    "summary_table",
]
