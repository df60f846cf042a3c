"""``parse_ascii_decimal``, the one reader of decimal numbers given as text from outside: 1..max_digits ASCII
digits and nothing else (no sign, space, underscore or other script's digit, which ``str.isdigit`` and
``int`` let through)."""

from __future__ import annotations

import pytest

from chainshare.decimal_text import parse_ascii_decimal, parse_ascii_decimals


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
