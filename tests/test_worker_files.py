"""The multiprocess scrape: every process's files merged, a file still empty skipped."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from exporter.web.app import WorkerFiles


def write_counter(path: Path, value: float) -> None:
    values = MmapedDict(str(path))
    key = mmap_key("calls_total", "calls_total", ["worker"], ["a"], "Calls.")
    values.write_value(key, value, 0.0)
    values.close()


def test_a_file_still_empty_does_not_fail_the_scrape(tmp_path: Path) -> None:
    write_counter(tmp_path / "counter_101.db", 2.0)
    write_counter(tmp_path / "counter_102.db", 3.0)
    (tmp_path / "counter_103.db").touch()  # a process created it, and wrote nothing yet
    registry = CollectorRegistry()
    registry.register(WorkerFiles(str(tmp_path)))
    assert registry.get_sample_value("calls_total", {"worker": "a"}) == 5.0
