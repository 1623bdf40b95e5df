"""Gunicorn settings and hooks, for `serve` and `gunicorn -c python:exporter.server.gunicorn_conf`.

The multiprocess metrics directory is prepared here, in the master, before any worker (or
this module) imports prometheus_client: the client picks its file-backed value class at import.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWN_DIR = MULTIPROC_ENV not in os.environ
if _OWN_DIR:
    os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="twilio-status-exporter-metrics-")

from prometheus_client import multiprocess  # noqa: E402  (after the directory is set)

from exporter.telemetry import multiprocess_values  # noqa: E402

# Before any metric exists, in the master too: values then notice a fork without a getpid().
multiprocess_values.install()

_ingester: Any = None  # the master's IngesterProcess, once gunicorn is ready

bind = os.environ.get("EXPORTER_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("WEB_CONCURRENCY") or max(2, os.cpu_count() or 1))
worker_class = "exporter.server.gunicorn_worker.SyncWorker"
# A callback commits in well under a second and Twilio gives up after 15 s: a worker silent
# for 20 s is wedged, or held by a client trickling its request, and is replaced.
timeout = 20
graceful_timeout = 10
# X-Forwarded-* are believed only from EXPORTER_TRUSTED_PROXIES, by the signature check;
# gunicorn must not rewrite the scheme on its own.
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = ""
# gunicorn's runtime control socket sits at one fixed path per user: two instances on one
# host would fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("EXPORTER_LOG_LEVEL", "info").lower()


def on_starting(server: Any) -> None:
    """Master start: fail fast on bad configuration, then start metrics from a clean slate."""
    configure_logging()
    from exporter.server.startup import check_startup

    check_startup()
    directory = os.environ[MULTIPROC_ENV]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        # Files of a previous run's workers would be merged into every scrape (and slow it).
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def when_ready(server: Any) -> None:
    """The workers are up: start the deployment's ingester beside them."""
    from exporter.server.ingester import IngesterProcess

    global _ingester
    _ingester = IngesterProcess()
    _ingester.start()


def post_fork(server: Any, worker: Any) -> None:
    configure_logging()
    from exporter.server.gunicorn_worker import SlowClientFilter

    logging.getLogger("gunicorn.error").addFilter(SlowClientFilter())


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _ingester is not None:
        _ingester.stop()
    if _OWN_DIR:
        shutil.rmtree(os.environ[MULTIPROC_ENV], ignore_errors=True)


def configure_logging() -> None:
    level = os.environ.get("EXPORTER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
