"""API work budgets, per-client rate limits and fair worker scheduling (chainshare/api/limits.py), and
the JSON-RPC budgets they enforce on a real in-memory node (chainshare/api/jsonrpc.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from chainkit import NOTARY, Chain, account, call_data, make_genesis, sign_call, validator

from chainshare.api.jsonrpc import JsonRpc
from chainshare.api.limits import (
    ApiLimits,
    ApiWorkers,
    Bucket,
    ClientLimiter,
    Usage,
    WorkBudget,
    compute_retry_after,
    current_usage,
    refill_bucket,
)
from chainshare.config import load_config
from chainshare.errors import ConfigError, LimitExceeded, RateLimited
from chainshare.execution.contracts import GOVERNANCE, MEMBERSHIP
from chainshare.ledger.store import MemoryStore
from chainshare.node import Node, ValidatorKey

# -- token bucket and client limiter --------------------------------------------------------------


def test_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    b = Bucket(-500.0, 10.0)
    assert refill_bucket(b, 11.0, 250, 3000) == Bucket(-250.0, 11.0)
    assert refill_bucket(b, 100.0, 250, 3000) == Bucket(3000.0, 100.0)
    assert refill_bucket(b, 9.0, 250, 3000) == b  # a clock that went back changes nothing
    assert compute_retry_after(Bucket(-500.0, 0), 250) == pytest.approx(2.05)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_client_over_its_cpu_share_is_refused_until_the_bucket_refills() -> None:
    clock = _Clock()
    lim = ClientLimiter(250, 1000, max_inflight=8, clock=clock)
    lim.admit("10.0.0.1")
    lim.release("10.0.0.1", 1500.0)  # one costly batch: the bucket is 500 ms in debt
    with pytest.raises(RateLimited) as err:
        lim.admit("10.0.0.1")
    assert err.value.rpc_code == -32005 and err.value.http_status == 429
    assert "api.rate_limit_cpu_ms = 250" in err.value.message
    assert err.value.data["retryAfter"] == pytest.approx(2.05)
    lim.admit("10.0.0.2")  # another client is not affected
    clock.now += 2.1
    lim.admit("10.0.0.1")
    assert lim.refused == {"rate_limit_cpu_ms": 1}


def test_client_in_flight_cap_and_rate_limit_off() -> None:
    lim = ClientLimiter(0, 0, max_inflight=2, clock=_Clock())
    lim.admit("c")
    lim.admit("c")
    with pytest.raises(RateLimited, match="max_inflight_per_client = 2"):
        lim.admit("c")
    lim.release("c", 10_000.0)  # rate limit off: cost is not counted
    lim.admit("c")


def test_worker_jobs_start_round_robin_over_clients() -> None:
    async def scenario() -> list[str]:
        workers = ApiWorkers(1, 100)
        gate = threading.Event()
        order: list[str] = []

        def job(name: str) -> str:
            if name == "a0":
                gate.wait(10)
            order.append(name)
            return name

        async def submit(client: str, name: str) -> str:
            current_usage.set(Usage(client))
            return await workers.run(job, name)

        first = asyncio.create_task(submit("a", "a0"))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(submit("a", f"a{i}")) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        rest.append(asyncio.create_task(submit("b", "b0")))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *rest)
        workers.close()
        return order

    order = asyncio.run(scenario())
    assert order.index("b0") <= 2, order  # b waits for at most one of a's queued jobs, not all three


def test_worker_queue_is_bounded() -> None:
    async def scenario() -> None:
        workers = ApiWorkers(1, 1)
        gate = threading.Event()
        task = asyncio.create_task(workers.run(gate.wait, 10))
        await asyncio.sleep(0.05)
        with pytest.raises(RateLimited, match="api.max_queued = 1"):
            await workers.run(lambda: None)
        gate.set()
        await task
        workers.close()

    asyncio.run(scenario())


# -- work budgets ---------------------------------------------------------------------------------


def test_budget_names_the_request_or_the_batch_limit() -> None:
    b = WorkBudget(ApiLimits(max_request_blocks=5, max_batch_blocks=8, max_request_logs=2, max_batch_logs=3))
    b.start_request()
    b.charge_blocks(5, "eth_getLogs")
    with pytest.raises(LimitExceeded, match=r"eth_getLogs would load more than 5 blocks.*max_request_blocks"):
        b.charge_blocks(1, "eth_getLogs")
    b.start_request()
    with pytest.raises(LimitExceeded, match=r"batch would load more than 8 blocks.*max_batch_blocks = 8"):
        b.charge_blocks(4, "eth_feeHistory")
    b.charge_blocks(3, "eth_feeHistory")
    b.charge_logs(2, "eth_getLogs")
    b.start_request()
    with pytest.raises(LimitExceeded, match="max_batch_logs = 3"):
        b.charge_logs(2, "eth_getLogs")


def test_call_gas_is_capped_at_the_block_gas_limit_and_the_batch_budget() -> None:
    b = WorkBudget(ApiLimits(max_batch_call_gas=100))
    assert b.grant_call_gas(None, 60) == 60
    assert b.grant_call_gas(10**12, 60) == 60
    b.charge_call_gas(70)
    assert b.grant_call_gas(None, 60) == 30
    assert b.is_call_gas_short(30, None, 60)
    b.charge_call_gas(30)
    with pytest.raises(LimitExceeded, match="max_batch_call_gas = 100"):
        b.grant_call_gas(None, 60)


def test_api_limit_settings_are_validated(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[validator]\nkey_file = "k.json"\n[api]\nmax_request_blocks = 20\nmax_batch_blocks = 10\n'
                   'workers = 0\ntrusted_proxies = ["proxy.local"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    msg = err.value.message
    assert "max_request_blocks <= max_batch_blocks" in msg and "workers must be 1..64" in msg
    assert "'proxy.local' is not an IP address" in msg
    cfg.write_text('[validator]\nkey_file = "k.json"\n[api]\nrate_limit_cpu_ms = 100\n')
    loaded = load_config(cfg, env={"CHAINSHARE_API_TRUSTED_PROXIES": "127.0.0.1"})
    assert loaded.api.rate_limit_cpu_ms == 100 and loaded.api.trusted_proxies == ("127.0.0.1",)


# -- JSON-RPC on a real node (in-memory LevelDB stand-in) -----------------------------------------

USER = account("api-limits-user")
VALIDATOR = validator("api-limits-v1", "agency1")


@pytest.fixture(scope="module")
def node() -> Node:
    genesis = make_genesis([("agency1", [USER.address])], [VALIDATOR])
    store = MemoryStore()
    chain = Chain(genesis, VALIDATOR, store)
    nonce = 0
    for _ in range(6):  # six blocks of two anchors (one log each)
        raws = [sign_call(USER, NOTARY, call_data("anchor(bytes32)", bytes([nonce + i]) * 32), nonce + i)
                for i in range(2)]
        chain.produce(raws)
        nonce += 2
    from chainshare.config import NodeConfig

    return Node(NodeConfig(), genesis, store, ValidatorKey(VALIDATOR.secret_key, VALIDATOR.public_key))


def _batch(rpc: JsonRpc, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    body = orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
    out = rpc.handle_body(body)
    assert out is not None
    return list(orjson.loads(out))


def test_fee_history_batch_stops_at_the_batch_block_budget(node: Node) -> None:
    rpc = JsonRpc(node, ApiLimits(max_request_blocks=5, max_batch_blocks=8))
    out = _batch(rpc, [("eth_feeHistory", ["0x4", "latest", []])] * 3 + [("eth_chainId", [])])
    assert [len(r["result"]["gasUsedRatio"]) for r in out[:2]] == [4, 4]
    assert out[2]["error"]["code"] == -32005 and out[2]["error"]["data"]["limit"] == "max_batch_blocks"
    assert out[3]["result"] == hex(node.chain_id)  # a request that loads no block still runs


def test_get_logs_over_the_request_budgets_is_refused(node: Node) -> None:
    rpc = JsonRpc(node, ApiLimits(max_request_blocks=4, max_batch_blocks=10, max_request_logs=3, max_batch_logs=5))
    out = _batch(rpc, [("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}]),
                       ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x2"}]),
                       ("eth_getLogs", [{"fromBlock": "0x3", "toBlock": "0x4"}])])
    assert out[0]["error"]["data"]["limit"] == "max_request_blocks"  # 7 blocks without a filter
    assert out[1]["error"]["data"]["limit"] == "max_request_logs"  # 4 logs > 3
    assert out[2]["error"]["data"]["limit"] == "max_batch_logs"  # 3 (charged) + 3 > 5
    assert "narrow the block range" in out[0]["error"]["message"]


def test_batch_response_never_exceeds_the_byte_budget(node: Node) -> None:
    limit = 4_000
    rpc = JsonRpc(node, ApiLimits(max_response_bytes=limit))
    body = rpc.handle_body(orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber",
                                          "params": [hex(1 + i % 6), True]} for i in range(40)]))
    assert body is not None
    out = orjson.loads(body)
    served = [r for r in out if "result" in r]
    refused = [r for r in out if "error" in r]
    assert served and refused and len(out) == 40
    assert {r["error"]["data"]["limit"] for r in refused} == {"max_response_bytes"}
    assert sum(len(orjson.dumps(r)) + 1 for r in served) <= limit


def test_eth_call_runs_with_at_most_the_block_gas_limit_and_never_from_a_system_contract(node: Node) -> None:
    rpc = JsonRpc(node)
    data = "0x" + call_data("validatorsAt(uint256)", 1).hex()
    ok = rpc.handle_one({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                         "params": [{"to": "0x" + MEMBERSHIP.hex(), "data": data, "gas": hex(10**15)}, "latest"]})
    assert ok is not None and "result" in ok
    est = rpc.handle_one({"jsonrpc": "2.0", "id": 2, "method": "eth_estimateGas",
                          "params": [{"to": "0x" + MEMBERSHIP.hex(), "data": data, "gas": hex(10**15)}]})
    assert est is not None and 21_000 < int(est["result"], 16) < 60_000_000
    gov = rpc.handle_one({"jsonrpc": "2.0", "id": 3, "method": "eth_call",
                          "params": [{"from": "0x" + GOVERNANCE.hex(), "to": "0x" + MEMBERSHIP.hex(), "data": data}]})
    assert gov is not None and gov["error"]["code"] == -32602
    assert "Governance system contract" in gov["error"]["message"]


def test_batch_call_gas_budget(node: Node) -> None:
    rpc = JsonRpc(node, ApiLimits(max_batch_call_gas=1_000_000))
    data = "0x" + call_data("validatorsAt(uint256)", 1).hex()
    call = ("eth_call", [{"to": "0x" + MEMBERSHIP.hex(), "data": data}, "latest"])
    out = _batch(rpc, [call] * 60)
    assert "result" in out[0]
    errors = [r["error"] for r in out if "error" in r]
    assert errors and {e["data"]["limit"] for e in errors} == {"max_batch_call_gas"}
    assert all("execution reverted" not in e["message"] for e in errors)


def test_client_is_the_peer_unless_a_trusted_proxy_names_it() -> None:
    from chainshare.api.app import compute_client_id

    scope = {"client": ("10.1.1.1", 5555), "headers": [(b"x-forwarded-for", b"6.6.6.6, 192.0.2.9")]}
    assert compute_client_id(scope, frozenset()) == "10.1.1.1"  # a client cannot choose its own identity
    assert compute_client_id(scope, frozenset({"10.1.1.1"})) == "192.0.2.9"  # the address the proxy saw
    assert compute_client_id({"client": None, "headers": []}, frozenset()) == "unknown"


def test_pool_cpu_share_delays_jobs_once_spent() -> None:
    async def scenario() -> tuple[float, float]:
        clock = _Clock()
        workers = ApiWorkers(1, 10, cpu_ms_per_s=100, clock=clock)

        def burn() -> None:  # ~30 ms of thread CPU time
            t = time.thread_time()
            while time.thread_time() - t < 0.03:
                pass

        await workers.run(burn)
        await workers.run(burn)
        await workers.run(burn)
        await workers.run(burn)  # the bucket (100 ms) is now in debt
        level = workers._bucket.level_ms  # the pool's share, as the scheduler sees it
        waiter = asyncio.create_task(workers.run(lambda: None))
        await asyncio.sleep(0.05)
        started_early = waiter.done()
        clock.now += 10  # ten seconds later the share is back
        await asyncio.wait_for(waiter, 5)
        workers.close()
        return level, float(started_early)

    level, started_early = asyncio.run(scenario())
    assert level < 0 and started_early == 0.0
