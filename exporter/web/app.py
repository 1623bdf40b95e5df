"""Assembles the Falcon app from its collaborators. `build_app` opens them from settings, in each
worker after the fork; `get_app` is the only place that reads the environment for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import falcon
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.ingest import Ingestor
from exporter.server.sweeper import Sweeper
from exporter.settings import Settings
from exporter.store import ReconcileStore, Store, StoreUnavailable, open_store
from exporter.telemetry import multiprocess_values
from exporter.telemetry.metrics import InFlightCollector, Metrics, ReconcileCollector
from exporter.telemetry.multiprocess_scrape import MergedFilesCollector
from exporter.telemetry.tracing import MessageTracer, tracer_from_env
from exporter.web.event_sink import EventStreamResource
from exporter.web.signature import SignatureChecker
from exporter.web.status_callback import StatusCallbackResource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Telemetry:
    """Where the service reports: metrics (in `registry`) and traces."""

    registry: CollectorRegistry
    metrics: Metrics
    tracer: MessageTracer
    # Under gunicorn each worker writes its values to files here, which a scrape merges.
    metrics_directory: str | None = None


def create_app(
    settings: Settings, store: Store, telemetry: Telemetry
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app: every collaborator comes in as an argument."""
    checker = None
    if not settings.insecure_skip_signature:
        checker = SignatureChecker(settings.auth_tokens, settings.shared_keys)
    app = falcon.App()
    app.req_options.auto_parse_form_urlencoded = False  # the raw body is parsed once, by us
    ingestor = Ingestor(store, telemetry.metrics, telemetry.tracer)
    app.add_route("/twilio/status", StatusCallbackResource(settings, ingestor, checker))
    app.add_route("/twilio/events", EventStreamResource(settings, ingestor, checker))
    app.add_route("/metrics", MetricsResource(store, telemetry))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(store))
    return app


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The app configured by the environment (plain gunicorn: `exporter.web.app:get_app()`)."""
    return build_app(Settings.from_env())


def build_app(settings: Settings) -> falcon.App[falcon.Request, falcon.Response]:
    """Open the store, telemetry and background sweeps that `settings` describe; the app."""
    # Already done in the gunicorn master; here for any other server that sets
    # PROMETHEUS_MULTIPROC_DIR. Before the first metric is created.
    multiprocess_values.install()
    store = open_store(settings.store_url, synchronous=settings.sqlite_synchronous)
    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        settings.metric_tags,
        settings.metric_tag_values_max,
        signature_validation=not settings.insecure_skip_signature,
    )
    tracer = tracer_from_env(settings, metrics.spans_dropped)
    telemetry = Telemetry(registry, metrics, tracer, settings.metrics_directory)
    Sweeper(
        store,
        metrics,
        tracer,
        stale_after=settings.stale_after,
        retention=settings.retention,
        interval=settings.sweep_interval,
    ).start()
    return create_app(settings, store, telemetry)


class MetricsResource:
    """GET /metrics: Prometheus text, or OpenMetrics when the scraper asks for it."""

    def __init__(self, store: Store, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        on_error = telemetry.metrics.store_errors.labels("read").inc
        # Figures that live in the store (shared by workers, replicas and reconcile runs).
        self._store_collectors: list[Collector] = [
            InFlightCollector(lambda: dict(store.in_flight_counts()), on_error)
        ]
        if isinstance(store, ReconcileStore):
            self._store_collectors.append(ReconcileCollector(store.reconcile_totals, on_error))
        if telemetry.metrics_directory is not None:
            # Kept for the life of the worker: it caches the files' parsed series keys.
            self._worker_files = MergedFilesCollector(telemetry.metrics_directory)
        else:
            for collector in self._store_collectors:
                telemetry.registry.register(collector)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        encoder, content_type = choose_encoder(req.get_header("Accept") or "")
        resp.content_type = content_type
        resp.data = encoder(self._scrape_registry())

    def _scrape_registry(self) -> CollectorRegistry:
        if self._telemetry.metrics_directory is None:
            return self._telemetry.registry
        # Multiprocess recipe: a fresh registry per scrape merging every worker's files.
        registry = CollectorRegistry()
        registry.register(self._worker_files)
        for collector in self._store_collectors:
            registry.register(collector)
        return registry


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
