"""Benchmarks (``chainshare bench ...``): each prints one JSON object and writes it under bench-results/.

``ingest``: a devnet of N validators; pre-signed ``Notary.anchor`` transactions from one member
account per node (each sent to its own node), sent by concurrent ``eth_sendRawTransaction`` clients while
the client follows the finalized blocks and fetches each transaction's receipt once. Reports submit and
end-to-end throughput, latency percentiles, the node's CPU time per transaction, RSS, disk bytes per
transaction and restart time after SIGKILL.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psutil

from chainshare.benchmachine import describe_machine
from chainshare.crypto.hashing import keccak256
from chainshare.devnet import (
    create_devnet,
    read_devnet,
    start_devnet,
    start_node_process,
    stop_devnet,
    wait_for_blocks,
    write_devnet,
)
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import NOTARY
from chainshare.ledger.txs import sign_eip1559

ANCHOR_GAS = 60_000


def _ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel hands out to outgoing connections and ``bind(0)`` (Linux default 32768-60999)."""
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return lo, hi


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1, below the kernel's ephemeral range:
    a port from that range can be taken by any outgoing connection's source port while its node is stopped
    (a test that stops a node and starts it again on its port then fails with "address already in use")."""
    lo, _ = _ephemeral_port_range()
    top = min(lo, 65000) - count
    rng = random.SystemRandom()
    for _ in range(500):
        base = rng.randrange(10000, top) if top > 10000 else rng.randrange(1024, 65000 - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports found")


def presign_anchors(private_key: bytes, chain_id: int, start_nonce: int, count: int, salt: bytes) -> list[bytes]:
    name, params = abi.parse_signature("anchor(bytes32)")
    selector = abi.compute_selector(name, params)
    return [sign_eip1559(private_key, chain_id=chain_id, nonce=start_nonce + i, to=NOTARY,
                         data=selector + keccak256(salt + i.to_bytes(8, "big")), gas=ANCHOR_GAS)
            for i in range(count)]


def presign_streams(keys: list[bytes], chain_id: int, txs: int) -> list[list[bytes]]:
    """``txs`` anchors split over one stream per key (nonces from 0), every digest distinct across
    the streams: a digest anchored twice reverts, and a bench must measure anchors, not reverts."""
    return [presign_anchors(key, chain_id, 0, txs // len(keys) + (1 if k < txs % len(keys) else 0), os.urandom(16))
            for k, key in enumerate(keys)]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _node_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


BLOCKS_PER_POLL = 20  # finalized blocks a bench client reads in one JSON-RPC batch
RECEIPT_FETCHERS = 2  # receipt batches a bench client has in flight at once
JSON_HEADERS = {"Content-Type": "application/json"}


def _rpc(request_id: int, method: str, params: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


async def _drive(urls: list[str], raws: list[bytes], clients: int, batch: int, stall_s: float = 20.0,
                 rate: float | None = None, route: list[str] | None = None,
                 max_pending: int | None = None, confirmed_unix: dict[str, float] | None = None,
                 on_receipt: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Send ``raws`` with ``clients`` concurrent clients (tx i to ``route[i]`` if given, else to the
    client's node; a "busy, retry" refusal pauses every client for its retryAfter, then goes again, and
    a transaction refused as too far past that nonce goes again once it is in) while following the
    finalized chain of ``urls[0]``; throughput and latency figures. A transaction is confirmed when a
    finalized block holding it is first seen; its receipt is then fetched once (``receipt_requests``
    counts them), and a missing one is an error. With ``max_pending``, a client waits while that many
    submitted transactions are not confirmed (closed loop: a mempool's per-sender byte limit is
    never hit by the bench itself). ``confirmed_unix`` receives each transaction's hash and the
    wall-clock time its block was first seen; ``on_receipt`` is called once with each receipt.

    With ``rate``: open loop. Every 10 ms the transactions due by then at ``rate`` leave as one
    JSON-RPC batch per node, without waiting for earlier answers. A "busy, retry" (-32005) refusal
    is counted, the load pauses for its retryAfter (a client honouring back-pressure), then the
    refused ones (and those sent past them beyond the nonce gap) go again, lowest nonce first, at
    the same rate. Reports accepted / refused counts, the time each batch's answer took, and
    latency accepted → finalized."""
    import aiohttp

    submitted: dict[str, float] = {}
    unconfirmed: deque[str] = deque()  # admitted hashes in admission order (the follower drops confirmed ones)
    confirmed: dict[str, float] = {}
    errors: list[str] = []
    answer_ms: list[float] = []
    refused = requeued_gap = receipt_requests = 0
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, raw in enumerate(raws):
        queue.put_nowait((i, raw))
    hashes = ["0x" + keccak256(r).hex() for r in raws]
    done_submitting = asyncio.Event()
    # closed loop: the senders, the block follower and the receipt fetchers each hold at most one request
    conn = aiohttp.TCPConnector(limit=256 if rate else clients + 1 + RECEIPT_FETCHERS)
    t_start = time.perf_counter()
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def post(url: str, body: Any) -> Any:
            """POST a JSON-RPC body and parse the answer (orjson: the load client shares the node's cores,
            and the standard json module took about a third of its CPU)."""
            async with session.post(url, data=orjson.dumps(body), headers=JSON_HEADERS) as r:
                return orjson.loads(await r.read())

        async def sender(k: int) -> None:
            while True:
                try:
                    i, _raw = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                url = route[i] if route is not None else urls[k % len(urls)]
                while max_pending is not None and len(submitted) - len(confirmed) >= max_pending:
                    await asyncio.sleep(0.01)
                await send(i, url)

        pause_until = 0.0  # closed loop: a "busy, retry" pauses every sender, as one client honouring it

        async def send(i: int, url: str) -> None:
            """Send tx i until it is admitted or refused for good: a "busy, retry" refusal (-32005)
            is counted and pauses every sender for its retryAfter, then the same transaction goes again;
            one refused as too far past a refused nonce (max_nonce_gap) goes again once that one is in."""
            nonlocal refused, requeued_gap, pause_until
            body = {"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + raws[i].hex()]}
            gap_deadline = None
            while True:
                while (wait := pause_until - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                t0 = time.perf_counter()
                try:
                    res = await post(url, body)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"transport: {exc!r}")
                    return
                answer_ms.append((time.perf_counter() - t0) * 1000)
                if "error" not in res:
                    submitted[hashes[i]] = t0
                    unconfirmed.append(hashes[i])
                    return
                if "max_nonce_gap" in str(res["error"].get("message")):
                    gap_deadline = gap_deadline or time.perf_counter() + stall_s
                    if time.perf_counter() < gap_deadline:  # sent past a refused nonce: again once it is in
                        requeued_gap += 1
                        await asyncio.sleep(0.05)
                        continue
                if res["error"].get("code") != -32005:
                    errors.append(res["error"]["message"])
                    return
                refused += 1
                retry = float((res["error"].get("data") or {}).get("retryAfter", 1))
                pause_until = max(pause_until, time.perf_counter() + retry)

        async def send_batch(ids: list[int], url: str) -> list[tuple[int, dict[str, Any]]]:
            """Send txs ``ids`` as one JSON-RPC batch; returns the (id, error) of those refused."""
            body = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + raws[i].hex()]}
                    for i in ids]
            t0 = time.perf_counter()
            try:
                res = await post(url, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"transport: {exc!r}")
                return []
            answer_ms.append((time.perf_counter() - t0) * 1000)
            if isinstance(res, dict):  # the whole body refused (HTTP 429: every API worker busy)
                return [(i, res["error"]) for i in ids]
            out = []
            for item in res:
                if "error" in item:
                    out.append((item["id"], item["error"]))
                else:
                    submitted[hashes[item["id"]]] = t0
                    unconfirmed.append(hashes[item["id"]])
            return out

        async def open_loop() -> None:
            nonlocal refused, requeued_gap
            todo = list(range(len(raws)))  # indices still to send, lowest first
            backoff_until = 0.0
            inflight: set[asyncio.Task[None]] = set()
            assert rate

            async def fire(ids: list[int], url: str) -> None:
                nonlocal refused, requeued_gap, backoff_until
                for i, error in await send_batch(ids, url):
                    if error.get("code") == -32005:
                        refused += 1
                        retry = float((error.get("data") or {}).get("retryAfter", 1))
                        backoff_until = max(backoff_until, time.perf_counter() + retry)
                    elif "max_nonce_gap" in str(error.get("message")):
                        requeued_gap += 1  # sent past a refused nonce: again after it
                    else:
                        errors.append(str(error.get("message")))
                        continue
                    bisect.insort(todo, i)

            sent = 0
            t0 = time.perf_counter()
            while todo or inflight:
                now = time.perf_counter()
                if now < backoff_until:
                    await asyncio.sleep(backoff_until - now)
                    t0, sent = time.perf_counter(), 0  # resume at the offered rate after the pause
                    continue
                due = min(int((now - t0) * rate) - sent, len(todo))
                if due <= 0:
                    await asyncio.sleep(0.01)
                    continue
                ids, todo[:due] = todo[:due], []
                sent += due
                by_url: dict[str, list[int]] = {}
                for i in ids:
                    by_url.setdefault(route[i] if route is not None else urls[0], []).append(i)
                for url, group in by_url.items():
                    # Open loop: the batch of the txs due by now leaves without waiting for earlier answers.
                    task = asyncio.create_task(fire(group, url))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                await asyncio.sleep(0.01)

        ours = set(hashes)  # a block may also hold other clients' transactions

        async def read_head() -> int | None:
            """The node's head height (final), or None when it refused the call (429: its API workers busy)."""
            res = await post(urls[0], _rpc(0, "eth_blockNumber", []))
            return int(res["result"], 16) if isinstance(res, dict) and "result" in res else None

        while (start := await read_head()) is None:  # before the load: nothing in a block yet
            await asyncio.sleep(0.05)
        height = start

        to_fetch: deque[str] = deque()  # confirmed transactions whose receipt is still to be read
        following = True

        async def fetch_receipts() -> None:
            """Read the receipts of confirmed transactions, ``batch`` at a time, until the follower is done
            and none is left; a batch refused whole (429: the node's API workers or this client's share
            busy) goes back to the front and is asked again. Apart from the follower, so that reading
            receipts never delays seeing the next block (the latency figure)."""
            nonlocal receipt_requests
            answered = time.perf_counter()
            while following or to_fetch:
                if not to_fetch:
                    await asyncio.sleep(0.02)
                    continue
                chunk = [to_fetch.popleft() for _ in range(min(batch, len(to_fetch)))]
                receipt_requests += len(chunk)
                res = await post(urls[0], [_rpc(n, "eth_getTransactionReceipt", [h]) for n, h in enumerate(chunk)])
                if isinstance(res, dict):
                    if time.perf_counter() - answered > stall_s:
                        errors.append(f"receipts refused for {stall_s}s: {res.get('error')}")
                        return
                    to_fetch.extendleft(reversed(chunk))
                    await asyncio.sleep(0.05)
                    continue
                answered = time.perf_counter()
                for item in res:
                    if item.get("result") is None:
                        errors.append(f"{chunk[item['id']]} is in a finalized block but has no receipt: {item}")
                    elif on_receipt is not None:
                        on_receipt(item["result"])

        async def follower() -> None:
            """Follow the finalized chain every 50 ms, as an indexer does: read the blocks past the last one
            seen (a node's head is final) as one batch and confirm each of our transactions in them at that
            moment; ``fetch_receipts`` then reads each one's receipt once. Polling every pending hash instead
            asked the node for ~5.6 receipts a transaction (4 validators at 2,000 tx/s) and took CPU from
            both sides."""
            nonlocal height, following
            last_progress = time.perf_counter()
            while True:
                while unconfirmed and unconfirmed[0] in confirmed:
                    unconfirmed.popleft()
                if not unconfirmed and done_submitting.is_set():
                    break
                if done_submitting.is_set() and time.perf_counter() - last_progress > stall_s:
                    errors.append(f"{len(unconfirmed)} submitted transactions were in no finalized block within "
                                  f"{stall_s}s")
                    break
                head = await read_head()
                if head is None:  # refused (429): no new block read this time
                    head = height
                for lo in range(height + 1, head + 1, BLOCKS_PER_POLL):
                    heights = range(lo, min(head, lo + BLOCKS_PER_POLL - 1) + 1)
                    res = await post(urls[0], [_rpc(n, "eth_getBlockByNumber", [hex(n), False]) for n in heights])
                    if isinstance(res, dict):  # refused whole (429): read these blocks again next time
                        break
                    now, wall = time.perf_counter(), time.time()
                    blocks = {item.get("id"): item.get("result") for item in res}
                    for n in heights:
                        if not blocks.get(n):  # not served (an error answer): read it again next time
                            break
                        for h in blocks[n]["transactions"]:
                            if h in ours and h not in confirmed:
                                confirmed[h] = now
                                if confirmed_unix is not None:
                                    confirmed_unix[h] = wall
                                to_fetch.append(h)
                                last_progress = now
                        height = n
                    if height != heights[-1]:
                        break
                await asyncio.sleep(0.05)
            following = False

        follow_task = asyncio.gather(follower(), *(fetch_receipts() for _ in range(RECEIPT_FETCHERS)))
        if rate:
            await open_loop()
        else:
            await asyncio.gather(*(sender(k) for k in range(clients)))
        t_submit = time.perf_counter()
        done_submitting.set()
        await asyncio.wait_for(follow_task, timeout=300)
        t_end = time.perf_counter()
    # A transaction can execute once it and every lower nonce of its sender are admitted (each
    # node's stream is one account's nonce order): latency counts from then, so a refused and later
    # re-sent nonce is charged to the waits it causes, not hidden, and not charged twice.
    ready: dict[str, float] = {}
    last: dict[str, float] = {}
    for i, h in enumerate(hashes):
        stream = route[i] if route is not None else ""
        if h in submitted:
            ready[h] = last[stream] = max(last.get(stream, 0.0), submitted[h])
    lat = [(confirmed[h] - ready[h]) * 1000 for h in confirmed]
    n = len(confirmed)
    return {
        "submitted": len(submitted), "confirmed": n, "errors": len(errors), "error_samples": errors[:3],
        "refused_busy": refused, "resent_after_nonce_gap": requeued_gap, "receipt_requests": receipt_requests,
        "answer_ms": {"p50": round(_percentile(answer_ms, 0.5), 1), "p99": round(_percentile(answer_ms, 0.99), 1),
                      "max": round(max(answer_ms), 1) if answer_ms else None},
        "submit_tps": round(len(submitted) / (t_submit - t_start), 1),
        "e2e_tps": round(n / (t_end - t_start), 1),
        "latency_ms": {"p50": round(_percentile(lat, 0.5), 1), "p99": round(_percentile(lat, 0.99), 1),
                       "max": round(max(lat), 1) if lat else None},
        "wall_s": round(t_end - t_start, 2),
    }


