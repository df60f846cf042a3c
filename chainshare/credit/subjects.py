"""Credit subjects off chain: organisation codes and the person handles registrars derive.

A person never appears on chain by an identifier: the chain holds ``P-`` + HMAC-SHA256(registrar key,
domain || resident ID), computed only where the registrar key is (the nodes of agencies that Governance
granted the ``credit_registrar`` role), so no other member can compute or reverse a handle from an ID.
Resident ID numbers (GB 11643) are validated with python-stdnum (``stdnum.cn.ric``) before anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from stdnum.cn import ric as _ric
from stdnum.exceptions import ValidationError as _StdnumError

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import InvalidInput
from chainshare.execution.contracts.credit_registry import PERSON_HANDLE_EXACT, validate_uscc

HANDLE_DOMAIN = b"chainshare/credit/person-handle/v1\x00"
KEY_BYTES = 32

__all__ = ["compute_person_handle", "generate_registrar_key", "is_person_handle", "read_registrar_key",
           "validate_resident_id", "validate_uscc"]


def validate_resident_id(number: str) -> str:
    """The canonical (compact, upper-case) resident ID; InvalidInput naming the problem (the expected check
    character when only that is wrong). The number itself is never put in the message."""
    if not isinstance(number, str) or len(number) > 64:
        raise InvalidInput("a resident ID number is 18 characters")
    canonical = _ric.compact(number)
    if len(canonical) != 18 or parse_ascii_decimal(canonical[:17], max_digits=17) is None \
            or canonical[17] not in "0123456789X":
        raise InvalidInput("a resident ID number is 17 digits and a check character (0-9 or X)")
    try:
        _ric.validate(canonical)
    except _StdnumError as exc:
        expected = _ric.calc_check_digit(canonical)  # stdnum takes the number with its check character
        if expected != canonical[17]:
            raise InvalidInput(f"the resident ID's check character is wrong: expected {expected!r}") from exc
        raise InvalidInput(f"invalid resident ID number: {exc}") from exc
    return canonical


def compute_person_handle(registrar_key: bytes, resident_id: str) -> str:
    """The on-chain handle of the person with ``resident_id`` under the registrars' key."""
    if len(registrar_key) != KEY_BYTES:
        raise InvalidInput(f"a registrar key is {KEY_BYTES} bytes")
    digest = hmac.new(registrar_key, HANDLE_DOMAIN + validate_resident_id(resident_id).encode(), hashlib.sha256)
    return "P-" + digest.hexdigest()


def is_person_handle(subject: str) -> bool:
    return bool(PERSON_HANDLE_EXACT.fullmatch(subject))


def generate_registrar_key(path: Path) -> None:
    """Write a new random registrar key (hex) to ``path``, readable by its owner only; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(KEY_BYTES).hex() + "\n")


def read_registrar_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path} is not a registrar key file (64 hex digits)") from exc
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"{path} is not a registrar key file (64 hex digits)")
    return key
