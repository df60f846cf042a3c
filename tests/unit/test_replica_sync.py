"""Block sync takes a block only when it is known final: f+1 validators hold it (the peer that served
it and f others), or the peer proves it by a 2-chain (a QC alone does not prove finality: a
certified block can be abandoned for a sibling). The decisions are the pure functions of
``consensus/sync.py`` that the replica and the simulator both call; here they run on real signed
blocks (chainkit chains, BLS QCs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from chainkit import Chain, account, make_genesis, validator

from chainshare import codec
from chainshare.consensus import epochs, sync
from chainshare.errors import ConsensusError, DecodeError
from chainshare.execution.contracts.membership import ValidatorSet, get_validator_set_at, get_validator_sets
from chainshare.ledger.finality import FinalityProof, decode_finality_proof
from chainshare.ledger.quorum import aggregate_qc, sign_vote
from chainshare.ledger.types import Block, QuorumCertificate

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


# -- epoch-change proofs (issue 13, item 3): walking from genesis to the set in force ---------------------

def epoch_change() -> tuple[Chain, epochs.EpochChangeProof, Block, QuorumCertificate]:
    """A chain whose genesis set [v1] is replaced by four validators from height A; the epoch-change
    proof of block A-1 as a validator of the leaving set stores it: the certified child (an empty
    suffix block at A, certified by [v1] in epoch 0) and the new member list. Also that child and the
    QC the NEW set would put on it (the wrong signers for this proof)."""
    from test_validator_sets import GENESIS as VS_GENESIS
    from test_validator_sets import NEW, V1, Gov, set_call

    chain = Chain(VS_GENESIS, V1, other_keys=NEW[1:])
    chain.produce([])
    activation = chain.chain.head_height + 4 + 3
    Gov(chain).decide(set_call(NEW, activation))
    while chain.chain.head_height < activation - 1:
        chain.produce([])
    last = chain.chain.get_head()
    child, qc_of_new = chain.certify_next()
    votes = {0: sign_vote(V1.secret_key, VS_GENESIS.chain_id, child.block.hash, child.block.height,
                          child.block.header.round, 0)}
    qc_of_old = aggregate_qc(child.block.hash, child.block.height, child.block.header.round, votes, 1)
    next_set = get_validator_set_at(chain.chain.state, activation)
    raw = epochs.encode_epoch_change_proof(
        last, codec.encode([[], child.block.encode(), qc_of_old.encode()]), next_set)
    return chain, epochs.decode_epoch_change_proof(raw), child.block, qc_of_new


def bls_of(chain: Chain) -> Callable[[ValidatorSet], Callable[[QuorumCertificate], bool]]:
    return lambda vs: epochs.get_bls_verify_qc(chain.genesis.chain_id, vs)


def genesis_set(chain: Chain) -> ValidatorSet:
    return get_validator_sets(chain.chain.state)[0]


def test_an_epoch_change_proof_walks_from_the_genesis_set_to_the_next() -> None:
    chain, change, _, _ = epoch_change()
    assert change.next_set.epoch == 1 and len(change.next_set.validators) == 4
    assert epochs.verify_epoch_changes(genesis_set(chain), [change], bls_of(chain)) == [change.next_set]
    assert epochs.verify_epoch_changes(genesis_set(chain), [], bls_of(chain)) == []


def test_forged_epoch_change_proofs_are_refused() -> None:
    chain, change, child, qc_of_new = epoch_change()
    cid, start = chain.genesis.chain_id, genesis_set(chain)
    nxt = change.next_set

    def refused(forged: epochs.EpochChangeProof, why: str) -> None:
        reason = epochs.verify_epoch_change(start, forged, epochs.get_bls_verify_qc(cid, start))
        assert reason is not None and why in reason, reason
        with pytest.raises(ConsensusError):
            epochs.verify_epoch_changes(start, [forged], bls_of(chain))

    # wrong signers: the 2-chain certified by the new set (or by any keys but the leaving set's)
    refused(dataclasses.replace(change, proof=FinalityProof((child,), qc_of_new)), "not signed by a quorum")
    # a set that does not match the hash the last block carries (one member dropped, one key swapped)
    refused(dataclasses.replace(change, next_set=ValidatorSet(1, nxt.activation_height, nxt.validators[:3])),
            "do not hash")
    swapped = (dict(nxt.validators[0], bls_public_key=nxt.validators[1]["bls_public_key"]),) + nxt.validators[1:]
    refused(dataclasses.replace(change, next_set=ValidatorSet(1, nxt.activation_height, swapped)), "do not hash")
    # a gap: epoch 2 proven on the genesis set; or the same change twice (epoch 1 again on epoch 1)
    refused(dataclasses.replace(change, next_set=ValidatorSet(2, nxt.activation_height, nxt.validators)),
            "epoch 1 comes next")
    with pytest.raises(ConsensusError, match="epoch 2 comes next"):
        epochs.verify_epoch_changes(start, [change, change], bls_of(chain))
    # an activation height that is not right after the proven block
    refused(dataclasses.replace(change, next_set=ValidatorSet(1, nxt.activation_height + 1, nxt.validators)),
            "not the last block")
    # a block that does not end the set, proven final by its own 2-chain, "naming" the same members next
    earlier, after = chain.chain.get_block(2), chain.chain.get_block(3)
    qc3 = chain.chain.get_qc(3)
    assert qc3 is not None
    same = dataclasses.replace(change, last=earlier, proof=FinalityProof((after,), qc3),
                               next_set=ValidatorSet(1, 3, start.validators))
    refused(same, "no proven change")
    # no 2-chain: the certified child skips a view (or is not a child of the last block)
    skipped, _ = chain.certify_next(round=change.last.header.round + 2)
    refused(dataclasses.replace(change, proof=FinalityProof((skipped.block,), change.proof.qc)), "no 2-chain")
    refused(dataclasses.replace(change, last=chain.chain.get_block(child.height - 2)), "not the last block")


def test_undecodable_epoch_change_proofs_are_refused_cleanly() -> None:
    _, change, _, _ = epoch_change()
    good = epochs.encode_epoch_change_proof(change.last, codec.encode(
        [[], change.proof.blocks[0].encode(), change.proof.qc.encode()]), change.next_set)
    fields = codec.decode(good)
    for bad in (b"", b"\xc1", codec.encode([1, 2, 3]), codec.encode(fields[:4] + [[]]),
                codec.encode(fields[:4] + [[["n", "a", b"x", b"k", b"p"]]]),
                codec.encode(fields[:4] + [[fields[4][0]] * 65]),
                codec.encode([b"not a block"] + fields[1:])):
        with pytest.raises(DecodeError):
            epochs.decode_epoch_change_proof(bad)


def test_admission_takes_validators_of_proven_sets_and_nodes_of_active_agencies_for_sync() -> None:
    """A fresh node (genesis state) admits the validators of a set known only from an epoch-change
    proof, any node of an agency active in its state (sync only) and its configured peers whatever
    their agency; a validator's name presented for another agency, and other nodes of unknown agencies,
    are refused."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from chainshare.crypto.ca import CertSubject
    from chainshare.replica import Replica

    chain, change, _, _ = epoch_change()
    fresh = Chain(chain.genesis, chain.key)  # genesis only
    cfg = SimpleNamespace(p2p=SimpleNamespace(peers=["v1@127.0.0.1:1", "boot7@127.0.0.1:2"]))
    replica = SimpleNamespace(chain=fresh.chain, _proven_sets=[], node=SimpleNamespace(cfg=cfg))
    is_allowed = Replica.make_is_allowed(replica)  # type: ignore[arg-type]

    def subject(node: str, agency: str) -> CertSubject:
        return CertSubject(agency=agency, node=node, account=None, not_after=datetime.now(UTC))

    v2 = change.next_set.validators[1]
    assert (v2["name"], v2["agency"]) == ("v2", "Agency B")
    assert is_allowed(subject("v1", "Agency A"))            # the genesis validator
    assert is_allowed(subject("observer9", "Agency B"))     # a node of an active agency: sync only
    assert is_allowed(subject("v2", "Agency B"))            # unknown name so far, active agency
    assert not is_allowed(subject("v1", "Agency B"))        # a validator's name for another agency
    assert not is_allowed(subject("node9", "Agency Z"))     # no such agency
    assert is_allowed(subject("boot7", "Agency Z"))         # a configured peer of an agency added later
    assert not is_allowed(subject("v1", "Agency Z"))        # ...but not under a validator's name
    replica._proven_sets = [change.next_set]
    assert not is_allowed(subject("v2", "Agency A"))        # v2 is Agency B's validator, proven
    assert is_allowed(subject("v2", "Agency B"))