@contextmanager
def devnet_directory(directory: Path | None, prefix: str = "chainshare-bench-") -> Iterator[Path]:
    """``directory``, or a temporary one removed afterwards; any devnet node still running there is
    stopped on the way out, whatever happened."""
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        directory = Path(tmp.name)
    try:
        yield directory
    finally:
        try:
            stop_devnet(directory)
        except Exception:
            pass
        if tmp is not None:
            tmp.cleanup()


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_ingest(nodes: int, txs: int, clients: int, batch: int, directory: Path | None,
               measure_restart: bool, rate: float | None = None, kill_one: bool = False,
               max_pending: int | None = None) -> dict[str, Any]:
    with devnet_directory(directory) as directory:
        base = free_port_block(2 * nodes)
        create_devnet(directory, nodes, base, empty_block_interval_ms=1000)
        info = start_devnet(directory)
        pids = [n["pid"] for n in info["nodes"]]
        urls = [n["rpc"] for n in info["nodes"]]
        if kill_one:
            if nodes < 4:
                raise ValueError("--kill-one needs at least 4 validators (f >= 1)")
            os.kill(pids[-1], signal.SIGKILL)  # a validator crashes: the others must keep finalizing
            pids, urls = pids[:-1], urls[:-1]
            time.sleep(1)
        # One account per node, each account's stream sent to its own node: a node queues at most
        # [mempool] max_nonce_gap nonces past the ones it has seen, so one account's stream sprayed
        # over several nodes would be refused wherever gossip lags behind the clients.
        t0 = time.perf_counter()
        streams = presign_streams([bytes.fromhex(info["accounts"][k]["private_key"][2:]) for k in range(len(urls))],
                                  info["chain_id"], txs)
        raws = [stream[j] for j in range(len(streams[0])) for stream in streams if j < len(stream)]
        route = [urls[k] for j in range(len(streams[0])) for k, stream in enumerate(streams) if j < len(stream)]
        presign_s = time.perf_counter() - t0
        cpu0, client0 = _node_cpu(pids), time.process_time()
        reverted = 0

        def count_reverted(receipt: dict[str, Any]) -> None:
            nonlocal reverted
            reverted += receipt.get("status") != "0x1"

        result = asyncio.run(_drive(urls, raws, clients, batch, rate=rate, route=route, max_pending=max_pending,
                                    on_receipt=count_reverted))
        result["reverted"] = reverted
        cpu1, client1 = _node_cpu(pids), time.process_time()
        rss = sum(psutil.Process(p).memory_info().rss for p in pids)
        confirmed = max(result["confirmed"], 1)
        raw_bytes = sum(len(r) for r in raws)
        out: dict[str, Any] = {
            "scenario": "ingest", "nodes": nodes, "txs": txs, "clients": clients, "receipt_batch": batch,
            "offered_rate": rate, "max_pending": max_pending, "killed_validators": 1 if kill_one else 0,
            **result,
            "node_cpu_s": round(cpu1 - cpu0, 2),
            "node_cpu_us_per_tx": round((cpu1 - cpu0) / confirmed * 1e6, 1),
            # the load client's own CPU (it shares the machine's cores with the nodes)
            "client_cpu_us_per_tx": round((client1 - client0) / confirmed * 1e6, 1),
            "node_rss_mb": round(rss / 2**20, 1),
            "presign_s": round(presign_s, 2),
            "raw_tx_bytes_per_tx": round(raw_bytes / txs, 1),
        }
        stop_devnet(directory)
        data_dir = Path(info["nodes"][0]["data_dir"])
        out["disk_bytes_per_tx"] = round(_dir_bytes(data_dir) / confirmed, 1)
        if measure_restart:
            out["restart_after_sigkill_s"] = measure_restart_after_sigkill(directory)["seconds"]
        out["machine"] = describe_machine()
        return out


