"""Transaction admission over JSON-RPC: every refusal is a precise error (code + message), the refused
transaction is never stored and the sender's nonce does not move; future nonces wait for the gap;
JSON-RPC protocol errors are standard codes, never a 500, and the node keeps serving."""

from __future__ import annotations

import os
import random
import re
from typing import Any

import pytest
import rlp
from eth_account import Account
from netkit import (
    ANCHOR_SELECTOR,
    SECP256K1_N,
    Devnet,
    RpcError,
    anchor_data,
    replace_fields,
    sign_call,
    signature_of,
    tx_hash_of,
    wait_until,
    x_not_on_curve,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("admission")]

# EIP-1474 codes as the node maps its error hierarchy (chainshare/api/errors.py).
INVALID_PARAMS = -32602  # undecodable input (bad RLP, bad hex)
TX_REJECTED = -32003  # transaction rejected
UNSUPPORTED_TX_TYPE = -32006
LIMIT_EXCEEDED = -32005


@pytest.fixture(scope="module")
def seeded(devnet: Devnet) -> Devnet:
    """The devnet after one finalized transaction (so nonce 0 is used)."""
    assert devnet.anchor()["status"] == "0x1"
    return devnet


def notary_tx(net: Devnet, nonce: int | None = None, *, key: Any = None, data: bytes | None = None,
              **kw: Any) -> bytes:
    return sign_call(key if key is not None else net.key_bytes, kw.pop("chain_id", net.chain_id),
                     net.nonce(tag="pending") if nonce is None else nonce,
                     kw.pop("to", net.contract_address("Notary")),
                     anchor_data(os.urandom(32)) if data is None else data, **kw)


def assert_refused(net: Devnet, raw: bytes, code: int, message: str, sender: str | None = None) -> RpcError:
    """Send ``raw``; expect a JSON-RPC error ``code`` whose message matches ``message`` (regex),
    and that nothing was stored: no transaction, no receipt, nonces unchanged, even a block later."""
    sender = sender or net.address
    latest, pending = net.nonce(sender, "latest"), net.nonce(sender, "pending")
    body = net.call("eth_sendRawTransaction", "0x" + raw.hex())
    assert "error" in body, f"accepted: {body}"
    err = body["error"]
    assert err["code"] == code, err
    assert re.search(message, err["message"], re.IGNORECASE), err
    tx_hash = tx_hash_of(raw)
    head = net.head()
    net.wait_for_head(head + 1, timeout=10)
    assert net.rpc("eth_getTransactionByHash", tx_hash) is None
    assert net.rpc("eth_getTransactionReceipt", tx_hash) is None
    assert net.nonce(sender, "latest") == latest
    assert net.nonce(sender, "pending") == pending
    return RpcError(err["code"], err["message"])


# -- item 4 of the issue: every refusal ---------------------------------------------------------

@pytest.mark.parametrize("case", ["truncated", "trailing-bytes", "wrong-field-count", "not-a-list", "garbage"])
def test_bad_rlp_is_refused_as_invalid_params(seeded: Devnet, case: str) -> None:
    good = notary_tx(seeded)
    raw = {
        "truncated": good[:-7],
        "trailing-bytes": good + b"\x00",
        "wrong-field-count": b"\x02" + rlp.encode(rlp.decode(good[1:])[:11]),
        "not-a-list": b"\x02" + rlp.encode(b"just a string"),
        "garbage": bytes.fromhex("f8ffff00"),
    }[case]
    assert_refused(seeded, raw, INVALID_PARAMS, r"RLP|field|list|decode|length")


def test_empty_raw_transaction_is_refused(seeded: Devnet) -> None:
    body = seeded.call("eth_sendRawTransaction", "0x")
    assert body["error"]["code"] == INVALID_PARAMS and "empty" in body["error"]["message"]


