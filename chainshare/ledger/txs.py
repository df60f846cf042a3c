"""Standard signed Ethereum transactions: EIP-1559 (type 2) and EIP-155 legacy.

``decode_transaction`` parses raw bytes, checks the chain id and signature, and recovers the
sender with coincurve; it either returns a fully verified ``Transaction`` or raises a precise
``InvalidTransaction``. The transaction hash is keccak-256 of the raw bytes, as every Ethereum
tool expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rlp

from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import recover_address, sign_hash
from chainshare.errors import (
    CryptoError,
    DecodeError,
    InvalidSignature,
    InvalidTransaction,
    TransactionTooLarge,
    UnsupportedTransactionType,
    WrongChainId,
)
from chainshare.ledger.rlpspan import encode_length, encode_uint, read_item, read_list, read_nth_item

MAX_TX_BYTES = 128 * 1024
TYPE_LEGACY = 0
TYPE_EIP1559 = 2
UINT256_MAX = 2**256 - 1


@dataclass(frozen=True)
class Transaction:
    raw: bytes
    hash: bytes
    type: int
    chain_id: int
    nonce: int
    gas_limit: int
    to: bytes | None
    value: int
    data: bytes
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas_price: int
    access_list: tuple[Any, ...]
    v: int
    r: int
    s: int
    sender: bytes


def _int(data: bytes, item: tuple[bool, int, int, int], what: str) -> int:
    is_list, s, e, _ = item
    if is_list:
        raise DecodeError(f"transaction field {what} must be an RLP string")
    if e - s > 32:
        raise DecodeError(f"transaction field {what} exceeds 256 bits")
    if e == s:
        return 0
    first = data[s]
    if first == 0:
        raise DecodeError(f"transaction field {what} has leading zero bytes (non-canonical)")
    # a one-byte field (a nonce, y parity, small fees) is its own value: int.from_bytes costs ~1.5 k instructions
    return first if e - s == 1 else int.from_bytes(data[s:e], "big")


def _to(data: bytes, item: tuple[bool, int, int, int]) -> bytes | None:
    is_list, s, e, _ = item
    if is_list or e - s not in (0, 20):
        raise DecodeError("transaction 'to' must be empty or a 20-byte address")
    return data[s:e] or None


def _bytes_field(data: bytes, item: tuple[bool, int, int, int], what: str) -> bytes:
    if item[0]:
        raise DecodeError(f"transaction {what} must be an RLP string")
    return data[item[1]:item[2]]


def decode_transaction(raw: bytes, chain_id: int, tx_hash: bytes | None = None) -> Transaction:
    """Decode, check and recover the sender of a raw signed transaction for ``chain_id``; ``tx_hash``:
    ``keccak256(raw)`` when the caller has computed it already (it is not hashed again)."""
    if not isinstance(raw, bytes) or not raw:
        raise DecodeError("empty transaction")
    if len(raw) > MAX_TX_BYTES:
        raise TransactionTooLarge(f"transaction of {len(raw)} bytes exceeds the {MAX_TX_BYTES}-byte limit")
    first = raw[0]
    if first >= 0xC0:
        return _decode_legacy(raw, chain_id, tx_hash)
    if first == TYPE_EIP1559:
        return _decode_1559(raw, chain_id, tx_hash)
    if first <= 0x7F:
        raise UnsupportedTransactionType(
            f"transaction type {first} is not supported (use EIP-1559 type 2 or EIP-155 legacy)"
        )
    raise DecodeError("transaction is neither a typed envelope nor an RLP list")


def _decode_1559(raw: bytes, chain_id: int, tx_hash: bytes | None) -> Transaction:
    f, payload_start, _ = read_list(raw, 1)
    if len(f) != 12:
        raise DecodeError(f"EIP-1559 transaction must have 12 fields, got {len(f)}")
    tx_chain = _int(raw, f[0], "chainId")
    nonce, prio = _int(raw, f[1], "nonce"), _int(raw, f[2], "maxPriorityFeePerGas")
    max_fee, gas = _int(raw, f[3], "maxFeePerGas"), _int(raw, f[4], "gas")
    to, value, data = _to(raw, f[5]), _int(raw, f[6], "value"), _bytes_field(raw, f[7], "data")
    if not f[8][0]:
        raise DecodeError("accessList must be a list")
    _check_access_list(raw, f[8])
    y, r, s = _int(raw, f[9], "yParity"), _int(raw, f[10], "r"), _int(raw, f[11], "s")
    if tx_chain != chain_id:
        raise WrongChainId(f"transaction is for chain id {tx_chain}, this network is {chain_id}")
    if nonce >= 2**64 or gas >= 2**64:
        raise InvalidTransaction("nonce and gas must fit in 64 bits")
    if prio > max_fee:
        raise InvalidTransaction("maxPriorityFeePerGas exceeds maxFeePerGas")
    # The signing payload is the first nine fields: a contiguous span of the raw encoding.
    body = raw[payload_start:f[8][3]]
    sighash = keccak256(b"\x02" + encode_length(len(body), 0xC0) + body)
    sender = _recover(sighash, y, r, s)
    access_list = () if f[8][1] == f[8][2] else (raw[f[8][1]:f[8][2]],)
    return _new_transaction({
        "raw": raw, "hash": tx_hash or keccak256(raw), "type": TYPE_EIP1559, "chain_id": tx_chain, "nonce": nonce,
        "gas_limit": gas, "to": to, "value": value, "data": data, "max_fee_per_gas": max_fee,
        "max_priority_fee_per_gas": prio, "gas_price": max_fee, "access_list": access_list, "v": y, "r": r, "s": s,
        "sender": sender})


def _decode_legacy(raw: bytes, chain_id: int, tx_hash: bytes | None) -> Transaction:
    f, payload_start, _ = read_list(raw, 0)
    if len(f) != 9:
        raise DecodeError(f"legacy transaction must have 9 fields, got {len(f)}")
    nonce, gas_price, gas = _int(raw, f[0], "nonce"), _int(raw, f[1], "gasPrice"), _int(raw, f[2], "gas")
    to, value, data = _to(raw, f[3]), _int(raw, f[4], "value"), _bytes_field(raw, f[5], "data")
    v, r, s = _int(raw, f[6], "v"), _int(raw, f[7], "r"), _int(raw, f[8], "s")
    if v in (27, 28):
        raise WrongChainId("legacy transaction without EIP-155 replay protection is refused; sign with the chain id")
    if v < 35:
        raise InvalidSignature(f"legacy transaction has invalid v={v}")
    tx_chain = (v - 35) // 2
    if tx_chain != chain_id:
        raise WrongChainId(f"transaction is for chain id {tx_chain}, this network is {chain_id}")
    if nonce >= 2**64 or gas >= 2**64:
        raise InvalidTransaction("nonce and gas must fit in 64 bits")
    body = raw[payload_start:f[5][3]] + encode_uint(chain_id) + b"\x80\x80"
    sighash = keccak256(encode_length(len(body), 0xC0) + body)
    sender = _recover(sighash, (v - 35) % 2, r, s)
    return _new_transaction({
        "raw": raw, "hash": tx_hash or keccak256(raw), "type": TYPE_LEGACY, "chain_id": tx_chain, "nonce": nonce,
        "gas_limit": gas, "to": to, "value": value, "data": data, "max_fee_per_gas": gas_price,
        "max_priority_fee_per_gas": gas_price, "gas_price": gas_price, "access_list": (), "v": v, "r": r, "s": s,
        "sender": sender})


def _new_transaction(fields: dict[str, Any]) -> Transaction:
    """The ``Transaction`` of ``fields`` (every field, by name, in field order), as ``Transaction(**fields)``
    makes it: equal to it, same hash and repr, frozen alike. The generated ``__init__`` of a frozen dataclass
    sets each of the 17 fields with ``object.__setattr__``: ~20 k instructions a decode more than filling the
    instance's dict item by item. Not ``fields`` itself as the ``__dict__`` (nor ``update(fields)``): ~7.5 k
    less again, but the instance then keeps a dict of its own keys (~230 B more a transaction held) instead
    of one sharing the class's keys. A unit test checks the two agree."""
    tx: Transaction = object.__new__(Transaction)
    tx.__dict__.update(fields.items())
    return tx


