"""Block sync takes a block only when it is known final: f+1 validators hold it (the peer that served
it and f others), or the peer proves it by a 2-chain (a QC alone does not prove finality: a
certified block can be abandoned for a sibling)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from chainkit import Chain, account, make_genesis, validator

from chainshare import codec
from chainshare.execution.contracts import build_runtime
from chainshare.execution.contracts.membership import ValidatorSet, get_validator_set_at
from chainshare.ledger.quorum import aggregate_qc, sign_vote
from chainshare.ledger.types import Block
from chainshare.replica import REQ_HASHES, Replica

VALS = [validator(f"v{i}", "Agency A") for i in range(1, 5)]
GENESIS = make_genesis([("Agency A", [account("alice").address])], VALS)


class FakeTransport:
    """Peers answering ``cs.hashes`` from a table of {peer: [hash, ...]} (or failing)."""

    def __init__(self, answers: dict[str, Any], proofs: dict[str, Any] | None = None) -> None:
        self.answers = answers
        self.proofs = proofs or {}
        self.asked: list[tuple[str, Any]] = []

    def connected_peers(self) -> list[str]:
        return list(self.answers)

    async def request(self, peer: str, msg_type: str, body: Any, timeout: float) -> Any:
        self.asked.append((peer, body))
        answer = self.answers[peer] if msg_type == REQ_HASHES else self.proofs[peer]
        if isinstance(answer, Exception):
            raise answer
        return answer


def replica_with(answers: dict[str, Any], chain: Chain, proofs: dict[str, Any] | None = None) -> Replica:
    """A Replica with just what the sync checks read: its chain, the validator set in force and a transport."""
    r = Replica.__new__(Replica)
    r.chain = chain.chain
    r.node = SimpleNamespace(chain_id=GENESIS.chain_id, stats={"blocks": 0, "txs": 0})
    r._verifiers = {}
    r.vset = get_validator_set_at(chain.chain.state, 1)
    r.index_of = {v["name"]: i for i, v in enumerate(r.vset.validators)}
    r.transport = FakeTransport(answers, proofs)
    return r


def make_batch() -> tuple[Chain, list[list[bytes]], list[bytes]]:
    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    blocks = [chain.produce([]).block for _ in range(3)]
    batch = [[b.encode(), chain.chain.get_qc(b.height).encode()] for b in blocks]  # type: ignore[union-attr]
    return chain, batch, [b.hash for b in blocks]


def count(r: Replica, peer: str, batch: list[list[bytes]]) -> int:
    return asyncio.run(r._count_confirmed(peer, 1, batch))


def test_a_block_confirmed_by_f_other_validators_is_taken() -> None:
    chain, batch, hashes = make_batch()
    r = replica_with({"v1": hashes, "v2": hashes[:2], "v3": RuntimeError("down")}, chain)
    assert count(r, "v1", batch) == 2  # n = 4, f = 1: v1 served three, v2 confirms the first two
    assert ("v2", [1, 3]) in r.transport.asked  # type: ignore[attr-defined]


def test_blocks_no_other_validator_holds_are_not_taken() -> None:
    chain, batch, hashes = make_batch()
    other = [bytes(32)] * 3  # the others hold different blocks at those heights
    r = replica_with({"v1": hashes, "v2": other, "v3": hashes[:1]}, chain)
    assert count(r, "v1", batch) == 1  # only height 1 is confirmed (by v3)
    r = replica_with({"v1": hashes, "v2": other, "v3": []}, chain)
    assert count(r, "v1", batch) == 0


def test_a_non_validator_peer_needs_f_plus_1_confirmations() -> None:
    chain, batch, hashes = make_batch()
    r = replica_with({"observer": hashes, "v2": hashes, "v3": [bytes(32)] * 3}, chain)
    assert count(r, "observer", batch) == 0  # one confirmation, f + 1 = 2 needed
    r = replica_with({"observer": hashes, "v2": hashes, "v3": hashes}, chain)
    assert count(r, "observer", batch) == 3


def proof_of(chain: Chain, child_height: int, tail: tuple[int, ...] = ()) -> bytes:
    """The finality proof a node stores: suffix blocks (heights ``tail``) and the certified child."""
    child = chain.chain.get_block(child_height)
    qc = chain.chain.get_qc(child_height)
    assert qc is not None
    return codec.encode([[chain.chain.get_block(h).encode() for h in tail], child.encode(), qc.encode()])


def proven(r: Replica, peer: str, batch: list[list[bytes]]) -> bool:
    """The whole check: the proof's shape over the batch, then its signatures by the set of the last block."""
    served = asyncio.run(r._fetch_finality_proof(peer, batch))
    last = Block.decode(batch[-1][0])
    return served is not None and r._finality_signatures_hold(served, get_validator_set_at(r.chain.state,
                                                                                            last.height))


def test_a_batch_ending_in_a_block_proven_final_by_a_2_chain_is_taken_from_one_peer() -> None:
    chain, batch, _ = make_batch()   # blocks 1..3 of views 1..3
    chain.produce([])                # block 4, view 4: a QC on it proves block 3 final
    assert proven(replica_with({}, chain, {"v1": proof_of(chain, 4)}), "v1", batch)
    # a proof two blocks up, through a linked block carrying its parent's QC, proves it too
    chain.produce([])
    assert proven(replica_with({}, chain, {"v1": proof_of(chain, 5, tail=(4,))}), "v1", batch)


