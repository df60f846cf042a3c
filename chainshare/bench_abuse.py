"""``chainshare bench abuse``: does a client sending the heaviest JSON-RPC batches the node accepts
stall the node's /healthz or its consensus?

A devnet of N validators (N = 1 too: probers and attackers then share its one node) gets a chain with
logs (``--logs`` Notary.anchor transactions), then two phases of ``--duration`` seconds each, measured the
same way: a baseline, and an attack in which ``--attackers`` loops send, back to back, batches of
1000 x ``eth_feeHistory(0x400)``, 1000 x ``eth_getLogs(0..latest)`` and 1000 x ``eth_call`` to every node.
In both phases a prober reads node1's /healthz every 50 ms and a finality prober sends a ``Notary.anchor``
every 250 ms to node1 and polls its receipt (latency from send to the receipt of the finalized block).

The nodes trust 127.0.0.1 as a reverse proxy, and each client names itself in X-Forwarded-For, so
the attackers and the probers are distinct clients, as they are behind a real proxy.
Prints one JSON object: p50/p99 of /healthz and of finality per phase, consensus view timeouts,
and what the attackers got (served entries, -32005 entries, HTTP 429 refusals, bytes).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from chainshare.bench import _percentile, devnet_directory, free_port_block, presign_anchors
from chainshare.benchmachine import describe_machine
from chainshare.crypto.hashing import keccak256
from chainshare.devnet import create_devnet, start_devnet
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import MEMBERSHIP

ATTACKER = "198.51.100.66"
PROBER = "198.51.100.1"


@contextmanager
def _env(**values: str) -> Any:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def heavy_batches(batch: int = 1000) -> dict[str, bytes]:
    """The attack's bodies: ``batch`` heavy entries each (about 94 KB, 110 KB and 150 KB)."""
    name, params = abi.parse_signature("validatorsAt(uint256 height)")
    call_data = "0x" + (abi.compute_selector(name, params) + abi.encode_values(["uint256"], [1])).hex()
    kinds = {
        "feeHistory": ("eth_feeHistory", ["0x400", "latest", []]),
        "getLogs": ("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}]),
        "call": ("eth_call", [{"to": "0x" + MEMBERSHIP.hex(), "data": call_data}, "latest"]),
    }
    return {k: json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i in range(batch)]).encode()
            for k, (m, p) in kinds.items()}


def _summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": round(_percentile(values, 0.5), 1), "p99": round(_percentile(values, 0.99), 1),
            "max": round(max(values), 1) if values else None}


async def _consensus_timeouts(session: Any, urls: list[str]) -> int:
    total = 0
    for url in urls:
        async with session.get(url + "/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("chainshare_consensus_timeouts_total"):
                    total += int(float(line.split()[1]))
    return total


async def _phase(urls: list[str], raws: Iterator[bytes], duration: float, attackers: int,
                 bodies: dict[str, bytes]) -> dict[str, Any]:
    import aiohttp

    healthz: list[float] = []
    finality: list[float] = []
    lost: list[str] = []
    attack: dict[str, int] = {}
    stop = asyncio.Event()
    probe_headers = {"x-forwarded-for": PROBER}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        timeouts_before = await _consensus_timeouts(session, urls)

        async def probe_healthz() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                async with session.get(urls[0] + "/healthz") as r:
                    await r.read()
                healthz.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.05)

        async def probe_finality() -> None:
            pending: list[asyncio.Task[None]] = []

            async def one(raw: bytes) -> None:
                tx_hash = "0x" + keccak256(raw).hex()
                t0 = time.perf_counter()
                body = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
                async with session.post(urls[0], json=body, headers=probe_headers) as r:
                    res = await r.json(content_type=None)
                if "error" in res:
                    lost.append(res["error"]["message"][:200])
                    return
                poll = {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": [tx_hash]}
                while time.perf_counter() - t0 < 60:
                    async with session.post(urls[0], json=poll, headers=probe_headers) as r:
                        res = await r.json(content_type=None)
                    if res.get("result"):
                        finality.append((time.perf_counter() - t0) * 1000)
                        return
                    await asyncio.sleep(0.02)
                lost.append(f"no receipt for {tx_hash} within 60 s")

            while not stop.is_set():  # (checked before taking a nonce: the next phase goes on without a gap)
                raw = next(raws, None)
                if raw is None:
                    break
                pending.append(asyncio.create_task(one(raw)))
                await asyncio.sleep(0.25)
            await asyncio.gather(*pending)

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(probe_healthz()), asyncio.create_task(probe_finality())]
        attack_proc = None
        if attackers:  # in a process of its own, so that its work never delays the probers' clocks
            ctx = multiprocessing.get_context("spawn")
            results: Any = ctx.Queue()
            attack_proc = ctx.Process(target=_attack_process, args=(urls, bodies, attackers, duration, results))
            attack_proc.start()
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.gather(*tasks)
        if attack_proc is not None:
            attack = await asyncio.get_running_loop().run_in_executor(None, results.get, True, 180)
            attack_proc.join(30)
        wall = time.perf_counter() - t0
        timeouts_after = await _consensus_timeouts(session, urls)
    out: dict[str, Any] = {"healthz_ms": _summary(healthz), "finality_ms": _summary(finality),
                           "consensus_timeouts": timeouts_after - timeouts_before, "lost": len(lost),
                           "lost_samples": lost[:3], "wall_s": round(wall, 1)}
    if attackers:
        out["attack"] = attack
    return out


