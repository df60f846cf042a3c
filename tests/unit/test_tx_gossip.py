"""Transaction gossip batches stay within a P2P frame: a burst of large transactions (say, a queue of
128 KiB ones made executable at once) goes out in several batches instead of one frame too large to
send (which was dropped, so the other validators never saw those transactions)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from chainshare.p2p.framing import encode_frame
from chainshare.replica import MAX_TX_BATCH, MSG_TXS, Replica

FRAME = 4 * 1024 * 1024


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def broadcast(self, msg_type: str, body: Any) -> int:
        assert msg_type == MSG_TXS
        encode_frame(msg_type, body, max_frame_size=FRAME)  # raises FrameTooLarge as the real transport does
        self.sent.append(list(body))
        return 3


def gossip_all(raws: list[bytes]) -> list[list[bytes]]:
    r = Replica.__new__(Replica)
    r.node = SimpleNamespace(cfg=SimpleNamespace(p2p=SimpleNamespace(max_frame_bytes=FRAME)))
    r.transport = RecordingTransport()
    r._tx_out, r._tx_out_bytes, r._tx_flush_scheduled = [], 0, False

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