def test_what_does_not_prove_finality_is_refused() -> None:
    chain, batch, _ = make_batch()
    chain.produce([], round=chain.chain.get_head().header.round + 2)   # block 4 skips a view: no 2-chain
    assert not proven(replica_with({}, chain, {"v1": proof_of(chain, 4)}), "v1", batch)
    assert not proven(replica_with({}, chain, {"v1": proof_of(chain, 3)}), "v1", batch)  # not a child of block 3
    assert not proven(replica_with({}, chain, {"v1": b"garbage"}), "v1", batch)
    assert not proven(replica_with({}, chain, {"v1": None}), "v1", batch)
    other = Chain(GENESIS, VALS[0], other_keys=VALS[1:])   # another chain: its blocks 3 and 4 are not ours
    for _ in range(4):
        other.produce([], timestamp_ms=other.chain.get_head().header.timestamp_ms + 1001)
    assert not proven(replica_with({}, chain, {"v1": proof_of(other, 4)}), "v1", batch)


def test_a_proof_does_not_cover_batch_blocks_that_do_not_link_to_the_proven_block() -> None:
    """A byzantine peer serves a certified block of another branch, then a block it can prove final:
    the proof says nothing about the first, which must not be taken (it would be stored as final)."""
    chain, batch, _ = make_batch()   # blocks 1..3 of views 1..3
    chain.produce([])                # block 4 proves block 3 final
    other = Chain(GENESIS, VALS[0], other_keys=VALS[1:])   # a certified sibling of block 1
    sibling = other.produce([], timestamp_ms=chain.chain.get_block(1).header.timestamp_ms + 7).block
    assert sibling.hash != chain.chain.get_block(1).hash
    forged = [[sibling.encode(), other.chain.get_qc(1).encode()], batch[-1]]  # type: ignore[union-attr]
    assert not proven(replica_with({}, chain, {"v1": proof_of(chain, 4)}), "v1", forged)
    gap = [batch[0], batch[-1]]      # blocks 1 and 3: no block 2 links them
    assert not proven(replica_with({}, chain, {"v1": proof_of(chain, 4)}), "v1", gap)
    assert proven(replica_with({}, chain, {"v1": proof_of(chain, 4)}), "v1", batch[1:])  # 2, 3 link: fine


def test_a_replaced_pending_set_is_verified_with_its_own_keys() -> None:
    """A scheduled set can be replaced by another of the same epoch number: the verifier used once for
    the first (e.g. to check a finality proof past its activation) must not stand in for the second."""
    chain, _, _ = make_batch()
    r = replica_with({}, chain)
    genesis_set = get_validator_set_at(chain.chain.state, 1)
    first = ValidatorSet(1, 100, genesis_set.validators[:3])
    replacement = ValidatorSet(1, 100, genesis_set.validators[1:])
    keys = {v.public_key: v for v in VALS}
    block_hash = bytes(range(32))
    votes = {i: sign_vote(keys[v["bls_public_key"]].secret_key, GENESIS.chain_id, block_hash, 150, 7, 1)
             for i, v in enumerate(replacement.validators)}
    qc = aggregate_qc(block_hash, 150, 7, votes, len(replacement.validators))
    assert not r._verifier(first).verify_qc(qc)
    assert r._verifier(replacement).verify_qc(qc)


def test_apply_synced_commits_a_proven_batch_whole_and_otherwise_only_the_confirmed_prefix() -> None:
    """The batch is executed before anything is committed: with a proof that holds all of it is
    committed, with a forged one (signed by keys outside the set) only the blocks f+1 validators hold."""
    source, batch, hashes = make_batch()
    source.produce([])
    good = proof_of(source, 4)

    def fresh(proof: bytes) -> tuple[Replica, Any]:
        """A replica at genesis, and ``proof`` as it takes it from a peer (shape checked)."""
        r = replica_with({}, Chain(GENESIS, VALS[0], other_keys=VALS[1:]), {"v1": proof})
        r.node = SimpleNamespace(chain_id=GENESIS.chain_id, runtime=build_runtime(), stats={"blocks": 0, "txs": 0})
        served = asyncio.run(r._fetch_finality_proof("v1", batch))
        assert served is not None
        return r, served

    r, served = fresh(good)
    assert r._apply_synced(batch, 0, served) == (3, True)
    assert [r.chain.get_block(h).hash for h in (1, 2, 3)] == hashes
    outsider = validator("outsider", "Agency A")
    child = source.chain.get_block(4)
    forged_qc = aggregate_qc(child.hash, 4, child.header.round,
                             {i: sign_vote(outsider.secret_key, GENESIS.chain_id, child.hash, 4, child.header.round)
                              for i in range(3)}, 4)
    forged = codec.encode([[], child.encode(), forged_qc.encode()])
    r, served = fresh(forged)
    assert r._apply_synced(batch, 1, served) == (1, False)
    assert r.chain.head_height == 1
    r, _ = fresh(good)
    assert r._apply_synced(batch, 2, None) == (2, False)
