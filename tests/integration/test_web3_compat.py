"""web3.py, unchanged, against a real node: contract objects from contracts/*.json, signed raw
transactions, receipts, events and logs, and the standard eth_/net_/web3_ methods."""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from netkit import ANCHORED_TOPIC, Devnet, anchor_data, load_artifact, sign_call, tx_hash_of
from web3.exceptions import BlockNotFound, ContractLogicError, TransactionNotFound, Web3RPCError

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("web3")]


@pytest.fixture(scope="module")
def w3(devnet: Devnet) -> Any:
    return devnet.web3()


@pytest.fixture(scope="module")
def notary(w3: Any) -> Any:
    art = load_artifact("Notary")
    return w3.eth.contract(address=art["address"], abi=art["abi"])


@pytest.fixture(scope="module")
def acct(devnet: Devnet) -> Any:
    return Account.from_key(devnet.private_key)


def transact(w3: Any, acct: Any, fn: Any, **fields: Any) -> Any:
    """build_transaction -> eth_account signature -> send_raw_transaction -> wait for the receipt."""
    tx = fn.build_transaction({"from": acct.address, "chainId": w3.eth.chain_id,
                               "nonce": w3.eth.get_transaction_count(acct.address, "pending"), **fields})
    signed = acct.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    assert tx_hash == keccak(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)


@pytest.fixture(scope="module")
def anchored(w3: Any, notary: Any, acct: Any) -> tuple[bytes, Any]:
    """One digest anchored with web3.py (shared by the read-side tests)."""
    digest = os.urandom(32)
    return digest, transact(w3, acct, notary.functions.anchor(digest))


def test_anchor_built_signed_and_sent_with_web3_is_finalized(w3: Any, notary: Any, acct: Any,
                                                               anchored: tuple[bytes, Any]) -> None:
    digest, receipt = anchored
    assert receipt["status"] == 1
    assert receipt["to"] == notary.address
    assert receipt["from"] == acct.address
    assert receipt["blockNumber"] <= w3.eth.block_number
    assert w3.eth.get_block(receipt["blockNumber"])["hash"] == receipt["blockHash"]
    assert notary.functions.isAnchored(digest).call() is True
    assert notary.functions.isAnchored(os.urandom(32)).call() is False
    assert notary.functions.anchoredAt(digest).call() == [receipt["blockNumber"], acct.address]


def test_anchored_event_decodes_from_the_receipt_and_from_logs(w3: Any, notary: Any, acct: Any,
                                                                 anchored: tuple[bytes, Any]) -> None:
    digest, receipt = anchored
    (event,) = notary.events.Anchored().process_receipt(receipt)
    assert event["args"]["digest"] == digest
    assert event["args"]["by"] == acct.address
    assert event["transactionHash"] == receipt["transactionHash"]

    all_events = notary.events.Anchored.get_logs(from_block=0)
    mine = [e for e in all_events if e["transactionHash"] == receipt["transactionHash"]]
    assert len(mine) == 1 and mine[0]["args"]["digest"] == digest
    assert mine[0]["logIndex"] == event["logIndex"] and mine[0]["blockHash"] == receipt["blockHash"]


def test_get_logs_filters_by_address_topics_block_range_and_block_hash(w3: Any, notary: Any, acct: Any,
                                                                        anchored: tuple[bytes, Any]) -> None:
    digest, receipt = anchored
    height = receipt["blockNumber"]
    by_topic = "0x" + bytes(12).hex() + acct.address[2:].lower()
    exact = w3.eth.get_logs({"address": notary.address, "fromBlock": 0, "toBlock": "latest",
                             "topics": [ANCHORED_TOPIC, "0x" + digest.hex()]})
    assert [lg["transactionHash"] for lg in exact] == [receipt["transactionHash"]]
    assert exact[0]["topics"][2].hex().endswith(acct.address[2:].lower())

    by_sender = w3.eth.get_logs({"fromBlock": height, "toBlock": height, "topics": [ANCHORED_TOPIC, None, by_topic]})
    assert receipt["transactionHash"] in [lg["transactionHash"] for lg in by_sender]
    by_hash = w3.eth.get_logs({"blockHash": receipt["blockHash"], "address": [notary.address]})
    assert receipt["transactionHash"] in [lg["transactionHash"] for lg in by_hash]

    assert w3.eth.get_logs({"address": load_artifact("Membership")["address"], "fromBlock": height,
                            "toBlock": height}) == []
    assert w3.eth.get_logs({"fromBlock": 0, "topics": [ANCHORED_TOPIC, "0x" + os.urandom(32).hex()]}) == []
    assert w3.eth.get_logs({"address": notary.address, "fromBlock": height + 1, "toBlock": height + 1,
                            "topics": [ANCHORED_TOPIC, "0x" + digest.hex()]}) == []


