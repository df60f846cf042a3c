"""Quorum certificates: quorum sizes, leader rotation, BLS aggregate verification, and agreement of
blspy (the node's library) with py_ecc (the Ethereum reference implementation)."""

from __future__ import annotations

from typing import Any

import pytest
from chainkit import Validator, validator
from py_ecc.bls import G2ProofOfPossession as PyEccBls

from chainshare import codec
from chainshare.crypto import bls
from chainshare.errors import ConsensusError, CryptoError
from chainshare.ledger.quorum import (
    aggregate_qc,
    compute_proposer_index,
    compute_quorum,
    proposal_message,
    sign_proposal,
    sign_vote,
    verify_proposal_signature,
    verify_qc,
    vote_message,
)
from chainshare.ledger.types import QuorumCertificate, make_bitmap

CHAIN_ID = 4242
BLOCK = b"\xab" * 32
HEIGHT, ROUND = 12, 3
VALIDATORS: list[Validator] = [validator(f"qc-v{i}", "Agency A") for i in range(7)]


def records(vals: list[Validator]) -> list[dict[str, Any]]:
    return [{"bls_public_key": v.public_key} for v in vals]


def make_qc(signers: list[int], n: int, *, block: bytes = BLOCK, height: int = HEIGHT, round: int = ROUND,
            chain_id: int = CHAIN_ID) -> QuorumCertificate:
    votes = {i: sign_vote(VALIDATORS[i].secret_key, chain_id, block, height, round) for i in signers}
    return aggregate_qc(block, height, round, votes, n)


# -- sizes and rotation -----------------------------------------------------------------------------

@pytest.mark.parametrize("n,q", [(1, 1), (4, 3), (7, 5), (10, 7), (13, 9)])
def test_quorum_is_2f_plus_1_of_3f_plus_1(n: int, q: int) -> None:
    assert compute_quorum(n) == q


@pytest.mark.parametrize("n", [2, 3, 5, 6, 8, 9])
def test_any_two_quorums_share_an_honest_validator(n: int) -> None:
    f = (n - 1) // 3
    q = compute_quorum(n)
    assert 2 * q - n >= f + 1, f"quorums of {q} out of {n} overlap in {2 * q - n} < f+1 = {f + 1}"


def test_quorum_intersection_holds_where_n_is_3f_plus_1() -> None:
    for f in range(0, 10):
        n = 3 * f + 1
        assert 2 * compute_quorum(n) - n >= f + 1


@pytest.mark.parametrize("n", [1, 4, 7])
def test_leader_of_a_view_rotates_over_the_validators(n: int) -> None:
    # Per docs/consensus.md: leader(view) = validators[view mod n], the header round being the view.
    assert [compute_proposer_index(v, n) for v in range(2 * n + 1)] == [v % n for v in range(2 * n + 1)]
    assert sorted({compute_proposer_index(v, n) for v in range(n)}) == list(range(n))


# -- verification -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,signers", [(1, [0]), (4, [0, 1, 2]), (4, [1, 2, 3]), (4, [0, 1, 2, 3]),
                                       (7, [0, 2, 3, 5, 6]), (7, list(range(7)))])
def test_qc_with_a_quorum_of_valid_votes_verifies(n: int, signers: list[int]) -> None:
    qc = make_qc(signers, n)
    verify_qc(qc, records(VALIDATORS[:n]), CHAIN_ID)
    assert qc.signer_indices() == signers
    assert len(qc.signers) == (n + 7) // 8 and len(qc.signature) == 96


@pytest.mark.parametrize("n,signers", [(4, [0, 1]), (4, [3]), (7, [0, 1, 2, 3])])
def test_qc_with_too_few_signers_is_refused(n: int, signers: list[int]) -> None:
    with pytest.raises(ConsensusError, match=f"quorum is {compute_quorum(n)} of {n}"):
        verify_qc(make_qc(signers, n), records(VALIDATORS[:n]), CHAIN_ID)


@pytest.mark.parametrize("field,value", [("block_hash", b"\xcd" * 32), ("height", HEIGHT + 1), ("round", ROUND + 1)])
def test_qc_for_another_message_is_refused(field: str, value: Any) -> None:
    qc = make_qc([0, 1, 2], 4)
    forged = QuorumCertificate(**{**qc.__dict__, field: value})
    with pytest.raises(ConsensusError, match="invalid aggregate signature"):
        verify_qc(forged, records(VALIDATORS[:4]), CHAIN_ID)


def test_qc_of_another_chain_is_refused() -> None:
    with pytest.raises(ConsensusError, match="invalid aggregate signature"):
        verify_qc(make_qc([0, 1, 2], 4, chain_id=CHAIN_ID + 1), records(VALIDATORS[:4]), CHAIN_ID)


@pytest.mark.parametrize("bitmap", [b"", b"\x07\x00"], ids=["short", "long"])
def test_qc_bitmap_of_the_wrong_length_is_refused(bitmap: bytes) -> None:
    qc = make_qc([0, 1, 2], 4)
    with pytest.raises(ConsensusError, match="bitmap"):
        verify_qc(QuorumCertificate(qc.block_hash, qc.height, qc.round, bitmap, qc.signature),
                  records(VALIDATORS[:4]), CHAIN_ID)


def test_qc_naming_a_signer_outside_the_validator_set_is_refused() -> None:
    qc = make_qc([0, 1, 2, 4], 5)  # signed as if 5 validators, presented to a set of 4 (1-byte bitmap)
    assert len(qc.signers) == 1
    with pytest.raises(ConsensusError, match="outside the validator set"):
        verify_qc(qc, records(VALIDATORS[:4]), CHAIN_ID)


