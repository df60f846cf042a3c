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


def _int(b: Any, what: str) -> int:
    if not isinstance(b, bytes):
        raise DecodeError(f"transaction field {what} must be an RLP string")
    if len(b) > 32:
        raise DecodeError(f"transaction field {what} exceeds 256 bits")
    if b[:1] == b"\x00":
        raise DecodeError(f"transaction field {what} has leading zero bytes (non-canonical)")
    return int.from_bytes(b, "big")


def _to(b: Any) -> bytes | None:
    if not isinstance(b, bytes) or len(b) not in (0, 20):
        raise DecodeError("transaction 'to' must be empty or a 20-byte address")
    return b or None


def _data(b: Any) -> bytes:
    if not isinstance(b, bytes):
        raise DecodeError("transaction data must be an RLP string")
    return b


def _rlp_decode(payload: bytes) -> list[Any]:
    try:
        fields = rlp.decode(payload, strict=True)
    except Exception as exc:
        raise DecodeError(f"transaction is not valid RLP: {exc}") from exc
    if not isinstance(fields, list):
        raise DecodeError("transaction RLP must be a list")
    return fields


def decode_transaction(raw: bytes, chain_id: int) -> Transaction:
    """Decode, check and recover the sender of a raw signed transaction for ``chain_id``."""
    if not isinstance(raw, bytes) or not raw:
        raise DecodeError("empty transaction")
    if len(raw) > MAX_TX_BYTES:
        raise TransactionTooLarge(f"transaction of {len(raw)} bytes exceeds the {MAX_TX_BYTES}-byte limit")
    first = raw[0]
    if first >= 0xC0:
        return _decode_legacy(raw, chain_id)
    if first == TYPE_EIP1559:
        return _decode_1559(raw, chain_id)
    if first <= 0x7F:
        raise UnsupportedTransactionType(
            f"transaction type {first} is not supported (use EIP-1559 type 2 or EIP-155 legacy)"
        )
    raise DecodeError("transaction is neither a typed envelope nor an RLP list")


def _decode_1559(raw: bytes, chain_id: int) -> Transaction:
    f = _rlp_decode(raw[1:])
    if len(f) != 12:
        raise DecodeError(f"EIP-1559 transaction must have 12 fields, got {len(f)}")
    tx_chain = _int(f[0], "chainId")
    nonce, prio, max_fee, gas = (_int(f[i], n) for i, n in ((1, "nonce"), (2, "maxPriorityFeePerGas"),
                                                              (3, "maxFeePerGas"), (4, "gas")))
    to, value, data = _to(f[5]), _int(f[6], "value"), _data(f[7])
    if not isinstance(f[8], list):
        raise DecodeError("accessList must be a list")
    y, r, s = _int(f[9], "yParity"), _int(f[10], "r"), _int(f[11], "s")
    if tx_chain != chain_id:
        raise WrongChainId(f"transaction is for chain id {tx_chain}, this network is {chain_id}")
    if nonce >= 2**64 or gas >= 2**64:
        raise InvalidTransaction("nonce and gas must fit in 64 bits")
    if prio > max_fee:
        raise InvalidTransaction("maxPriorityFeePerGas exceeds maxFeePerGas")
    sighash = keccak256(b"\x02" + rlp.encode(f[:9]))
    sender = _recover(sighash, y, r, s)
    return Transaction(raw, keccak256(raw), TYPE_EIP1559, tx_chain, nonce, gas, to, value, data,
                       max_fee, prio, max_fee, tuple(f[8]), y, r, s, sender)


def _decode_legacy(raw: bytes, chain_id: int) -> Transaction:
    f = _rlp_decode(raw)
    if len(f) != 9:
        raise DecodeError(f"legacy transaction must have 9 fields, got {len(f)}")
    nonce, gas_price, gas = _int(f[0], "nonce"), _int(f[1], "gasPrice"), _int(f[2], "gas")
    to, value, data = _to(f[3]), _int(f[4], "value"), _data(f[5])
    v, r, s = _int(f[6], "v"), _int(f[7], "r"), _int(f[8], "s")
    if v in (27, 28):
        raise WrongChainId("legacy transaction without EIP-155 replay protection is refused; sign with the chain id")
    if v < 35:
        raise InvalidSignature(f"legacy transaction has invalid v={v}")
    tx_chain = (v - 35) // 2
    if tx_chain != chain_id:
        raise WrongChainId(f"transaction is for chain id {tx_chain}, this network is {chain_id}")
    if nonce >= 2**64 or gas >= 2**64:
        raise InvalidTransaction("nonce and gas must fit in 64 bits")
    sighash = keccak256(rlp.encode(f[:6] + [_encode_int(chain_id), b"", b""]))
    sender = _recover(sighash, (v - 35) % 2, r, s)
    return Transaction(raw, keccak256(raw), TYPE_LEGACY, tx_chain, nonce, gas, to, value, data,
                       gas_price, gas_price, gas_price, (), v, r, s, sender)


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
    return b"\x02" + rlp.encode(fields + [_encode_int(y), _encode_int(r), _encode_int(s)])


def peek_type_and_to(raw: bytes) -> tuple[int, bytes | None]:
    """Type and recipient of a stored (already verified) transaction, without signature recovery."""
    if raw[0] == TYPE_EIP1559:
        f = rlp.decode(raw[1:])
        return TYPE_EIP1559, f[5] or None
    f = rlp.decode(raw)
    return TYPE_LEGACY, f[3] or None
