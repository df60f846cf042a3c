"""Block sync takes a block only when it is known final: f+1 validators hold it (the peer that served
it and f others), or the peer proves it by a 2-chain (a QC alone does not prove finality: a
certified block can be abandoned for a sibling). The decisions are the pure functions of
``consensus/sync.py`` that the replica and the simulator both call; here they run on real signed
blocks (chainkit chains, BLS QCs)."""

from __future__ import annotations

from chainkit import Chain, account, make_genesis, validator

from chainshare import codec
from chainshare.consensus import sync
from chainshare.errors import DecodeError
from chainshare.execution.contracts.membership import ValidatorSet, get_validator_set_at
from chainshare.ledger.finality import FinalityProof, decode_finality_proof
from chainshare.ledger.quorum import aggregate_qc, sign_vote
from chainshare.ledger.types import Block

VALS = [validator(f"v{i}", "Agency A") for i in range(1, 5)]
GENESIS = make_genesis([("Agency A", [account("alice").address])], VALS)


def make_batch() -> tuple[Chain, list[Block], list[bytes]]:
    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    blocks = [chain.produce([]).block for _ in range(3)]
    return chain, blocks, [b.hash for b in blocks]


def confirmed(peer_is_validator: bool, hashes: list[bytes], answers: list[object]) -> int:
    """What the replica's ``_count_confirmed`` computes from the others' ``cs.hashes`` answers (n = 4)."""
    return sync.count_confirmed(hashes, answers, sync.count_needed_holders(4, peer_is_validator))  # type: ignore[arg-type]


def test_a_block_confirmed_by_f_other_validators_is_taken() -> None:
    _, _, hashes = make_batch()
    assert sync.count_needed_holders(4, True) == 1 and sync.count_needed_holders(4, False) == 2
    assert confirmed(True, hashes, [hashes[:2], []]) == 2  # n = 4, f = 1: the peer and v2 hold the first two


def test_blocks_no_other_validator_holds_are_not_taken() -> None:
    _, _, hashes = make_batch()
    other = [bytes(32)] * 3  # the others hold different blocks at those heights
    assert confirmed(True, hashes, [other, hashes[:1]]) == 1  # only height 1 is confirmed (by v3)
    assert confirmed(True, hashes, [other, []]) == 0
    assert confirmed(True, hashes, ["garbage", 7]) == 0  # type: ignore[list-item]


def test_a_non_validator_peer_needs_f_plus_1_confirmations() -> None:
    _, _, hashes = make_batch()
    assert confirmed(False, hashes, [hashes, [bytes(32)] * 3]) == 0  # one confirmation, f + 1 = 2 needed
    assert confirmed(False, hashes, [hashes, hashes]) == 3


def proof_of(chain: Chain, child_height: int, tail: tuple[int, ...] = ()) -> bytes:
    """The finality proof a node stores: suffix blocks (heights ``tail``) and the certified child."""
    child = chain.chain.get_block(child_height)
    qc = chain.chain.get_qc(child_height)
    assert qc is not None
    return codec.encode([[chain.chain.get_block(h).encode() for h in tail], child.encode(), qc.encode()])


def verifier_of(chain: Chain, height: int) -> sync.BlsCrypto:
    vs = get_validator_set_at(chain.chain.state, height)
    return sync.get_set_verifier(GENESIS.chain_id, vs.epoch, tuple(v["bls_public_key"] for v in vs.validators))


def proven(chain: Chain, raw: object, served: list[Block]) -> bool:
    """The whole check the replica makes of a served proof: decoded, its shape over the batch, then its
    signatures by the set that certified the last block."""
    if not isinstance(raw, bytes):
        return False
    try:
        proof = decode_finality_proof(raw)
    except DecodeError:
        return False
    return (sync.is_proof_for_batch(proof, served)
            and sync.proof_signatures_hold(proof, verifier_of(chain, served[-1].height).verify_qc))


def test_a_batch_ending_in_a_block_proven_final_by_a_2_chain_is_taken_from_one_peer() -> None:
    chain, batch, _ = make_batch()   # blocks 1..3 of views 1..3
    chain.produce([])                # block 4, view 4: a QC on it proves block 3 final
    assert proven(chain, proof_of(chain, 4), batch)
    # a proof two blocks up, through a linked block carrying its parent's QC, proves it too
    chain.produce([])
    assert proven(chain, proof_of(chain, 5, tail=(4,)), batch)


def test_what_does_not_prove_finality_is_refused() -> None:
    chain, batch, _ = make_batch()
    chain.produce([], round=chain.chain.get_head().header.round + 2)   # block 4 skips a view: no 2-chain
    assert not proven(chain, proof_of(chain, 4), batch)
    assert not proven(chain, proof_of(chain, 3), batch)  # not a child of block 3
    assert not proven(chain, b"garbage", batch)
    assert not proven(chain, None, batch)
    other = Chain(GENESIS, VALS[0], other_keys=VALS[1:])   # another chain: its blocks 3 and 4 are not ours
    for _ in range(4):
        other.produce([], timestamp_ms=other.chain.get_head().header.timestamp_ms + 1001)
    assert not proven(chain, proof_of(other, 4), batch)


