"""Reconciliation with Twilio's REST API (`twilio-status-exporter reconcile`).

Twilio's logging guidance: callbacks can be lost, so poll a message that has no final status
after 12 hours, and reconcile the record against Twilio's message list every day.

    api.py       the twilio client (through its http_client hook), retried by urllib3's Retry
    engine.py    one run: walk the list for a window, then poll the stuck messages

The Message resource as a value and its poll event are in exporter/inputs/rest_poll.py; the
CLI verb (options, summary, --every) is exporter/cli/reconcile.py.

Nothing is imported here, so building the CLI parser stays cheap.
"""
