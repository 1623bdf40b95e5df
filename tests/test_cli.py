"""The store commands (show, migrate) run without an auth token, and set no variable to do so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.cli import main
from tests.support import sid


@pytest.fixture
def no_auth_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("TWILIO_AUTH_TOKEN", "EXPORTER_INSECURE_SKIP_SIGNATURE", "EXPORTER_STORE"):
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