def test_anchoring_a_digest_twice_reverts_with_status_0_and_reason(w3: Any, notary: Any, acct: Any,
                                                                    anchored: tuple[bytes, Any]) -> None:
    digest, _ = anchored
    nonce_before = w3.eth.get_transaction_count(acct.address)
    with pytest.raises(ContractLogicError, match="digest already anchored"):
        notary.functions.anchor(digest).estimate_gas({"from": acct.address})
    receipt = transact(w3, acct, notary.functions.anchor(digest), gas=100_000)
    assert receipt["status"] == 0
    assert receipt["logs"] == [] and notary.events.Anchored().process_receipt(receipt) == ()
    assert w3.eth.get_transaction_count(acct.address) == nonce_before + 1  # a reverted tx uses its nonce
    failing = w3.eth.get_transaction(receipt["transactionHash"])
    with pytest.raises(ContractLogicError, match="digest already anchored"):
        notary.functions.anchor(digest).call({"from": failing["from"], "to": failing["to"]})
    with pytest.raises(ContractLogicError, match="digest already anchored"):
        w3.eth.call({"from": failing["from"], "to": failing["to"], "data": failing["input"]})
    assert notary.functions.anchoredAt(digest).call()[0] < receipt["blockNumber"]


def test_legacy_eip155_transaction_is_accepted(devnet: Devnet, w3: Any, notary: Any, acct: Any) -> None:
    digest = os.urandom(32)
    signed = acct.sign_transaction({"chainId": w3.eth.chain_id, "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
                                    "gasPrice": 0, "gas": 100_000, "to": notary.address, "value": 0,
                                    "data": notary.encode_abi("anchor", [digest])})
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30)
    assert receipt["status"] == 1 and receipt["type"] == 0
    assert w3.eth.get_transaction(receipt["transactionHash"])["type"] == 0
    assert notary.functions.isAnchored(digest).call() is True


def test_identity_and_fee_methods_answer_like_an_ethereum_node(devnet: Devnet, w3: Any, acct: Any) -> None:
    assert w3.eth.chain_id == devnet.chain_id
    assert w3.net.version == str(devnet.chain_id)
    assert w3.client_version.startswith("chainshare/")
    assert w3.eth.syncing is False
    assert w3.eth.gas_price == 0
    assert w3.eth.max_priority_fee == 0
    assert w3.eth.get_balance(acct.address) == 0  # no native currency


def test_block_number_advances_and_blocks_link_by_parent_hash(devnet: Devnet, w3: Any) -> None:
    start = w3.eth.block_number
    assert start >= 1
    devnet.wait_for_head(start + 1, timeout=10)
    block = w3.eth.get_block(start + 1)
    assert block["parentHash"] == w3.eth.get_block(start)["hash"]
    assert block["number"] == start + 1


@pytest.mark.parametrize("tag", ["latest", "pending", "safe", "finalized"])
def test_get_block_by_tag_returns_the_finalized_head(w3: Any, tag: str) -> None:
    before = w3.eth.block_number
    block = w3.eth.get_block(tag)
    after = w3.eth.block_number
    assert before <= block["number"] <= after
    assert w3.eth.get_block(block["number"])["hash"] == block["hash"]


def test_get_block_earliest_is_the_genesis_block(devnet: Devnet, w3: Any) -> None:
    genesis = w3.eth.get_block("earliest")
    assert genesis["number"] == 0
    assert genesis["hash"].to_0x_hex() == devnet.info["genesis_hash"]
    assert genesis["parentHash"] == bytes(32)


def test_get_block_by_hash_and_full_transactions(w3: Any, acct: Any, anchored: tuple[bytes, Any]) -> None:
    _, receipt = anchored
    block = w3.eth.get_block(receipt["blockHash"], full_transactions=True)
    assert block["number"] == receipt["blockNumber"]
    assert block["hash"] == receipt["blockHash"]
    tx = block["transactions"][receipt["transactionIndex"]]
    assert tx["hash"] == receipt["transactionHash"] and tx["from"] == acct.address
    with pytest.raises(BlockNotFound):
        w3.eth.get_block("0x" + os.urandom(32).hex())
    with pytest.raises(BlockNotFound):
        w3.eth.get_block(w3.eth.block_number + 1000)


