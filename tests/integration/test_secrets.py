"""Secrets stay secret: auth tokens and store passwords never reach logs, answers or /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import requests

from tests.integration.service import Service
from tests.support import callback_params, sid

TOKEN = "tok-9f8e7d6c5b4a39281706"
SECOND_TOKEN = "tok-rotated-0a1b2c3d4e5f"


def test_tokens_never_appear_in_logs_answers_or_metrics(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory(
        workers=2,
        env={"TWILIO_AUTH_TOKEN": f"{TOKEN},{SECOND_TOKEN}", "EXPORTER_LOG_LEVEL": "debug"},
    )
    answers = [
        service.post_callback(callback_params(sid("SM", 1), "sent"), token=TOKEN),
        service.post_callback(callback_params(sid("SM", 1), "delivered"), token="wrong"),
        service.post_callback({"MessageStatus": "sent"}, token=SECOND_TOKEN),
        requests.post(service.status_url, data=b"\xff", timeout=10),
    ]
    assert [a.status_code for a in answers] == [200, 403, 400, 415]
    texts = [a.text for a in answers] + [service.metrics_text()]
    service.stop()
    texts.append(service.log())
    for text in texts:
        assert TOKEN not in text and SECOND_TOKEN not in text


def test_bad_configuration_error_does_not_echo_the_store_password() -> None:
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "EXPORTER_STORE": "postgresql://exporter:hunter2secret@127.0.0.1:1/exporter",
    }
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--bind", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("twilio-status-exporter: error: EXPORTER_STORE")
    assert "hunter2secret" not in result.stderr + result.stdout
    assert TOKEN not in result.stderr + result.stdout


def test_insecure_mode_warns_at_start_and_shows_in_metrics(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory(workers=2, env={"EXPORTER_INSECURE_SKIP_SIGNATURE": "1"})
    assert "twilio_exporter_signature_validation_enabled 0.0" in service.metrics_text()
    assert "EXPORTER_INSECURE_SKIP_SIGNATURE=1" in service.log()
    assert "WARNING" in service.log()
