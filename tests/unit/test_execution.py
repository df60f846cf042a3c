"""Block execution: the Notary contract, Ethereum-style events, gas metering, and block verification
(apply_block re-executes a block and refuses any header, body or parent that does not match)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from chainkit import NOTARY, Ledger, account, call_data, make_genesis, revert_reason, sign_call, validator
from eth_utils import keccak as ref_keccak
from hexbytes import HexBytes
from web3 import Web3

from chainshare.errors import ConsensusError, InvalidTransaction, StorageError
from chainshare.execution.block import ExecutedBlock, apply_block, build_block
from chainshare.execution.contracts import ACCESS_CONTROL, GOVERNANCE, build_runtime
from chainshare.execution.genesis import ChainParams
from chainshare.execution.runtime import (
    BlockEnv,
    CallContext,
    Runtime,
    SystemContract,
    compute_intrinsic_gas,
    get_nonce,
    method,
    set_nonce,
)
from chainshare.ledger.merkle import compute_root
from chainshare.ledger.state import DictReader, StateView
from chainshare.ledger.txs import decode_transaction
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Receipt, bloom_contains

ROOT = Path(__file__).resolve().parents[2]
ALICE, BOB, MALLORY = account("alice"), account("bob"), account("mallory")
VAL = validator("v1", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], [VAL])
D1, D2, D3 = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32

NOTARY_ABI = json.loads((ROOT / "contracts" / "Notary.json").read_text())
W3 = Web3()
NOTARY_CONTRACT = W3.eth.contract(address=NOTARY_ABI["address"], abi=NOTARY_ABI["abi"])


def anchor_data(digest: bytes) -> bytes:
    return bytes(HexBytes(NOTARY_CONTRACT.encode_abi("anchor", args=[digest])))


def is_anchored(ledger: Ledger, digest: bytes) -> bool:
    ok, out = ledger.view(NOTARY, bytes(HexBytes(NOTARY_CONTRACT.encode_abi("isAnchored", args=[digest]))))
    assert ok
    (result,) = eth_abi.decode(["bool"], out)
    return bool(result)


def web3_log(lg: Any) -> dict[str, Any]:
    return {"address": Web3.to_checksum_address(lg.address), "topics": [HexBytes(t) for t in lg.topics],
            "data": HexBytes(lg.data), "blockHash": HexBytes(bytes(32)), "blockNumber": 1,
            "transactionHash": HexBytes(bytes(32)), "transactionIndex": 0, "logIndex": 0, "removed": False}


def ref_bloom(logs: list[Any]) -> bytes:
    """Ethereum's logs bloom (yellow paper M3:2048), written independently."""
    bloom = bytearray(256)
    for lg in logs:
        for item in (lg.address, *lg.topics):
            h = ref_keccak(item)
            for i in (0, 2, 4):
                bit = ((h[i] << 8) | h[i + 1]) & 2047
                bloom[255 - bit // 8] |= 1 << (bit % 8)
    return bytes(bloom)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(GENESIS)


# -- Notary --------------------------------------------------------------------------------------

def test_anchor_records_digest_sender_and_height(ledger: Ledger) -> None:
    receipt = ledger.send(ALICE, NOTARY, anchor_data(D1))
    assert receipt.status == STATUS_SUCCESS
    assert is_anchored(ledger, D1) is True
    ok, out = ledger.view(NOTARY, call_data("anchoredAt(bytes32)", D1))
    height, by = eth_abi.decode(["uint64", "address"], out)
    assert ok and height == 1 and by == ALICE.checksum.lower()
    assert is_anchored(ledger, D2) is False


def test_anchored_at_of_an_unknown_digest_reverts(ledger: Ledger) -> None:
    ok, out = ledger.view(NOTARY, call_data("anchoredAt(bytes32)", D2))
    assert not ok and revert_reason(out) == "digest not anchored"


def test_double_anchor_reverts_with_error_string(ledger: Ledger) -> None:
    assert ledger.send(ALICE, NOTARY, anchor_data(D1)).status == STATUS_SUCCESS
    receipt = ledger.send(BOB, NOTARY, anchor_data(D1))
    assert receipt.status == STATUS_FAILURE
    assert receipt.logs == ()
    assert revert_reason(receipt.output) == "digest already anchored"
    # The first anchor stands.
    _, out = ledger.view(NOTARY, call_data("anchoredAt(bytes32)", D1))
    assert eth_abi.decode(["uint64", "address"], out)[1] == ALICE.checksum.lower()


def test_anchor_event_is_an_ethereum_log_that_web3_decodes(ledger: Ledger) -> None:
    receipt = ledger.send(ALICE, NOTARY, anchor_data(D1))
    (lg,) = receipt.logs
    assert lg.address == NOTARY
    assert lg.topics == (ref_keccak(b"Anchored(bytes32,address)"), D1, bytes(12) + ALICE.address)
    assert lg.data == b""
    event = NOTARY_CONTRACT.events.Anchored().process_log(web3_log(lg))
    assert event["event"] == "Anchored"
    assert event["args"]["digest"] == D1 and event["args"]["by"] == ALICE.checksum


def test_header_bloom_is_ethereums_bloom_of_the_block_logs(ledger: Ledger) -> None:
    executed = ledger.execute([sign_call(ALICE, NOTARY, anchor_data(D1), 0),
                               sign_call(BOB, NOTARY, anchor_data(D2), 0)])
    logs = [lg for r in executed.receipts for lg in r.logs]
    assert len(logs) == 2
    bloom = executed.block.header.logs_bloom
    assert bloom == ref_bloom(logs)
    for item in (NOTARY, D1, D2, bytes(12) + ALICE.address, ref_keccak(b"Anchored(bytes32,address)")):
        assert bloom_contains(bloom, item)
    assert ledger.execute([]).block.header.logs_bloom == bytes(256)


def test_unknown_selector_in_a_block_reverts_and_bumps_the_nonce(ledger: Ledger) -> None:
    receipt = ledger.send(ALICE, NOTARY, b"\xde\xad\xbe\xef")
    assert receipt.status == STATUS_FAILURE and "unknown selector" in revert_reason(receipt.output)
    assert get_nonce(ledger.reader(), ALICE.address) == 1


def test_bad_arguments_revert(ledger: Ledger) -> None:
    receipt = ledger.send(ALICE, NOTARY, call_data("anchor(bytes32)", D1)[:20])
    assert receipt.status == STATUS_FAILURE and "bad arguments" in revert_reason(receipt.output)


# Found by tests/fuzz/fuzz_calldata.py: ids are 64-bit counters, but the ABI lets a caller pass any uint256.
def test_a_governance_vote_on_an_id_beyond_64_bits_reverts_in_its_block(ledger: Ledger) -> None:
    receipt = ledger.send(ALICE, GOVERNANCE, call_data("vote(uint256,bool)", 2**64, True))
    assert receipt.status == STATUS_FAILURE and revert_reason(receipt.output) == f"no proposal {2**64}"
    assert get_nonce(ledger.reader(), ALICE.address) == 1


def test_compute_limits_of_a_dataset_id_beyond_64_bits_are_the_defaults(ledger: Ledger) -> None:
    small = ledger.view(ACCESS_CONTROL, call_data("getComputeLimits(uint256)", 7))
    assert ledger.view(ACCESS_CONTROL, call_data("getComputeLimits(uint256)", 2**64)) == small
    assert small[0]


class _Faulty(SystemContract):
    """A contract whose methods fail as a buggy contract might: on arguments nobody expected."""

    NAME = "Faulty"
    ADDRESS = b"\xfa" * 20

    @method("lookup(uint256 key)", returns="uint256 value")
    def lookup(self, ctx: CallContext, key: int) -> int:
        ctx.sstore(b"touched", b"\x01")
        return {1: 1}[key]

    @method("oversized()", returns="uint8 value")
    def oversized(self, ctx: CallContext) -> int:
        return 256  # not a uint8: encoding the return value fails

    @method("disk()")
    def disk(self, ctx: CallContext) -> None:
        raise StorageError("the ledger at /data is unreadable")


def _run_faulty(data: bytes) -> tuple[Receipt, StateView]:
    runtime = Runtime([*build_runtime().contracts.values(), _Faulty()])
    state = StateView(DictReader(dict(Ledger(GENESIS).state)))
    raw = sign_call(ALICE, _Faulty.ADDRESS, data, 0)
    tx = decode_transaction(raw, GENESIS.chain_id)
    env = BlockEnv(GENESIS.chain_id, 1, GENESIS.timestamp_ms + 1, bytes(20), 10**7)
    return runtime.apply_transaction(state, tx, env, 0), state


@pytest.mark.parametrize("name,data,failure", [
    ("lookup", call_data("lookup(uint256)", 2), "KeyError"),
    ("oversized", call_data("oversized()"), "ValueOutOfBounds"),
], ids=["lookup-fails", "return-value-does-not-encode"])
def test_a_contract_failing_on_unexpected_arguments_reverts_the_call_deterministically(
        name: str, data: bytes, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="chainshare.execution"):
        receipt, state = _run_faulty(data)
    assert receipt.status == STATUS_FAILURE and not receipt.logs
    assert revert_reason(receipt.output) == f"Faulty.{name}: the call failed; check its arguments"
    assert [r.fields for r in caplog.records] == [{"call": f"Faulty.{name}", "error": failure}]  # type: ignore[attr-defined]
    assert state.get(b"c" + _Faulty.ADDRESS + b"touched") is None  # its writes are undone
    assert get_nonce(state, ALICE.address) == 1


def test_a_ledger_failure_inside_a_contract_stops_the_block_instead_of_reverting() -> None:
    with pytest.raises(StorageError, match="unreadable"):
        _run_faulty(call_data("disk()"))


class _BuggyRuntime(Runtime):
    """A runtime with a bug that no revert catches: executing ``poison`` raises ``error``."""

    def __init__(self, poison: bytes, error: Exception) -> None:
        super().__init__(list(build_runtime().contracts.values()))
        self.poison, self.error = poison, error

    def apply_transaction(self, state: StateView, tx: Any, env: BlockEnv, cumulative_gas: int) -> Receipt:
        if tx.hash == self.poison:
            set_nonce(state, tx.sender, tx.nonce + 1)  # it wrote before failing: the write must be undone
            raise self.error
        return super().apply_transaction(state, tx, env, cumulative_gas)


def _build_with(runtime: Runtime, ledger: Ledger, raws: list[bytes]) -> tuple[ExecutedBlock, list[tuple[Any, str]]]:
    left_out: list[tuple[Any, str]] = []
    txs = [decode_transaction(r, GENESIS.chain_id) for r in raws]
    h = ledger.parent_header
    executed = build_block(runtime, ledger.reader(), h, ledger.accumulator, txs, chain_id=GENESIS.chain_id,
                           round=h.round + 1, timestamp_ms=h.timestamp_ms + 1000, proposer=bytes(20), justify=None,
                           on_invalid=lambda tx, exc: left_out.append((tx, exc.message)))
    return executed, left_out


def test_a_proposer_leaves_out_a_transaction_whose_execution_raises_and_builds_the_rest(ledger: Ledger) -> None:
    raws = [sign_call(ALICE, NOTARY, anchor_data(D1), 0), sign_call(BOB, NOTARY, anchor_data(D2), 0),
            sign_call(ALICE, NOTARY, anchor_data(D3), 1)]
    poison = decode_transaction(raws[1], GENESIS.chain_id).hash
    executed, left_out = _build_with(_BuggyRuntime(poison, RuntimeError("a bug")), ledger, raws)
    assert list(executed.block.transactions) == [raws[0], raws[2]]
    assert [(tx.hash, reason) for tx, reason in left_out] == [
        (poison, "executing it raised RuntimeError instead of reverting: left out of the block (report it to the "
                 "node's operators)")]
    ledger.apply(executed)
    assert get_nonce(ledger.reader(), BOB.address) == 0  # Bob's nonce is unspent: his write was undone
    assert get_nonce(ledger.reader(), ALICE.address) == 2


def test_a_block_carrying_a_transaction_whose_execution_raises_gets_no_vote(ledger: Ledger) -> None:
    executed = ledger.build([sign_call(ALICE, NOTARY, anchor_data(D1), 0)])
    poison = decode_transaction(executed.block.transactions[0], GENESIS.chain_id).hash
    with pytest.raises(ConsensusError, match="raised RuntimeError instead of reverting"):
        apply_block(_BuggyRuntime(poison, RuntimeError("a bug")), ledger.reader(), ledger.parent_header,
                    ledger.accumulator, executed.block, chain_id=GENESIS.chain_id)


@pytest.mark.parametrize("error", [StorageError("the ledger at /data is unreadable"), MemoryError()],
                         ids=["ledger", "memory"])
def test_a_failure_of_the_node_while_building_stops_the_block(ledger: Ledger, error: Exception) -> None:
    raw = sign_call(ALICE, NOTARY, anchor_data(D1), 0)
    with pytest.raises(type(error)):
        _build_with(_BuggyRuntime(decode_transaction(raw, GENESIS.chain_id).hash, error), ledger, [raw])


# -- gas -----------------------------------------------------------------------------------------

def test_out_of_gas_reverts_state_and_logs_but_bumps_the_nonce(ledger: Ledger) -> None:
    data = anchor_data(D1)
    gas = compute_intrinsic_gas(data) + 5_000  # enough for the SLOAD, not for the SSTORE
    receipt = ledger.send(ALICE, NOTARY, data, gas=gas)
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output) == "out of gas"
    assert receipt.logs == () and receipt.gas_used == gas
    assert get_nonce(ledger.reader(), ALICE.address) == 1
    assert is_anchored(ledger, D1) is False
    # The same digest can still be anchored with enough gas, at the next nonce.
    assert ledger.send(ALICE, NOTARY, data).status == STATUS_SUCCESS


