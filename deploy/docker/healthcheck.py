"""The image's HEALTHCHECK: GET /healthz on the address the service was started with.

A fixed address would call a healthy service on another port unhealthy, and on host
networking could ask some other process that happens to hold that port. So the address is
taken from the running service itself: `--bind` on PID 1's command line (the container's
entry point), else `EXPORTER_BIND`, else the service's default. A wildcard host is asked on
loopback. Standard library only: it runs on the image's Python before anything else loads.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_BIND = "0.0.0.0:8080"
DEFAULT_PORT = 8080
SERVICE_COMMAND_LINE = "/proc/1/cmdline"
TIMEOUT_SECONDS = 2.0


def bind_from_arguments(arguments: Sequence[str]) -> str | None:
    """The value of the last `--bind HOST:PORT` / `--bind=HOST:PORT`, as argparse reads it."""
    found = None
    for index, argument in enumerate(arguments):
        if argument == "--bind" and index + 1 < len(arguments):
            found = arguments[index + 1]
        elif argument.startswith("--bind="):
            found = argument.removeprefix("--bind=")
    return found


def configured_bind(command_line: bytes | None, environ: Mapping[str, str]) -> str:
    """The bind address: the service's `--bind`, else `EXPORTER_BIND`, else the default."""
    if command_line:
        arguments = [part.decode(errors="replace") for part in command_line.split(b"\0")]
        bind = bind_from_arguments(arguments)
        if bind:
            return bind
    return environ.get("EXPORTER_BIND", "").strip() or DEFAULT_BIND


def loopback_if_wildcard(host: str) -> str:
    """A wildcard accepts connections on every local address: ask it on loopback."""
    if host in {"", "*"}:
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a host name
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def health_url(bind: str) -> str:
    """The /healthz URL for a gunicorn bind address (`HOST:PORT`, `[V6]:PORT`, `HOST`)."""
    bind = bind.split(",")[0].strip().removeprefix("tcp://")
    if bind.startswith("unix:") or bind.startswith("fd://"):
        raise ValueError(f"bind address {bind!r} cannot be checked over HTTP")
    if bind.startswith("["):
        host, _, rest = bind[1:].partition("]")
        port = rest.removeprefix(":")
    elif bind.count(":") == 1:
        host, port = bind.split(":")
    else:  # a bare host name or address, or a bare IPv6 address
        host, port = bind, ""
    if not port:
        port = str(DEFAULT_PORT)
    if not port.isdigit():
        raise ValueError(f"bind address {bind!r} has no numeric port")
    host = loopback_if_wildcard(host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def read_command_line(path: str = SERVICE_COMMAND_LINE) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def main() -> int:
    try:
        url = health_url(configured_bind(read_command_line(), os.environ))
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            status: int = response.status
    except (OSError, ValueError) as ex:
        print(f"unhealthy: {ex}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
