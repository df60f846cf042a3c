"""The Evidence contract: an equivocation the consensus core detects (its ``Evidence.to_report``) is
verified against the validator set of its epoch and recorded once, as an event an auditor reads;
anything that proves nothing is refused with its reason."""

from __future__ import annotations

import dataclasses
import os

import eth_abi
import pytest
from chainkit import Chain, account, call_data, make_genesis, revert_reason, sign_call, validator

from chainshare.consensus.evidence import DOUBLE_PROPOSAL, DOUBLE_VOTE, Evidence
from chainshare.execution.block import build_block
from chainshare.execution.contracts import EVIDENCE
from chainshare.execution.contracts.evidence import Evidence as EvidenceContract
from chainshare.execution.contracts.evidence import encode_report
from chainshare.execution.runtime import get_nonce
from chainshare.ledger.quorum import Vote, compute_proposer_index, sign_proposal, sign_vote
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS

ALICE = account("alice")
VALS = [validator(f"v{i}", "Agency A") for i in range(1, 5)]
GENESIS = make_genesis([("Agency A", [ALICE.address])], VALS)
TOPIC = EvidenceContract.E_RECORDED.topic


def vote(signer: int, block_hash: bytes, view: int = 7, height: int = 3, *, voter: int | None = None,
         epoch: int = 0) -> Vote:
    sig = sign_vote(VALS[signer].secret_key, GENESIS.chain_id, block_hash, height, view, epoch)
    return Vote(block_hash, height, view, signer if voter is None else voter, sig)


def report(chain: Chain, data: bytes) -> tuple[int, bytes, list[object]]:
    raw = sign_call(ALICE, EVIDENCE, call_data("report(bytes)", data), get_nonce(chain.chain.state, ALICE.address))
    r = chain.produce([raw]).receipts[0]
    return r.status, r.output, list(r.logs)


def double_vote(voter: int = 1) -> Evidence:
    return Evidence(DOUBLE_VOTE, vote(voter, os.urandom(32)), vote(voter, os.urandom(32)))


def test_a_double_vote_from_the_core_is_recorded_once_as_an_event() -> None:
    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    ev = double_vote(voter=2)
    status, out, logs = report(chain, ev.to_report(0))
    assert status == STATUS_SUCCESS and int.from_bytes(out, "big") == 1
    (log,) = logs
    assert log.address == EVIDENCE and log.topics[0] == TOPIC  # type: ignore[attr-defined]
    assert int.from_bytes(log.topics[1], "big") == 0 and int.from_bytes(log.topics[2], "big") == 7  # type: ignore[attr-defined]
    name, agency, kind, _, reporter = eth_abi.decode(["string", "string", "string", "bytes32", "address"],
                                                     log.data)  # type: ignore[attr-defined]
    assert (name, agency, kind, reporter.lower()) == ("v3", "Agency A", "double-vote", "0x" + ALICE.address.hex())
    # The same equivocation again (even as other bytes: the two votes swapped) is refused.
    swapped = Evidence(DOUBLE_VOTE, ev.second, ev.first)
    status, out, _ = report(chain, swapped.to_report(0))
    assert status == STATUS_FAILURE and "double-vote of v3 in view 7 is already recorded" in revert_reason(out)


def test_a_double_proposal_is_recorded_against_the_leader_of_the_view() -> None:
    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    chain.produce([])
    head = chain.chain.get_head()
    view = head.header.round + 5
    leader = compute_proposer_index(view, 4)
    blocks = []
    for ts in (head.header.timestamp_ms + 1, head.header.timestamp_ms + 2):
        built = build_block(chain.runtime, chain.chain.state, head.header, chain.accumulator, [],
                            chain_id=GENESIS.chain_id, round=view, timestamp_ms=ts,
                            proposer=GENESIS.validators[leader].address, justify=chain.chain.get_qc(head.height),
                            on_invalid=None)
        blocks.append(dataclasses.replace(built.block, signature=sign_proposal(VALS[leader].secret_key,
                                                                               GENESIS.chain_id, built.block.hash)))
    status, _, logs = report(chain, Evidence(DOUBLE_PROPOSAL, blocks[0], blocks[1]).to_report(0))
    assert status == STATUS_SUCCESS
    name, _, kind, _, _ = eth_abi.decode(["string", "string", "string", "bytes32", "address"], logs[0].data)  # type: ignore[attr-defined]
    assert (name, kind) == (VALS[leader].name, "double-proposal")


