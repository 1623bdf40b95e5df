"""A short coverage-guided fuzz run of the parsing and validation path, in every test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).parent.parent / "fuzz" / "fuzz_callback.py"


def test_fuzzing_the_callback_path_finds_no_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris has no wheel for this Python")
    result = subprocess.run(
        [sys.executable, str(HARNESS), "-atheris_runs=30000", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
