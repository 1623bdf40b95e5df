"""The soak script in short: steady simulated traffic, memory and descriptors stay flat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent.parent / "scripts" / "soak.py"


def test_short_soak_keeps_memory_and_descriptors_flat(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "40", "--sample-interval", "5",
         "--rate", "150", "--report", str(report)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    samples = json.loads(report.read_text())["samples"]
    assert len(samples) >= 8
    assert samples[-1]["accepted"] > 2000
