"""Decimal fields of requests (the signed-request timestamp header, audit and credit-event cursors) take
ASCII digits only: ``str.isdigit`` alone also takes "²" or "³", which ``int`` then refuses, and that was an
internal error (HTTP 500) instead of the field's own precise refusal."""

from __future__ import annotations

import pytest

from chainshare.credit import events
from chainshare.errors import InvalidInput, Unauthorized
from chainshare.sharing import protocol, records

NON_ASCII_DIGITS = ["\u00b2", "1\u00b3", "\u0661\u0662", "\uff11"]  # superscripts, Arabic-Indic, full-width


@pytest.mark.parametrize("value", [*NON_ASCII_DIGITS, "", "-1", "1.5", " 1", "1" * 13, None])
def test_a_malformed_timestamp_header_is_unauthorized(value: str | None) -> None:
    with pytest.raises(Unauthorized, match=protocol.TIMESTAMP_HEADER):
        protocol.parse_timestamp_header(value)


def test_a_timestamp_header_is_unix_seconds() -> None:
    assert protocol.parse_timestamp_header("1796616440") == 1796616440


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_an_audit_cursor_with_non_ascii_digits_is_invalid_input(digits: str) -> None:
    with pytest.raises(InvalidInput, match="BLOCK-TX-LOG"):
        records.parse_cursor(f"{digits}-0-0")
    assert records.parse_cursor("12-0-3") == (12, 0, 3)


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_a_credit_event_cursor_with_non_ascii_digits_is_invalid_input(digits: str) -> None:
    with pytest.raises(InvalidInput, match="BLOCK-LOG"):
        events.parse_cursor(f"{digits}-0")
    assert events.parse_cursor("12-3") == (12, 3)
