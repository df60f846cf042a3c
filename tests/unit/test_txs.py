"""Ethereum transaction decoding: interop with eth_account, and each refusal with its precise class."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest
import rlp
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import SECP256K1_N, sign_hash
from chainshare.errors import (
    ChainshareError,
    DecodeError,
    InvalidSignature,
    InvalidTransaction,
    TransactionTooLarge,
    UnsupportedTransactionType,
    WrongChainId,
)
from chainshare.ledger.rlpspan import encode_length
from chainshare.ledger.txs import (
    MAX_TX_BYTES,
    TYPE_EIP1559,
    TYPE_LEGACY,
    Transaction,
    decode_transaction,
    peek_type_and_to,
    sign_eip1559,
)

CHAIN_ID = 4242
KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
SENDER = bytes.fromhex(Account.from_key(KEY).address[2:])
NOTARY = "0x" + "00" * 18 + "c503"
DATA = bytes.fromhex("b4a3cba9") + bytes(range(32))


def eip1559(**overrides: Any) -> dict[str, Any]:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": 7, "maxFeePerGas": 2_000_000_000,
          "maxPriorityFeePerGas": 1_000_000_000, "gas": 90_000, "to": NOTARY, "value": 0,
          "data": "0x" + DATA.hex(), "accessList": []}
    tx.update(overrides)
    return tx


def legacy(**overrides: Any) -> dict[str, Any]:
    tx = {"chainId": CHAIN_ID, "nonce": 7, "gasPrice": 1_000_000_000, "gas": 90_000, "to": NOTARY, "value": 0,
          "data": "0x" + DATA.hex()}
    tx.update(overrides)
    return tx


def signed(tx: dict[str, Any], key: str = KEY) -> bytes:
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def resign_fields(raw: bytes, edit: Any) -> bytes:
    """Decode a raw tx, let ``edit`` change its RLP fields, re-encode (signature left as is)."""
    typed = raw[0] < 0xC0
    fields = rlp.decode(raw[1:] if typed else raw)
    edit(fields)
    return (raw[:1] if typed else b"") + rlp.encode(fields)


def int_bytes(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


# -- interop with eth_account -------------------------------------------------------------------

@pytest.mark.parametrize("access_list", [[], [{"address": NOTARY, "storageKeys": ["0x" + "ab" * 32]}]],
                         ids=["no-access-list", "access-list"])
def test_eip1559_tx_signed_by_eth_account_decodes_with_same_hash_and_sender(access_list: list[Any]) -> None:
    signed_tx = Account.sign_transaction(eip1559(accessList=access_list), KEY)
    raw = bytes(signed_tx.raw_transaction)
    tx = decode_transaction(raw, CHAIN_ID)
    assert tx.hash == bytes(signed_tx.hash) == keccak256(raw)
    assert tx.sender == SENDER
    assert (tx.type, tx.chain_id, tx.nonce, tx.gas_limit) == (TYPE_EIP1559, CHAIN_ID, 7, 90_000)
    assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (2_000_000_000, 1_000_000_000)
    assert tx.to == bytes.fromhex(NOTARY[2:]) and tx.data == DATA and tx.value == 0
    assert len(tx.access_list) == len(access_list)


def test_eip155_legacy_tx_signed_by_eth_account_decodes_with_same_hash_and_sender() -> None:
    signed_tx = Account.sign_transaction(legacy(), KEY)
    raw = bytes(signed_tx.raw_transaction)
    tx = decode_transaction(raw, CHAIN_ID)
    assert tx.hash == bytes(signed_tx.hash)
    assert tx.sender == SENDER
    assert (tx.type, tx.chain_id, tx.gas_price, tx.v) == (TYPE_LEGACY, CHAIN_ID, 1_000_000_000, signed_tx.v)
    assert tx.v in (CHAIN_ID * 2 + 35, CHAIN_ID * 2 + 36)


@pytest.mark.parametrize("tx", [eip1559(), eip1559(accessList=[{"address": NOTARY, "storageKeys": ["0x" + "ab" * 32]}]),
                                eip1559(to=b"", data="0x6000"), legacy()], ids=["1559", "access-list", "create", "legacy"])
def test_a_decoded_transaction_is_the_dataclass_built_from_its_fields(tx: dict[str, Any]) -> None:
    """The decoder fills a Transaction's fields at once (``_new_transaction``): the same object as the
    dataclass's own constructor makes, field for field, equal, hashed, printed and frozen alike."""
    decoded = decode_transaction(signed(tx), CHAIN_ID)
    names = [f.name for f in dataclasses.fields(Transaction)]
    assert list(vars(decoded)) == names
    built = Transaction(**{name: getattr(decoded, name) for name in names})
    assert decoded == built and hash(decoded) == hash(built) and repr(decoded) == repr(built)
    assert vars(decoded) == vars(built)
    assert sys.getsizeof(vars(decoded)) == sys.getsizeof(vars(built))  # a key-sharing dict, as the constructor's
    assert "__post_init__" not in vars(Transaction)  # _new_transaction would skip it
    assert dataclasses.replace(decoded) == decoded
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.nonce = 8  # type: ignore[misc]


