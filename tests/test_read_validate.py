"""The row rules of `read.validate`, called directly with exact expected messages.

The loader's tests prove the rules are applied to a file's rows; these pin each rule's
boundary (the 255th character, the last control character, the 20 characters of a bad
reason quoted) and the order the rules are checked in, which decides the message a row
breaking two rules gets. They are also the quickest tests to fail on a broken rule.
"""

from __future__ import annotations

import pytest

from batch_cancel.model import SourceRow, Status
from batch_cancel.read.loaded import InputError
from batch_cancel.read.validate import (
    CLEAN_KEY,
    MAX_KEY_LENGTH,
    REASON_SPELLINGS,
    default_reason,
    key_problem,
    make_row,
    normalise_reason,
    problem_in_reference,
    row_problem,
)

CONTROL = "invoice key contains control characters"
WHITESPACE = "invoice key has whitespace inside"
NON_ASCII = "invoice key contains non-ASCII characters"
SCIENTIFIC = ("invoice key looks like a number Excel turned into scientific notation ({}), "
              "which loses digits; format the column as Text and re-enter the keys")


@pytest.mark.parametrize(("text", "code"), [
    ("1", "01"), ("01", "01"), ("001", "01"), (" 01 ", "01"), ("1.0", "01"), ("1.", "01"),
    ("1.000", "01"), ("2", "02"), ("4", "04"), ("0", "00"), ("10", "10"), ("123", "123"),
    ("\t3\n", "03"),
])
def test_a_number_spelling_becomes_its_two_digit_code(text: str, code: str) -> None:
    assert normalise_reason(text) == code


@pytest.mark.parametrize(("text", "kept"), [
    ("cancel", "cancel"), (" 1.5 ", "1.5"), ("1.01", "1.01"), ("-1", "-1"), ("", ""),
    ("1 1", "1 1"), ("x1", "x1"), ("1x", "1x"), (".1", ".1"),
])
def test_anything_else_is_kept_trimmed_for_the_message(text: str, kept: str) -> None:
    assert normalise_reason(text) == kept


@pytest.mark.parametrize(("key", "problem"), [
    ("", "invoice key is empty"),
    ("A" * 256, "invoice key is longer than 255 characters (256)"),
    ("A" * 300, "invoice key is longer than 255 characters (300)"),
    ("#N/A", "invoice key is the Excel error value #N/A; fix the formula or the cell"),
    ("#GETTING_DATA",
     "invoice key is the Excel error value #GETTING_DATA; fix the formula or the cell"),
    ("1.23457E+15", SCIENTIFIC.format("1.23457E+15")),
    ("1,23457E+15", SCIENTIFIC.format("1,23457E+15")),
    ("1E15", SCIENTIFIC.format("1E15")),
    ("9e+9", SCIENTIFIC.format("9e+9")),
    ("INV\x00", CONTROL),
    ("INV\x1f1", CONTROL),
    ("INV\x7f", CONTROL),
    ("\x7fINV", CONTROL),
    ("INV 1", WHITESPACE),
    ("INV\u00a01", WHITESPACE),
    ("INV\x851", WHITESPACE),
    ("INV\x801", NON_ASCII),
    ("INVé", NON_ASCII),
    ("INV/1", "invoice key contains '/', which no Zuora invoice key has"),
    ("INV?1", "invoice key contains '?', which no Zuora invoice key has"),
    ("INV#1", "invoice key contains '#', which no Zuora invoice key has"),
    ("INV%1", "invoice key contains '%', which no Zuora invoice key has"),
    ("A/B?C", "invoice key contains '/', which no Zuora invoice key has"),
    ("A?B/C", "invoice key contains '/', which no Zuora invoice key has"),
    ("INV..1", "invoice key contains '..'"),
])
def test_each_key_rule_gives_its_exact_message(key: str, problem: str) -> None:
    assert key_problem(key) == problem


@pytest.mark.parametrize("key", [
    "A", "A" * MAX_KEY_LENGTH, "INV-1_2.3", "00012", "~INV!", "1.2", "1E", "E15", "12E+15",
    "1E+15X", "A.B.C", "INV.", "N.A", "INV\x7e",
])
def test_a_key_every_rule_accepts_has_no_problem(key: str) -> None:
    assert key_problem(key) == ""


def test_the_first_rule_broken_names_the_problem() -> None:
    """A key breaking several rules gets the first one's message, in the documented order."""
    assert key_problem("A\x01" * 200) == "invoice key is longer than 255 characters (400)"
    assert key_problem("\x01 é/..") == CONTROL
    assert key_problem(" é/..") == WHITESPACE
    assert key_problem("é/..") == NON_ASCII
    assert key_problem("/..") == "invoice key contains '/', which no Zuora invoice key has"


