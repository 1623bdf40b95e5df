"""The multiprocess metrics directory, handled for the user: one per service run.

prometheus-client picks its file-backed values when it is first imported, if
PROMETHEUS_MULTIPROC_DIR is set by then. So the gunicorn master must set it before anything
imports the client; the workers it forks inherit the variable, and with it multiprocess mode.
Nothing here runs at import: `serve` and the gunicorn hooks call `prepare()` explicitly.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from exporter.settings import METRICS_DIRECTORY_VARIABLE, metrics_directory

# The directory this process created (and so removes at exit); None when the user chose one.
_created: str | None = None


def prepare() -> str:
    """The directory PROMETHEUS_MULTIPROC_DIR names, after creating a private one when the
    user set none. Idempotent: a second call returns the same directory."""
    global _created
    directory = metrics_directory()
    if directory is None:
        directory = _created = tempfile.mkdtemp(prefix="twilio-status-exporter-metrics-")
        # The one variable this package sets: the client and the forked workers read it.
        os.environ[METRICS_DIRECTORY_VARIABLE] = directory
    os.makedirs(directory, exist_ok=True)
    return directory


def clear(directory: str) -> None:
    """Remove a previous run's worker files: they would be merged into every scrape."""
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def remove_if_created() -> None:
    """At exit: remove the directory `prepare` created, never one the user chose."""
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