def _forged_proposals() -> bytes:
    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    one = chain.produce([]).block
    two = chain.produce([]).block
    return encode_report(DOUBLE_PROPOSAL, 0, [one.header.to_list(), one.signature], [two.header.to_list(), two.signature])


@pytest.mark.parametrize("case, reason", [
    ("same block", "the two votes are for the same block: no equivocation"),
    ("two voters", "the two votes are not by one validator in one view"),
    ("two views", "the two votes are not by one validator in one view"),
    ("forged", "a vote signature does not verify"),
    ("other epoch", "a vote signature does not verify"),
    ("unknown epoch", "no validator set 3 on this chain"),
    ("not a validator", "validator set 0 has no validator 9"),
    ("garbage", "malformed evidence"),
    ("unknown kind", "unknown evidence kind 'double-dip'"),
    ("proposals of two views", "the two proposals are not for one view"),
])
def test_evidence_that_proves_nothing_is_refused_with_its_reason(case: str, reason: str) -> None:
    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    h1, h2 = os.urandom(32), os.urandom(32)
    a = vote(1, h1)
    data = {
        "same block": lambda: encode_report(DOUBLE_VOTE, 0, a.to_list(), vote(1, h1).to_list()),
        "two voters": lambda: encode_report(DOUBLE_VOTE, 0, a.to_list(), vote(2, h2).to_list()),
        "two views": lambda: encode_report(DOUBLE_VOTE, 0, a.to_list(), vote(1, h2, view=8).to_list()),
        "forged": lambda: encode_report(DOUBLE_VOTE, 0, a.to_list(), vote(2, h2, voter=1).to_list()),
        "other epoch": lambda: encode_report(DOUBLE_VOTE, 0, a.to_list(), vote(1, h2, epoch=1).to_list()),
        "unknown epoch": lambda: encode_report(DOUBLE_VOTE, 3, a.to_list(), vote(1, h2).to_list()),
        "not a validator": lambda: encode_report(DOUBLE_VOTE, 0, [h1, 3, 7, 9, a.signature],
                                                 [h2, 3, 7, 9, a.signature]),
        "garbage": lambda: b"\xff\x00garbage",
        "unknown kind": lambda: encode_report("double-dip", 0, a.to_list(), a.to_list()),
        "proposals of two views": _forged_proposals,
    }[case]()
    status, out, logs = report(chain, data)
    assert status == STATUS_FAILURE and reason in revert_reason(out) and logs == []


def test_a_double_timeout_from_the_core_is_recorded_and_one_that_proves_nothing_is_refused() -> None:
    from chainshare.consensus.evidence import DOUBLE_TIMEOUT
    from chainshare.consensus.messages import Timeout
    from chainshare.crypto import bls
    from chainshare.ledger.quorum import timeout_message
    from chainshare.ledger.types import QuorumCertificate

    def timeout(signer: int, high_qc_view: int, view: int = 9, voter: int | None = None) -> Timeout:
        sig = bls.sign(VALS[signer].secret_key, timeout_message(GENESIS.chain_id, view, high_qc_view))
        high_qc = QuorumCertificate(bytes(32), 2, high_qc_view, b"\x07", bytes(96))   # only its view is signed
        return Timeout(view, signer if voter is None else voter, high_qc, None, sig)

    chain = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
    ev = Evidence(DOUBLE_TIMEOUT, timeout(1, 3), timeout(1, 5))
    status, out, logs = report(chain, ev.to_report(0))
    assert status == STATUS_SUCCESS, revert_reason(out)
    (log,) = logs
    name, _, kind, _, _ = eth_abi.decode(["string", "string", "string", "bytes32", "address"], log.data)  # type: ignore[attr-defined]
    assert (name, kind) == ("v2", "double-timeout") and int.from_bytes(log.topics[2], "big") == 9  # type: ignore[attr-defined]
    refused = {
        "same high-QC view": Evidence(DOUBLE_TIMEOUT, timeout(2, 3), timeout(2, 3)),
        "two voters": Evidence(DOUBLE_TIMEOUT, timeout(2, 3), timeout(3, 4)),
        "forged": Evidence(DOUBLE_TIMEOUT, timeout(2, 3), timeout(3, 4, voter=2)),
    }
    reasons = {}
    for name, bad in refused.items():
        status, out, _ = report(chain, bad.to_report(0))
        assert status == STATUS_FAILURE
        reasons[name] = revert_reason(out)
    assert "same high-QC view" in reasons["same high-QC view"]
    assert "not by one validator" in reasons["two voters"]
    assert "does not verify" in reasons["forged"]
