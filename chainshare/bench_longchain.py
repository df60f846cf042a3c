"""``chainshare bench longchain``: grow one real node to ``--txs`` transactions and report what a
long chain costs (one JSON object, saved under bench-results/).

The node is a real ``chainshare node run`` process (one-validator devnet, LevelDB). Pre-signed
Notary.anchor transactions are fed in chunks of ``--chunk`` (signed chunk by chunk, so the load
client's memory stays flat) by the ingest bench's closed-loop driver. Reported:

- at each checkpoint (every ``--checkpoint`` transactions, and at the end): the node's RSS, its
  data directory's size, and the chunk's node CPU per transaction and end-to-end rate;
- disk bytes per transaction against the raw transaction's bytes;
- restart after SIGKILL: process start until the node serves its head again (not below the head it
  had when killed);
- ``chain verify`` of the stopped node's data directory (the CLI's ``verify_chain`` over the
  store, in this process): blocks/s and transactions/s, and whether the head is proven final.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import psutil

from chainshare.bench import (
    _dir_bytes,
    _drive,
    _node_cpu,
    devnet_directory,
    free_port_block,
    measure_restart_after_sigkill,
    presign_anchors,
)
from chainshare.benchmachine import describe_machine
from chainshare.devnet import create_devnet, start_devnet, stop_devnet

MB = 1024 * 1024


def measure_verify(data_dir: Path) -> dict[str, Any]:
    """``chain verify --data-dir`` of a stopped node, timed."""
    from chainshare.ledger.chain import ChainStore
    from chainshare.ledger.store import LevelDBStore
    from chainshare.verify import StoreSource, verify_chain

    store = LevelDBStore(data_dir, create=False)
    try:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        report = verify_chain(StoreSource(ChainStore(store)))
        cpu = time.process_time() - cpu0
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    return {"ok": report.head_final, "blocks": report.blocks, "transactions": report.transactions,
            "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
            "blocks_per_s": round(report.blocks / seconds, 1), "tx_per_s": round(report.transactions / seconds, 1),
            "blocks_per_cpu_s": round(report.blocks / cpu, 1), "tx_per_cpu_s": round(report.transactions / cpu, 1)}


def run_longchain(txs: int, checkpoint: int, chunk: int, clients: int, batch: int,
                  directory: Path | None) -> dict[str, Any]:
    with devnet_directory(directory, "chainshare-bench-longchain-") as directory:
        create_devnet(directory, 1, free_port_block(2), empty_block_interval_ms=1000)
        info = start_devnet(directory)
        node = info["nodes"][0]
        pid, url, data_dir = node["pid"], node["rpc"], Path(node["data_dir"])
        key = bytes.fromhex(info["accounts"][0]["private_key"][2:])
        salt = os.urandom(16)
        checkpoints: list[dict[str, Any]] = []
        done = raw_bytes = errors = 0
        next_checkpoint = min(checkpoint, txs)
        t_start = time.perf_counter()
        while done < txs:
            n = min(chunk, txs - done, next_checkpoint - done)
            raws = presign_anchors(key, info["chain_id"], done, n, salt)
            raw_bytes += sum(len(r) for r in raws)
            cpu0 = _node_cpu([pid])
            result = asyncio.run(_drive([url], raws, clients, batch))
            cpu = _node_cpu([pid]) - cpu0
            errors += result["errors"]
            if result["confirmed"] != n:
                raise RuntimeError(f"only {result['confirmed']} of {n} transactions confirmed: {result['error_samples']}")
            done += n
            if done == next_checkpoint:
                checkpoints.append({
                    "txs": done, "node_rss_mb": round(psutil.Process(pid).memory_info().rss / MB, 1),
                    "data_dir_mb": round(_dir_bytes(data_dir) / MB, 1),
                    "chunk_node_cpu_us_per_tx": round(cpu / n * 1e6, 1), "chunk_e2e_tps": result["e2e_tps"],
                    "chunk_latency_p99_ms": result["latency_ms"]["p99"], "elapsed_s": round(time.perf_counter() - t_start, 1),
                    "load_avg_1m": round(os.getloadavg()[0], 2)})
                next_checkpoint = min(next_checkpoint + checkpoint, txs)
        stop_devnet(directory)
        disk = _dir_bytes(data_dir)
        out: dict[str, Any] = {
            "scenario": "longchain", "txs": txs, "errors": errors, "checkpoints": checkpoints,
            "disk_bytes": disk, "disk_bytes_per_tx": round(disk / txs, 1),
            "raw_tx_bytes_per_tx": round(raw_bytes / txs, 1),
            "disk_per_raw_tx_bytes": round(disk / raw_bytes, 2),
            "restart_after_sigkill": measure_restart_after_sigkill(directory),
            "verify": measure_verify(data_dir),
            "machine": describe_machine(),
        }
        return out
