"""Standard Solidity ABI: signatures, selectors, argument and event encoding (via eth_abi)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as _abi_decode
from eth_abi.abi import encode as _abi_encode

from chainshare.crypto.hashing import keccak256
from chainshare.errors import DecodeError

ERROR_SELECTOR = keccak256(b"Error(string)")[:4]
_PARAM = re.compile(r"^\s*([a-z0-9\[\]]+)(?:\s+(indexed))?(?:\s+([A-Za-z_][A-Za-z0-9_]*))?\s*$")


@dataclass(frozen=True)
class Param:
    type: str
    name: str
    indexed: bool = False


def parse_params(text: str) -> tuple[Param, ...]:
    """Parse ``"bytes32 digest, address indexed by"`` into params."""
    text = text.strip()
    if not text:
        return ()
    out = []
    for i, part in enumerate(text.split(",")):
        m = _PARAM.match(part)
        if not m:
            raise ValueError(f"cannot parse ABI parameter {part!r}")
        out.append(Param(m.group(1), m.group(3) or f"arg{i}", bool(m.group(2))))
    return tuple(out)


def parse_signature(signature: str) -> tuple[str, tuple[Param, ...]]:
    """Parse ``"anchor(bytes32 digest)"`` into its name and params."""
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", signature.strip())
    if not m:
        raise ValueError(f"cannot parse ABI signature {signature!r}")
    return m.group(1), parse_params(m.group(2))


def canonical_signature(name: str, params: tuple[Param, ...]) -> str:
    return f"{name}({','.join(p.type for p in params)})"


def compute_selector(name: str, params: tuple[Param, ...]) -> bytes:
    return keccak256(canonical_signature(name, params).encode())[:4]


def encode_values(types: list[str], values: list[Any] | tuple[Any, ...]) -> bytes:
    return _abi_encode(types, list(values))


def decode_values(types: list[str], data: bytes) -> tuple[Any, ...]:
    """Decode ABI data strictly; malformed or short input raises DecodeError."""
    try:
        return tuple(_abi_decode(types, data, strict=True))
    except Exception as exc:
        raise DecodeError(f"calldata does not decode as ({','.join(types)}): {exc}") from exc


def encode_revert_reason(message: str) -> bytes:
    """Standard ``Error(string)`` revert data, as Solidity's ``require``/``revert`` produce."""
    return ERROR_SELECTOR + _abi_encode(["string"], [message])


def decode_revert_reason(data: bytes) -> str | None:
    if data[:4] != ERROR_SELECTOR:
        return None
    try:
        return str(_abi_decode(["string"], data[4:])[0])
    except Exception:
        return None
