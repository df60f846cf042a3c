"""Back-pressure instead of queueing (issue 16): one real node (``chainshare node run``, LevelDB in a
tmp dir) flooded by an open-loop client far above what it finalizes answers "busy, retry" —
JSON-RPC -32005 and REST 429 with Retry-After, not timeouts or 500s — while /healthz stays
responsive, and every transaction that got a hash back is finalized (nothing admitted is lost).

The node runs with a small backlog (``[mempool] busy_min_pending = 100``, ``busy_backlog_ms = 200``,
through the environment) and one block a second, so the flood is far above capacity however loaded
the machine is; the bench (``chainshare bench ingest --rate``) measures the default settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from netkit import Devnet, DevnetPool, anchor_data, wait_until

from chainshare.crypto.hashing import keccak256
from chainshare.ledger.txs import sign_eip1559

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("backpressure")]

FLOOD = 1_500
BATCH = 250
NOTARY = bytes.fromhex("00" * 18 + "c503")


@pytest.fixture(scope="module")
def busy_node(devnet_pool: DevnetPool) -> Iterator[Devnet]:
    with pytest.MonkeyPatch.context() as env:  # inherited by the node process that start_devnet spawns
        env.setenv("CHAINSHARE_MEMPOOL_BUSY_MIN_PENDING", "100")
        env.setenv("CHAINSHARE_MEMPOOL_BUSY_BACKLOG_MS", "200")
        env.setenv("CHAINSHARE_BLOCK_BLOCK_TIME_MS", "1000")
        yield devnet_pool.launch("busy")


def test_a_flood_far_above_capacity_is_refused_busy_and_nothing_admitted_is_lost(busy_node: Devnet) -> None:
    net = busy_node
    key = net.key_bytes
    first = net.nonce()
    raws = [sign_eip1559(key, chain_id=net.chain_id, nonce=first + i, to=NOTARY,
                         data=anchor_data(keccak256(b"flood %d" % i)), gas=100_000) for i in range(FLOOD)]
    accepted: dict[int, str] = {}
    refusals: list[dict[str, object]] = []
    other: list[object] = []
    health: list[int] = []
    done = threading.Event()

    def probe_health() -> None:
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                health.append(client.get(net.rpc_url.rstrip("/") + "/healthz").status_code)
                time.sleep(0.05)

    prober = threading.Thread(target=probe_health)
    prober.start()
    try:
        with httpx.Client(timeout=60) as client:
            # Open loop: every transaction not yet admitted is sent again, in nonce order, batch after
            # batch, with no pause: a client that retries at once is the worst case for queueing.
            rounds = 0
            rest_refused = False
            while len(accepted) < FLOOD:
                rounds += 1
                assert rounds < 10_000, f"{len(accepted)} of {FLOOD} admitted after {rounds} rounds"
                todo = [i for i in range(FLOOD) if i not in accepted][:BATCH]
                body = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction",
                         "params": ["0x" + raws[i].hex()]} for i in todo]
                r = client.post(net.rpc_url, json=body)
                if r.status_code == 429:  # every API worker busy: the whole body refused, also "retry"
                    assert r.headers.get("retry-after"), r.headers
                    refusals.append({"code": 429})
                    continue
                assert r.status_code == 200, r.text[:300]
                for answer in r.json():
                    if "result" in answer:
                        accepted[answer["id"]] = answer["result"]
                    elif answer["error"]["code"] == -32005 and "node busy, retry" in answer["error"]["message"]:
                        refusals.append(answer["error"])
                    else:
                        other.append(answer["error"])
                waiting = [i for i in range(FLOOD) if i not in accepted]
                if not rest_refused and waiting:
                    # While busy, REST says the same with HTTP 429 and Retry-After.
                    rest = client.post(net.api_url + "/transactions", json={"raw": "0x" + raws[waiting[0]].hex()})
                    if rest.status_code == 202:  # a block had just drained the backlog: admitted
                        accepted[waiting[0]] = rest.json()["hash"]
                    else:
                        assert rest.status_code == 429, rest.text[:300]
                        assert int(rest.headers["retry-after"]) >= 1
                        assert "node busy, retry" in rest.json()["error"]["message"]
                        rest_refused = True
        assert not other, other[:3]
        assert refusals, "the flood was never refused: no back-pressure"
        assert rest_refused, "REST never answered 429 while the node was busy"
        busy = [r for r in refusals if r.get("code") == -32005]
        assert busy and all(isinstance(r.get("data"), dict) and 0.25 <= r["data"]["retryAfter"] <= 5  # type: ignore[index]
                            for r in busy)
        # Nothing admitted is lost: every hash handed back gets a successful receipt.
        assert set(accepted.values()) == {"0x" + keccak256(raw).hex() for raw in raws}
        pending = set(accepted.values())

        def all_final() -> bool:
            for tx_hash in list(pending):
                receipt = net.receipt(tx_hash)
                if receipt is not None:
                    assert receipt["status"] == "0x1", receipt
                    pending.discard(tx_hash)
            return not pending

        wait_until(all_final, 300, "every admitted transaction finalized")
        assert net.nonce() == first + FLOOD
    finally:
        done.set()
        prober.join()
    assert health and all(code == 200 for code in health), health[:20]
