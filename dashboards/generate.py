"""Generate the Grafana dashboards in this directory and the delivery SLO's rules
(standard library only).

The dashboards are written as code in generator/ (one module per dashboard, building blocks in
generator/grafana.py), which keeps some 50 panels consistent: one datasource reference, the job
filter on every query, a unit, thresholds and a description on every panel. The SLO rules
(generator/slo_rules.py) are generated for an objective, 95 % unless told otherwise; the other
rules in rules/ are written by hand.

    python dashboards/generate.py                        # rewrite the JSON and the SLO rules
    python dashboards/generate.py --slo-objective 0.99   # the same, for a 99 % objective
    python dashboards/generate.py --check                # fail if a file differs (the tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# So `generator` and `exporter` (for its error-code table) import however this is started.
sys.path[:0] = [str(HERE), str(HERE.parent)]

from generator import health, latency, overview, slo_rules  # noqa: E402

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "twilio-delivery-overview.json": overview.build,
    "twilio-callback-latency.json": latency.build,
    "twilio-exporter-health.json": health.build,
}
SLO_RULES = f"rules/{slo_rules.FILE_NAME}"


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def objective(text: str) -> float:
    try:
        return slo_rules.parse_objective(text)
    except ValueError as ex:
        raise argparse.ArgumentTypeError(str(ex)) from ex


def generated(slo_objective: float) -> dict[str, str]:
    """Every generated file (path relative to this directory) and its content."""
    files = {name: render(build) for name, build in DASHBOARDS.items()}
    files[SLO_RULES] = slo_rules.render(slo_objective)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate dashboards/*.json and the SLO rules.")
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    parser.add_argument(
        "--slo-objective",
        type=objective,
        default=slo_rules.DEFAULT_OBJECTIVE,
        metavar="RATIO",
        help="share of finalized messages that must be delivered, between 0 and 1 "
        f"(default {slo_rules.DEFAULT_OBJECTIVE})",
    )
    args = parser.parse_args(argv)
    for alert in slo_rules.unreachable_alerts(args.slo_objective):
        print(
            f"warning: with an objective of {args.slo_objective} {alert} needs more than "
            "100 % failed messages and can never fire",
            file=sys.stderr,
        )
    stale = []
    for name, text in generated(args.slo_objective).items():
        path = HERE / name
        if not args.check:
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    if stale:
        print(f"stale: {', '.join(stale)}; run python dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