def test_a_proof_does_not_cover_batch_blocks_that_do_not_link_to_the_proven_block() -> None:
    """A byzantine peer serves a certified block of another branch, then a block it can prove final:
    the proof says nothing about the first, which must not be taken (it would be stored as final)."""
    chain, batch, _ = make_batch()   # blocks 1..3 of views 1..3
    chain.produce([])                # block 4 proves block 3 final
    other = Chain(GENESIS, VALS[0], other_keys=VALS[1:])   # a certified sibling of block 1
    sibling = other.produce([], timestamp_ms=chain.chain.get_block(1).header.timestamp_ms + 7).block
    assert sibling.hash != chain.chain.get_block(1).hash
    assert not proven(chain, proof_of(chain, 4), [sibling, batch[-1]])
    assert not proven(chain, proof_of(chain, 4), [batch[0], batch[-1]])  # blocks 1 and 3: no block 2 links them
    assert proven(chain, proof_of(chain, 4), batch[1:])  # 2, 3 link: fine


def test_a_replaced_pending_set_is_verified_with_its_own_keys() -> None:
    """A scheduled set can be replaced by another of the same epoch number: the verifier used once for
    the first (e.g. to check a finality proof past its activation) must not stand in for the second."""
    chain, _, _ = make_batch()
    genesis_set = get_validator_set_at(chain.chain.state, 1)
    first = ValidatorSet(1, 100, genesis_set.validators[:3])
    replacement = ValidatorSet(1, 100, genesis_set.validators[1:])
    keys = {v.public_key: v for v in VALS}
    block_hash = bytes(range(32))
    votes = {i: sign_vote(keys[v["bls_public_key"]].secret_key, GENESIS.chain_id, block_hash, 150, 7, 1)
             for i, v in enumerate(replacement.validators)}
    qc = aggregate_qc(block_hash, 150, 7, votes, len(replacement.validators))

    def verifier(vs: ValidatorSet) -> sync.BlsCrypto:
        return sync.get_set_verifier(GENESIS.chain_id, vs.epoch, tuple(v["bls_public_key"] for v in vs.validators))

    assert not verifier(first).verify_qc(qc)
    assert verifier(replacement).verify_qc(qc)


def test_a_proven_batch_is_taken_whole_and_otherwise_only_the_confirmed_prefix() -> None:
    """With a proof that holds (shape and signatures) all of a fully checked batch is taken; with a
    forged one (signed by keys outside the set) only the blocks f+1 validators hold."""
    source, batch, _ = make_batch()
    source.produce([])
    good = decode_finality_proof(proof_of(source, 4))
    verify = verifier_of(source, 3).verify_qc
    assert sync.proof_signatures_hold(good, verify)
    assert sync.count_blocks_to_take(3, 3, 0, True) == 3
    outsider = validator("outsider", "Agency A")
    child = source.chain.get_block(4)
    forged_qc = aggregate_qc(child.hash, 4, child.header.round,
                             {i: sign_vote(outsider.secret_key, GENESIS.chain_id, child.hash, 4, child.header.round)
                              for i in range(3)}, 4)
    forged = FinalityProof(good.blocks, forged_qc)
    assert sync.is_proof_for_batch(forged, batch) and not sync.proof_signatures_hold(forged, verify)
    assert sync.count_blocks_to_take(3, 3, 1, False) == 1
    assert sync.count_blocks_to_take(3, 3, 2, False) == 2
    # a block of the batch failed its QC or re-execution: the proof of the last one covers nothing
    assert sync.count_blocks_to_take(2, 3, 0, True) == 0
    assert sync.count_blocks_to_take(2, 3, 3, False) == 2


def test_a_block_a_little_ahead_of_a_slow_clock_is_validated_later_not_refused_for_good() -> None:
    """Item 5 of issue 13: before, a block stamped beyond the drift was marked invalid and never
    validated again (the core refetches a certified invalid block, but the same body is not
    re-validated), so a node with a slow clock lost its vote until a block sync."""
    from chainshare.replica import MAX_FUTURE_DRIFT_MS, MAX_FUTURE_WAIT_MS, compute_timestamp_wait_ms

    now = 1_700_000_000_000
    assert compute_timestamp_wait_ms(now, now) == 0
    assert compute_timestamp_wait_ms(now + MAX_FUTURE_DRIFT_MS, now) == 0          # within the drift: now
    assert compute_timestamp_wait_ms(now + MAX_FUTURE_DRIFT_MS + 5_000, now) == 5_001   # once within it
    assert compute_timestamp_wait_ms(now + MAX_FUTURE_DRIFT_MS + MAX_FUTURE_WAIT_MS, now) > 0
    # absurdly far ahead: validated (and refused) at once, no timer held for it
    assert compute_timestamp_wait_ms(now + MAX_FUTURE_DRIFT_MS + MAX_FUTURE_WAIT_MS + 1, now) == 0
