"""Transaction gossip batches stay within a P2P frame: a burst of large transactions (say, a queue of
128 KiB ones made executable at once) goes out in several batches instead of one frame too large to
send (which was dropped, so the other validators never saw those transactions). A proposal never
overtakes the transactions still waiting for their gossip batch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from chainshare.consensus import core
from chainshare.consensus.messages import Proposal
from chainshare.ledger.types import Block, Header
from chainshare.p2p.framing import encode_frame
from chainshare.replica import MAX_TX_BATCH, MSG_CONSENSUS, MSG_TXS, Replica

FRAME = 4 * 1024 * 1024


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []
        self.messages: list[str] = []

    def broadcast(self, msg_type: str, body: Any) -> int:
        self.messages.append(msg_type)
        if msg_type != MSG_TXS:
            return 3
        encode_frame(msg_type, body, max_frame_size=FRAME)  # raises FrameTooLarge as the real transport does
        self.sent.append(list(body))
        return 3


def gossiping_replica() -> Replica:
    r = Replica.__new__(Replica)
    r.node = SimpleNamespace(cfg=SimpleNamespace(p2p=SimpleNamespace(max_frame_bytes=FRAME)))
    r.transport = RecordingTransport()
    r._tx_out, r._tx_out_bytes, r._tx_flush_scheduled = [], 0, False
    r.stats = {"timeouts": 0}
    return r


def gossip_all(raws: list[bytes]) -> list[list[bytes]]:
    r = gossiping_replica()

    async def run() -> None:
        for raw in raws:
            r.gossip_transaction(raw)
        await asyncio.sleep(0.05)  # the scheduled flush

    asyncio.run(run())
    return r.transport.sent  # type: ignore[no-any-return]


def test_a_burst_of_large_transactions_is_sent_in_batches_that_fit_a_frame() -> None:
    raws = [bytes([i]) * (128 * 1024 - 100) for i in range(64)]  # 8 MiB: two frames' worth
    batches = gossip_all(raws)
    assert len(batches) >= 4 and all(sum(map(len, b)) <= FRAME // 2 for b in batches)
    assert [raw for b in batches for raw in b] == raws  # all of them, in order


def test_small_transactions_still_go_in_batches_of_at_most_max_tx_batch() -> None:
    raws = [i.to_bytes(4, "big") * 35 for i in range(MAX_TX_BATCH + 10)]
    batches = gossip_all(raws)
    assert [len(b) for b in batches] == [MAX_TX_BATCH, 10]


def test_a_proposal_goes_out_after_the_transactions_waiting_for_gossip() -> None:
    r = gossiping_replica()
    block = Block(Header(bytes(32), 1, 1, 0, bytes(20), bytes(32), bytes(32), bytes(32), bytes(256), bytes(32),
                         1, 0, bytes(32)), (b"tx",), None)

    async def run() -> None:
        r.gossip_transaction(b"tx")  # its batch would leave ~10 ms later
        await r._apply(core.Broadcast(Proposal(block)))
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert r.transport.messages == [MSG_TXS, MSG_CONSENSUS]  # not the proposal first, nor the batch twice
    assert r.transport.sent == [[b"tx"]]