def test_contract_creation_decodes_with_no_recipient() -> None:
    tx = decode_transaction(signed(eip1559(to=b"", data="0x6000")), CHAIN_ID)
    assert tx.to is None


def test_transactions_signed_by_chainshare_are_read_by_eth_account() -> None:
    key = bytes.fromhex(KEY[2:])
    raw = sign_eip1559(key, chain_id=CHAIN_ID, nonce=3, to=bytes.fromhex(NOTARY[2:]), data=DATA, gas=80_000,
                       max_fee_per_gas=5, max_priority_fee_per_gas=2)
    assert bytes.fromhex(Account.recover_transaction(raw)[2:]) == SENDER
    tx = decode_transaction(raw, CHAIN_ID)
    assert (tx.sender, tx.nonce, tx.gas_limit, tx.max_fee_per_gas) == (SENDER, 3, 80_000, 5)
    assert peek_type_and_to(raw) == (TYPE_EIP1559, bytes.fromhex(NOTARY[2:]))
    assert peek_type_and_to(signed(legacy())) == (TYPE_LEGACY, bytes.fromhex(NOTARY[2:]))


# -- refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"", b"\x80", b"\xbf", b"\xc0", b"\x02", b"\x02\xc0", b"\x02\x80", b"\x02\xf8",
                                 b"\xc3\x01\x02", b"\x02" + rlp.encode([b""] * 11), rlp.encode([b""] * 8)],
                         ids=["empty", "rlp-string", "rlp-long-string", "empty-list", "type-only",
                              "type2-empty-list", "type2-string", "type2-truncated", "legacy-short",
                              "type2-11-fields", "legacy-8-fields"])
def test_bad_rlp_or_shape_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_transaction(raw, CHAIN_ID)


def test_type1_access_list_transaction_is_unsupported() -> None:
    raw = signed({**legacy(), "type": 1, "accessList": []})
    assert raw[0] == 1
    with pytest.raises(UnsupportedTransactionType, match="type 1"):
        decode_transaction(raw, CHAIN_ID)


@pytest.mark.parametrize("tx_type", [0, 3, 4, 0x7F])
def test_other_typed_envelopes_are_unsupported(tx_type: int) -> None:
    # A blob (type 3) transaction body: what matters is the envelope byte.
    body = rlp.encode([int_bytes(CHAIN_ID), b"\x01", b"\x01", b"\x01", b"\x01", bytes(20), b"", b"", [], b"\x01",
                       [b"\x01" * 32], b"", b"\x01", b"\x01"])
    with pytest.raises(UnsupportedTransactionType):
        decode_transaction(bytes([tx_type]) + body, CHAIN_ID)


@pytest.mark.parametrize("make", [lambda: signed(eip1559(chainId=1)), lambda: signed(legacy(chainId=1))],
                         ids=["eip1559", "legacy"])
def test_wrong_chain_id_is_refused(make: Any) -> None:
    with pytest.raises(WrongChainId, match="chain id 1"):
        decode_transaction(make(), CHAIN_ID)


def test_unprotected_legacy_transaction_is_refused_as_wrong_chain_id() -> None:
    tx = legacy()
    del tx["chainId"]
    raw = signed(tx)
    assert rlp.decode(raw)[6] in (b"\x1b", b"\x1c")  # v = 27 / 28
    with pytest.raises(WrongChainId, match="replay protection"):
        decode_transaction(raw, CHAIN_ID)


