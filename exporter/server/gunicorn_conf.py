"""Gunicorn settings and hooks, for `serve` and `gunicorn -c python:exporter.server.gunicorn_conf`.

Importing this module reads the server settings and changes nothing; in particular it does not
import prometheus_client. The multiprocess metrics directory is prepared by `on_starting`,
gunicorn's first hook in the master, before any worker exists and before anything imports the
client (`serve` has prepared it already; preparing is idempotent).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

from exporter.server import metrics_directory
from exporter.settings import ConfigError, ServerSettings, Settings


def _server_settings() -> ServerSettings:
    try:
        return ServerSettings.from_env()
    except ConfigError as ex:
        # gunicorn would print a traceback for an exception while loading its config.
        _fail(str(ex))


def _fail(message: str) -> NoReturn:
    print(f"twilio-status-exporter: error: {message}", file=sys.stderr)
    raise SystemExit(2)


_server = _server_settings()
bind = _server.bind
workers = _server.workers

_ingester: Any = None  # the master's IngesterProcess, once gunicorn is ready
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
loglevel = _server.log_level


def on_starting(server: Any) -> None:
    """Master start: metrics directory first, fail fast on bad configuration, then start
    metrics from a clean slate."""
    configure_logging()
    if server.cfg.preload_app:
        # The app would have been built in the master already: before the metrics directory
        # existed, with a store connection and threads that a fork does not carry over.
        _fail("--preload is not supported: the app is built in each worker, after the fork")
    directory = metrics_directory.prepare()
    from exporter.server.startup import check_startup
    from exporter.telemetry import multiprocess_values

    # Before any metric exists, in the master too: values then notice a fork without a getpid().
    multiprocess_values.install()
    # `serve`'s application carries the settings it parsed (flags included); under plain
    # gunicorn there is none, and the environment is the whole configuration.
    check_startup(getattr(server.app, "settings", None))
    metrics_directory.clear(directory)


def when_ready(server: Any) -> None:
    """The workers are up: start the deployment's ingester beside them."""
    from exporter.server.ingester import IngesterProcess

    global _ingester
    # `serve` parsed its settings (flags included) into its application object; plain
    # gunicorn has only the environment.
    settings = getattr(server.app, "settings", None) or Settings.from_env()
    _ingester = IngesterProcess(settings)
    _ingester.start()


def post_fork(server: Any, worker: Any) -> None:
    configure_logging()
    from exporter.server.gunicorn_worker import SlowClientFilter

    logging.getLogger("gunicorn.error").addFilter(SlowClientFilter())


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _ingester is not None:
        _ingester.stop()
    metrics_directory.remove_if_created()


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=_server.log_level.upper(),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
