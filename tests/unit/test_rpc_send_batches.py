"""A JSON-RPC batch's ``eth_sendRawTransaction`` runs (chainshare/api/jsonrpc.py): admitted in one
event-loop hop per run, answered exactly as the same requests one by one, -32603 per send when the
hop fails; and which bodies the app answers on the loop (``is_loop_request``: single cheap requests and
small batches of sends), through the ASGI app as a client sends them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from chainkit import NOTARY, account, call_data, make_genesis, sign_call, validator

from chainshare.api import jsonrpc
from chainshare.api.jsonrpc import MAX_SENDS_PER_HOP, JsonRpc
from chainshare.api.limits import ApiLimits
from chainshare.config import NodeConfig
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

USER = account("send-batch-user")
OUTSIDER = account("send-batch-outsider")  # no member agency's account: refused at admission
VALIDATOR = validator("send-batch-v1", "agency1")
GENESIS = make_genesis([("agency1", [USER.address])], [VALIDATOR])


def _node() -> Node:
    return Node(NodeConfig(), GENESIS, MemoryStore(), ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))


def _anchor(acct: Any, nonce: int) -> str:
    return "0x" + sign_call(acct, NOTARY, call_data("anchor(bytes32)", bytes([nonce % 256]) * 32), nonce).hex()


def _send(rid: Any, raw: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": "eth_sendRawTransaction", "params": [raw]}
    if rid is not ...:
        req["id"] = rid
    return req


def _mixed_batch() -> list[Any]:
    """Sends that succeed, fail admission, fail parsing, repeat, and are notifications, between other requests."""
    return [
        _send(1, _anchor(USER, 0)),
        _send(2, _anchor(USER, 1)),
        _send(3, _anchor(USER, 1)),  # the same transaction again: already pending
        _send(4, _anchor(OUTSIDER, 0)),  # not a member
        _send(5, "0xzz"),  # not hex: refused before the hop
        _send(6, None),  # missing parameter
        _send(..., _anchor(USER, 2)),  # a notification: admitted, not answered
        {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []},
        _send("eight", _anchor(USER, 3)),
        _send(9, "0x02"),  # undecodable
        {"jsonrpc": "1.0", "id": 10, "method": "eth_sendRawTransaction", "params": [_anchor(USER, 4)]},  # invalid
        _send(11, _anchor(USER, 4)),
        {"jsonrpc": "2.0", "id": 12, "method": "eth_sendRawTransaction", "params": "0x00"},  # params not an array
    ]


@pytest.fixture()
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def _bind(rpc: JsonRpc, loop: asyncio.AbstractEventLoop) -> None:
    """Bind ``rpc`` to ``loop`` from the loop's own thread (as the app does)."""
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: (rpc.bind_loop(loop), done.set()))
    assert done.wait(5)


def test_batched_sends_answer_as_one_by_one_in_one_hop(loop_thread: asyncio.AbstractEventLoop) -> None:
    batch = _mixed_batch()
    one_node = _node()
    one_rpc = JsonRpc(one_node)
    expected = [r for r in (one_rpc.handle_one(x) for x in batch) if r is not None]

    node = _node()
    rpc = JsonRpc(node)
    _bind(rpc, loop_thread)
    hops: list[int] = []
    real = rpc.call_on_loop

    def counting(fn: Any, *args: Any) -> Any:
        hops.append(len(args[0]) if fn == rpc._submit_each else -1)
        return real(fn, *args)

    rpc.call_on_loop = counting  # type: ignore[method-assign]
    body = rpc.handle_body(orjson.dumps(batch))
    assert body is not None
    assert orjson.loads(body) == expected
    # Two runs of sends reach the loop (ids 1-6 + the notification, 8-9: 5 and 6 fail before it; 11 alone).
    assert hops == [5, 2, 1]
    assert sorted(node.mempool.get(bytes.fromhex(r["result"][2:])).nonce  # type: ignore[union-attr]
                  for r in expected if "result" in r and r["id"] != 7) == [0, 1, 3, 4]
    assert len(node.mempool) == len(one_node.mempool) == 5  # nonce 2 came as a notification
    assert rpc.counts == one_rpc.counts and rpc.error_count == one_rpc.error_count


def test_runs_are_cut_at_the_hop_limit(loop_thread: asyncio.AbstractEventLoop) -> None:
    rpc = JsonRpc(_node())
    _bind(rpc, loop_thread)
    sizes: list[int] = []
    real = rpc.call_on_loop
    rpc.call_on_loop = lambda fn, *a: (sizes.append(len(a[0])), real(fn, *a))[1]  # type: ignore[method-assign]
    n = MAX_SENDS_PER_HOP + 5
    out = orjson.loads(rpc.handle_body(orjson.dumps([_send(i, _anchor(USER, i)) for i in range(n)])) or b"")
    assert sizes == [MAX_SENDS_PER_HOP, 5]
    assert [r["id"] for r in out] == list(range(n)) and all("result" in r for r in out)