def _flip_to_high_s(fields: list[Any], parity_index: int, legacy_tx: bool) -> None:
    s = int.from_bytes(fields[-1], "big")
    fields[-1] = int_bytes(SECP256K1_N - s)
    v = int.from_bytes(fields[parity_index], "big")
    fields[parity_index] = int_bytes(v ^ 1 if not legacy_tx else (v + 1 if (v - 35) % 2 == 0 else v - 1))


def test_high_s_eip1559_signature_is_refused() -> None:
    raw = resign_fields(signed(eip1559()), lambda f: _flip_to_high_s(f, 9, False))
    with pytest.raises(InvalidSignature, match="high-s"):
        decode_transaction(raw, CHAIN_ID)


def test_high_s_legacy_signature_is_refused() -> None:
    raw = resign_fields(signed(legacy()), lambda f: _flip_to_high_s(f, 6, True))
    with pytest.raises(InvalidSignature, match="high-s"):
        decode_transaction(raw, CHAIN_ID)


def test_the_high_s_twin_is_otherwise_a_valid_signature() -> None:
    """Guard for the two tests above: eth_account (which accepts high s) recovers the same sender."""
    raw = resign_fields(signed(eip1559()), lambda f: _flip_to_high_s(f, 9, False))
    assert bytes.fromhex(Account.recover_transaction(raw)[2:]) == SENDER


@pytest.mark.parametrize("edit", [
    lambda f: f.__setitem__(9, b"\x02"),  # yParity 2
    lambda f: f.__setitem__(10, b""),  # r = 0
    lambda f: f.__setitem__(11, b""),  # s = 0
    lambda f: f.__setitem__(10, int_bytes(SECP256K1_N)),  # r = n
], ids=["parity-2", "r-zero", "s-zero", "r-n"])
def test_out_of_range_signature_values_are_invalid_signatures(edit: Any) -> None:
    with pytest.raises(InvalidSignature):
        decode_transaction(resign_fields(signed(eip1559()), edit), CHAIN_ID)


def test_legacy_v_below_35_that_is_not_27_or_28_is_an_invalid_signature() -> None:
    raw = resign_fields(signed(legacy()), lambda f: f.__setitem__(6, b"\x1d"))
    with pytest.raises(InvalidSignature):
        decode_transaction(raw, CHAIN_ID)


def test_tampered_payload_recovers_another_sender() -> None:
    raw = resign_fields(signed(eip1559()), lambda f: f.__setitem__(1, b"\x08"))  # nonce 7 -> 8
    try:
        tx = decode_transaction(raw, CHAIN_ID)
    except InvalidSignature:
        return
    assert tx.sender != SENDER


def test_transaction_over_128_kib_is_too_large() -> None:
    raw = signed(eip1559(data="0x" + "01" * (MAX_TX_BYTES + 1), gas=10_000_000))
    with pytest.raises(TransactionTooLarge, match="131072"):
        decode_transaction(raw, CHAIN_ID)


def test_transaction_just_under_the_limit_is_accepted() -> None:
    base = len(signed(eip1559(data="0x")))
    raw = signed(eip1559(data="0x" + "01" * (MAX_TX_BYTES - base - 8), gas=10_000_000))
    assert len(raw) <= MAX_TX_BYTES
    assert decode_transaction(raw, CHAIN_ID).sender == SENDER


@pytest.mark.parametrize("field_index,name", [(0, "chainId"), (1, "nonce"), (2, "maxPriorityFeePerGas"),
                                              (4, "gas"), (6, "value"), (10, "r"), (11, "s")])
def test_integer_with_leading_zero_is_a_decode_error(field_index: int, name: str) -> None:
    def pad(f: list[Any]) -> None:
        value = f[field_index]
        # Keep 256-bit fields at 32 bytes so that the leading zero is the only defect.
        f[field_index] = b"\x00" + (value[1:] if len(value) == 32 else value)

    raw = resign_fields(signed(eip1559()), pad)
    with pytest.raises(DecodeError, match=f"{name}.*leading zero"):
        decode_transaction(raw, CHAIN_ID)


