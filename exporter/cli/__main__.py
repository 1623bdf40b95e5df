"""`python -m exporter.cli`: the console script, for environments without it on PATH."""

from exporter.cli import main

raise SystemExit(main())
