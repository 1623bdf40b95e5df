"""`twilio-status-exporter`: serve, simulate, reconcile, show, migrate.

Imports of the service's modules happen inside the commands: `serve` must set up the
multiprocess metrics directory before anything imports prometheus_client.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from exporter import __version__

# serve's flags, each also an environment variable; a flag given wins over its variable.
SERVE_FLAGS = (
    ("--auth-token", "TWILIO_AUTH_TOKEN",
     "auth token(s) validating signatures, comma-separated (prefer the variable: ps shows flags)"),
    ("--account-sid", "TWILIO_ACCOUNT_SID", "account SID (AC...) for the REST API"),
    ("--public-url", "EXPORTER_PUBLIC_URL",
     "public base URL Twilio calls, e.g. https://hooks.example.com"),
    ("--store", "EXPORTER_STORE", "sqlite:///PATH (default) or postgresql://..."),
    ("--trusted-proxies", "EXPORTER_TRUSTED_PROXIES",
     "proxy addresses/CIDRs whose X-Forwarded-* headers are believed"),
    ("--stale-after", "EXPORTER_STALE_AFTER",
     "non-final messages go stale after this long (default 72h)"),
    ("--retention", "EXPORTER_RETENTION", "delete records older than this (default 90d, 0 = keep)"),
    ("--metric-tags", "EXPORTER_METRIC_TAGS", "tag names that become metric labels (comma list)"),
    ("--senders-max", "EXPORTER_SENDERS_MAX",
     "senders with a label value of their own in the per-sender counter (default 50)"),
    ("--trace-url", "EXPORTER_TRACE_URL",
     "a message's trace in your tracing UI, {trace_id} where the id goes"),
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
    serve.add_argument(
        "--bind", metavar="HOST:PORT", help="where to listen (default 0.0.0.0:8080) [EXPORTER_BIND]"
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes (default: one per CPU, at least 2) [WEB_CONCURRENCY]",
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
    # First of all: PROMETHEUS_MULTIPROC_DIR must be set before anything (the startup checks
    # included) imports prometheus_client in the master, or the workers it forks inherit
    # single-process metrics and /metrics stays empty.
    from exporter.server import metrics_directory

    metrics_directory.prepare()
    try:
        _serve(args)
    finally:
        metrics_directory.remove_if_created()  # also when a check stops serve before gunicorn
    return 0


def _serve(args: argparse.Namespace) -> None:
    from exporter.server.startup import check_startup, fail
    from exporter.settings import ConfigError, ServerSettings, Settings

    try:
        server = ServerSettings.from_env()
        settings = Settings.from_env(overrides=_serve_overrides(args))
    except ConfigError as ex:
        fail(str(ex))
    check_startup(settings)  # one clear line and exit 2 on bad configuration, before gunicorn
    from exporter.server.application import ServiceApplication

    bind, workers = args.bind or server.bind, args.workers or server.workers
    ServiceApplication(settings, bind=bind, workers=workers).run()


def _serve_overrides(args: argparse.Namespace) -> dict[str, str]:
    """serve's flags that were given, by the name of the variable each stands for."""
    overrides = {
        variable: value
        for flag, variable, _ in SERVE_FLAGS
        if (value := getattr(args, flag.lstrip("-").replace("-", "_"))) is not None
    }
    if args.insecure_skip_signature:
        overrides["EXPORTER_INSECURE_SKIP_SIGNATURE"] = "1"
    return overrides


def run_show(args: argparse.Namespace) -> int:
    from exporter.server.startup import fail, store_command_settings
    from exporter.store import StoreUnavailable, open_store
    from exporter.telemetry.trace_ids import message_trace_id_hex

    settings = store_command_settings(args.store)  # EXPORTER_TRACE_URL checked here too
    try:
        history = open_store(settings.store_url).history(args.sid)
    except StoreUnavailable as ex:
        fail(str(ex))
    if history is None:
        print(f"twilio-status-exporter: no message {args.sid} in the store", file=sys.stderr)
        return 1
    message = history.message
    trace_id = message_trace_id_hex(message)
    trace_url = settings.trace_link(trace_id)
    if args.json:
        print(
            json.dumps(
                {
                    "message": {k: getattr(message, k) for k in message.__slots__},
                    "trace_id": trace_id,
                    "trace_url": trace_url,
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
    print(f"trace {trace_id}" + (f"  {trace_url}" if trace_url else ""))
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
    version = store.schema_version
    store.close()
    print(
        f"twilio-status-exporter: store {redact_url(settings.store_url)} is up to date "
        f"at schema version {version}"
    )
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
