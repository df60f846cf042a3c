"""The replica's proposer: transactions that building a block left out as invalid leave its mempool, so that
the next view does not offer them again (the single-node producer does the same)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace
from typing import Any

from chainkit import Ledger, account, make_genesis, validator

from chainshare.consensus import core
from chainshare.replica import Replica

GENESIS = make_genesis([("Agency A", [account("alice").address])], [validator("v1", "Agency A")])


class RecordingMempool:
    def __init__(self, txs: list[str]) -> None:
        self.txs = list(txs)
        self.removed: list[Any] = []

    def __len__(self) -> int:
        return len(self.txs)

    def select(self, reader: Any, max_txs: int) -> list[str]:
        return self.txs[:max_txs]

    def remove(self, txs: list[Any]) -> None:
        self.removed.extend(txs)


def test_transactions_left_out_of_a_built_block_are_removed_from_the_mempool() -> None:
    ledger = Ledger(GENESIS)
    parent = SimpleNamespace(hash=b"\x01" * 32, height=0, header=ledger.parent_header)
    r = Replica.__new__(Replica)
    r.cfg = SimpleNamespace(block_time_ms=0, idle_block_ms=0)
    r.node = SimpleNamespace(mempool=RecordingMempool(["good", "poison"]))
    r._stopping = False
    r._executor = concurrent.futures.ThreadPoolExecutor(1)
    r.reader_for = lambda block_hash: ledger.reader()  # type: ignore[method-assign]
    r._is_suffix = lambda reader, height: False  # type: ignore[method-assign]
    r._has_pending_transactions = lambda block: False  # type: ignore[method-assign]
    built: list[list[str]] = []

    def build_sync(req: Any, txs: list[str], invalid: list[str]) -> None:
        built.append(txs)
        invalid.append("poison")  # what build_block's on_invalid reported

    r._build_sync = build_sync  # type: ignore[method-assign]

    async def run() -> None:
        r.events = asyncio.Queue()
        req = core.BuildProposal(view=1, parent=parent, justify=None, timeout_cert=None)  # type: ignore[arg-type]
        await r._build_when_ready(req, generation=0)

    asyncio.run(run())
    r._executor.shutdown()
    assert built == [["good", "poison"]]
    assert r.node.mempool.removed == ["poison"]
