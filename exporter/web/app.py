"""Assembles the Falcon app from its collaborators (exporter.server.wsgi builds them from the
environment)."""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import falcon
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from exporter.ingest.intake import Intake
from exporter.ingest.outcomes import Outcomes
from exporter.settings import Settings
from exporter.store import ReconcileStore, Store, StoreUnavailable
from exporter.telemetry.exemplars import WithExemplars, attach, read_directory
from exporter.telemetry.metrics import (
    BacklogCollector,
    InFlightCollector,
    Metrics,
    ReconcileCollector,
)
from exporter.web.event_sink import EventStreamResource
from exporter.web.signature import SignatureChecker
from exporter.web.status_callback import StatusCallbackResource
from exporter.web.webhook import store_unavailable, unexpected_error

log = logging.getLogger(__name__)
CALLBACK_ROUTE = "/twilio/status"
OPENMETRICS = "application/openmetrics-text"


@dataclass(frozen=True)
class Telemetry:
    """Where the service reports: metrics, in `registry`. (Spans are built and exported by
    the ingester, from the store.)"""

    registry: CollectorRegistry
    metrics: Metrics
    # Under gunicorn each worker writes its values to files here, which a scrape merges.
    metrics_directory: str | None = None


def create_app(
    settings: Settings, store: Store, telemetry: Telemetry
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app: every collaborator comes in as an argument."""
    checker = None
    if not settings.insecure_skip_signature:
        checker = SignatureChecker(settings.auth_tokens, settings.shared_keys)
    app = falcon.App(middleware=[CallbackTiming(telemetry.metrics.request_duration)])
    app.req_options.auto_parse_form_urlencoded = False  # the raw body is parsed once, by us
    app.add_error_handler(Exception, unexpected_error)
    app.add_error_handler(StoreUnavailable, store_unavailable)
    intake = Intake(store, Outcomes(telemetry.metrics))
    app.add_route(CALLBACK_ROUTE, StatusCallbackResource(settings, intake, checker))
    app.add_route("/twilio/events", EventStreamResource(settings, intake, checker))
    app.add_route("/metrics", MetricsResource(store, telemetry))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(store))
    return app


class MetricsResource:
    """GET /metrics: Prometheus text, or OpenMetrics when the scraper asks for it."""

    def __init__(self, store: Store, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        on_error = telemetry.metrics.store_errors("read").inc
        # Figures that live in the store (shared by workers, replicas and reconcile runs).
        self._store_collectors: list[Collector] = [
            InFlightCollector(lambda: dict(store.in_flight_counts()), on_error),
            BacklogCollector(store.backlog, on_error),
        ]
        if isinstance(store, ReconcileStore):
            self._store_collectors.append(ReconcileCollector(store.reconcile_totals, on_error))
        if telemetry.metrics_directory is not None:
            self._worker_files = telemetry.metrics_directory
        else:
            for collector in self._store_collectors:
                telemetry.registry.register(collector)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        encoder, content_type = choose_encoder(req.get_header("Accept") or "")
        resp.content_type = content_type
        # Only OpenMetrics has exemplars: a text scrape does not read them at all.
        exemplars = content_type.startswith(OPENMETRICS)
        resp.data = encoder(self._scrape_registry(exemplars))

    def _scrape_registry(self, exemplars: bool) -> Collector:
        if self._telemetry.metrics_directory is None:
            registry = self._telemetry.registry
            if not exemplars:
                return registry
            return WithExemplars(registry, self._telemetry.metrics.exemplars.latest)
        # Multiprocess recipe: a fresh registry per scrape merging every worker's files.
        registry = CollectorRegistry()
        registry.register(WorkerFiles(self._worker_files, exemplars=exemplars))
        for collector in self._store_collectors:
            registry.register(collector)
        return registry


class WorkerFiles(MultiProcessCollector):
    """Every process's metric files merged, as the library's collector does, less the files
    still empty: a process that has just created its file (or died right then) leaves it at
    zero bytes for a moment, or for good, and the library fails the whole scrape on it.
    With `exemplars`, the histograms' buckets carry the most recent exemplar any process
    saved in the directory (the library's multiprocess mode keeps none)."""

    def __init__(self, path: str, exemplars: bool = False) -> None:
        super().__init__(None, path)  # type: ignore[no-untyped-call]
        self._exemplars = exemplars

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self._path, "*.db"))
        written = [name for name in files if _size(name) > 0]
        merged: Iterable[Metric] = self.merge(written, accumulate=True)  # type: ignore[no-untyped-call]
        if self._exemplars:
            return attach(merged, read_directory(self._path))
        return merged


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # removed since it was listed: a process marked dead
        return 0


class CallbackTiming:
    """Times every StatusCallback request, refused ones included, for
    `twilio_status_callback_request_duration_seconds`."""

    def __init__(self, histogram: Histogram) -> None:
        self._observe = histogram.observe

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path == CALLBACK_ROUTE:
            req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        started = req.context.get("started")
        if started is not None:
            self._observe(time.perf_counter() - started)


class HealthResource:
    """GET /healthz: the process is serving."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class ReadyResource:
    """GET /readyz: 200 only when the store accepts a write right now."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        try:
            self._store.check_writable()
        except StoreUnavailable as ex:
            log.warning("not ready: %s", ex)
            resp.status = falcon.HTTP_503
            resp.text = "store unavailable\n"
            return
        resp.text = "ok\n"
