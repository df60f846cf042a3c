"""The replica's proposer: a transaction whose execution raised instead of reverting (ExecutionFailed) leaves
its mempool, so that the next view does not offer it again; transactions judged invalid against a parent that
is not yet final (a later nonce of the same sender, say) stay for the mempool's pruning to decide. A
multi-validator node's mempool finds a proposal's transactions by their raw bytes."""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace
from typing import Any

import pytest
from chainkit import NOTARY, Ledger, account, call_data, make_genesis, sign_call, validator

from chainshare import replica as replica_module
from chainshare.consensus import core
from chainshare.execution.contracts import build_runtime
from chainshare.execution.runtime import BlockEnv, Runtime
from chainshare.ledger.state import StateView
from chainshare.ledger.txs import Transaction, decode_transaction
from chainshare.ledger.types import Receipt
from chainshare.replica import Replica

ALICE, BOB = account("alice"), account("bob")
GENESIS = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], [validator("v1", "Agency A")])


class RaisingRuntime(Runtime):
    """Executing the transaction ``poison`` raises, as a runtime bug would."""

    def __init__(self, poison: bytes) -> None:
        super().__init__(list(build_runtime().contracts.values()))
        self.poison = poison

    def apply_transaction(self, state: StateView, tx: Transaction, env: BlockEnv, cumulative_gas: int) -> Receipt:
        if tx.hash == self.poison:
            raise RuntimeError("a bug")
        return super().apply_transaction(state, tx, env, cumulative_gas)


class RecordingMempool:
    def __init__(self, txs: list[Transaction]) -> None:
        self.txs = list(txs)
        self.removed: list[Transaction] = []

    def __len__(self) -> int:
        return len(self.txs)

    def select(self, reader: Any, max_txs: int) -> list[Transaction]:
        return self.txs[:max_txs]

    def remove(self, txs: list[Transaction]) -> None:
        self.removed.extend(txs)


def test_only_a_transaction_whose_execution_raised_leaves_the_mempool(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(GENESIS)
    anchor = call_data("anchor(bytes32)", b"\x11" * 32)
    alice0, alice1, bob0 = (decode_transaction(sign_call(acct, NOTARY, anchor, nonce), GENESIS.chain_id)
                            for acct, nonce in ((ALICE, 0), (ALICE, 1), (BOB, 0)))
    monkeypatch.setattr(replica_module, "get_runtime_at", lambda reader, height: RaisingRuntime(alice0.hash))
    r = Replica.__new__(Replica)
    r.cfg = SimpleNamespace(block_time_ms=0, idle_block_ms=0)
    r.node = SimpleNamespace(mempool=RecordingMempool([alice0, alice1, bob0]), chain_id=GENESIS.chain_id)
    r.my_index, r.vset, r.executed = 0, SimpleNamespace(validators=[{"address": bytes(20)}]), {}
    r._stopping = False
    r._executor = concurrent.futures.ThreadPoolExecutor(1)
    r.reader_for = lambda block_hash: ledger.reader()  # type: ignore[method-assign]
    r.accumulator_for = lambda block_hash: ledger.accumulator  # type: ignore[method-assign]
    r._is_suffix = lambda reader, height: False  # type: ignore[method-assign]
    r._has_pending_transactions = lambda block: False  # type: ignore[method-assign]
    parent = SimpleNamespace(hash=ledger.parent_header.hash, height=0, header=ledger.parent_header)

    async def run() -> Any:
        r.events = asyncio.Queue()
        req = core.BuildProposal(view=1, parent=parent, justify=None, timeout_cert=None)  # type: ignore[arg-type]
        await r._build_when_ready(req, generation=0)
        return r.events.get_nowait()

    built = asyncio.run(run())
    r._executor.shutdown()
    assert [decode_transaction(raw, GENESIS.chain_id).hash for raw in built.event.block.transactions] == [bob0.hash]
    assert r.node.mempool.removed == [alice0]  # alice1 (a nonce after it) stays


@pytest.mark.parametrize("validators", [1, 4])
def test_only_a_multi_validator_node_indexes_its_mempool_by_raw_bytes(validators: int) -> None:
    """A replica re-executing others' blocks finds their transactions by raw bytes; a single validator, which
    only executes its own blocks, keeps no such index (``get_by_raw`` answers None)."""
    from dataclasses import replace

    from chainshare.config import NodeConfig
    from chainshare.ledger.store import MemoryStore
    from chainshare.node import Node, ValidatorKey

    vals = [validator(f"v{i}", "Agency A") for i in range(validators)]
    genesis = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], vals)
    cfg = NodeConfig()
    if validators > 1:
        cfg = replace(cfg, p2p=replace(cfg.p2p, listen_port=30333))
    node = Node(cfg, genesis, MemoryStore(), ValidatorKey(vals[0].secret_key, vals[0].public_key))
    try:
        raw = sign_call(ALICE, NOTARY, call_data("anchor(bytes32)", b"\x22" * 32), 0)
        node.submit_raw_transaction(raw)
        pending = node.mempool.get_by_raw(raw)
        assert node.multi_validator is (validators > 1)
        assert (pending is not None and pending.raw == raw) if validators > 1 else pending is None
    finally:
        node.close()