def _check_access_list(raw: bytes, item: tuple[bool, int, int, int]) -> None:
    """EIP-2930 shape: [[address(20), [storageKey(32), ...]], ...], canonical RLP throughout."""
    _, start, end, _ = item
    pos = start
    while pos < end:
        entry, _, entry_end = read_list(raw, pos, whole=False)
        if entry_end > end or len(entry) != 2:
            raise DecodeError("accessList entries must be [address, [storageKeys]]")
        addr, keys = entry
        if addr[0] or addr[2] - addr[1] != 20:
            raise DecodeError("accessList address must be 20 bytes")
        if not keys[0]:
            raise DecodeError("accessList storage keys must be a list")
        kpos = keys[1]
        while kpos < keys[2]:
            is_list, ks, ke = read_item(raw, kpos)
            if is_list or ke - ks != 32 or ke > keys[2]:
                raise DecodeError("accessList storage keys must be 32 bytes")
            kpos = ke
        pos = entry_end


def _recover(sighash: bytes, y: int, r: int, s: int) -> bytes:
    try:
        return recover_address(sighash, y, r, s)
    except CryptoError as exc:
        raise InvalidSignature(f"invalid transaction signature: {exc.message}") from exc


def _encode_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def sign_eip1559(private_key: bytes, *, chain_id: int, nonce: int, to: bytes | None, data: bytes,
                 gas: int, value: int = 0, max_fee_per_gas: int = 0,
                 max_priority_fee_per_gas: int = 0) -> bytes:
    """Build and sign a raw EIP-1559 transaction (used by the CLI and the load generator)."""
    fields: list[Any] = [
        _encode_int(chain_id), _encode_int(nonce), _encode_int(max_priority_fee_per_gas),
        _encode_int(max_fee_per_gas), _encode_int(gas), to or b"", _encode_int(value), data, [],
    ]
    y, r, s = sign_hash(private_key, keccak256(b"\x02" + rlp.encode(fields)))
    return b"\x02" + bytes(rlp.encode(fields + [_encode_int(y), _encode_int(r), _encode_int(s)]))


def peek_type_and_to(raw: bytes) -> tuple[int, bytes | None]:
    """Type and recipient of a stored (already verified) transaction, without signature recovery."""
    if raw[0] == TYPE_EIP1559:
        item = read_nth_item(raw, 1, 5)
        return TYPE_EIP1559, _to(raw, (*item, item[2]))
    item = read_nth_item(raw, 0, 3)
    return TYPE_LEGACY, _to(raw, (*item, item[2]))
