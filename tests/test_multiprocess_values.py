"""The cached-pid multiprocess values: a fork is still noticed, each process writes its own
file, and nothing changes outside multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

from exporter.telemetry import multiprocess_values

# A master that creates its metrics before forking two workers, as gunicorn would with
# preload: each worker's increments must land in a file of its own, under its own pid.
FORKING_MASTER = textwrap.dedent(
    """
    import json, os, sys
    from exporter.telemetry import multiprocess_values
    assert multiprocess_values.install()
    from prometheus_client import Counter, Histogram, values
    counter = Counter("calls_total", "Calls.", ["worker"])
    histogram = Histogram("latency_seconds", "Latency.", buckets=(1.0,))
    counter.labels("master").inc()
    children = []
    for n in (1, 2):
        pid = os.fork()
        if pid == 0:
            ok = multiprocess_values.cached_pid() == os.getpid()
            counter.labels(f"worker{n}").inc(n)
            histogram.observe(0.5)
            os._exit(0 if ok else 3)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    counter.labels("master").inc()
    bound = type(counter.labels("master")._value)  # the class each metric bound when created
    json.dump({"master": os.getpid(), "children": children, "codes": codes,
               "cached": bool(getattr(bound, "uses_cached_pid", False))}, sys.stdout)
    """
)


# What the cached pid saves depends on: the library's own extension point (a process
# identifier for MultiProcessValue), asked on every update, and read by metrics when created.
IDENTIFIER_CALLS = textwrap.dedent(
    """
    import json, os, sys
    from prometheus_client import Counter, Histogram, values
    calls = []
    def identifier():
        calls.append(1)
        return os.getpid()
    values.ValueClass = values.MultiProcessValue(process_identifier=identifier)
    counter = Counter("calls_total", "Calls.")
    histogram = Histogram("latency_seconds", "Latency.", buckets=(1.0,))
    before = len(calls)
    for _ in range(10):
        counter.inc()
        histogram.observe(0.5)
    json.dump({"per_update": (len(calls) - before) / 30}, sys.stdout)
    """
)


def _counter_values(path: Path) -> dict[str, float]:
    found = {}
    for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        _, sample, labels, _ = json.loads(key)
        if sample == "calls_total":
            found[labels["worker"]] = value
    return found


def test_workers_forked_after_the_metrics_exist_write_their_own_files(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    output = subprocess.run(
        [sys.executable, "-c", FORKING_MASTER],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    run = json.loads(output)
    assert run["cached"] and run["codes"] == [0, 0]
    master, (first, second) = run["master"], run["children"]
    assert len({master, first, second}) == 3
    assert _counter_values(tmp_path / f"counter_{master}.db") == {"master": 2.0}
    # A worker starts its inherited series from zero in its own file: nothing counted twice.
    assert _counter_values(tmp_path / f"counter_{first}.db") == {"master": 0.0, "worker1": 1.0}
    assert _counter_values(tmp_path / f"counter_{second}.db") == {"master": 0.0, "worker2": 2.0}
    histograms = {p.name for p in tmp_path.glob("histogram_*.db")}
    assert histograms == {f"histogram_{pid}.db" for pid in (master, first, second)}


def test_the_library_asks_the_process_identifier_on_every_update(tmp_path: Path) -> None:
    # Fails when prometheus-client stops asking (the cached pid would then save nothing) or
    # drops the process_identifier extension point.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    output = subprocess.run(
        [sys.executable, "-c", IDENTIFIER_CALLS],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert json.loads(output) == {"per_update": 1.0}


def test_cached_pid_follows_a_fork() -> None:
    assert multiprocess_values.cached_pid() == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it sees, and nothing else
        os.write(write, f"{multiprocess_values.cached_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    cached, actual = os.read(read, 100).split()
    os.close(read)
    os.waitpid(pid, 0)
    assert int(cached) == int(actual) == pid


def test_single_process_mode_is_left_alone() -> None:
    # The test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
    before = values.ValueClass
    assert not multiprocess_values.install()
    assert values.ValueClass is before