def measure_restart_after_sigkill(directory: Path) -> dict[str, Any]:
    """Start the (stopped) first node of the devnet at ``directory``, SIGKILL it once it serves,
    and time its next start: process start until it answers with its head again (at least the head
    it had when killed: nothing replayed away). Leaves the devnet stopped."""
    import httpx

    info = read_devnet(directory)
    node = info["nodes"][0]
    log_path = directory / "nodes" / node["name"] / "node.log"
    node["pid"] = start_node_process(directory, node)
    write_devnet(directory, info)
    wait_for_blocks(node["rpc"], node["pid"], 120, log_path, info.get("genesis_hash"))
    head = int(httpx.post(node["rpc"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                             "params": []}, timeout=30).json()["result"], 16)
    os.kill(node["pid"], signal.SIGKILL)
    time.sleep(0.2)
    t0 = time.perf_counter()
    node["pid"] = start_node_process(directory, node)
    write_devnet(directory, info)
    after = wait_for_blocks(node["rpc"], node["pid"], 120, log_path, info.get("genesis_hash"))
    seconds = time.perf_counter() - t0
    stop_devnet(directory)
    if after < head:
        raise RuntimeError(f"the node restarted at head {after}, below the {head} it had when killed")
    return {"seconds": round(seconds, 2), "head_before_kill": head, "head_after_restart": after}


def read_load_average() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages, rounded to 2 decimals (benchmark JSON reports them
    beside every figure: on a shared machine they say how much of a latency was waiting for a core)."""
    return [round(x, 2) for x in os.getloadavg()]


def write_result(result: dict[str, Any], out_dir: Path = Path("bench-results")) -> Path:
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{result['scenario']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