def test_type_1_access_list_transaction_is_refused_as_unsupported(seeded: Devnet) -> None:
    acct = seeded.account
    raw = acct.sign_transaction({
        "type": 1, "chainId": seeded.chain_id, "nonce": seeded.nonce(tag="pending"), "gasPrice": 0, "gas": 100_000,
        "to": seeded.contract_address("Notary"), "value": 0, "data": anchor_data(os.urandom(32)),
        "accessList": [{"address": seeded.contract_address("Notary"), "storageKeys": ["0x" + "00" * 32]}],
    }).raw_transaction
    assert raw[0] == 1
    assert_refused(seeded, bytes(raw), UNSUPPORTED_TX_TYPE, r"type 1 is not supported")


@pytest.mark.parametrize("kind", ["eip1559", "legacy-eip155", "legacy-unprotected"])
def test_wrong_chain_id_is_refused(seeded: Devnet, kind: str) -> None:
    acct = seeded.account
    nonce = seeded.nonce(tag="pending")
    if kind == "eip1559":
        raw = notary_tx(seeded, nonce, chain_id=seeded.chain_id + 1)
        expected = rf"chain id {seeded.chain_id + 1}\b.*{seeded.chain_id}"
    else:
        tx = {"nonce": nonce, "gasPrice": 0, "gas": 100_000, "to": seeded.contract_address("Notary"),
              "value": 0, "data": anchor_data(os.urandom(32))}
        if kind == "legacy-eip155":
            tx["chainId"] = 1
            expected = rf"chain id 1\b.*{seeded.chain_id}"
        else:
            expected = r"replay protection|EIP-155|chain id"
        raw = bytes(acct.sign_transaction(tx).raw_transaction)
    assert_refused(seeded, raw, TX_REJECTED, expected)


@pytest.mark.parametrize("corruption", ["r-not-on-curve", "r-zero", "s-zero", "r-above-order"])
def test_corrupted_signature_is_refused(seeded: Devnet, corruption: str) -> None:
    raw = notary_tx(seeded)
    changes = {"r-not-on-curve": {"r": x_not_on_curve()}, "r-zero": {"r": 0}, "s-zero": {"s": 0},
               "r-above-order": {"r": SECP256K1_N + 1}}[corruption]
    assert_refused(seeded, replace_fields(raw, **changes), TX_REJECTED, r"signature")


def test_high_s_signature_is_refused(seeded: Devnet) -> None:
    raw = notary_tx(seeded)
    y, _, s = signature_of(raw)
    # (r, n - s) with the other parity is the same signature in its malleable form (EIP-2 forbids it).
    assert_refused(seeded, replace_fields(raw, s=SECP256K1_N - s, y=1 - y), TX_REJECTED, r"high-s|signature")


def test_used_nonce_is_refused(seeded: Devnet) -> None:
    latest = seeded.nonce()
    assert latest >= 1
    assert_refused(seeded, notary_tx(seeded, latest - 1), TX_REJECTED, rf"nonce {latest - 1}.*used.*{latest}")


def test_sender_outside_membership_is_refused(seeded: Devnet) -> None:
    stranger = Account.create()
    raw = notary_tx(seeded, 0, key=stranger.key)
    assert_refused(seeded, raw, TX_REJECTED, rf"{stranger.address[2:].lower()}.*not .*member",
                   sender=stranger.address)


def test_gas_above_the_block_gas_limit_is_refused(seeded: Devnet) -> None:
    limit = int(seeded.rpc("eth_getBlockByNumber", "latest", False)["gasLimit"], 16)
    assert_refused(seeded, notary_tx(seeded, gas=limit + 1), TX_REJECTED,
                   rf"gas {limit + 1} exceeds the block gas limit {limit}")


def test_transaction_over_128_kib_is_refused(seeded: Devnet) -> None:
    raw = notary_tx(seeded, data=ANCHOR_SELECTOR + os.urandom(129 * 1024), gas=10_000_000)
    assert len(raw) > 128 * 1024
    assert_refused(seeded, raw, TX_REJECTED, r"exceeds the 131072-byte limit|128 KiB")


def test_calldata_with_an_unknown_selector_is_refused(seeded: Devnet) -> None:
    assert_refused(seeded, notary_tx(seeded, data=bytes.fromhex("deadbeef") + bytes(32)), TX_REJECTED,
                   r"Notary.*selector 0xdeadbeef")