def test_a_failed_hop_answers_each_send_of_its_run_internal_error() -> None:
    node = _node()
    rpc = JsonRpc(node)
    dead = asyncio.new_event_loop()
    dead.close()  # call_soon_threadsafe now raises: the hop cannot happen
    t = threading.Thread(target=rpc.bind_loop, args=(dead,))
    t.start()
    t.join()
    batch = [_send(1, _anchor(USER, 0)), _send(2, "0x1"), _send(3, _anchor(USER, 1)),
             {"jsonrpc": "2.0", "id": 4, "method": "eth_chainId", "params": []}]
    out = orjson.loads(rpc.handle_body(orjson.dumps(batch)) or b"")
    assert [r.get("error", {}).get("code") for r in out] == [-32603, -32602, -32603, None]
    assert out[0]["error"]["message"] == "internal error while handling eth_sendRawTransaction"
    assert out[3]["result"] == hex(node.chain_id)
    assert len(node.mempool) == 0 and rpc.error_count == 3


def test_a_run_stops_where_the_response_could_fill_up() -> None:
    # Room for two sends' worst-case answers: the third starts a new run, after the full check.
    limit = 2 * (jsonrpc.SEND_ANSWER_BOUND + 1) + 100
    rpc = JsonRpc(_node(), ApiLimits(max_response_bytes=limit))
    hops: list[int] = []
    real = rpc.call_on_loop
    rpc.call_on_loop = lambda fn, *a: (hops.append(len(a[0])), real(fn, *a))[1]  # type: ignore[method-assign]
    out = orjson.loads(rpc.handle_body(orjson.dumps([_send(i, _anchor(USER, i)) for i in range(5)])) or b"")
    assert hops == [2, 1, 1, 1]
    assert all("result" in r for r in out)  # small answers: all fit, as one by one


def test_a_batch_is_charged_exactly_the_bytes_of_its_response(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer is charged its length and a comma (a run of sends' answers encoded at once as well), so a
    batch's response budget sees what the response holds: its length less the one bracket not charged."""
    from chainshare.api.limits import WorkBudget

    charged: list[int] = []
    real = WorkBudget.charge_response
    monkeypatch.setattr(WorkBudget, "charge_response", lambda self, n: (charged.append(n), real(self, n))[1])
    out = JsonRpc(_node()).handle_body(orjson.dumps(_mixed_batch()))
    assert out is not None and sum(charged) == len(out) - 1
    assert len(charged) < len(orjson.loads(out))  # runs of sends were charged at once


def test_loop_requests_are_single_cheap_requests_and_small_batches_of_sends() -> None:
    chain_id = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    receipt = {"jsonrpc": "2.0", "id": 2, "method": "eth_getTransactionReceipt", "params": ["0x" + "00" * 32]}
    assert JsonRpc.is_loop_request(chain_id) and JsonRpc.is_loop_request(_send(3, "0x00"))
    assert not JsonRpc.is_loop_request(receipt)  # loads a block: a worker's job
    assert JsonRpc.is_loop_request([_send(i, "0x00") for i in range(MAX_SENDS_PER_HOP)])
    assert JsonRpc.is_loop_request([_send(..., "0x00")])  # notifications too
    assert not JsonRpc.is_loop_request([_send(i, "0x00") for i in range(MAX_SENDS_PER_HOP + 1)])  # one hop at most
    assert not JsonRpc.is_loop_request([chain_id, _send(3, "0x00")])  # not only sends
    assert not JsonRpc.is_loop_request([_send(1, "0x00"), {"jsonrpc": "1.0", "id": 2, "method": "eth_sendRawTransaction"}])
    assert not JsonRpc.is_loop_request([])  # refused as an empty batch by handle_parsed, on a worker


def test_the_app_admits_a_small_batch_of_sends_on_the_loop_and_sends_anything_else_to_the_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the ASGI app: a small send-only batch is admitted without the API worker threads (answered as
    on them, charged to its client); a mixed batch, a batch over one hop and a large body go to the workers."""
    import httpx

    from chainshare.api import app as app_module
    from chainshare.api.limits import ApiWorkers

    node = _node()
    used: list[int] = []
    real_run = ApiWorkers.run

    async def counting_run(self: ApiWorkers, fn: Any, *args: Any) -> Any:
        used.append(1)
        return await real_run(self, fn, *args)

    monkeypatch.setattr(ApiWorkers, "run", counting_run)
    chain_id = {"jsonrpc": "2.0", "id": "c", "method": "eth_chainId", "params": []}

    async def scenario() -> list[tuple[int, Any]]:
        transport = httpx.ASGITransport(app=app_module.create_app(node))
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            for body, _ in cases:
                r = await client.post("/", content=orjson.dumps(body), headers={"content-type": "application/json"})
                out.append((len(used), r.json()))
        return out

    many = [_send(10 + i, _anchor(USER, 3 + i)) for i in range(MAX_SENDS_PER_HOP + 1)]
    cases: list[tuple[Any, int]] = [
        ([_send(1, _anchor(USER, 0)), _send(2, _anchor(USER, 1)), _send(3, _anchor(OUTSIDER, 0))], 0),
        ([_send(4, _anchor(USER, 2)), chain_id], 1),
        (many, 2),
    ]
    assert len(orjson.dumps(many)) > app_module.INLINE_PARSE_BYTES  # the size bound alone would send it away
    results = asyncio.run(scenario())
    assert [n for n, _ in results] == [n for _, n in cases]
    first = results[0][1]
    assert [r["id"] for r in first] == [1, 2, 3]
    assert "result" in first[0] and "result" in first[1] and "not an account of a member" in first[2]["error"]["message"]
    assert all("result" in r for r in results[1][1]) and all("result" in r for r in results[2][1])
    assert len(node.mempool) == 3 + MAX_SENDS_PER_HOP + 1  # every well-formed member's send admitted once
    node.close()
