"""The compose demo's proxy for real: deploy/nginx/nginx.conf in front of two replicas sharing
PostgreSQL. Callbacks signed for the proxy's public URL validate on whichever replica they
reach, because the proxy forwards the host and scheme and the replicas trust only it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.service import Service
from tests.integration.test_pipeline_e2e import samples, value
from tests.support import AUTH_TOKEN, callback_params, free_port, sid, signed_request, wait_for
from tests.test_deploy import local_nginx_conf, require

pytestmark = pytest.mark.integration
PUBLIC_URL = "http://proxy/twilio/status"  # what the compose simulator signs and calls


@pytest.fixture
def proxied_replicas(
    service_factory: Callable[..., Service], postgres_url: str, tmp_path: Path
) -> Iterator[tuple[str, list[Service]]]:
    """Two replicas behind the real nginx config; yields the proxy's local address."""
    nginx = require("nginx", "apt-get install nginx-light")
    env = {"EXPORTER_TRUSTED_PROXIES": "127.0.0.1/32"}
    replicas = [service_factory(workers=2, store_url=postgres_url, env=env) for _ in range(2)]
    port = free_port()
    conf = local_nginx_conf(tmp_path, tuple(f"127.0.0.1:{r.port}" for r in replicas), port=port)
    proxy = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp_path),
         "-g", f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/nginx.log; daemon off;"],
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{address}/healthz", timeout=2).ok, what="nginx")
        yield address, replicas
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)


def post_via_proxy(address: str, params: dict[str, str], token: str = AUTH_TOKEN) -> int:
    query = "tag.campaign=spring"
    body, headers = signed_request(f"{PUBLIC_URL}?{query}", params, token)
    headers["Host"] = "proxy"  # as the simulator's request to http://proxy/ carries
    url = f"{address}/twilio/status?{query}"
    return requests.post(url, data=body, headers=headers, timeout=30).status_code


def test_signed_callbacks_through_the_proxy_validate_on_both_replicas(
    proxied_replicas: tuple[str, list[Service]],
) -> None:
    address, replicas = proxied_replicas
    codes = [post_via_proxy(address, callback_params(sid("SM", n), "sent")) for n in range(40)]
    assert set(codes) == {200}
    forged = post_via_proxy(address, callback_params(sid("SM", 99), "sent"), token="wrong")
    assert forged == 403
    scrapes = [samples(r.metrics_text()) for r in replicas]
    # One ingester applied what both replicas took: the counts add up to every callback...
    accepted = [value(s, "twilio_status_callbacks_total", outcome="accepted") for s in scrapes]
    assert sum(accepted) == 40
    # ...and nginx spread the requests over both replicas.
    handled = [value(s, "twilio_status_callback_request_duration_seconds_count") for s in scrapes]
    assert sum(handled) == 41 and min(handled) > 0
    assert requests.get(f"{address}/readyz", timeout=10).status_code == 200
    assert requests.get(f"{address}/metrics", timeout=10).status_code == 404  # scraped directly
