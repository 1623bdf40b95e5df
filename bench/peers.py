"""The Express peers (../shared/peers/express): installed once per content, started like a
target.

The folder is copied to bench/.cache/express-<hash of its files>/ and `npm ci` runs there
(npm install without a lock file); later runs reuse it. bench/.cache is not committed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from processes import BENCH_DIR, REPO, Server

DEFAULT_DIR = REPO.parent / "shared" / "peers" / "express"
CACHE = BENCH_DIR / ".cache"
SCRIPTS = {"express": "server.js", "express-validating": "server_validating.js"}
# The URL server_validating.js validates every signature against (fixed in the script).
VALIDATED_URL = "https://hooks.example.com/twilio/status"


def install(source: Path) -> Path:
    """A directory holding the peer's scripts and node_modules, installed at most once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the Express peers need node and npm: apt-get install nodejs npm")
    files = sorted(p for p in source.iterdir() if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = CACHE / f"express-{digest.hexdigest()[:16]}"
    if (target / "node_modules").is_dir():
        return target
    staging = CACHE / f"{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, staging / path.name)
    command = ["npm", "ci" if (staging / "package-lock.json").exists() else "install"]
    print(f"bench: {' '.join(command)} for the Express peers in {target}", file=sys.stderr)
    result = subprocess.run(
        [*command, "--no-audit", "--no-fund"],
        cwd=staging,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"npm failed in {staging}:\n{result.stdout}{result.stderr}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def start_express(installed: Path, target: str, port: int, token: str, log_path: Path) -> Server:
    """One Node process running the peer's script; its stdout (the per-request log line of
    the validating handler) goes to a file, as a service's log would."""
    env = {**os.environ, "PORT": str(port), "TOKEN": token}
    env.pop("LOG", None)  # the plain handler logs only when LOG is set, as in the tutorial
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["node", SCRIPTS[target]],
            cwd=installed,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(target, port, process, log_path, ready_path=None)
