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

# The directory created here, and by which process: that process removes it at exit, never a
# forked worker (workers leave through the same code paths as the master).
_created: tuple[str, int] | None = None


def prepare() -> str:
    """The directory PROMETHEUS_MULTIPROC_DIR names, after creating a private one when the
    user set none. Idempotent: a second call returns the same directory."""
    global _created
    directory = metrics_directory()
    if directory is None:
        directory = tempfile.mkdtemp(prefix="twilio-status-exporter-metrics-")
        _created = (directory, os.getpid())
        # The one variable this package sets: the client and the forked workers read it.
        os.environ[METRICS_DIRECTORY_VARIABLE] = directory
    os.makedirs(directory, exist_ok=True)
    return directory


def clear(directory: str) -> None:
    """Remove a previous run's worker files and exemplars: they would be merged into every
    scrape."""
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
    # Imported here: importing this module must not import prometheus_client (see above).
    from exporter.telemetry.exemplars import remove_files

    remove_files(directory)


def remove_if_created() -> None:
    """At exit: remove the directory `prepare` created in this process, never one the user
    chose. Safe to call more than once."""
    if _created is not None and _created[1] == os.getpid():
        shutil.rmtree(_created[0], ignore_errors=True)
