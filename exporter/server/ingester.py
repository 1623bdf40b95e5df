"""The ingester process: applies the inbox, runs the sweeps, exports the span outbox.

gunicorn's master starts one beside its workers (`IngesterProcess`, from the gunicorn
config) and restarts it if it dies. Every replica starts one; the store's leadership lock lets
exactly one of them work at a time, and another takes over within a second or two of its
death. The process leaves when its parent (the gunicorn master) is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client import multiprocess

from exporter.ingest.applier import Applier
from exporter.ingest.ingester import Ingester
from exporter.ingest.outcomes import Outcomes
from exporter.server.sweeper import Sweeper
from exporter.settings import Settings
from exporter.store import Store, StoreUnavailable
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing import exporters_from_env, service_resource, span_outbox_from_env
from exporter.telemetry.tracing.shipper import SpanShipper

log = logging.getLogger(__name__)
IDLE_POLL = 0.05  # an empty inbox is looked at again after this long: the lag when idle
# After a pass that found only a few entries, the next waits a moment for more to gather: a
# batch costs a fixed part (reads, a commit, on PostgreSQL several round trips) whatever its
# size, and every write transaction makes the webhook workers' appends wait (SQLite's write
# lock). Under steady load this costs less CPU per callback on PostgreSQL and lowers the
# answer latency's tail on SQLite (bench/results); the lag grows by at most the pause.
GATHER_BELOW = 128
GATHER_PAUSE = 0.02
LEADERSHIP_POLL = 1.0  # a standby asks for the lock this often: the takeover delay
STORE_RETRY = 1.0  # the store being down: try again after this long
RESTART_DELAY = 1.0  # the master restarts an ingester that died after this long


class IngesterLoop:
    """Leads or waits: while it holds the deployment's lock, applies whatever the inbox holds,
    sweeps every `sweep_interval`, and exports spans in a thread."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        spans = span_outbox_from_env(settings, metrics.spans_dropped)
        self._store = store
        self._metrics = metrics
        self._ingester = Ingester(Applier(store, metrics, spans), Outcomes(metrics))
        self._sweeper = Sweeper(
            store,
            metrics,
            spans,
            stale_after=settings.stale_after,
            retention=settings.retention,
        )
        self._sweep_interval = settings.sweep_interval
        self._tracing = spans is not None
        self._stop = threading.Event()
        self._parent = os.getppid()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        leadership = self._store.leadership()
        while not self._stop.is_set() and not self._orphaned():
            try:
                leading = leadership.try_acquire()
            except StoreUnavailable as ex:
                log.warning("ingester waits for the store: %s", ex)
                self._stop.wait(STORE_RETRY)
                continue
            if leading:
                log.info("this process is the ingester (pid %d)", os.getpid())
                self._lead(leadership.still_held)
                leadership.release()
            else:
                self._stop.wait(LEADERSHIP_POLL)

    def _lead(self, still_held: Callable[[], bool]) -> None:
        shipper = None
        if self._tracing:
            exporters = exporters_from_env()
            shipper = SpanShipper(self._store, exporters, service_resource(), self._metrics)
            shipper.start()
        self._metrics.ingester_leader.set(1)
        next_sweep = time.monotonic() + self._sweep_interval
        try:
            while not self._stop.is_set() and not self._orphaned():
                try:
                    applied = self._ingester.apply_pending()
                    if time.monotonic() >= next_sweep:
                        self._sweeper.run_once()
                        next_sweep = time.monotonic() + self._sweep_interval
                except StoreUnavailable as ex:
                    self._metrics.store_errors("ingest").inc()
                    log.warning("ingester paused, store unavailable: %s", ex)
                    self._stop.wait(STORE_RETRY)
                    continue
                if not still_held():
                    log.error("ingester lost its lock (store connection lost): standing by")
                    return
                if 0 < applied < GATHER_BELOW:
                    self._stop.wait(GATHER_PAUSE)
                if applied == 0:
                    # What the last batches kept since the previous save (the applier saves
                    # at most once a second, so the newest may still wait).
                    self._metrics.exemplars.save_if_due()
                    self._stop.wait(IDLE_POLL)
        finally:
            self._metrics.ingester_leader.set(0)
            self._metrics.exemplars.save()
            if shipper is not None:
                shipper.stop()

    def _orphaned(self) -> bool:
        return os.getppid() != self._parent


class IngesterProcess:
    """The master's handle on its ingester: started when gunicorn is ready, restarted when it
    dies, stopped with the master. The settings go to the child through a pipe (pickled), as
    `serve` parsed them: flags included, secrets never on a command line or in an environment.

    Spawned with posix_spawn, not subprocess: gunicorn forks workers from the master at any
    moment, and a worker forked while subprocess waits for its child's exec would inherit
    the pipe that wait reads, and hold it open for its whole life."""

    def __init__(self, settings: Settings) -> None:
        self._settings = pickle.dumps(settings)
        self._stopping = threading.Event()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="ingester", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        pid, thread = self._pid, self._thread
        if pid is None or thread is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        thread.join(timeout)
        if thread.is_alive():  # it did not finish in time
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            thread.join(timeout)

    def _supervise(self) -> None:
        # No import may happen in this thread: a worker forked by the main thread while this
        # one held a module's import lock would inherit it held, and hang at its next import.
        while not self._stopping.is_set():
            pid = self._pid = self._spawn()
            code = _wait(pid)
            if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                return
            log.error("ingester (pid %d) exited with status %s; restarting it", pid, code)
            self._stopping.wait(RESTART_DELAY)

    def _spawn(self) -> int:
        read_end, write_end = os.pipe()
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-m", "exporter.server.ingester"],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0)],
            )
        finally:
            os.close(read_end)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(self._settings)
        return pid


def _wait(pid: int) -> int | str:
    """The child's exit code; gunicorn's arbiter reaps any child of the master that exits, so
    it may have taken the status first."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "unknown (reaped by gunicorn)"
    return os.waitstatus_to_exitcode(status)


def main() -> int:
    """`python -m exporter.server.ingester`: what IngesterProcess runs."""
    from prometheus_client import CollectorRegistry

    from exporter.server.gunicorn_conf import configure_logging
    from exporter.store import open_store
    from exporter.telemetry import multiprocess_values

    # From IngesterProcess, our parent, through a pipe only it holds: not untrusted data.
    settings: Settings = pickle.load(sys.stdin.buffer)  # noqa: S301
    configure_logging()
    multiprocess_values.install()
    store = open_store(settings.store_url, synchronous=settings.sqlite_synchronous)
    metrics = Metrics.for_settings(CollectorRegistry(), settings)
    loop = IngesterLoop(settings, store, metrics)

    def stop(signum: int, frame: FrameType | None) -> None:
        loop.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        loop.run()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