def test_intrinsic_gas_counts_zero_and_nonzero_bytes() -> None:
    assert compute_intrinsic_gas(b"") == 21_000
    assert compute_intrinsic_gas(b"\x00\x01\x00\xff") == 21_000 + 2 * 4 + 2 * 16


def test_gas_used_is_cumulative_across_a_block(ledger: Ledger) -> None:
    executed = ledger.execute([sign_call(ALICE, NOTARY, anchor_data(D1), 0),
                               sign_call(ALICE, NOTARY, anchor_data(D2), 1)])
    r1, r2 = executed.receipts
    assert r1.cumulative_gas_used == r1.gas_used > compute_intrinsic_gas(anchor_data(D1))
    assert r2.cumulative_gas_used == r1.gas_used + r2.gas_used
    assert executed.block.header.gas_used == r2.cumulative_gas_used


def test_full_block_leaves_the_rest_for_the_next_block() -> None:
    params = ChainParams(block_gas_limit=150_000)
    ledger = Ledger(make_genesis([("Agency A", [ALICE.address])], [VAL], params=params))
    txs = [decode_transaction(sign_call(ALICE, NOTARY, anchor_data(bytes([i]) * 32), i, gas=60_000), 4242)
           for i in range(4)]
    dropped: list[Any] = []
    executed = build_block(ledger.runtime, ledger.reader(), ledger.parent_header, ledger.accumulator, txs,
                           chain_id=4242, round=ledger.parent_header.round + 1,
                           timestamp_ms=ledger.parent_header.timestamp_ms + 1,
                           proposer=bytes(20), justify=None, on_invalid=lambda tx, exc: dropped.append(tx))
    included = executed.block.transactions
    # A prefix fits (gas counted as used, as in Ethereum); the next one would not; nothing is dropped.
    assert 0 < len(included) < 4 and included == tuple(t.raw for t in txs[:len(included)])
    assert executed.block.header.gas_used + 60_000 > 150_000 and dropped == []
    ledger.apply(executed)
    rest = build_block(ledger.runtime, ledger.reader(), ledger.parent_header, ledger.accumulator,
                       txs[len(included):], chain_id=4242, round=ledger.parent_header.round + 1,
                       timestamp_ms=ledger.parent_header.timestamp_ms + 1, proposer=bytes(20), justify=None,
                       on_invalid=lambda tx, exc: dropped.append(tx))
    assert rest.block.transactions == tuple(t.raw for t in txs[len(included):]) and dropped == []