def test_get_transaction_by_hash_returns_the_signed_fields(devnet: Devnet, w3: Any, acct: Any) -> None:
    digest = os.urandom(32)
    nonce = w3.eth.get_transaction_count(acct.address, "pending")
    raw = sign_call(acct.key, devnet.chain_id, nonce, devnet.contract_address("Notary"),
                    anchor_data(digest), gas=90_000)
    tx_hash = w3.eth.send_raw_transaction(raw)
    assert tx_hash.to_0x_hex() == tx_hash_of(raw)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    tx = w3.eth.get_transaction(tx_hash)
    assert tx["hash"] == tx_hash and tx["from"] == acct.address
    assert tx["to"] == devnet.contract_address("Notary") and tx["nonce"] == nonce
    assert tx["gas"] == 90_000 and tx["type"] == 2 and tx["chainId"] == devnet.chain_id
    assert bytes(tx["input"]) == anchor_data(digest)
    assert tx["blockHash"] == receipt["blockHash"] and tx["blockNumber"] == receipt["blockNumber"]
    assert tx["transactionIndex"] == receipt["transactionIndex"]
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction("0x" + os.urandom(32).hex())


def test_transaction_count_latest_and_pending(devnet: Devnet, w3: Any, acct: Any) -> None:
    latest = w3.eth.get_transaction_count(acct.address, "latest")
    assert w3.eth.get_transaction_count(acct.address, "pending") == latest
    raw = sign_call(acct.key, devnet.chain_id, latest, devnet.contract_address("Notary"),
                    anchor_data(os.urandom(32)))
    tx_hash = w3.eth.send_raw_transaction(raw)
    # Pending or already included, the next nonce to use is latest + 1.
    assert w3.eth.get_transaction_count(acct.address, "pending") == latest + 1
    assert w3.eth.get_transaction_count(acct.address, "latest") in (latest, latest + 1)
    w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert w3.eth.get_transaction_count(acct.address, "latest") == latest + 1
    assert w3.eth.get_transaction_count(Account.create().address) == 0


def test_estimate_gas_covers_the_execution(devnet: Devnet, w3: Any, notary: Any, acct: Any) -> None:
    digest = os.urandom(32)
    estimate = notary.functions.anchor(digest).estimate_gas({"from": acct.address})
    receipt = transact(w3, acct, notary.functions.anchor(digest), gas=estimate)
    assert receipt["status"] == 1
    assert 21_000 < receipt["gasUsed"] <= estimate
    plain = w3.eth.estimate_gas({"from": acct.address, "to": Account.create().address, "data": "0x00ff"})
    assert plain == 21_000 + 4 + 16


def test_fee_history_has_zero_fees_and_real_gas_ratios(w3: Any, anchored: tuple[bytes, Any]) -> None:
    _, receipt = anchored
    height = receipt["blockNumber"]
    history = w3.eth.fee_history(3, height, [25, 75])
    assert history["oldestBlock"] == height - 2
    assert history["baseFeePerGas"] == [0, 0, 0, 0]
    assert history["reward"] == [[0, 0]] * 3
    block = w3.eth.get_block(height)
    assert history["gasUsedRatio"][-1] == pytest.approx(block["gasUsed"] / block["gasLimit"])
    assert history["gasUsedRatio"][-1] > 0
    latest = w3.eth.fee_history(1, "latest", [])
    assert len(latest["gasUsedRatio"]) == 1


def test_get_code_is_non_empty_for_system_contracts_only(devnet: Devnet, w3: Any, acct: Any) -> None:
    for name, address in devnet.info["contracts"].items():
        assert len(w3.eth.get_code(address)) > 0, name
    assert w3.eth.get_code(acct.address) == b""
    assert w3.eth.get_code(Account.create().address) == b""


def test_batch_request_answers_each_call_by_id(devnet: Devnet) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 8, "method": "no_suchMethod", "params": []},
        {"jsonrpc": "2.0", "method": "eth_chainId", "params": []},  # a notification: no answer
        {"jsonrpc": "2.0", "id": 9, "method": "eth_getBalance", "params": ["not an address", "latest"]},
    ]
    r = devnet.post(batch)
    assert r.status_code == 200
    answers = {a["id"]: a for a in r.json()}
    assert set(answers) == {"a", 7, 8, 9}
    assert int(answers["a"]["result"], 16) == devnet.chain_id
    assert int(answers[7]["result"], 16) >= 1
    assert answers[8]["error"]["code"] == -32601
    assert answers[9]["error"]["code"] == -32602


