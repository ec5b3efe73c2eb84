"""The text `read.excel` makes of a cell's value and number format, with exact values.

A key is only as good as the text the reader makes of its cell: a number format's zero
padding, Excel's half-up rounding and its 15-digit limit decide whether the key sent is the
one the user sees. `test_loader` reads whole workbooks; these call `excel_text` and
`format_number` directly, one rule each, and are the quickest to fail when one breaks.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from batch_cancel.read.excel import excel_text, format_number


@pytest.mark.parametrize(("value", "shown"), [
    (None, ""),
    ("", ""),
    ("INV001", "INV001"),
    (" 0042 ", " 0042 "),
    (True, "TRUE"),
    (False, "FALSE"),
    (dt.datetime(2026, 1, 2), "2026-01-02"),
    (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02 03:04:05"),
    (dt.datetime(2026, 1, 2, 0, 0, 0, 1), "2026-01-02 00:00:00.000001"),
    (dt.date(2026, 1, 2), "2026-01-02"),
    (dt.time(3, 4, 5), "03:04:05"),
    (Decimal("1.50"), "1.50"),
])
def test_a_cell_that_is_no_number_reads_as_its_text(value: object, shown: str) -> None:
    """Whatever the number format says: it applies to numbers only."""
    assert excel_text(value, "0.00") == shown


@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (True, "0", "TRUE"),  # a bool is an int in Python, never a number in Excel
    (5.25, None, "5.25"),
    (5.25, "", "5.25"),
    (5.25, "@", "5.25"),
    (5.25, "General", "5.25"),
    (5.0, "General", "5"),
    (-7.0, "General", "-7"),
    (-0.0, "General", "0"),  # Excel has no negative zero
    (-0.0, "0", "0"),
    (42, "General", "42"),
    (100, "General", "100"),  # an int ending in zeros: all its digits, no 1E+2
    (-1200, "0.00E+00", "-1200"),
    (0.1, "General", "0.1"),
    (1 / 3, "General", "0.333333333333333"),
    (123456789012345.6, "General", "123456789012346"),
    (1e-20, "General", "1E-20"),
    (5.0, "yyyy-mm-dd", "5"),  # a format it does not render falls back to General
    (5.0, "0.00E+00", "5"),
])
def test_general_shows_integers_plainly_and_at_most_15_digits(
        value: float, number_format: str | None, shown: str) -> None:
    assert excel_text(value, number_format) == shown


@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (10**15 - 1, "0", "999999999999999"),
    (10**15 - 1, "General", "999999999999999"),
    (-(10**15 - 1), "0", "-999999999999999"),
    (999999999999999.0, "0", "999999999999999"),
    (999999999999999.0, "General", "999999999999999"),
    (10**15 - 1, "#,##0", "999,999,999,999,999"),
    (10**15 - 1, '"INV"0', "INV999999999999999"),
])
def test_up_to_15_digits_every_digit_is_shown(value: float, number_format: str,
                                              shown: str) -> None:
    """Up to 15 digits Excel holds a number exactly and its format shows every digit."""
    assert excel_text(value, number_format) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (10**15, "1E+15"),
    (1e15, "1E+15"),
    (-(10**15), "-1E+15"),
    (-1e15, "-1E+15"),
    (1230000000000000, "1.23E+15"),
    (1234567890123456, "1.23456789012346E+15"),
    (1.234567890123456e15, "1.23456789012346E+15"),
    (1e20, "1E+20"),
])
@pytest.mark.parametrize("number_format", ["0", "General", "00000000", '"INV"0', "#,##0"])
def test_from_10_to_the_15_on_every_format_shows_general_scientific(
        value: float, shown: str, number_format: str) -> None:
    """From 10**15 on digits are lost: the text is General's whatever the format, and the
    same for an int cell and a float one (General shows no trailing zeros)."""
    assert excel_text(value, number_format) == shown


@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (0.5, "0", "1"),
    (1.5, "0", "2"),
    (2.5, "0", "3"),
    (-0.5, "0", "-1"),
    (-2.5, "0", "-3"),
    (-0.4, "0", "0"),  # rounds to zero: no minus sign
    (0, "0", "0"),
    (0.0, "0", "0"),
    (2.675, "0.00", "2.68"),  # the decimal the cell shows, not the binary float below it
    (-2.675, "0.00", "-2.68"),
    (12, "0.0", "12.0"),
    (0.125, "0.00", "0.13"),
])
def test_a_number_format_rounds_half_away_from_zero(value: float, number_format: str,
                                                    shown: str) -> None:
    assert format_number(value, number_format) == shown


@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (42, "00000", "00042"),
    (12345, "00000", "12345"),
    (123456, "00000", "123456"),
    (7, "00000000", "00000007"),
    (-42, "00000", "-00042"),
    (1234567, "#,##0", "1,234,567"),
    (999, "#,##0", "999"),
    (1234.5, "#,##0.00", "1,234.50"),
    (1234, "#,##0.0", "1,234.0"),
    (0.5, "0.00", "0.50"),
    (0.5, "#.00", ".50"),
    (-0.5, "#.00", "-.50"),
    (1.5, "#.00", "1.50"),
    (0, "#", ""),
    (0, "#.00", ".00"),
    (5, "#", "5"),
    (5.4, "#", "5"),
])
def test_zeros_pad_hashes_do_not_and_commas_group(value: float, number_format: str,
                                                  shown: str) -> None:
    assert format_number(value, number_format) == shown


@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (0.125, "0%", "13%"),
    (0.1234, "0.0%", "12.3%"),
    (0.005, "0%", "1%"),
    (0.001, "0%", "0%"),
    (3.5, '"INV"00000', "INV00004"),
    (5, '0" kg"', "5 kg"),
    (5, '"A"0"B"', "A5B"),
    (5, "\\A0", "A5"),
    (5, "0\\x", "5x"),
    (5, '""0', "5"),
    (1.5, "[Red]0.00", "1.50"),
    (1.5, "[>=100]0.00", "1.50"),
    (1.5, " 0.00 ", "1.50"),
    (-1.5, "0.00;[Red]-0.00", "-1.50"),
    (1.5, "0.00;(0.00);zero", "1.50"),
    (5, "_(0_)", "5"),
    (5, "*-0", "5"),
])
def test_literal_text_percent_and_sections(value: float, number_format: str,
                                           shown: str) -> None:
    """Quoted and escaped text is kept, colours and padding go, the first section rules."""
    assert format_number(value, number_format) == shown


def test_an_int_no_float_can_hold_still_reads_as_general_would_show_it() -> None:
    """Excel stops at 9.99E+307, but a file written by other software may hold a longer
    number: the reader shows it (the key is then refused as scientific), it does not crash."""
    assert excel_text(10**400, "0") == "1E+400"
    assert excel_text(-(10**400) - 10**386, "General") == "-1.00000000000001E+400"
