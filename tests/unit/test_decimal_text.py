"""``parse_ascii_decimal`` and ``parse_hex_quantity``, the readers of numbers given as text from outside:
1..max_digits ASCII digits (after ``0x``, hex digits) and nothing else (no sign, space, underscore or other
script's digit, which ``str.isdigit``, ``int`` and ``int(x, 16)`` let through)."""

from __future__ import annotations

import pytest

from chainshare.decimal_text import parse_ascii_decimal, parse_ascii_decimals, parse_hex_quantity


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("7", 7), ("0042", 42), ("123456789012", 123456789012)])
def test_ascii_digits_are_read_as_their_number(text: str, value: int) -> None:
    assert parse_ascii_decimal(text, max_digits=12) == value


@pytest.mark.parametrize("text", [
    "²", "1²", "٣", "12٣", "३", "１", "+1", "-1", " 1", "1 ", "1\n", "1_0", "", "0x10", "1.0", "1e3", "one",
])
def test_anything_but_ascii_digits_is_refused(text: str) -> None:
    assert parse_ascii_decimal(text, max_digits=12) is None


def test_more_than_max_digits_is_refused_even_with_leading_zeros() -> None:
    assert parse_ascii_decimal("999", max_digits=3) == 999
    assert parse_ascii_decimal("1000", max_digits=3) is None
    assert parse_ascii_decimal("0001", max_digits=3) is None
    assert parse_ascii_decimal("9" * 5000, max_digits=20) is None  # int() would raise past 4300 digits


def test_a_list_of_parts_parses_only_when_every_part_does() -> None:
    assert parse_ascii_decimals("12-0-7".split("-"), max_digits=19) == [12, 0, 7]
    assert parse_ascii_decimals([], max_digits=3) == []
    assert parse_ascii_decimals(["1", "²"], max_digits=3) is None
    assert parse_ascii_decimals(["1", ""], max_digits=3) is None
    assert parse_ascii_decimals(["1", "1000"], max_digits=3) is None


@pytest.mark.parametrize(("text", "value"), [("0x0", 0), ("0x01", 1), ("0xfF", 255), ("0x" + "f" * 16, 2**64 - 1),
                                             ("0x" + "0" * 16, 0)])
def test_0x_and_ascii_hex_digits_of_either_case_are_read_as_their_number(text: str, value: int) -> None:
    assert parse_hex_quantity(text, max_digits=16) == value


@pytest.mark.parametrize("text", [
    "0x", "0X1", "1", "x1", "0x-1", "0x+1", "0x 1", " 0x1", "0x1 ", "0x1\n", "0x1_0", "0x_1", "0x\u0661", "0x٣",
    "0x１", "0xg", "0x1.0", "00x1", "", "0x" + "1" * 17, "0x0" + "f" * 16,
])
def test_anything_but_0x_and_1_to_max_digits_hex_digits_is_refused(text: str) -> None:
    assert parse_hex_quantity(text, max_digits=16) is None
