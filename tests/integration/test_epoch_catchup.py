"""Catch-up after the old validator set is gone (issue 13, item 3), on a real devnet of 9 node processes.

{node1..node4} is the genesis set; node5..node8 start as observers (nodes of member agencies, no
validators: admitted for block sync only) and follow the chain. Governance replaces the set by
{node5..node8}; the new set finalizes more than a sync batch (64 blocks) past the change; node1..node4
shut down. Then node9, a fresh node with genesis only (an observer), starts and must catch up to the
head: it fetches the epoch-change proof (the last block of the genesis set with its 2-chain, signed by
that set, and the new member list hashing to that block's ``validator_set_hash``), verifies it from
genesis, and counts block confirmations against the new set.

Before the fix node9 never synced: its peer check admitted only genesis-era validators (and node5..8
refused a node of no set; node9 even refused to start, its name being no validator's), and its f + 1
confirmations were asked of node1..node4, which are gone, while the head proof only covers a batch
ending at the peer's head (here > 64 blocks away). Run with admission fixed and the proof learned but
confirmations still asked of the set in force at node9's head (the genesis set), this test fails:
"timed out after 240s waiting for node9 to catch up to the head; heads {'node9': 0}".
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import Devnet, DevnetPool, free_port_block, shutdown_devnet, wait_until
from test_consensus_network import Network, _epoch_log, _schedule_validators

from chainshare.devnet import create_devnet, is_running, read_devnet, start_node_process, write_devnet
from chainshare.execution.genesis import compute_genesis_block, parse_genesis
from chainshare.replica import SYNC_BATCH

pytestmark = pytest.mark.integration

OLD, NEW, FRESH = [0, 1, 2, 3], [4, 5, 6, 7], 8
DEADLINE = 240.0  # pure waits for progress on a loaded 2-core machine


def _create(d: Path) -> dict[str, Any]:
    """9 nodes of 9 agencies; genesis validators node1..node4; Governance needs 3 of 9 votes (the
    helpers vote with agencies 1-3); devnet.json also keeps every node's BLS key and PoP."""
    create_devnet(d, 9, free_port_block(18), block_time_ms=100, empty_block_interval_ms=250)
    doc = json.loads((d / "genesis.json").read_text())
    everyone = doc["validators"]
    doc["validators"] = everyone[:4]
    doc["params"]["governance_threshold"] = [1, 3]
    (d / "genesis.json").write_text(json.dumps(doc, indent=2))
    block0, _, _ = compute_genesis_block(parse_genesis(doc))
    info = read_devnet(d)
    info["genesis_hash"] = "0x" + block0.hash.hex()
    info["all_validators"] = everyone
    write_devnet(d, info)
    return info


def _answers_our_genesis(node: dict[str, Any], genesis_hash: str) -> bool:
    try:
        return bool(httpx.get(node["api"] + "/status", timeout=2).json().get("genesis_hash") == genesis_hash)
    except (httpx.HTTPError, ValueError):
        return False


@pytest.fixture
def epoch_net(tmp_path: Path) -> Iterator[Network]:
    """node1..node8 running (node5..8 observers), node9 created but not started. A node that cannot
    bind its ports (taken between the probe and the bind by another process) makes a fresh attempt."""
    pool = DevnetPool(tmp_path)
    try:
        for attempt in range(3):
            d = tmp_path / f"epochs{attempt}"
            info = _create(d)
            pool.register(d)
            for i in OLD + NEW:
                info["nodes"][i]["pid"] = start_node_process(d, info["nodes"][i])
            write_devnet(d, info)
            started = [info["nodes"][i] for i in OLD + NEW]

            def up(nodes: list[dict[str, Any]] = started, g: str = info["genesis_hash"]) -> str | None:
                if any(not is_running(n["pid"]) for n in nodes):
                    return "a node exited"
                return "up" if all(_answers_our_genesis(n, g) for n in nodes) else None

            if wait_until(up, DEADLINE, "the eight nodes to serve their API", interval=0.5) == "up":
                break
            shutdown_devnet(d)
        else:
            raise AssertionError("could not start the 9-node devnet in 3 attempts (ports taken?)")
        network = Network(Devnet(d))
        yield network
        network.close()
    finally:
        pool.close()


@pytest.mark.xdist_group("epoch_catchup")
def test_a_fresh_node_catches_up_after_the_old_validator_set_is_gone(epoch_net: Network, tmp_path: Path) -> None:
    network = epoch_net
    network.wait_heads(OLD, lambda hs: min(hs) >= 2, DEADLINE, "the genesis set to finalize")
    new_set = [{"name": network.name(i), "agency": network.node(i)["agency"],
                **_keys_of(network, i)} for i in NEW]
    h1 = _schedule_validators(network, new_set, 40)
    network.wait_heads(NEW, lambda hs: min(hs) >= h1 + SYNC_BATCH + 6, DEADLINE,
                       "the new set to finalize more than a sync batch past the change")
    joined = _epoch_log(network, 4, 1)
    assert joined is not None and joined.get("member") is True, "node5 did not join the new set"
    common, chain = network.assert_same_chain(NEW)
    new_miners = {network.get(4, "/validators")["items"][k]["address"].lower() for k in range(4)}
    assert all(chain[h]["miner"].lower() in new_miners for h in range(h1, common + 1))

    for i in OLD:
        network.stop(i, signal.SIGTERM)
    h_gone = max(network.wait_heads(NEW, lambda hs: True, 10, "heads"))
    network.wait_heads(NEW, lambda hs: min(hs) >= h_gone + 3, DEADLINE, "the new set to go on alone")

    # node9: fresh data dir (genesis only), an observer; every node of the genesis set is down.
    info = read_devnet(network.dir)
    info["nodes"][FRESH]["pid"] = start_node_process(network.dir, info["nodes"][FRESH])
    write_devnet(network.dir, info)
    network.net.reload()
    target = max(network.wait_heads(NEW, lambda hs: True, 10, "heads"))
    assert target > SYNC_BATCH + h1
    network.wait_heads([FRESH], lambda hs: hs[0] >= target, DEADLINE, "node9 to catch up to the head")
    network.assert_same_chain([4, FRESH])
    kept = [r for r in network.log_lines(FRESH) if r.get("msg") == "epoch-change proof kept"]
    assert [(r.get("epoch"), r.get("height")) for r in kept] == [(1, h1)], kept
    # node9 keeps following with the new set (its confirmations, not the gone set's).
    network.wait_heads([FRESH], lambda hs: hs[0] >= target + 3, DEADLINE, "node9 to keep following")


def _keys_of(network: Network, i: int) -> dict[str, str]:
    """node i's BLS public key and proof of possession, as create_devnet wrote them for all nine."""
    row = next(v for v in network.info["all_validators"] if v["name"] == network.name(i))
    return {"bls_public_key": row["bls_public_key"], "bls_pop": row["bls_pop"]}
