"""The app under test with its ingester applying inline: after each request the inbox is
applied at once, so a test reads counters, the store and spans as the ingester leaves them.
(Under gunicorn the ingester is a process of its own; tests/integration drives that.)"""

from __future__ import annotations

import falcon
import falcon.testing

from exporter.ingest.applier import Applier
from exporter.ingest.ingester import Ingester
from exporter.ingest.outcomes import Outcomes
from exporter.settings import Settings
from exporter.store import Store
from exporter.telemetry.tracing.outbox import SpanOutbox
from exporter.web.app import Telemetry, create_app


class ApplyAfterEachRequest:
    """Falcon middleware: apply whatever the request appended before answering."""

    def __init__(self, ingester: Ingester) -> None:
        self._ingester = ingester

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        self._ingester.apply_pending()


def inline_ingester(
    store: Store, telemetry: Telemetry, spans: SpanOutbox | None = None
) -> Ingester:
    return Ingester(Applier(store, telemetry.metrics, spans), Outcomes(telemetry.metrics))


def inline_app(
    settings: Settings, store: Store, telemetry: Telemetry, spans: SpanOutbox | None = None
) -> falcon.App[falcon.Request, falcon.Response]:
    app = create_app(settings, store, telemetry)
    app.add_middleware(ApplyAfterEachRequest(inline_ingester(store, telemetry, spans)))
    return app


def inline_client(
    settings: Settings, store: Store, telemetry: Telemetry, spans: SpanOutbox | None = None
) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(inline_app(settings, store, telemetry, spans))