def test_call_to_an_address_without_a_system_contract_is_refused(seeded: Devnet) -> None:
    assert_refused(seeded, notary_tx(seeded, to=Account.create().address), TX_REJECTED,
                   r"not a system contract")


def test_contract_creation_is_refused(seeded: Devnet) -> None:
    assert_refused(seeded, notary_tx(seeded, to=None, data=bytes.fromhex("6080604052")), TX_REJECTED,
                   r"contract creation is not supported")


def test_value_transfer_is_refused(seeded: Devnet) -> None:
    assert_refused(seeded, notary_tx(seeded, value=1), TX_REJECTED, r"no native currency")


def test_gas_below_intrinsic_gas_is_refused(seeded: Devnet) -> None:
    assert_refused(seeded, notary_tx(seeded, gas=21_000), TX_REJECTED, r"intrinsic gas")


def test_replayed_raw_transaction_is_refused_and_applied_once(seeded: Devnet) -> None:
    nonce = seeded.nonce(tag="pending")
    raw = notary_tx(seeded, nonce)
    tx_hash = seeded.send_raw(raw)
    again = seeded.call("eth_sendRawTransaction", "0x" + raw.hex())  # pending or just included
    assert again["error"]["code"] == TX_REJECTED
    assert re.search(r"already (pending|included)", again["error"]["message"]), again
    receipt = seeded.wait_receipt(tx_hash)
    assert receipt["status"] == "0x1"
    body = seeded.call("eth_sendRawTransaction", "0x" + raw.hex())
    assert body["error"]["code"] == TX_REJECTED
    assert re.search(rf"already included in block {int(receipt['blockNumber'], 16)}", body["error"]["message"])
    seeded.wait_for_head(int(receipt["blockNumber"], 16) + 1)
    assert seeded.nonce() == nonce + 1
    assert seeded.rpc("eth_getTransactionByHash", tx_hash)["blockHash"] == receipt["blockHash"]


def test_random_bytes_as_raw_transactions_never_cause_an_internal_error(seeded: Devnet) -> None:
    rng = random.Random(20260423)
    raws = []
    for i in range(300):
        kind = i % 3
        if kind == 0:
            raw = rng.randbytes(rng.randint(1, 300))
        elif kind == 1:
            raw = b"\x02" + rng.randbytes(rng.randint(0, 300))
        else:
            fields: list[Any] = [rng.randbytes(rng.choice([0, 1, 2, 20, 32, 33])) for _ in range(rng.choice([9, 12]))]
            if rng.random() < 0.5:
                fields[rng.randrange(len(fields))] = [rng.randbytes(3)]
            raw = (b"\x02" if len(fields) == 12 else b"") + rlp.encode(fields)
        raws.append(raw)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + r.hex()]}
             for i, r in enumerate(raws)]
    r = seeded.post(batch)
    assert r.status_code == 200
    answers = r.json()
    assert len(answers) == len(raws)
    for a in answers:
        assert "error" in a, f"random bytes accepted: {raws[a['id']].hex()}"
        assert a["error"]["code"] in (INVALID_PARAMS, TX_REJECTED, UNSUPPORTED_TX_TYPE), (raws[a["id"]].hex(), a)
    assert seeded.head() >= 1


# -- item 3: future nonces wait for the gap ----------------------------------------------------

def test_future_nonce_waits_until_the_gap_is_filled(seeded: Devnet) -> None:
    n = seeded.nonce(tag="pending")
    assert seeded.nonce() == n
    later_raw = notary_tx(seeded, n + 1)
    later = seeded.send_raw(later_raw)
    assert seeded.nonce(tag="pending") == n  # the gap at n is not skipped
    pending = seeded.rpc("eth_getTransactionByHash", later)
    assert pending is not None and pending["blockNumber"] is None and int(pending["nonce"], 16) == n + 1
    head = seeded.head()
    seeded.wait_for_head(head + 2)
    assert seeded.receipt(later) is None  # still waiting, neither included nor dropped
    replay = seeded.call("eth_sendRawTransaction", "0x" + later_raw.hex())
    assert replay["error"]["code"] == TX_REJECTED and "already pending" in replay["error"]["message"]

    first = seeded.send_raw(notary_tx(seeded, n))
    r_first, r_later = seeded.wait_receipt(first), seeded.wait_receipt(later)
    assert r_first["status"] == r_later["status"] == "0x1"
    order_first = (int(r_first["blockNumber"], 16), int(r_first["transactionIndex"], 16))
    order_later = (int(r_later["blockNumber"], 16), int(r_later["transactionIndex"], 16))
    assert order_first < order_later
    assert seeded.nonce() == n + 2


