"""Standard Solidity ABI: signatures, selectors, argument and event encoding (via eth_abi)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as _abi_decode
from eth_abi.abi import encode as _abi_encode
from eth_abi.exceptions import (
    EncodingError as EncodingError,  # what encode_values raises for a value its type refuses
)

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


_UINT_BITS = {f"uint{n}": n for n in range(8, 257, 8)}


def _is_static_word(typ: str) -> bool:
    return typ in ("address", "bool", "bytes32") or typ in _UINT_BITS


# Encoding. Each type is compiled once (``_compile_part``) into a function from a value to its
# head word (static types) or its tail (dynamic types), or None when the value is not for the
# fast path; eth_abi then encodes it or gives the precise error. Profiling: with the type
# dispatch done per value, encoding was about half the cost of emitting an event.
_Part = tuple[bool, Callable[[Any], "bytes | None"]]  # (dynamic, encoder)
_FALSE_WORD = bytes(32)
_TRUE_WORD = bytes(31) + b"\x01"


def _encode_bytes32(v: Any) -> bytes | None:
    return v if isinstance(v, bytes) and len(v) == 32 else None


def _encode_address(v: Any) -> bytes | None:
    if isinstance(v, str) and len(v) == 42 and v[:2] in ("0x", "0X"):
        try:
            raw = bytes.fromhex(v[2:])
        except ValueError:
            return None
        return bytes(12) + raw if len(raw) == 20 else None  # fromhex skips spaces: "0x" + 40 chars may be short
    return bytes(12) + v if isinstance(v, bytes) and len(v) == 20 else None


def _encode_bool(v: Any) -> bytes | None:
    return (_TRUE_WORD if v else _FALSE_WORD) if isinstance(v, bool) else None


def _uint_encoder(bits: int) -> Callable[[Any], bytes | None]:
    limit = 1 << bits

    def encode(v: Any) -> bytes | None:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < limit:
            return v.to_bytes(32, "big")
        return None

    return encode


def _encode_string(v: Any) -> bytes | None:
    if not isinstance(v, str):
        return None
    try:
        raw = v.encode()
    except UnicodeEncodeError:
        return None
    return len(raw).to_bytes(32, "big") + raw + bytes(-len(raw) % 32)


def _encode_bytes(v: Any) -> bytes | None:
    if not isinstance(v, bytes):
        return None
    return len(v).to_bytes(32, "big") + v + bytes(-len(v) % 32)


def _array_encoder(element: _Part) -> Callable[[Any], bytes | None]:
    def encode(v: Any) -> bytes | None:
        if not isinstance(v, (list, tuple)):
            return None
        body = _encode_parts((element,) * len(v), v)
        return None if body is None else len(v).to_bytes(32, "big") + body

    return encode


def _never(_: Any) -> None:
    return None


@functools.lru_cache(maxsize=1024)
def _compile_part(typ: str) -> _Part:
    """How one value of ``typ`` is encoded on the fast path (``_never``: always by eth_abi)."""
    if typ == "bytes32":
        return False, _encode_bytes32
    if typ == "address":
        return False, _encode_address
    if typ == "bool":
        return False, _encode_bool
    if typ in _UINT_BITS:
        return False, _uint_encoder(_UINT_BITS[typ])
    if typ == "string":
        return True, _encode_string
    if typ == "bytes":
        return True, _encode_bytes
    if typ.endswith("[]"):
        return True, _array_encoder(_compile_part(typ[:-2]))
    return True, _never


def _encode_parts(parts: tuple[_Part, ...], values: Sequence[Any]) -> bytes | None:
    """Heads then tails of a tuple of values, or None if any of them is not for the fast path."""
    heads: list[bytes] = []
    tails: list[bytes] = []
    offset = 32 * len(parts)
    for (dynamic, encode), v in zip(parts, values, strict=True):
        encoded = encode(v)
        if encoded is None:
            return None
        if dynamic:
            heads.append(offset.to_bytes(32, "big"))
            tails.append(encoded)
            offset += len(encoded)
        else:
            heads.append(encoded)
    return b"".join(heads) + b"".join(tails)


@functools.lru_cache(maxsize=1024)
def _compile_parts(types: tuple[str, ...]) -> tuple[_Part, ...]:
    return tuple(_compile_part(t) for t in types)


def compile_encoder(types: Sequence[str]) -> Callable[[Sequence[Any]], bytes]:
    """``lambda values: encode_values(types, values)`` with the types looked at once, for a caller
    that encodes the same types again and again (an event's data)."""
    type_list = list(types)
    parts = _compile_parts(tuple(type_list))

    def encode(values: Sequence[Any]) -> bytes:
        if len(values) == len(parts):
            fast = _encode_parts(parts, values)
            if fast is not None:
                return fast
        return _abi_encode(type_list, list(values))

    return encode


def compile_value_encoder(typ: str) -> Callable[[Any], bytes]:
    """``lambda value: encode_values([typ], [value])`` with the type looked at once (an event's
    indexed parameter)."""
    dynamic, part = _compile_part(typ)
    head = (32).to_bytes(32, "big")  # the offset of the one tail

    def encode(value: Any) -> bytes:
        encoded = part(value)
        if encoded is None:
            return _abi_encode([typ], [value])
        return head + encoded if dynamic else encoded

    return encode


def encode_values(types: list[str], values: list[Any] | tuple[Any, ...]) -> bytes:
    """Standard ABI encoding. One-word static types (address, bool, bytes32, uintN), ``string``,
    ``bytes`` and dynamic arrays ``T[]`` of them take an exact fast path (profiling: eth_abi's
    generic encoder cost ~25 us per event topic and ~150 us per event with strings and string
    arrays); anything else, or any value the fast path does not recognise, goes through eth_abi,
    which encodes it or gives the precise error."""
    if len(types) == len(values):
        fast = _encode_parts(_compile_parts(tuple(types)), values)
        if fast is not None:
            return fast
    return _abi_encode(types, list(values))


# Decoding. A static head word is read by a function compiled once per type (``_word_reader``):
# (True, value), or (False, None) if eth_abi's strict decoder would refuse the word (it then gives
# the error).
_WordReader = Callable[[bytes], tuple[bool, Any]]


def _read_bytes32(w: bytes) -> tuple[bool, Any]:
    return True, w


def _read_address(w: bytes) -> tuple[bool, Any]:
    return (False, None) if any(w[:12]) else (True, "0x" + w[12:].hex())  # lowercase, as eth_abi


def _read_bool(w: bytes) -> tuple[bool, Any]:
    return (False, None) if any(w[:31]) or w[31] > 1 else (True, w[31] == 1)


def _uint_reader(bits: int) -> _WordReader:
    def read(w: bytes) -> tuple[bool, Any]:
        v = int.from_bytes(w, "big")
        return (False, None) if v >> bits else (True, v)

    return read


@functools.lru_cache(maxsize=1024)
def _word_reader(typ: str) -> _WordReader:
    """The reader of one head word of the static one-word type ``typ`` (``_is_static_word``)."""
    if typ == "bytes32":
        return _read_bytes32
    if typ == "address":
        return _read_address
    if typ == "bool":
        return _read_bool
    return _uint_reader(_UINT_BITS[typ])


def _decode_dynamic(typ: str, data: bytes, start: int) -> tuple[Any, int] | None:
    """(value, end) of the canonically encoded ``string``/``bytes``/``T[]`` tail at ``start``."""
    if start + 32 > len(data):
        return None
    n = int.from_bytes(data[start:start + 32], "big")
    if typ.endswith("[]"):
        if n > (len(data) - start) // 32:  # each element takes at least one word
            return None
        decoded = _decode_sequence([typ[:-2]] * n, data, start + 32)
        return None if decoded is None else (tuple(decoded[0]), decoded[1])
    end = start + 32 + n + (-n % 32)
    if end > len(data) or any(data[start + 32 + n:end]):
        return None
    raw = data[start + 32:start + 32 + n]
    if typ == "bytes":
        return raw, end
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        return None


def _decode_sequence(types: list[str], data: bytes, start: int) -> tuple[list[Any], int] | None:
    """(values, end) of a tuple encoded canonically at ``start`` (static heads in place, each
    dynamic tail right after the previous one, zero padding), or None for anything else."""
    out: list[Any] = []
    end = start + 32 * len(types)
    if end > len(data):
        return None
    for i, typ in enumerate(types):
        w = data[start + 32 * i:start + 32 * i + 32]
        if _is_static_word(typ):
            ok, v = _word_reader(typ)(w)
        elif typ in ("string", "bytes") or typ.endswith("[]"):
            if int.from_bytes(w, "big") != end - start:
                return None
            tail = _decode_dynamic(typ, data, end)
            if tail is None:
                return None
            (v, end), ok = tail, True
        else:
            return None
        if not ok:
            return None
        out.append(v)
    return out, end


def compile_decoder(types: Sequence[str]) -> Callable[[bytes], tuple[Any, ...]]:
    """``lambda data: decode_values(types, data)`` with the types looked at once, for a caller that
    decodes the same types again and again (a method's arguments). A tuple of one-word static types
    (the arguments of most calls) is read word by word; anything else, or any word the fast path
    would refuse, goes through ``decode_values``: same values, same errors."""
    type_list = list(types)
    if not all(_is_static_word(t) for t in type_list):
        return functools.partial(decode_values, type_list)
    words = tuple(_word_reader(t) for t in type_list)
    size = 32 * len(words)

    def decode(data: bytes) -> tuple[Any, ...]:
        if len(data) == size:
            out = []
            for i, word in enumerate(words):
                ok, v = word(data[32 * i:32 * i + 32])
                if not ok:
                    break
                out.append(v)
            else:
                return tuple(out)
        return decode_values(type_list, data)

    return decode


def decode_values(types: list[str], data: bytes) -> tuple[Any, ...]:
    """Decode ABI data strictly; malformed or short input raises DecodeError. Data encoded exactly
    as ``encode_values`` encodes (canonical offsets, zero padding, no trailing bytes) of the types
    it fast-paths is decoded directly (same results as eth_abi); anything irregular is left to
    eth_abi, which accepts it or gives the precise error."""
    fast = _decode_sequence(types, data, 0)
    if fast is not None and fast[1] == len(data):
        return tuple(fast[0])
    try:
        return tuple(_abi_decode(types, data, strict=True))
    except MemoryError:
        raise  # this node's failure, not the call data's
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


def to_jsonable(value: Any) -> Any:
    """An ABI-decoded value as JSON: bytes as 0x-hex, tuples as lists (event args, view results)."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value