def test_block_holds_at_most_max_block_txs() -> None:
    ledger = Ledger(make_genesis([("Agency A", [ALICE.address])], [VAL], params=ChainParams(max_block_txs=2)))
    txs = [decode_transaction(sign_call(ALICE, NOTARY, anchor_data(bytes([i]) * 32), i), 4242) for i in range(3)]
    executed = build_block(ledger.runtime, ledger.reader(), ledger.parent_header, ledger.accumulator, txs,
                           chain_id=4242, round=ledger.parent_header.round + 1,
                           timestamp_ms=ledger.parent_header.timestamp_ms + 1,
                           proposer=bytes(20), justify=None, on_invalid=lambda tx, exc: None)
    assert len(executed.block.transactions) == 2


def test_proposer_skips_invalid_transactions_and_reports_them(ledger: Ledger) -> None:
    good = decode_transaction(sign_call(ALICE, NOTARY, anchor_data(D1), 0), 4242)
    stranger = decode_transaction(sign_call(MALLORY, NOTARY, anchor_data(D2), 0), 4242)
    replay = decode_transaction(sign_call(ALICE, NOTARY, anchor_data(D2), 0), 4242)  # nonce 0 again
    with_value = decode_transaction(sign_call(BOB, NOTARY, anchor_data(D2), 0, value=1), 4242)
    reasons: dict[bytes, str] = {}

    def on_invalid(tx: Any, exc: InvalidTransaction) -> None:
        reasons[tx.hash] = exc.message

    executed = build_block(ledger.runtime, ledger.reader(), ledger.parent_header, ledger.accumulator,
                           [good, stranger, replay, with_value], chain_id=4242, round=ledger.parent_header.round + 1,
                           timestamp_ms=ledger.parent_header.timestamp_ms + 1, proposer=bytes(20),
                           justify=None, on_invalid=on_invalid)
    assert executed.block.transactions == (good.raw,)
    assert "not an account of a member" in reasons[stranger.hash]
    assert "nonce 0 is not the sender's next nonce 1" in reasons[replay.hash]
    assert "value must be 0" in reasons[with_value.hash]


