"""A gunicorn sync worker that does not wait forever for a slow or silent client, nor for a
client to close a connection it has nothing more to say on.

The stock sync worker reads each request with a blocking socket and no timeout: a client that
sends half a request and stops (slowloris) holds the worker until the arbiter kills it.
Here every read of a request (line, headers, body) gives up after CLIENT_READ_TIMEOUT seconds
of silence; the arbiter's `timeout` still bounds a client that trickles bytes.

After each response the stock worker half-closes the connection and lingers, reading, until
the client closes its side (`gunicorn.util.close_graceful`): that protects a response from the
reset that closing with unread request bytes would cause, but it idles the worker for the
client's round trip after every request (much of its wall time under load). Like nginx's
default `lingering_close on`, this worker lingers only when more bytes may come: a request
read to the end of its Content-Length with nothing else received is closed at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

from gunicorn.http.body import LengthReader
from gunicorn.workers.sync import SyncWorker as StockSyncWorker

# Twilio sends a whole callback at once; five idle seconds mid-request is not Twilio.
CLIENT_READ_TIMEOUT = 5.0


class SyncWorker(StockSyncWorker):  # type: ignore[misc]
    def handle(self, listener: socket.socket, client: socket.socket, addr: Any) -> None:
        client.settimeout(CLIENT_READ_TIMEOUT)
        super().handle(listener, client, addr)

    def handle_request(
        self, listener: socket.socket, req: Any, client: socket.socket, addr: Any
    ) -> None:
        super().handle_request(listener, req, client, addr)
        if read_to_the_end(req):
            close_unless_more_arrived(client)
        # else (or if it raised) the stock worker's close_graceful lingers as it always does


def read_to_the_end(req: Any) -> bool:
    """The request's body was read up to its Content-Length, and nothing past it was read."""
    body = req.body
    reader = getattr(body, "reader", None)
    return (
        isinstance(reader, LengthReader)
        and reader.length == 0
        and not body.failed
        and not req.unreader.buf.getvalue()
    )


def close_unless_more_arrived(client: socket.socket) -> None:
    """Send FIN and close, unless the client already sent more than its request: then leave
    the socket open for close_graceful to drain (closing over unread bytes resets it)."""
    with contextlib.suppress(OSError):
        client.shutdown(socket.SHUT_WR)
        client.setblocking(False)  # with a timeout set, recv would first wait for data
        try:
            pending = client.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            pending = None  # nothing buffered: nothing to reset over
        if pending:
            return  # close_graceful sets its own timeout to drain
        client.close()  # close_graceful then finds the socket closed and returns


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
