"""The folder map's import rules, read from the source of every module in exporter/.

Arrows run one way: cli -> server -> web -> inputs / ingest -> store / telemetry -> model.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import exporter

PACKAGE = Path(exporter.__file__).parent
DOMAIN = ("exporter.model", "exporter.lifecycle")
IO_LIBRARIES = ("falcon", "phonenumbers", "opentelemetry", "prometheus_client", "psycopg",
                "psycopg_pool", "sqlite3")  # fmt: skip
SQL = ("sqlite3", "psycopg", "psycopg_pool", "exporter.store.sqlite", "exporter.store.postgres",
       "exporter.store.postgres_reconcile", "exporter.store.statements")  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """Modules under `modules` (but not under `unless`) import nothing under `forbids`,
    `allows` excepted."""

    modules: str
    forbids: tuple[str, ...]
    why: str
    allows: tuple[str, ...] = ()
    unless: str | None = None


def inside(*areas: str) -> tuple[str, ...]:
    return tuple(f"exporter.{area}" for area in areas)


RULES = (
    #    these modules          import nothing under
    #        because
    Rule("exporter.model",      ("exporter",),
         "the domain's types are named by every layer, and name nothing"),
    Rule("exporter.lifecycle",  ("exporter",), allows=("exporter.model",),
         why="the domain's rules see only its types"),
    Rule("exporter.model",      IO_LIBRARIES,
         "the domain does no I/O"),
    Rule("exporter.lifecycle",  IO_LIBRARIES,
         "the domain does no I/O"),
    Rule("exporter.web",        SQL,
         "web talks to the Store protocol: it runs no SQL"),
    Rule("exporter.web",        inside("server", "cli"),
         "the server runs the web app, not the reverse"),
    Rule("exporter.ingest",     inside("web", "server", "cli"),
         "ingest records and reports, whoever delivered the event"),
    Rule("exporter.telemetry",  inside("web", "cli", "server", "inputs"),
         "telemetry reports what others decided"),
    Rule("exporter.store",      inside("web", "telemetry", "inputs", "cli", "server"),
         "the store keeps the record, whoever asks"),
    Rule("exporter.inputs",     inside("web", "store", "telemetry", "server", "cli"),
         "inputs only turn what arrives into typed events"),
    Rule("exporter.server",     inside("cli"),
         "cli runs the server, not the reverse"),
    Rule("exporter",            inside("cli"), unless="exporter.cli",
         why="cli is the top: nothing else imports it"),
)  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str) -> Iterator[str]:
    """Every module a source imports, anywhere in it; `from a import b` yields a and a.b (b
    may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "absolute imports only"
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, imports: set[str], rule: Rule) -> list[str]:
    if not is_under(module, rule.modules) or (rule.unless and is_under(module, rule.unless)):
        return []
    return sorted(
        f"{module} imports {name}: {rule.why}"
        for name in imports
        if any(is_under(name, forbidden) for forbidden in rule.forbids)
        and not any(is_under(name, allowed) for allowed in rule.allows)
        and not is_under(name, module)  # a package's own modules
    )


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_follows_the_folder_map(module: str) -> None:
    imports = set(imported_names(MODULES[module].read_text(encoding="utf-8")))
    found = [problem for rule in RULES for problem in violations(module, imports, rule)]
    assert found == []


def test_every_rule_names_modules_that_exist() -> None:
    for rule in RULES:
        assert any(is_under(module, rule.modules) for module in MODULES), rule


def test_an_import_inside_a_function_is_caught() -> None:
    source = "def f():\n    from exporter.store.sqlite import SQLiteStore\n"
    imports = set(imported_names(source))
    web_rule = next(rule for rule in RULES if rule.modules == "exporter.web")
    assert violations("exporter.web.app", imports, web_rule) == sorted(
        f"exporter.web.app imports {name}: {web_rule.why}"
        for name in ("exporter.store.sqlite", "exporter.store.sqlite.SQLiteStore")
    )