# -- determinism and verification ---------------------------------------------------------------------

def _block_with_txs(ledger: Ledger) -> tuple[ExecutedBlock, dict[bytes, bytes]]:
    ledger.execute([sign_call(ALICE, NOTARY, anchor_data(b"\x01" * 32), 0)])  # some history first
    parent_state = dict(ledger.state)
    executed = ledger.build([sign_call(ALICE, NOTARY, anchor_data(D1), 1),
                             sign_call(BOB, NOTARY, anchor_data(D1), 0),  # reverts: double anchor
                             sign_call(BOB, NOTARY, anchor_data(D2), 1)])
    return executed, parent_state


def _reapply(ledger: Ledger, parent_state: dict[bytes, bytes], block: Any) -> ExecutedBlock:
    return apply_block(ledger.runtime, DictReader(dict(parent_state)), ledger.parent_header, ledger.accumulator,
                       block, chain_id=4242)


def test_apply_block_on_another_state_view_reaches_the_identical_block(ledger: Ledger) -> None:
    executed, parent_state = _block_with_txs(ledger)
    again = _reapply(ledger, parent_state, executed.block)
    assert again.block.header == executed.block.header and again.block.hash == executed.block.hash
    assert again.receipts == executed.receipts
    assert [r.status for r in again.receipts] == [STATUS_SUCCESS, STATUS_FAILURE, STATUS_SUCCESS]
    assert again.state_changes == executed.state_changes
    assert again.accumulator == executed.accumulator
    assert again.senders == (ALICE.address, BOB.address, BOB.address)
    # Also over a stacked view (speculative execution on an uncommitted parent).
    stacked = apply_block(ledger.runtime, StateView(DictReader(dict(parent_state))), ledger.parent_header,
                          ledger.accumulator, executed.block, chain_id=4242)
    assert stacked.block.header == executed.block.header


