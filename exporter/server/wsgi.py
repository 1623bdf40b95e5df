"""The WSGI entry point: `get_app` is the only place that builds the service from the
environment (gunicorn calls it in each worker, after the fork)."""

from __future__ import annotations

import os

import falcon
from prometheus_client import CollectorRegistry

from exporter.server.sweeper import Sweeper
from exporter.settings import Settings
from exporter.store import open_store
from exporter.telemetry import multiprocess_values
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing import tracer_from_env
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
    tracer = tracer_from_env(settings, metrics.spans_dropped)
    telemetry = Telemetry(registry, metrics, tracer, multiprocess=MULTIPROC_ENV in os.environ)
    Sweeper(
        store,
        metrics,
        tracer,
        stale_after=settings.stale_after,
        retention=settings.retention,
        interval=settings.sweep_interval,
    ).start()
    return create_app(settings, store, telemetry)
