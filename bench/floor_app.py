"""The floor: the least any handler that keeps a 200's promise must do, and nothing more.

Checks the signature with twilio's RequestValidator (one HMAC: `compute_signature` over the
URL it was signed for) and commits the raw form to SQLite (WAL, synchronous=NORMAL, one
statement per callback) before answering 200. No dedupe, lifecycle, metrics or spans, and no
ingester applying anything afterwards: the service does all of that on top, so its rate
÷ bare Falcon can never exceed this app's. Served like bare_app.py (see bench/processes.py);
BENCH_FLOOR_DB and BENCH_FLOOR_TOKEN say where to write and what token signed the callbacks.
"""

from __future__ import annotations

import hmac
import os
import sqlite3

import falcon
from bare_app import Health
from twilio.request_validator import RequestValidator

from exporter.inputs.callback_form import FormParams

_SCHEMA = "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, body BLOB, query TEXT)"


class Inbox:
    """One SQLite connection per worker, opened on first use (gunicorn imports the app in each
    worker, after the fork; a sync worker runs one request at a time)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def append(self, body: bytes, query: str) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(self._path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
        conn.execute("INSERT INTO inbox (body, query) VALUES (?, ?)", (body, query))


class StatusCallback:
    def __init__(self, validator: RequestValidator, inbox: Inbox) -> None:
        self._validator = validator
        self._inbox = inbox

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.bounded_stream.read()
        parsed = falcon.uri.parse_query_string(body.decode(), keep_blank=True, csv=False)
        # FormParams: the service's dict with `getall`, so RequestValidator reads values directly.
        form = FormParams({k: v if isinstance(v, list) else [v] for k, v in parsed.items()})
        expected = self._validator.compute_signature(req.uri, form)
        signature = req.get_header("X-Twilio-Signature") or ""
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise falcon.HTTPForbidden()
        self._inbox.append(body, req.query_string)
        resp.status = falcon.HTTP_200


def create_app() -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    validator = RequestValidator(os.environ["BENCH_FLOOR_TOKEN"])
    app.add_route("/twilio/status", StatusCallback(validator, Inbox(os.environ["BENCH_FLOOR_DB"])))
    app.add_route("/readyz", Health())
    app.add_route("/healthz", Health())
    return app


app = create_app()
