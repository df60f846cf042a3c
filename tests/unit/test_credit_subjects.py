"""Subjects off chain: resident IDs validated with python-stdnum before anything else (the error names the
expected check character, never the number), person handles that only the registrar key computes, and the
CLI's input parsing (USCC, periods, dates) with precise errors."""

from __future__ import annotations

import pytest

from chainshare.cli.credit import parse_period, parse_subject, parse_time, record_args
from chainshare.credit.subjects import (
    compute_person_handle,
    is_person_handle,
    validate_resident_id,
    validate_uscc,
)
from chainshare.errors import InvalidInput
from chainshare.execution.contracts.credit_registry import get_subject_kind

RIC = "11010519491231002X"
KEY_A, KEY_B = b"\x01" * 32, b"\x02" * 32


def test_resident_ids_are_validated_without_echoing_the_number() -> None:
    assert validate_resident_id(RIC.lower()) == RIC
    with pytest.raises(InvalidInput, match="expected 'X'") as exc:
        validate_resident_id("110105194912310021")
    assert "110105194912310021" not in exc.value.message
    with pytest.raises(InvalidInput, match="17 digits"):
        validate_resident_id("1101051949")


@pytest.mark.parametrize("number", [
    "²" + RIC[1:],  # str.isdigit() takes "²"; stdnum's check-digit arithmetic (int()) raised ValueError on it
    RIC[:17].translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")) + "X",  # digits int() reads, in another script
    RIC[:17] + "٣",
])
def test_a_resident_id_with_non_ascii_digits_is_refused_as_malformed(number: str) -> None:
    with pytest.raises(InvalidInput, match="17 digits and a check character"):
        validate_resident_id(number)


def test_a_uscc_with_non_ascii_digits_is_refused() -> None:
    uscc = "91350100M000100Y43"
    assert validate_uscc(uscc) == uscc
    with pytest.raises(ValueError, match="outside 0-9"):
        validate_uscc(uscc.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")))


def test_handles_need_the_registrar_key_and_hide_the_id() -> None:
    a = compute_person_handle(KEY_A, RIC)
    assert a == compute_person_handle(KEY_A, RIC.lower())  # canonical form first
    assert a != compute_person_handle(KEY_B, RIC)
    assert is_person_handle(a) and get_subject_kind(a) == 2
    assert RIC not in a and RIC.encode().hex() not in a
    with pytest.raises(InvalidInput, match="check character"):
        compute_person_handle(KEY_A, "110105194912310021")


def test_a_handle_with_a_trailing_newline_is_not_a_handle_except_under_the_v1_v2_rule() -> None:
    handle = compute_person_handle(KEY_A, RIC)
    assert not is_person_handle(handle + "\n")
    with pytest.raises(ValueError, match="a person's subject is a handle"):
        get_subject_kind(handle + "\n")
    assert get_subject_kind(handle + "\n", exact_handle=False) == 2  # what protocol versions 1 and 2 took


def test_cli_input_parsing() -> None:
    assert parse_period("90d", "p") == 90 * 86400 and parse_period("45s", "p") == 45 and parse_period("2", "p") == 172800
    with pytest.raises(InvalidInput, match="unit"):
        parse_period("3y", "minimum period")
    assert parse_time("2025-06-15", "d") == 1749945600 and parse_time("1749945600", "d") == 1749945600
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        parse_time("15/06/2025", "decision date")
    with pytest.raises(InvalidInput, match="expected 'L'"):
        parse_subject("91110000600037341X")


def test_a_persons_summary_is_hashed_before_it_leaves_the_cli() -> None:
    handle = compute_person_handle(KEY_A, RIC)
    row = {"subject": handle, "category": "penalty", "polarity": "negative", "severity": "2",
           "document_number": "D-1", "authority": "Court", "legal_basis": "Law 1", "summary": f"Zhang San {RIC}",
           "max_period": "365d", "evidence_hash": "0x" + "11" * 32}
    args = record_args(row, 1_750_000_000)
    assert args[7] == "" and len(args[8]) == 32 and args[8] != bytes(32)
    assert all(RIC not in str(a) for a in args)


def test_lookup_decisions_are_cedar_default_deny_then_rate_limited() -> None:
    from chainshare.credit.registrar import DEFAULT_LOOKUP_POLICY, RequesterFacts, TokenBucket, decide_lookup

    issuer = RequesterFacts("Tax Bureau", True, True, False)
    reader = RequesterFacts("Reader", True, False, False)
    revoked = RequesterFacts("Gone", False, True, False)
    assert decide_lookup(issuer, "publish", DEFAULT_LOOKUP_POLICY, True).allowed
    denied = decide_lookup(reader, "curiosity", DEFAULT_LOOKUP_POLICY, True)
    assert (denied.allowed, denied.status) == (False, 403) and "does not permit" in denied.reason
    assert decide_lookup(revoked, "publish", DEFAULT_LOOKUP_POLICY, True).status == 403
    assert decide_lookup(issuer, "publish", DEFAULT_LOOKUP_POLICY, False).status == 429
    assert decide_lookup(reader, "x", "permit (principal, action, resource);", True).allowed
    bucket = TokenBucket(2, 60.0)
    assert [bucket.take("a", 0.0), bucket.take("a", 0.1), bucket.take("a", 0.2)] == [True, True, False]
    assert bucket.take("b", 0.2) and bucket.take("a", 1.3)  # one token per second refilled
