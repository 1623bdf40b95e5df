"""Importing a module of the package changes nothing: the environment is read, never written,
until a command runs (only `serve` and the gunicorn hooks set PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import exporter

# Imports every module in a fresh interpreter, one by one, and names the first whose import
# left the environment different from how it found it.
_PROBE = """
import importlib, json, os, sys
for name in json.loads(sys.argv[1]):
    before = dict(os.environ)
    importlib.import_module(name)
    if dict(os.environ) != before:
        changed = sorted(set(before.items()) ^ set(os.environ.items()))
        print(json.dumps({"module": name, "changed": [key for key, _ in changed]}))
        raise SystemExit(1)
"""


def _every_module() -> list[str]:
    modules = [
        module.name
        for module in pkgutil.walk_packages(exporter.__path__, prefix="exporter.")
        if not module.name.endswith(".__main__")  # runs the command line when imported
    ]
    return ["exporter", *modules]


def test_importing_any_module_leaves_the_environment_unchanged() -> None:
    modules = _every_module()
    assert "exporter.server.gunicorn_conf" in modules
    # A bare environment: this test process has imported the package already, so a variable
    # that an import sets would already be in a copy of its environment, and go unnoticed.
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules)],
        env={"PATH": os.environ.get("PATH", "")},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
