"""Short coverage-guided fuzz runs of both inputs' parsing and validation, in every test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent.parent / "fuzz"


@pytest.mark.parametrize("harness", ["fuzz_callback.py", "fuzz_events.py"])
def test_fuzzing_the_parsing_path_finds_no_crash(tmp_path: Path, harness: str) -> None:
    pytest.importorskip("atheris", reason="atheris has no wheel for this Python")
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / harness),
            "-atheris_runs=30000",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