def test_apply_block_reuses_a_known_transaction_only_for_its_exact_raw_bytes(ledger: Ledger) -> None:
    """The mempool shortcut (a transaction looked up by its raw bytes) re-executes to the same block as
    decoding every transaction; a lookup that answers another transaction is not believed."""
    executed, parent_state = _block_with_txs(ledger)
    raws = executed.block.transactions
    known = {r: decode_transaction(bytes(r), 4242) for r in raws}  # equal bytes, other objects
    asked: list[bytes] = []

    def lookup(raw: bytes) -> Any:
        asked.append(raw)
        return known.get(raw)

    def lying(raw: bytes) -> Any:
        return known[raws[0]]  # always the first transaction, whatever is asked

    slow = _reapply(ledger, parent_state, executed.block)
    for fn in (lookup, lying):
        fast = apply_block(ledger.runtime, DictReader(dict(parent_state)), ledger.parent_header, ledger.accumulator,
                           executed.block, chain_id=4242, known_transaction=fn)
        assert fast.block.header == slow.block.header and fast.receipts == slow.receipts
        assert fast.senders == slow.senders and fast.tx_hashes == slow.tx_hashes
        assert fast.state_changes == slow.state_changes and fast.accumulator == slow.accumulator
    assert asked == list(raws)


def test_header_roots_commit_to_transactions_and_receipts(ledger: Ledger) -> None:
    executed, _ = _block_with_txs(ledger)
    h = executed.block.header
    assert h.tx_root == compute_root(list(executed.block.transactions))
    assert h.receipts_root == compute_root([r.encode() for r in executed.receipts])
    assert h.parent_hash == ledger.parent_header.hash and h.height == ledger.parent_header.height + 1


