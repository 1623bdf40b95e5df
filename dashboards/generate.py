"""Generate the Grafana dashboards in this directory (standard library only).

The dashboards are written as code in generator/ (one module per dashboard, building blocks in
generator/grafana.py), which keeps some 50 panels consistent: one datasource reference, the job
filter on every query, a unit, thresholds and a description on every panel.

    python dashboards/generate.py          # rewrite dashboards/*.json
    python dashboards/generate.py --check  # fail if a JSON file differs (run by the tests)
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

from generator import health, latency, overview  # noqa: E402

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "twilio-delivery-overview.json": overview.build,
    "twilio-callback-latency.json": latency.build,
    "twilio-exporter-health.json": health.build,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate dashboards/*.json.")
    parser.add_argument("--check", action="store_true", help="fail if a JSON file is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
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
