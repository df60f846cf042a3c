"""JSON-RPC parameters are read strictly (chainshare/api/jsonrpc.py): a malformed quantity, hex string,
boolean, percentile list or log filter is -32602 naming the parameter, never a value the parser happened
to make of it (a negative height, a signed gas, a byte string with spaces), through the dispatcher as a
client's body reaches it."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from chainkit import NOTARY, account, make_genesis, validator
from hypothesis import given
from hypothesis import strategies as st

from chainshare.api.jsonrpc import JsonRpc, parse_data, parse_quantity
from chainshare.config import NodeConfig
from chainshare.errors import InvalidInput
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

USER = account("rpc-params-user")
VALIDATOR = validator("rpc-params-v1", "agency1")
GENESIS = make_genesis([("agency1", [USER.address])], [VALIDATOR])
NOTARY_HEX = "0x" + NOTARY.hex()


@pytest.fixture(scope="module")
def rpc() -> JsonRpc:
    return JsonRpc(Node(NodeConfig(), GENESIS, MemoryStore(), ValidatorKey(VALIDATOR.secret_key,
                                                                            VALIDATOR.public_key)))


def _ask(rpc: JsonRpc, method: str, *params: Any) -> dict[str, Any]:
    out = rpc.handle_body(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}))
    assert out is not None
    return dict(orjson.loads(out))


def _invalid_params(rpc: JsonRpc, method: str, *params: Any) -> str:
    resp = _ask(rpc, method, *params)
    assert resp.get("error", {}).get("code") == -32602, resp
    return str(resp["error"]["message"])


@pytest.mark.parametrize("text", ["0x-1", "0x+1", "0x 1", "0x1 ", "0x1_0", "0x\u0661", "0x1\n", "0x", "1", "0X1",
                                  "0x" + "1" * 65])
def test_a_quantity_is_0x_and_hex_digits_only(text: str) -> None:
    with pytest.raises(InvalidInput, match="block number"):
        parse_quantity(text, "block number")


def test_a_quantity_takes_hex_of_any_case_and_leading_zeros_and_json_numbers() -> None:
    assert [parse_quantity(x, "q") for x in ("0x0", "0x01", "0xfF", "0x" + "f" * 64, 7)] == [0, 1, 255, 2**256 - 1, 7]


@pytest.mark.parametrize("text", ["0x00 11", "0x 0011", "0x0011 ", "0x00\t11", "0xzz", "0x001"])
def test_data_is_0x_and_hex_byte_pairs_only(text: str) -> None:
    with pytest.raises(InvalidInput, match="data"):
        parse_data(text, "data")


def _reference_parse_data(value: str, size: int | None) -> bytes:
    """parse_data as first written: the regular expression, then the parity, then bytes.fromhex."""
    if not value.startswith("0x"):
        raise InvalidInput("data must be a 0x-prefixed hex string")
    body = value[2:]
    if not re.fullmatch(r"[0-9a-fA-F]*", body):
        raise InvalidInput("data is not valid hex")
    if len(body) % 2:
        raise InvalidInput("data has an odd number of hex digits")
    b = bytes.fromhex(body)
    if size is not None and len(b) != size:
        raise InvalidInput(f"data must be {size} bytes")
    return b


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except InvalidInput as exc:
        return "refused", str(exc)


@given(st.one_of(st.text(alphabet="0123456789abcdefABCDEFx \t\n\r\x0b\x0cg_-+\u0661\u00a0", max_size=12),
                 st.binary(max_size=6).map(lambda b: "0x" + b.hex()),
                 st.tuples(st.binary(max_size=6), st.sampled_from(" \t\n\u3000\u0661z"), st.integers(0, 14)).map(
                     lambda t: ("0x" + t[0].hex())[:t[2] + 2] + t[1] + ("0x" + t[0].hex())[t[2] + 2:])),
       st.sampled_from([None, 0, 1, 2, 3]))
def test_data_is_read_as_the_reference_reads_it(text: str, size: int | None) -> None:
    """parse_data's single bytes.fromhex pass accepts and refuses exactly what the regular-expression check
    before it did, with the same message."""
    for value in (text, "0x" + text):
        assert _outcome(parse_data, value, "data", size) == _outcome(_reference_parse_data, value, size)


@pytest.mark.parametrize("tag", ["0x-1", "0x 1", "0x1_0", "0x\u0661"])
def test_a_malformed_block_number_is_invalid_params_not_an_unknown_block(rpc: JsonRpc, tag: str) -> None:
    for method, params in (("eth_getBlockByNumber", [tag, False]), ("eth_getBlockTransactionCountByNumber", [tag]),
                           ("eth_getLogs", [{"fromBlock": tag}]), ("eth_feeHistory", ["0x1", tag, []])):
        assert "block number" in _invalid_params(rpc, method, *params)


def test_a_negative_fee_history_block_count_is_invalid_params(rpc: JsonRpc) -> None:
    assert "blockCount" in _invalid_params(rpc, "eth_feeHistory", "0x-1", "latest", [])


def test_a_call_with_signed_gas_is_invalid_params_not_out_of_gas(rpc: JsonRpc) -> None:
    assert "gas" in _invalid_params(rpc, "eth_call", {"to": NOTARY_HEX, "gas": "0x-1"}, "latest")


def test_an_address_with_spaces_between_its_bytes_is_invalid_params(rpc: JsonRpc) -> None:
    spaced = "0x" + " ".join(["00"] * 20)
    assert "address" in _invalid_params(rpc, "eth_getCode", spaced, "latest")


@pytest.mark.parametrize("full", ["yes", 1, {}, [], "false"])
def test_full_transactions_must_be_a_boolean(rpc: JsonRpc, full: Any) -> None:
    assert "fullTransactions" in _invalid_params(rpc, "eth_getBlockByNumber", "0x0", full)
    assert "fullTransactions" in _invalid_params(rpc, "eth_getBlockByHash", "0x" + "00" * 32, full)


def test_a_block_read_takes_a_boolean_or_nothing_for_full_transactions(rpc: JsonRpc) -> None:
    assert _ask(rpc, "eth_getBlockByNumber", "0x0", True)["result"]["number"] == "0x0"
    assert _ask(rpc, "eth_getBlockByNumber", "0x0")["result"]["number"] == "0x0"


@pytest.mark.parametrize("percentiles", [["x"], [None], [True], [-1], [101], [50, 10], "25"])
def test_reward_percentiles_are_numbers_from_0_to_100_ascending(rpc: JsonRpc, percentiles: Any) -> None:
    assert "rewardPercentiles" in _invalid_params(rpc, "eth_feeHistory", "0x1", "latest", percentiles)


def test_fee_history_answers_rewards_for_valid_percentiles(rpc: JsonRpc) -> None:
    result = _ask(rpc, "eth_feeHistory", "0x1", "latest", [10, 10.5, 90])["result"]
    assert result["reward"] == [["0x0", "0x0", "0x0"]]


@pytest.mark.parametrize("topics", [{}, 0, False, ""])
def test_log_filter_topics_must_be_an_array(rpc: JsonRpc, topics: Any) -> None:
    assert "topics" in _invalid_params(rpc, "eth_getLogs", {"topics": topics})


def test_a_log_filter_takes_block_hash_or_a_range_not_both(rpc: JsonRpc) -> None:
    genesis_hash = _ask(rpc, "eth_getBlockByNumber", "0x0", False)["result"]["hash"]
    assert _ask(rpc, "eth_getLogs", {"blockHash": genesis_hash})["result"] == []
    assert "blockHash" in _invalid_params(rpc, "eth_getLogs", {"blockHash": genesis_hash, "fromBlock": "0x0"})