@pytest.mark.parametrize(("reason", "reference", "problem"), [
    ("", "", "reason is empty; fill the reason column (01-04) or pass --reason CODE"),
    ("05", "", "reason '05' is not one of 01, 02, 03, 04"),
    ("00", "", "reason '00' is not one of 01, 02, 03, 04"),
    ("1", "", "reason '1' is not one of 01, 02, 03, 04"),
    ("x" * 25, "", "reason 'xxxxxxxxxxxxxxxxxxxx' is not one of 01, 02, 03, 04"),
    ("02", "R1", "documentReferenceID is given with reason 02; "
                 "Zuora accepts it only with reason 01 (Mexico)"),
    ("04", "R1", "documentReferenceID is given with reason 04; "
                 "Zuora accepts it only with reason 01 (Mexico)"),
    ("01", "R" * 256, "documentReferenceID is longer than 255 characters"),
    ("01", "R\x00", "documentReferenceID contains control characters"),
    ("01", "R1", ""),
    ("01", "", ""),
    ("02", "", ""),
    ("03", "", ""),
    ("04", "", ""),
])
def test_a_row_gets_the_first_rule_it_breaks(reason: str, reference: str, problem: str) -> None:
    assert row_problem("INV1", reason, reference) == problem


def test_a_bad_key_is_named_before_a_bad_reason_or_reference() -> None:
    assert row_problem("", "09", "R\x00") == "invoice key is empty"
    assert row_problem("INV1", "09", "R\x00") == "reason '09' is not one of 01, 02, 03, 04"


@pytest.mark.parametrize(("reference", "problem"), [
    ("R" * MAX_KEY_LENGTH, ""),
    ("R" * 256, "documentReferenceID is longer than 255 characters"),
    ("R\x1f", "documentReferenceID contains control characters"),
    ("\x7f", "documentReferenceID contains control characters"),
    ("R 1 é/?#%..~", ""),  # it goes in a JSON body: spaces and the rest are fine
    ("", ""),
])
def test_a_reference_is_checked_for_length_and_control_characters(reference: str,
                                                                  problem: str) -> None:
    assert problem_in_reference(reference) == problem


def test_make_row_trims_normalises_and_keeps_a_sendable_row_unmarked() -> None:
    row = make_row(7, " INV1 ", " 1.0 ", " R1 ", ("a", "b"), ("x", "y"))
    assert row == SourceRow(row=7, invoice_key="INV1", reason="01", document_reference_id="R1",
                            cells=("a", "b"), columns=("x", "y"), status=None, message="")


def test_make_row_marks_a_row_breaking_a_rule_invalid_with_the_rule() -> None:
    row = make_row(3, "INV 1", "2", "", ("c",), ("k",))
    assert row == SourceRow(row=3, invoice_key="INV 1", reason="02", document_reference_id="",
                            cells=("c",), columns=("k",), status=Status.INVALID,
                            message=WHITESPACE)


@pytest.mark.parametrize(("code", "reason"), [
    (None, ""), ("1", "01"), ("02", "02"), (" 3 ", "03"), ("4.0", "04"),
])
def test_the_default_reason_is_a_normalised_code(code: str | None, reason: str) -> None:
    assert default_reason(code) == reason


@pytest.mark.parametrize("code", ["5", "0", "", "cancel", "1.5"])
def test_a_default_reason_that_is_no_code_is_refused(code: str) -> None:
    with pytest.raises(InputError) as caught:
        default_reason(code)
    assert str(caught.value) == (f"--reason {code!r} is not a reason code; "
                                 "use 01, 02, 03 or 04")


def test_the_one_match_key_pattern_takes_the_printable_ascii_the_rules_accept() -> None:
    """The fast path's pattern: '!' to '~' but / ? # %, 1 to 255 of them, no '..', not
    scientific; anything else goes to the rules one by one."""
    accepted = {chr(c) for c in range(0x100) if CLEAN_KEY.fullmatch(f"A{chr(c)}B")}
    assert accepted == {chr(c) for c in range(0x21, 0x7F)} - set("/?#%")
    assert [bool(CLEAN_KEY.fullmatch(key)) for key in (
        "A" * MAX_KEY_LENGTH, "A" * 256, "", "A.B", "A..B", "1E+15", "1,5e9", "12E+15")] == [
        True, False, False, True, False, False, False, True]


def test_the_usual_reason_spellings_are_the_codes_with_and_without_their_zero() -> None:
    assert REASON_SPELLINGS == {"01": "01", "1": "01", "02": "02", "2": "02", "03": "03",
                                "3": "03", "04": "04", "4": "04"}