def test_second_transaction_for_a_pending_nonce_is_refused(seeded: Devnet) -> None:
    n = seeded.nonce(tag="pending")
    first = seeded.send_raw(notary_tx(seeded, n + 3))  # waits for the gap n..n+2
    assert_refused(seeded, notary_tx(seeded, n + 3), TX_REJECTED, rf"nonce {n + 3}.*already pending")
    assert seeded.rpc("eth_getTransactionByHash", first)["blockNumber"] is None
    for nonce in range(n, n + 3):  # fill the gap: the first one is included, not the refused one
        seeded.send_raw(notary_tx(seeded, nonce))
    assert seeded.wait_receipt(first)["status"] == "0x1"
    assert seeded.nonce() == n + 4


# -- JSON-RPC protocol errors ------------------------------------------------------------------

def assert_still_serving(net: Devnet) -> None:
    assert net.head() >= 1
    assert net.http.get(net.rpc_url + "/healthz").status_code == 200


@pytest.mark.parametrize("body, code", [
    (b"{not json", -32700),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", ', -32700),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "eth_chainId", "params": []}', -32600),
    (b'{"id": 1, "method": "eth_chainId", "params": []}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5, "params": []}', -32600),
    (b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "eth_chainId", "params": []}', -32600),
    (b'"eth_chainId"', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "eth_noSuchMethod", "params": []}', -32601),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": {"block": "latest"}}', -32602),
], ids=["invalid-json", "truncated-json", "wrong-version", "no-version", "method-not-string", "bad-id",
        "not-an-object", "unknown-method", "params-not-array"])
def test_protocol_errors_get_standard_codes(seeded: Devnet, body: bytes, code: int) -> None:
    r = seeded.post(content=body)
    assert r.status_code == 200
    answer = r.json()
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code, answer
    assert answer["error"]["message"]
    if code in (-32700, -32600):
        assert answer["id"] is None or answer["id"] == 1
    assert_still_serving(seeded)


@pytest.mark.parametrize("method, params, message", [
    ("eth_getBalance", ["zz", "latest"], r"address"),
    ("eth_getBlockByNumber", ["0xzz", False], r"block number"),
    ("eth_getBlockByNumber", [], r"missing parameter"),
    ("eth_getBlockByHash", ["0x1234", False], r"32 bytes"),
    ("eth_getTransactionByHash", ["0x12"], r"32 bytes"),
    ("eth_getTransactionReceipt", [5], r"hex"),
    ("eth_sendRawTransaction", ["not hex"], r"hex"),
    ("eth_sendRawTransaction", ["0xabc"], r"odd"),
    ("eth_call", [{"data": "0x"}, "latest"], r"to"),
    ("eth_call", [{"to": "0x" + "c5" * 20, "value": "0x1"}, "latest"], r"value"),
    ("eth_getLogs", ["not a filter"], r"filter"),
    ("eth_getLogs", [{"topics": "x"}], r"topics"),
    ("eth_getTransactionCount", ["0x" + "11" * 20, "0x0"], r"historical|latest"),
    ("eth_feeHistory", ["0x2", "latest", "not-a-list"], r"rewardPercentiles"),
    ("web3_sha3", ["0xzz"], r"hex"),
])
def test_bad_params_are_invalid_params(seeded: Devnet, method: str, params: list[Any], message: str) -> None:
    answer = seeded.call(method, *params)
    assert answer["error"]["code"] == INVALID_PARAMS, answer
    assert re.search(message, answer["error"]["message"], re.IGNORECASE), answer
    assert_still_serving(seeded)