def _send_anchors(devnet: Devnet, w3: Any, acct: Any, n: int) -> list[Any]:
    """``n`` anchors sent back to back (most land in one block), then their receipts."""
    nonce = w3.eth.get_transaction_count(acct.address, "pending")
    hashes = [w3.eth.send_raw_transaction(sign_call(acct.key, devnet.chain_id, nonce + i,
                                                    devnet.contract_address("Notary"), anchor_data(os.urandom(32))))
              for i in range(n)]
    return [w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.05) for h in hashes]


def test_block_receipts_are_the_transaction_receipts_by_number_and_hash(devnet: Devnet, w3: Any, acct: Any) -> None:
    sent = _send_anchors(devnet, w3, acct, 4)
    for height in sorted({r["blockNumber"] for r in sent}):
        block = w3.eth.get_block(height)
        by_number = w3.eth.get_block_receipts(height)
        assert [r["transactionHash"] for r in by_number] == block["transactions"]
        assert by_number == [w3.eth.get_transaction_receipt(h) for h in block["transactions"]]
        assert w3.eth.get_block_receipts(block["hash"]) == by_number
        # the node's JSON: each entry is eth_getTransactionReceipt's answer, byte for byte
        raw = devnet.post({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockReceipts", "params": [hex(height)]})
        singles = [devnet.post({"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                                "params": [h.to_0x_hex()]}) for h in block["transactions"]]
        assert raw.content == b'{"jsonrpc":"2.0","id":1,"result":[' + b",".join(
            s.content[len(b'{"jsonrpc":"2.0","id":1,"result":'):-1] for s in singles) + b"]}"
    mine = {r["transactionHash"] for r in sent}
    assert mine <= {r["transactionHash"] for h in {r["blockNumber"] for r in sent} for r in w3.eth.get_block_receipts(h)}


@pytest.mark.parametrize("tag", ["latest", "safe", "finalized", "pending"])
def test_block_receipts_by_tag_are_the_finalized_heads(devnet: Devnet, w3: Any, acct: Any, tag: str) -> None:
    for _ in range(5):  # a new block may land between the reads: then try again
        (receipt,) = _send_anchors(devnet, w3, acct, 1)
        got = w3.eth.get_block_receipts(tag)
        if w3.eth.block_number == receipt["blockNumber"]:
            assert receipt in got
            assert got == w3.eth.get_block_receipts(receipt["blockNumber"])
            return
    pytest.fail(f"the head moved on during each of 5 tries to read {tag!r} receipts")


def test_block_receipts_of_a_block_without_transactions_and_of_an_unknown_block(devnet: Devnet, w3: Any) -> None:
    assert w3.eth.get_block_receipts("earliest") == []  # genesis has no transactions
    assert devnet.rpc("eth_getBlockReceipts", hex(w3.eth.block_number + 1000)) is None
    assert devnet.rpc("eth_getBlockReceipts", "0x" + os.urandom(32).hex()) is None
    with pytest.raises(BlockNotFound):  # web3.py turns the null into BlockNotFound, as for get_block
        w3.eth.get_block_receipts(w3.eth.block_number + 1000)
    with pytest.raises(BlockNotFound):
        w3.eth.get_block_receipts("0x" + os.urandom(32).hex())


@pytest.mark.parametrize("params, message", [
    ([], "missing parameter"), (["latest", "latest"], "1 parameter"), (["0xzz"], "block number"),
    (["0x" + "zz" * 32], "block hash"), ([{"blockHash": "0x" + "00" * 32}], "object form"), ([True], "block number"),
])
def test_block_receipts_with_malformed_params_are_invalid_params(devnet: Devnet, w3: Any, params: list[Any],
                                                                 message: str) -> None:
    answer = devnet.call("eth_getBlockReceipts", *params)
    assert answer["error"]["code"] == -32602 and message in answer["error"]["message"], answer
    if len(params) == 1 and isinstance(params[0], str):  # (web3.py would send True as 0x1)
        with pytest.raises(Web3RPCError, match=message):
            w3.eth.get_block_receipts(params[0])
