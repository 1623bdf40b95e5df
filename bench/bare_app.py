"""The ceiling: a bare Falcon app that answers 200 to the same callbacks and does nothing else.

Served under the same gunicorn worker settings as the service (see bench/run.py), so the
difference between the two is the exporter's own work.
"""

from __future__ import annotations

import falcon


class StatusCallback:
    """Reads the form body (the server must) and answers an empty 200."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.bounded_stream.read()
        resp.status = falcon.HTTP_200


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_200


def create_app() -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route("/twilio/status", StatusCallback())
    app.add_route("/readyz", Health())
    app.add_route("/healthz", Health())
    return app


app = create_app()