def test_qc_whose_bitmap_misstates_the_signers_is_refused() -> None:
    qc = make_qc([0, 1, 3], 4)
    lying = QuorumCertificate(qc.block_hash, qc.height, qc.round, make_bitmap([0, 1, 2], 4), qc.signature)
    with pytest.raises(ConsensusError, match="invalid aggregate signature"):
        verify_qc(lying, records(VALIDATORS[:4]), CHAIN_ID)


def test_qc_checked_against_another_validator_set_is_refused() -> None:
    with pytest.raises(ConsensusError):
        verify_qc(make_qc([0, 1, 2], 4), records(VALIDATORS[3:7]), CHAIN_ID)


def test_qc_with_a_malformed_signature_is_refused() -> None:
    qc = make_qc([0, 1, 2], 4)
    broken = QuorumCertificate(qc.block_hash, qc.height, qc.round, qc.signers, b"\x00" * 96)
    with pytest.raises(ConsensusError):
        verify_qc(broken, records(VALIDATORS[:4]), CHAIN_ID)


def test_qc_encoding_round_trips() -> None:
    qc = make_qc([0, 2, 3], 4)
    assert QuorumCertificate.from_list(codec.decode(qc.encode())) == qc
    assert qc.hash != make_qc([0, 1, 2], 4).hash


def test_aggregating_no_votes_is_refused() -> None:
    with pytest.raises(CryptoError):
        aggregate_qc(BLOCK, HEIGHT, ROUND, {}, 4)


def test_proposal_and_vote_signatures_are_domain_separated() -> None:
    v = VALIDATORS[0]
    proposal = sign_proposal(v.secret_key, CHAIN_ID, BLOCK)
    assert verify_proposal_signature(v.public_key, CHAIN_ID, BLOCK, proposal)
    assert not verify_proposal_signature(v.public_key, CHAIN_ID + 1, BLOCK, proposal)
    assert not verify_proposal_signature(v.public_key, CHAIN_ID, b"\x00" * 32, proposal)
    assert not verify_proposal_signature(VALIDATORS[1].public_key, CHAIN_ID, BLOCK, proposal)
    vote = sign_vote(v.secret_key, CHAIN_ID, BLOCK, HEIGHT, ROUND)
    assert not verify_proposal_signature(v.public_key, CHAIN_ID, BLOCK, vote)
    assert proposal_message(CHAIN_ID, BLOCK) != vote_message(CHAIN_ID, BLOCK, HEIGHT, ROUND)


def test_malformed_bls_inputs_verify_as_false() -> None:
    v = VALIDATORS[0]
    sig = bls.sign(v.secret_key, b"m")
    assert bls.verify(v.public_key, b"m", sig)
    assert not bls.verify(v.public_key[:-1], b"m", sig)
    assert not bls.verify(v.public_key, b"m", sig[:-1])
    assert not bls.verify(b"\x00" * 48, b"m", sig)
    assert not bls.verify_aggregate_same_message([], b"m", sig)
    assert bls.verify_possession(v.public_key, v.pop)
    assert not bls.verify_possession(VALIDATORS[1].public_key, v.pop)


# -- py_ecc agrees with blspy -------------------------------------------------------------------------

def _sk_int(v: Validator) -> int:
    return int.from_bytes(v.secret_key, "big")


def test_py_ecc_derives_the_same_public_keys() -> None:
    for v in VALIDATORS[:4]:
        assert bytes(PyEccBls.SkToPk(_sk_int(v))) == v.public_key


def test_py_ecc_verifies_a_blspy_vote_signature() -> None:
    v = VALIDATORS[0]
    msg = vote_message(CHAIN_ID, BLOCK, HEIGHT, ROUND)
    assert PyEccBls.Verify(v.public_key, msg, sign_vote(v.secret_key, CHAIN_ID, BLOCK, HEIGHT, ROUND))


def test_py_ecc_rejects_a_blspy_signature_under_another_key() -> None:
    msg = vote_message(CHAIN_ID, BLOCK, HEIGHT, ROUND)
    assert not PyEccBls.Verify(VALIDATORS[1].public_key, msg, bls.sign(VALIDATORS[0].secret_key, msg))


def test_py_ecc_verifies_a_blspy_quorum_certificate() -> None:
    qc = make_qc([0, 1, 3], 4)
    pks = [VALIDATORS[i].public_key for i in qc.signer_indices()]
    assert PyEccBls.FastAggregateVerify(pks, vote_message(CHAIN_ID, qc.block_hash, qc.height, qc.round),
                                        qc.signature)


def test_blspy_verifies_py_ecc_signatures_and_aggregates() -> None:
    msg = vote_message(CHAIN_ID, BLOCK, HEIGHT, ROUND)
    votes = {i: bytes(PyEccBls.Sign(_sk_int(VALIDATORS[i]), msg)) for i in (0, 2, 3)}
    assert votes[0] == sign_vote(VALIDATORS[0].secret_key, CHAIN_ID, BLOCK, HEIGHT, ROUND)  # deterministic
    assert bls.verify(VALIDATORS[2].public_key, msg, votes[2])
    py_ecc_aggregate = bytes(PyEccBls.Aggregate([votes[0], votes[2], votes[3]]))
    qc = QuorumCertificate(BLOCK, HEIGHT, ROUND, make_bitmap([0, 2, 3], 4), py_ecc_aggregate)
    verify_qc(qc, records(VALIDATORS[:4]), CHAIN_ID)
    assert aggregate_qc(BLOCK, HEIGHT, ROUND, votes, 4) == qc


def test_py_ecc_accepts_blspy_proofs_of_possession() -> None:
    v = VALIDATORS[0]
    assert bytes(PyEccBls.PopProve(_sk_int(v))) == v.pop
    assert PyEccBls.PopVerify(v.public_key, v.pop)
