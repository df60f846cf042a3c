"""Numbers given as text by the outside world (HTTP values, form fields, CLI arguments, config, other nodes'
JSON): decimal, and ``0x`` hex quantities.

``str.isdigit``/``isdecimal`` are also true of digits such as "²" (which ``int`` refuses: ValueError) and
of other scripts' digits such as "٣" (which ``int`` reads as 3), and ``int`` (``int(x, 16)`` too) alone also
takes a sign, spaces and underscores; so external text is read with ``parse_ascii_decimal`` or
``parse_hex_quantity`` and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ASCII_DIGITS = frozenset("0123456789")
_HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")  # a regex: ~1,700 instructions a call fewer than a frozenset scan


def parse_ascii_decimal(text: str, *, max_digits: int) -> int | None:
    """The value of ``text`` if it is 1..``max_digits`` ASCII digits (leading zeros allowed), else None."""
    if not 0 < len(text) <= max_digits or not _ASCII_DIGITS.issuperset(text):
        return None
    return int(text)


def parse_ascii_decimals(parts: Iterable[str], *, max_digits: int) -> list[int] | None:
    """The values of ``parts`` (say, a cursor split on "-") if each is what ``parse_ascii_decimal`` takes,
    else None."""
    values = []
    for part in parts:
        value = parse_ascii_decimal(part, max_digits=max_digits)
        if value is None:
            return None
        values.append(value)
    return values


def parse_hex_quantity(text: str, *, max_digits: int) -> int | None:
    """The value of ``text`` if it is ``0x`` and 1..``max_digits`` ASCII hex digits of either case (leading
    zeros allowed), else None."""
    if not 2 < len(text) <= max_digits + 2 or _HEX_QUANTITY.fullmatch(text) is None:
        return None
    return int(text[2:], 16)
