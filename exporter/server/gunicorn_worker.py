"""A gunicorn sync worker that does not wait forever for a slow or silent client.

The stock sync worker reads each request with a blocking socket and no timeout: a client that
sends half a request and stops (slowloris) holds the worker until the arbiter kills it.
Here every read of a request (line, headers, body) gives up after CLIENT_READ_TIMEOUT seconds
of silence; the arbiter's `timeout` still bounds a client that trickles bytes.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from gunicorn.workers.sync import SyncWorker as StockSyncWorker

# Twilio sends a whole callback at once; five idle seconds mid-request is not Twilio.
CLIENT_READ_TIMEOUT = 5.0


class SyncWorker(StockSyncWorker):  # type: ignore[misc]
    def handle(self, listener: socket.socket, client: socket.socket, addr: Any) -> None:
        client.settimeout(CLIENT_READ_TIMEOUT)
        super().handle(listener, client, addr)


class SlowClientFilter(logging.Filter):
    """Gunicorn logs a client that timed out before its request was parsed as a socket error
    with a traceback; it is a slow or hostile client, worth one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.msg = "closed a connection whose client sent nothing for %.0f s"
            record.args = (CLIENT_READ_TIMEOUT,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True