@pytest.mark.parametrize("field,value,message", [
    ("state_root", b"\x01" * 32, "state_root"),
    ("tx_root", b"\x01" * 32, "tx_root"),
    ("receipts_root", b"\x01" * 32, "receipts_root"),
    ("logs_bloom", b"\x01" * 256, "logs_bloom"),
    ("gas_used", 1, "gas_used"),
    ("gas_limit", 1, "gas_limit"),
    ("validator_set_hash", b"\x01" * 32, "validator_set_hash"),
    ("justify_hash", b"\x01" * 32, "justify_hash"),
    ("parent_hash", b"\x01" * 32, "does not extend"),
    ("height", 5, "does not extend"),
    ("timestamp_ms", 0, "earlier than its parent"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_tampered_header_is_refused(ledger: Ledger, field: str, value: Any, message: str) -> None:
    executed, parent_state = _block_with_txs(ledger)
    header = dataclasses.replace(executed.block.header, **{field: value})
    block = dataclasses.replace(executed.block, header=header, hash=b"")
    with pytest.raises(ConsensusError, match=message):
        _reapply(ledger, parent_state, block)


@pytest.mark.parametrize("edit", ["extra", "missing", "reordered", "replaced", "stranger"])
def test_tampered_body_is_refused(ledger: Ledger, edit: str) -> None:
    executed, parent_state = _block_with_txs(ledger)
    txs = list(executed.block.transactions)
    if edit == "extra":
        txs.append(sign_call(ALICE, NOTARY, anchor_data(b"\x33" * 32), 2))
    elif edit == "missing":
        txs.pop()
    elif edit == "reordered":
        txs[1], txs[2] = txs[2], txs[1]
    elif edit == "replaced":
        txs[0] = sign_call(ALICE, NOTARY, anchor_data(b"\x44" * 32), 1)
    else:
        txs.append(sign_call(MALLORY, NOTARY, anchor_data(b"\x55" * 32), 0))
    block = dataclasses.replace(executed.block, transactions=tuple(txs))
    with pytest.raises(ConsensusError):
        _reapply(ledger, parent_state, block)


def test_block_over_the_transaction_limit_is_refused() -> None:
    ledger = Ledger(make_genesis([("Agency A", [ALICE.address])], [VAL], params=ChainParams(max_block_txs=1)))
    executed = ledger.build([sign_call(ALICE, NOTARY, anchor_data(D1), 0)])
    block = dataclasses.replace(executed.block, transactions=executed.block.transactions * 2)
    with pytest.raises(ConsensusError, match="limit is 1"):
        apply_block(ledger.runtime, ledger.reader(), ledger.parent_header, ledger.accumulator, block, chain_id=4242)


@pytest.mark.parametrize("raw", [sign_call(ALICE, NOTARY, b"", 5, chain_id=1), b"\x01" + b"\xc0"],
                         ids=["wrong-chain-id", "type-1"])
def test_block_with_an_inadmissible_transaction_is_refused(ledger: Ledger, raw: bytes) -> None:
    executed, parent_state = _block_with_txs(ledger)
    block = dataclasses.replace(executed.block, transactions=executed.block.transactions + (raw,))
    with pytest.raises(ConsensusError, match="undecodable transaction"):
        _reapply(ledger, parent_state, block)


@pytest.mark.parametrize("raw", [b"\x02\x01", b"\x80", b"\x02" + b"\xc0"], ids=["bad-rlp", "rlp-string", "empty"])
def test_block_with_an_undecodable_transaction_is_a_consensus_error(ledger: Ledger, raw: bytes) -> None:
    executed, parent_state = _block_with_txs(ledger)
    block = dataclasses.replace(executed.block, transactions=executed.block.transactions + (raw,))
    with pytest.raises(ConsensusError):
        _reapply(ledger, parent_state, block)


def test_receipts_encode_and_decode(ledger: Ledger) -> None:
    executed, _ = _block_with_txs(ledger)
    for r in executed.receipts:
        assert Receipt.from_list(r.to_list()) == r
