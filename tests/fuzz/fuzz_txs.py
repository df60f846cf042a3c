"""Fuzz ``decode_transaction`` and the span RLP reader (bytes any client or peer sends).

Contract: any input decodes or raises what ``apply_block`` and the mempool's callers catch
(``InvalidTransaction`` or ``DecodeError``); a transaction that decodes is canonical RLP for the
reference ``rlp`` package too, with the same fields; ``read_list`` agrees with ``rlp`` on every list
``rlp`` decodes, and ``read_nth_item`` with ``read_list``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import _fuzzkit
import atheris

with atheris.instrument_imports(include=["chainshare", "rlp"]):
    import rlp
    from rlpspan_kit import compare_with_reference  # tests/unit's, shared with test_rlpspan.py

    from chainshare.crypto.hashing import keccak256
    from chainshare.crypto.secp import sign_hash
    from chainshare.errors import DecodeError, InvalidTransaction
    from chainshare.ledger.txs import decode_transaction, peek_type_and_to, sign_eip1559

CHAIN_ID = 4242
KEY = keccak256(b"chainshare/fuzz/key")


def _uint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def sign_legacy(nonce: int, to: bytes, data: bytes, gas: int) -> bytes:
    fields = [_uint(nonce), _uint(1), _uint(gas), to, b"", data]
    y, r, s = sign_hash(KEY, keccak256(rlp.encode([*fields, _uint(CHAIN_ID), b"", b""])))
    return bytes(rlp.encode([*fields, _uint(35 + 2 * CHAIN_ID + y), _uint(r), _uint(s)]))


def seeds() -> Iterable[bytes]:
    to = bytes(range(20))
    yield sign_eip1559(KEY, chain_id=CHAIN_ID, nonce=0, to=to, data=b"", gas=21_000)
    yield sign_eip1559(KEY, chain_id=CHAIN_ID, nonce=7, to=None, data=bytes(100), gas=90_000, max_fee_per_gas=2)
    yield sign_eip1559(KEY, chain_id=CHAIN_ID, nonce=1, to=to, data=b"\x12\x34\x56\x78" + bytes(64), gas=10**6)
    yield sign_legacy(3, to, b"\xab" * 60, 50_000)
    # an access list with one entry: the shape _check_access_list walks
    fields = [_uint(CHAIN_ID), b"", b"", b"", _uint(21_000), to, b"", b"", [[to, [bytes(32), b"\x01" * 32]]]]
    y, r, s = sign_hash(KEY, keccak256(b"\x02" + rlp.encode(fields)))
    yield b"\x02" + rlp.encode([*fields, _uint(y), _uint(r), _uint(s)])


def check(data: bytes) -> None:
    compare_with_reference(data)
    if data[:1] == b"\x02":
        compare_with_reference(data[1:])
    try:
        tx = decode_transaction(data, CHAIN_ID)
    except (InvalidTransaction, DecodeError):
        return
    body = data[1:] if tx.type == 2 else data
    fields = rlp.decode(body, strict=True)  # a decoded transaction is valid RLP: this must not raise
    assert isinstance(fields, list) and len(fields) == (12 if tx.type == 2 else 9), data.hex()
    assert fields[5 if tx.type == 2 else 3] == (tx.to or b""), data.hex()
    assert peek_type_and_to(data) == (tx.type, tx.to), data.hex()


if __name__ == "__main__":
    _fuzzkit.run(check, seeds)
    sys.exit(0)
