"""The Twilio error-code table: meanings and classes for span statuses and dashboards."""

from __future__ import annotations

import pytest

from exporter.error_codes import ERRORS, ErrorClass, describe

REQUIRED = (
    *(str(code) for code in range(30001, 30011)),
    "30032", "30034", "30035", "30036", "30038",
    "21211", "21408", "21610", "21612", "21614", "21617",
    "63001", "63003", "63016", "63018", "63024", "63032",
)  # fmt: skip


@pytest.mark.parametrize("code", REQUIRED)
def test_common_messaging_errors_have_a_meaning_and_a_class(code: str) -> None:
    error = describe(code)
    assert error is ERRORS[code]
    assert error.code == code
    assert error.meaning and not error.meaning.endswith(".")
    assert error.error_class in {ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.COMPLIANCE}


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("30003", ErrorClass.TRANSIENT),
        ("30006", ErrorClass.PERMANENT),
        ("30007", ErrorClass.COMPLIANCE),
        ("21610", ErrorClass.COMPLIANCE),
        ("30034", ErrorClass.COMPLIANCE),
        ("63018", ErrorClass.TRANSIENT),
    ],
)
def test_error_classes_say_what_to_do(code: str, error_class: ErrorClass) -> None:
    assert describe(code).error_class is error_class


def test_description_starts_with_the_code() -> None:
    assert describe("30005").description.startswith("30005: Unknown destination handset")


def test_unknown_code_gets_a_generic_description_pointing_at_twilios_dictionary() -> None:
    error = describe("39999")
    assert error.code == "39999"
    assert error.error_class is ErrorClass.UNKNOWN
    assert "https://www.twilio.com/docs/api/errors/39999" in error.description


def test_missing_or_malformed_codes_are_described_without_failing() -> None:
    assert describe(None).meaning == "no ErrorCode was reported"
    assert describe("").error_class is ErrorClass.UNKNOWN
    nonsense = describe("x" * 1000)
    assert nonsense.meaning == "not a Twilio error code"
    assert len(nonsense.code) <= 32


def test_every_code_in_the_table_is_five_digits() -> None:
    assert all(code.isdigit() and len(code) == 5 for code in ERRORS)