def test_empty_batch_is_an_invalid_request(seeded: Devnet) -> None:
    r = seeded.post(content=b"[]")
    assert r.status_code == 200
    assert r.json()["error"]["code"] == -32600 and "empty batch" in r.json()["error"]["message"]


def test_batch_over_the_limit_is_refused_as_a_whole(seeded: Devnet) -> None:
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(1001)]
    r = seeded.post(batch)
    assert r.status_code == 200
    answer = r.json()
    assert isinstance(answer, dict) and answer["error"]["code"] == LIMIT_EXCEEDED
    assert "1001" in answer["error"]["message"] and "1000" in answer["error"]["message"]
    ok = seeded.post(batch[:1000])
    assert ok.status_code == 200 and len(ok.json()) == 1000
    assert_still_serving(seeded)


def test_oversized_http_body_is_413(seeded: Devnet) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": ["' + b"a" * (2 * 1024 * 1024) + b'"]}'
    r = seeded.post(content=body)
    assert r.status_code == 413
    assert r.json()["error"]["code"] in (-32600, LIMIT_EXCEEDED)
    assert_still_serving(seeded)


def test_get_on_the_json_rpc_endpoint_is_405(seeded: Devnet) -> None:
    r = seeded.http.get(seeded.rpc_url + "/")
    assert r.status_code == 405
    assert_still_serving(seeded)


def test_failing_notifications_get_no_answer(seeded: Devnet) -> None:
    r = seeded.post([{"jsonrpc": "2.0", "method": "eth_noSuchMethod", "params": []},
                     {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}])
    assert [a.get("id") for a in r.json()] == [1]


def test_invalid_params_fuzz_never_causes_an_internal_error(seeded: Devnet) -> None:
    methods = ["web3_sha3", "eth_feeHistory", "eth_getBalance", "eth_getCode", "eth_getStorageAt",
               "eth_getBlockByNumber", "eth_getBlockByHash", "eth_getBlockTransactionCountByNumber",
               "eth_getTransactionByHash", "eth_getTransactionReceipt", "eth_getBlockReceipts",
               "eth_getTransactionCount", "eth_sendRawTransaction", "eth_call", "eth_estimateGas", "eth_getLogs"]
    notary = seeded.contract_address("Notary")
    values: list[Any] = [
        None, 0, -1, 1.5, True, "", "0x", "0x0", "0xzz", "latest", "earliest", "pending", "0x" + "f" * 64,
        "0x" + "f" * 70, "0x" + "00" * 20, {}, [], {"to": notary}, {"to": notary, "data": "0x12"},
        {"to": notary, "data": "0x" + ANCHOR_SELECTOR.hex()}, {"to": notary, "gas": "0x1"},
        {"fromBlock": "0x0", "toBlock": "0xffffffffffffffff"}, {"blockHash": "0x" + "00" * 32},
        {"topics": [[]]}, {"address": 5}, {"topics": [None, "0x" + "00" * 32]}, ["0x1"],
        {"from": 5, "to": notary}, {"to": notary, "gas": "0x" + "f" * 64},
    ]
    rng = random.Random(7)
    batch = []
    for method in methods:
        for _ in range(60):
            batch.append({"jsonrpc": "2.0", "id": len(batch), "method": method,
                          "params": [rng.choice(values) for _ in range(rng.randint(0, 3))]})
    r = seeded.post(batch)
    assert r.status_code == 200
    internal = [(batch[a["id"]], a["error"]) for a in r.json() if a.get("error", {}).get("code") == -32603]
    assert internal == []
    assert_still_serving(seeded)


def test_rejections_are_counted_in_metrics(seeded: Devnet) -> None:
    def rejected() -> float:
        text = seeded.http.get(seeded.rpc_url + "/metrics").text
        return float(re.search(r"^chainshare_transactions_rejected_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]

    before = rejected()
    seeded.call("eth_sendRawTransaction", "0x" + notary_tx(seeded, value=1).hex())
    wait_until(lambda: rejected() >= before + 1, 5, "the rejection counter to move")
