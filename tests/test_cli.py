"""The store commands (show, migrate) run without an auth token, and set no variable to do so;
`show` leads from a message to its trace."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from exporter.cli import _serve_overrides, build_parser, main
from exporter.inputs.callback_form import FormParams, parse_callback
from exporter.settings import Settings
from exporter.store import open_store
from tests.support import callback_params, sid


@pytest.fixture
def no_auth_token(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = ("TWILIO_AUTH_TOKEN", "EXPORTER_INSECURE_SKIP_SIGNATURE", "EXPORTER_STORE")
    for variable in (*variables, "EXPORTER_TRACE_URL"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.usefixtures("no_auth_token")
def test_migrate_and_show_need_no_auth_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'exporter.db'}"
    environment = dict(os.environ)

    assert main(["migrate", "--store", store]) == 0
    assert main(["show", sid("SM", 1), "--store", store]) == 1  # not found, but no config error

    output = capsys.readouterr()
    assert "is up to date" in output.out
    assert "no message" in output.err and "TWILIO_AUTH_TOKEN" not in output.err
    assert dict(os.environ) == environment


@pytest.mark.usefixtures("no_auth_token")
def test_store_commands_still_name_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXPORTER_STORE", "mysql://nope")

    with pytest.raises(SystemExit) as exited:
        main(["migrate"])

    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("twilio-status-exporter: error: EXPORTER_STORE: ")


SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{SENDER_TRACE}-00f067aa0ba902b7-01"


def recorded_store(tmp_path: Path, query: str = "") -> str:
    """A store holding one delivered message, its callback URL's query `query`."""
    url = f"sqlite:///{tmp_path / 'exporter.db'}"
    store = open_store(url)
    for at, status in enumerate(("sent", "delivered")):
        params = callback_params(sid("SM", 1), status)
        form = FormParams({k: [v] for k, v in params.items()})
        store.record(parse_callback(form, query, 1_790_000_000.0 + at))
    store.close()
    return url


def show_json(store: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["show", sid("SM", 1), "--store", store, "--json"]) == 0
    shown: dict = json.loads(capsys.readouterr().out)
    return shown


@pytest.mark.usefixtures("no_auth_token")
def test_show_prints_the_trace_id_the_spans_use_and_its_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = recorded_store(tmp_path)
    derived = hashlib.sha256(b"twilio.message:" + sid("SM", 1).encode()).hexdigest()[:32]
    monkeypatch.setenv("EXPORTER_TRACE_URL", "http://tempo.example/trace/{trace_id}")

    shown = show_json(store, capsys)
    assert main(["show", sid("SM", 1), "--store", store]) == 0
    table = capsys.readouterr().out

    assert (shown["trace_id"], shown["trace_url"]) == (
        derived,
        f"http://tempo.example/trace/{derived}",
    )
    assert f"trace {derived}  http://tempo.example/trace/{derived}\n" in table


@pytest.mark.usefixtures("no_auth_token")
def test_show_prints_the_senders_trace_when_the_callback_url_carried_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = recorded_store(tmp_path, query=f"traceparent={TRACEPARENT}")

    shown = show_json(store, capsys)

    assert shown["trace_id"] == SENDER_TRACE
    assert shown["message"]["traceparent"] == TRACEPARENT
    assert shown["trace_url"] is None  # EXPORTER_TRACE_URL unset


@pytest.mark.usefixtures("no_auth_token")
def test_show_without_a_trace_url_prints_the_id_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = recorded_store(tmp_path, query=f"traceparent={TRACEPARENT}")
    assert main(["show", sid("SM", 1), "--store", store]) == 0
    assert f"trace {SENDER_TRACE}\n" in capsys.readouterr().out


@pytest.mark.usefixtures("no_auth_token")
def test_show_refuses_a_trace_url_without_its_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = recorded_store(tmp_path)
    monkeypatch.setenv("EXPORTER_TRACE_URL", "http://tempo.example/trace/")

    with pytest.raises(SystemExit) as exited:
        main(["show", sid("SM", 1), "--store", store])

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("twilio-status-exporter: error: EXPORTER_TRACE_URL: ")
    assert error.count("\n") == 1


def test_serve_flags_stand_for_their_variables() -> None:
    """Every serve flag reaches the settings as the variable it names (a flag wins)."""
    args = build_parser().parse_args(
        ["serve", "--trace-url", "http://tempo.example/trace/{trace_id}", "--senders-max", "3"]
    )
    overrides = _serve_overrides(args)
    assert overrides == {
        "EXPORTER_TRACE_URL": "http://tempo.example/trace/{trace_id}",
        "EXPORTER_SENDERS_MAX": "3",
    }
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "t"}, overrides=overrides)
    assert (settings.trace_url, settings.senders_max) == (overrides["EXPORTER_TRACE_URL"], 3)
