"""`twilio-status-exporter`: serve, simulate, reconcile, show, migrate.

Imports of the service's modules happen inside the commands: `serve` must set up the
multiprocess metrics directory before anything imports prometheus_client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from exporter import __version__

# serve's flags, each also an environment variable (the environment is what workers read).
SERVE_FLAGS = (
    ("--auth-token", "TWILIO_AUTH_TOKEN",
     "auth token(s) validating signatures, comma-separated (prefer the variable: ps shows flags)"),
    ("--account-sid", "TWILIO_ACCOUNT_SID", "account SID for the REST API"),
    ("--public-url", "EXPORTER_PUBLIC_URL",
     "public base URL Twilio calls, e.g. https://hooks.example.com"),
    ("--store", "EXPORTER_STORE", "sqlite:///PATH (default) or postgresql://..."),
    ("--trusted-proxies", "EXPORTER_TRUSTED_PROXIES",
     "proxy addresses/CIDRs whose X-Forwarded-* headers are believed"),
    ("--stale-after", "EXPORTER_STALE_AFTER",
     "non-final messages go stale after this long (default 72h)"),
    ("--retention", "EXPORTER_RETENTION", "delete records older than this (default 90d, 0 = keep)"),
    ("--metric-tags", "EXPORTER_METRIC_TAGS", "tag names that become metric labels (comma list)"),
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twilio-status-exporter",
        description="Turns Twilio message status callbacks into Prometheus metrics, "
        "OpenTelemetry traces and a durable lifecycle record.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--bind", default="0.0.0.0:8080", help="HOST:PORT (default 0.0.0.0:8080)")
    serve.add_argument(
        "--workers", type=_positive_int, help="worker processes (default: CPUs, min 2)"
    )
    for flag, variable, help_text in SERVE_FLAGS:
        serve.add_argument(flag, metavar="VALUE", help=f"{help_text} [{variable}]")
    serve.add_argument(
        "--insecure-skip-signature",
        action="store_true",
        help="do not validate signatures: local demos only [EXPORTER_INSECURE_SKIP_SIGNATURE]",
    )
    serve.set_defaults(run=run_serve)

    simulate = commands.add_parser("simulate", help="send realistic signed callback traffic")
    from exporter.cli import simulate as simulation

    simulation.add_arguments(simulate)
    simulate.set_defaults(run=simulation.run)

    reconcile = commands.add_parser(
        "reconcile",
        help="poll Twilio's REST API for statuses whose callbacks never arrived",
        description="Poll Twilio's REST API for messages stuck in a non-final status, and "
        "add the messages Twilio lists for a day that the store never saw. Credentials: "
        "TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET.",
    )
    from exporter.cli import reconcile as reconcile_command

    reconcile_command.add_arguments(reconcile)
    reconcile.set_defaults(run=reconcile_command.run)

    show = commands.add_parser("show", help="print one message's recorded lifecycle")
    show.add_argument("sid", metavar="SID", help="the MessageSid")
    show.add_argument("--store", metavar="VALUE", help="store URL [EXPORTER_STORE]")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(run=run_show)

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the store's schema, then exit (serve also does it at start)",
    )
    migrate.add_argument("--store", metavar="VALUE", help="store URL [EXPORTER_STORE]")
    migrate.set_defaults(run=run_migrate)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    # First of all: the gunicorn config prepares PROMETHEUS_MULTIPROC_DIR, which must be set
    # before anything (the startup checks included) imports prometheus_client in the master,
    # or the workers it forks inherit single-process metrics and /metrics stays empty.
    import exporter.server.gunicorn_conf  # noqa: F401

    for flag, variable, _ in SERVE_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            os.environ[variable] = value
    if args.insecure_skip_signature:
        os.environ["EXPORTER_INSECURE_SKIP_SIGNATURE"] = "1"
    from exporter.server.startup import check_startup

    check_startup()  # one clear line and exit 2 on bad configuration, before gunicorn starts
    from gunicorn.app.wsgiapp import WSGIApplication

    gunicorn_args = ["-c", "python:exporter.server.gunicorn_conf", "--bind", args.bind]
    if args.workers:
        gunicorn_args += ["--workers", str(args.workers)]
    sys.argv = ["twilio-status-exporter serve", *gunicorn_args, "exporter.web.app:get_app()"]
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()
    return 0


def run_show(args: argparse.Namespace) -> int:
    from exporter.server.startup import fail, store_command_settings
    from exporter.store import StoreUnavailable, open_store

    settings = store_command_settings(args.store)
    try:
        history = open_store(settings.store_url).history(args.sid)
    except StoreUnavailable as ex:
        fail(str(ex))
    if history is None:
        print(f"twilio-status-exporter: no message {args.sid} in the store", file=sys.stderr)
        return 1
    message = history.message
    if args.json:
        print(
            json.dumps(
                {
                    "message": {k: getattr(message, k) for k in message.__slots__},
                    "events": [{k: getattr(e, k) for k in e.__slots__} for e in history.events],
                },
                indent=2,
                default=dict,
            )
        )
        return 0
    print(
        f"{message.message_sid}  status={message.status}  channel={message.channel}  "
        f"country={message.country or '-'}"
    )
    print(
        f"first seen {_time(message.first_seen_at)}  created {_time(message.created_at)}  "
        f"final {_time(message.final_at)}  stale {_time(message.stale_at)}"
    )
    if message.tags:
        print("tags " + " ".join(f"{k}={v}" for k, v in sorted(message.tags.items())))
    print(f"{'received (UTC)':<26} {'status':<20} {'source':<12} {'error':<6} note")
    for event in history.events:
        notes = ["out of order"] if event.out_of_order else []
        if event.occurred_at is not None:
            notes.append(f"occurred {_time(event.occurred_at)}")
        note = ", ".join(notes)
        print(
            f"{_time(event.received_at):<26} {event.status:<20} {event.source:<12} "
            f"{event.error_code or '':<6} {note}"
        )
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date: one step of a deployment, before the replicas."""
    from exporter.server.startup import fail, store_command_settings
    from exporter.settings import redact_url
    from exporter.store import StoreUnavailable, open_store

    settings = store_command_settings(args.store)
    try:
        store = open_store(settings.store_url)
        store.check_writable()  # a store creates or upgrades its schema before any write
    except (StoreUnavailable, OSError, ValueError) as ex:
        fail(f"EXPORTER_STORE: cannot migrate {redact_url(settings.store_url)}: {ex}")
    version = getattr(store, "schema_version", None)
    store.close()
    at = f" at schema version {version}" if version is not None else ""
    print(f"twilio-status-exporter: store {redact_url(settings.store_url)} is up to date{at}")
    return 0


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