def _attack_process(urls: list[str], bodies: dict[str, bytes], attackers: int, duration: float,
                    results: Any) -> None:
    results.put(asyncio.run(_attack(urls, bodies, attackers, duration)))


async def _attack(urls: list[str], bodies: dict[str, bytes], attackers: int, duration: float) -> dict[str, int]:
    """``attackers`` loops sending the heavy bodies back to back to every node for ``duration`` seconds."""
    import aiohttp

    stats = {"batches": 0, "http_429": 0, "entries_served": 0, "entries_limit_exceeded": 0, "bytes_received": 0,
             "client_errors": 0}
    deadline = time.monotonic() + duration
    headers = {"content-type": "application/json", "x-forwarded-for": ATTACKER}
    kinds = list(bodies)

    async def attacker(session: Any, k: int) -> None:
        i = k
        while time.monotonic() < deadline:
            url, body = urls[i % len(urls)], bodies[kinds[i % len(kinds)]]
            i += 1
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    raw, status = await r.read(), r.status
            except (aiohttp.ClientError, TimeoutError):
                stats["client_errors"] += 1
                continue
            stats["batches"] += 1
            stats["bytes_received"] += len(raw)
            if status == 429:
                stats["http_429"] += 1
                await asyncio.sleep(0.05)  # a real client backs off a little; a hostile one hardly
                continue
            stats["entries_served"] += raw.count(b'"result":')
            stats["entries_limit_exceeded"] += raw.count(b'"code":-32005')

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(attacker(session, k) for k in range(attackers)))
    return stats


def _fill_chain(info: dict[str, Any], count: int) -> int:
    """Send ``count`` Notary.anchor transactions (one log each) and wait for them; the head height."""
    url = info["nodes"][0]["rpc"]
    key = bytes.fromhex(info["accounts"][0]["private_key"][2:])
    raws = presign_anchors(key, info["chain_id"], 0, count, os.urandom(16))
    headers = {"x-forwarded-for": PROBER}
    with httpx.Client(timeout=120, headers=headers) as c:
        i = 0
        while i < count:
            body = [{"jsonrpc": "2.0", "id": j, "method": "eth_sendRawTransaction", "params": ["0x" + r.hex()]}
                    for j, r in enumerate(raws[i:i + 500], start=i)]
            refused = []
            for item in c.post(url, json=body).json():
                if "error" not in item:
                    continue
                message = item["error"]["message"]
                if "already" in message:  # sent again after a refusal, but had been admitted (queued)
                    continue
                if item["error"]["code"] != -32005 and "max_nonce_gap" not in message:
                    raise RuntimeError(f"warm-up transaction refused: {item['error']['message']}")
                refused.append(item["id"])  # node busy (back-pressure), or sent past a busy refusal
            if refused:  # honour "busy, retry": send again from the first refused nonce
                time.sleep(1)
                i = min(refused)
            else:
                i += 500
        last = "0x" + keccak256(raws[-1]).hex()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            res = c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                                    "params": [last]}).json()
            if res.get("result"):
                return int(c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                             "params": []}).json()["result"], 16)
            time.sleep(0.2)
    raise RuntimeError("the warm-up transactions were not finalized within 300 s")


def run_abuse(nodes: int, duration: float, attackers: int, logs: int, rate_limit: bool,
              directory: Path | None) -> dict[str, Any]:
    env = {"CHAINSHARE_API_TRUSTED_PROXIES": "127.0.0.1"}
    if not rate_limit:
        env["CHAINSHARE_API_RATE_LIMIT_CPU_MS"] = "0"
    with devnet_directory(directory, "chainshare-bench-abuse-") as directory:
        create_devnet(directory, nodes, free_port_block(2 * nodes), empty_block_interval_ms=1000)
        with _env(**env):
            info = start_devnet(directory)
        urls = [n["rpc"] for n in info["nodes"]]
        height = _fill_chain(info, logs)
        # The finality prober signs as the last account: its own with two nodes or more; with one node it is
        # the warm-up's account, whose first ``logs`` nonces the warm-up used. One nonce sequence over both
        # phases: the attack's probes follow the baseline's without a gap.
        key = bytes.fromhex(info["accounts"][-1]["private_key"][2:])
        first_nonce = logs if len(info["accounts"]) == 1 else 0
        probes = iter(presign_anchors(key, info["chain_id"], first_nonce, int(2 * duration / 0.25) + 8,
                                      os.urandom(16)))
        baseline = asyncio.run(_phase(urls, probes, duration, 0, {}))
        attack = asyncio.run(_phase(urls, probes, duration, attackers, heavy_batches()))
        return {
            "scenario": "abuse", "nodes": nodes, "duration_s": duration, "attackers": attackers,
            "rate_limit": rate_limit, "chain": {"height_before": height, "logs": logs},
            "attack_bodies_bytes": {k: len(v) for k, v in heavy_batches().items()},
            "baseline": baseline, "under_attack": attack,
            "machine": describe_machine(),
        }
