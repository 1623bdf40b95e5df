"""prometheus-client's multiprocess values without a getpid() system call per update.

In multiprocess mode every inc(), set() and observe() first asks the value class's process
identifier (os.getpid by default) whether the process changed: a metric created before a fork
must write to the child's own file, never the parent's. Since glibc 2.25 getpid() is a real
system call, and a callback makes several updates. Here the identifier, passed through the
library's own extension point (MultiProcessValue's `process_identifier`), is a pid kept in this
module and refreshed by an at-fork hook in every child, so the library notices a fork exactly
as before, for the price of a Python call.

`install()` must run before the first metric is created: each metric binds its value class
when it is constructed.
"""

from __future__ import annotations

import os

from prometheus_client import values

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


# Runs in the child of every os.fork() (gunicorn's workers, multiprocessing's fork context)
# before fork() returns there, so no metric update in the child can see the parent's pid.
os.register_at_fork(after_in_child=_refresh_pid)


def cached_pid() -> int:
    """This process's id, as os.getpid() returns it, without the system call."""
    return _pid


# Kept because it saves a getpid() system call on every value update; the tests fail when the
# library stops asking the identifier per update, or drops the extension point.
def install() -> bool:
    """Make prometheus-client's multiprocess values use `cached_pid`. A no-op (False) unless
    the library chose multiprocess mode when imported (PROMETHEUS_MULTIPROC_DIR was set):
    this never switches modes, only the process identifier. Idempotent."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return False
    if not getattr(values.ValueClass, "uses_cached_pid", False):
        value_class = values.MultiProcessValue(process_identifier=cached_pid)  # type: ignore[no-untyped-call]
        value_class.uses_cached_pid = True
        values.ValueClass = value_class
    return True
