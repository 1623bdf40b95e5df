"""The WSGI entry points: the app built from settings, in each worker after the fork."""

from __future__ import annotations

import falcon
from prometheus_client import CollectorRegistry

from exporter.settings import Settings
from exporter.store import open_store
from exporter.telemetry import multiprocess_values
from exporter.telemetry.exemplars import Exemplars
from exporter.telemetry.metrics import Metrics
from exporter.web.app import Telemetry, create_app


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The app configured by the environment (plain gunicorn: `exporter.server.wsgi:get_app()`)."""
    return build_app(Settings.from_env())


def build_app(settings: Settings) -> falcon.App[falcon.Request, falcon.Response]:
    """Open the store and the metrics that `settings` describe; the app."""
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
        exemplars=Exemplars(settings.metrics_directory),
    )
    return create_app(settings, store, Telemetry(registry, metrics, settings.metrics_directory))