def test_zero_encoded_as_a_zero_byte_is_a_decode_error() -> None:
    raw = resign_fields(signed(eip1559()), lambda f: f.__setitem__(6, b"\x00"))  # value 0 must be b""
    with pytest.raises(DecodeError, match="leading zero"):
        decode_transaction(raw, CHAIN_ID)


def test_legacy_integer_with_leading_zero_is_a_decode_error() -> None:
    raw = resign_fields(signed(legacy()), lambda f: f.__setitem__(0, b"\x00\x07"))
    with pytest.raises(DecodeError, match="leading zero"):
        decode_transaction(raw, CHAIN_ID)


@pytest.mark.parametrize("edit,match", [
    (lambda f: f.__setitem__(1, b"\x01" * 33), "exceeds 256 bits"),
    (lambda f: f.__setitem__(5, b"\x01" * 19), "20-byte address"),
    (lambda f: f.__setitem__(5, [b"x"]), "20-byte address"),
    (lambda f: f.__setitem__(7, [b"x"]), "data must be an RLP string"),
    (lambda f: f.__setitem__(8, b"x"), "accessList must be a list"),
    (lambda f: f.__setitem__(1, [b"\x07"]), "nonce must be an RLP string"),
], ids=["int-over-256-bits", "short-address", "list-address", "list-data", "string-access-list", "list-nonce"])
def test_malformed_fields_are_decode_errors(edit: Any, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_transaction(resign_fields(signed(eip1559()), edit), CHAIN_ID)


def test_priority_fee_above_max_fee_is_refused() -> None:
    with pytest.raises(InvalidTransaction, match="exceeds maxFeePerGas"):
        decode_transaction(signed(eip1559(maxPriorityFeePerGas=3, maxFeePerGas=2)), CHAIN_ID)


def test_nonce_beyond_64_bits_is_refused() -> None:
    raw = resign_fields(signed(eip1559()), lambda f: f.__setitem__(1, int_bytes(2**64)))
    with pytest.raises(InvalidTransaction, match="64 bits"):
        decode_transaction(raw, CHAIN_ID)


def test_errors_inherit_the_matching_builtin() -> None:
    assert issubclass(DecodeError, ValueError) and issubclass(InvalidTransaction, ValueError)
    with pytest.raises(ValueError):
        decode_transaction(b"\x80", CHAIN_ID)


# -- properties: any bytes, any RLP, any mutation: only clean chainshare errors -----------------------

CLEAN = (DecodeError, InvalidTransaction)


def _decode_cleanly(raw: bytes) -> None:
    try:
        tx = decode_transaction(raw, CHAIN_ID)
    except ChainshareError as exc:
        assert isinstance(exc, CLEAN), type(exc)
        assert exc.message
    else:
        assert tx.hash == keccak256(raw) and len(tx.sender) == 20


@given(st.binary(max_size=600))
def test_random_bytes_fail_only_with_chainshare_errors(raw: bytes) -> None:
    _decode_cleanly(raw)


@given(st.sampled_from([b"\x00", b"\x01", b"\x02", b"\x03", b"\x7f", b""]), st.binary(max_size=400))
def test_random_typed_envelopes_fail_only_with_chainshare_errors(prefix: bytes, body: bytes) -> None:
    _decode_cleanly(prefix + body)


rlp_items = st.recursive(st.binary(max_size=40), lambda inner: st.lists(inner, max_size=4), max_leaves=6)


@settings(max_examples=150)
@given(st.sampled_from([b"\x02", b""]), st.lists(rlp_items, min_size=8, max_size=13))
def test_random_rlp_structures_fail_only_with_chainshare_errors(prefix: bytes, fields: list[Any]) -> None:
    _decode_cleanly(prefix + rlp.encode(fields))


VALID = [signed(eip1559()), signed(legacy())]


@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_transactions_fail_only_with_chainshare_errors(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        pos = data.draw(st.integers(0, len(mutated) - 1), label="position")
        mutated[pos] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(0, len(mutated)), label="truncate at")
    _decode_cleanly(bytes(mutated[:cut]))


# -- the access list ------------------------------------------------------------------------------------

def _signed_1559_with_raw_access_list(access_list_item: bytes) -> bytes:
    """A correctly signed type-2 tx whose access-list item is exactly ``access_list_item`` (raw RLP)."""
    key = bytes.fromhex(KEY[2:])
    head = b"".join(rlp.encode(x) for x in (CHAIN_ID, 7, 1, 2, 90_000, bytes.fromhex(NOTARY[2:]), 0, DATA))
    body = head + access_list_item
    sighash = keccak256(b"\x02" + encode_length(len(body), 0xC0) + body)
    y, r, s = sign_hash(key, sighash)
    full = body + rlp.encode(y) + rlp.encode(r) + rlp.encode(s)
    return b"\x02" + encode_length(len(full), 0xC0) + full


def test_well_formed_access_list_is_accepted() -> None:
    item = rlp.encode([[bytes.fromhex(NOTARY[2:]), [b"\xab" * 32]]])
    tx = decode_transaction(_signed_1559_with_raw_access_list(item), CHAIN_ID)
    assert tx.sender == SENDER
    assert bytes.fromhex(Account.recover_transaction(_signed_1559_with_raw_access_list(item))[2:]) == SENDER


def test_access_list_that_is_not_rlp_is_a_decode_error() -> None:
    raw = _signed_1559_with_raw_access_list(b"\xc3\xff\xff\xff")
    with pytest.raises(DecodeError):
        decode_transaction(raw, CHAIN_ID)


def test_access_list_entries_must_be_address_and_storage_keys() -> None:
    raw = _signed_1559_with_raw_access_list(rlp.encode([b"x"]))
    with pytest.raises(DecodeError):
        decode_transaction(raw, CHAIN_ID)


@settings(max_examples=60, deadline=None)
@given(secret=st.integers(1, SECP256K1_N - 1), msg=st.binary(min_size=32, max_size=32))
def test_sender_recovery_matches_coincurve_and_eth_account(secret: int, msg: bytes) -> None:
    import coincurve

    from chainshare.crypto.secp import address_of_private_key, recover_address

    key = secret.to_bytes(32, "big")
    y, r, s = sign_hash(key, msg)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([y])
    pub = coincurve.PublicKey.from_signature_and_message(sig, msg, hasher=None).format(compressed=False)
    assert recover_address(msg, y, r, s) == keccak256(pub[1:])[12:] == address_of_private_key(key)
    assert recover_address(msg, 1 - y, r, s) != address_of_private_key(key)  # the other parity: another key


def test_sender_recovery_refuses_an_r_off_the_curve() -> None:
    from chainshare.crypto.secp import recover_address
    from chainshare.errors import CryptoError

    # x = 5 is no secp256k1 x-coordinate (5^3 + 7 = 132 is a non-residue mod p): nothing recovers.
    with pytest.raises(CryptoError, match="does not recover to a public key"):
        recover_address(b"\x01" * 32, 0, 5, 1)
    with pytest.raises(CryptoError, match="32 bytes"):
        recover_address(b"\x01" * 31, 0, 1, 1)


def test_threads_recovering_at_once_each_get_their_own_signer() -> None:
    """Recovery keeps its C buffers per thread and releases the GIL in the library: four threads
    recovering different signers at the same time each get theirs, a failed recovery between them too."""
    from concurrent.futures import ThreadPoolExecutor

    from chainshare.crypto.secp import address_of_private_key, recover_address
    from chainshare.errors import CryptoError

    keys = [keccak256(b"thread-signer-%d" % k) for k in range(4)]
    wrong: list[str] = []

    def recover_many(k: int) -> None:
        expected = address_of_private_key(keys[k])
        for i in range(150):
            msg = keccak256(b"%d/%d" % (k, i))
            y, r, s = sign_hash(keys[k], msg)
            if recover_address(msg, y, r, s) != expected:
                wrong.append(f"thread {k}, message {i}")
            if i % 25 == 0:
                with pytest.raises(CryptoError):
                    recover_address(msg, 0, 5, 1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = [pool.submit(recover_many, k) for k in range(4)]
    for run in runs:
        run.result()  # an exception in a thread (a refusal missing or a wrong one) fails the test here
    assert wrong == []
