"""The WSGI entry point: `get_app` is the only place that builds the service from the
environment (gunicorn calls it in each worker, after the fork)."""

from __future__ import annotations

import os

import falcon
from prometheus_client import CollectorRegistry

from exporter.settings import Settings
from exporter.store import open_store
from exporter.telemetry import multiprocess_values
from exporter.telemetry.metrics import Metrics
from exporter.web.app import MULTIPROC_ENV, Telemetry, create_app


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """Build the app from the environment (gunicorn: `exporter.server.wsgi:get_app()`)."""
    settings = Settings.from_env()
    # Already done by gunicorn_conf under `serve`; here for any other server that sets
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
    telemetry = Telemetry(registry, metrics, multiprocess=MULTIPROC_ENV in os.environ)
    return create_app(settings, store, telemetry)
