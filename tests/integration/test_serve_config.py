"""How the service is configured when it starts: EXPORTER_BIND and WEB_CONCURRENCY under
`serve`, flags that reach the forked workers, and gunicorn run directly as the README shows."""

from __future__ import annotations

import sys
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service, cli_command
from tests.support import AUTH_TOKEN, callback_params, free_port, sid, wait_for


def accepted_callbacks(service: Service) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(service.metrics_text())
        for sample in family.samples
        if sample.name == "twilio_status_callbacks_total"
        and sample.labels.get("outcome") == "accepted"
    )


def test_serve_listens_where_exporter_bind_says(service_factory: Callable[..., Service]) -> None:
    port = free_port()
    service = service_factory(
        port=port,
        env={"EXPORTER_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"},
        command=[*cli_command(), "serve"],  # no --bind, no --workers
    )

    assert requests.get(f"{service.base_url}/healthz", timeout=10).status_code == 200
    # /readyz answers once one worker is up; gunicorn boots the second a moment later.
    wait_for(lambda: len(service.worker_pids()) == 2, what="two workers")


def test_flags_reach_the_forked_workers_without_the_environment(
    service_factory: Callable[..., Service],
) -> None:
    port = free_port()
    service = service_factory(
        port=port,
        env={"TWILIO_AUTH_TOKEN": ""},  # the token is given only as a flag
        command=[
            *cli_command(),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--auth-token",
            AUTH_TOKEN,
        ],
    )

    answers = [service.post_callback(callback_params(sid("SM", n), "sent")) for n in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 6
    assert (
        service.post_callback(callback_params(sid("SM", 9), "sent"), token="x").status_code == 403
    )


def test_gunicorn_run_directly_merges_its_workers_metrics(
    service_factory: Callable[..., Service],
) -> None:
    port = free_port()
    # No PROMETHEUS_MULTIPROC_DIR in the environment: the config module's hooks handle it.
    service = service_factory(
        port=port,
        command=[
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:exporter.server.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "exporter.server.wsgi:get_app()",
        ],
    )

    for n in range(20):
        # A new connection each time, so the callbacks spread over both workers.
        assert service.post_callback(callback_params(sid("SM", n), "sent")).status_code == 200

    # Each scrape is answered by one worker: all of them count only when files are merged.
    assert [accepted_callbacks(service) for _ in range(4)] == [20.0] * 4
