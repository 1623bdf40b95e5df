"""Twilio StatusCallback receiver: metrics, traces and a durable lifecycle record."""

__version__ = "0.1.0"
