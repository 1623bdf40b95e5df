"""The store becomes unwritable under a running service: callbacks get 503 (Twilio retries),
/readyz says so, nothing crashes, and service resumes by itself when the store returns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.integration.service import Service
from tests.support import callback_params, sid, wait_for


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file read-only for everyone, root included (the immutable flag), or by mode."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)


def test_read_only_sqlite_file_means_503_then_recovery(service: Service) -> None:
    database = Path(service.store_url.removeprefix("sqlite:///"))
    assert service.post_callback(callback_params(sid("SM", 1), "sent")).status_code == 200
    ready = f"{service.base_url}/readyz"
    with read_only(database):
        wait_for(lambda: requests.get(ready, timeout=5).status_code == 503, what="/readyz 503")
        # Every worker notices within its re-check interval (a worker that checked just
        # before the change may still commit for up to a second: into the WAL, durably);
        # then every callback is refused, each with a retry hint.
        refused = wait_for(
            lambda: (r := [service.post_callback(callback_params(sid("SM", n), "delivered"))
                           for n in range(2, 12)]) and {x.status_code for x in r} == {503} and r,
            what="callbacks answered 503",
        )  # fmt: skip
        assert {response.headers.get("Retry-After") for response in refused} == {"5"}
        assert requests.get(f"{service.base_url}/healthz", timeout=5).status_code == 200
        # Not waiting for the ingester: it cannot apply anything while the file is read-only.
        assert "twilio_status_callbacks_total" in service.metrics_text(settled=False)
    wait_for(lambda: requests.get(ready, timeout=5).status_code == 200, what="/readyz 200 again")
    retried = [
        service.post_callback(callback_params(sid("SM", n), "delivered")) for n in range(2, 12)
    ]
    assert {r.status_code for r in retried} == {200}
    assert 'outcome="error"' in service.metrics_text()
    assert service.process.poll() is None
    assert "Traceback" not in service.log()
