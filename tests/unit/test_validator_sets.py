"""Validator-set changes: only a Governance decision schedules the next set, for a later height; the
current set certifies every block before it, the new set every block from it on (signatures carry
the set's epoch), and `chain verify` checks every QC offline from genesis plus the recorded changes."""

from __future__ import annotations

import dataclasses
from typing import Any

import eth_abi
import pytest
from chainkit import (
    GOVERNANCE,
    MEMBERSHIP,
    Chain,
    account,
    call_data,
    make_genesis,
    revert_reason,
    sign_call,
    validator,
)

from chainshare.errors import ConsensusError
from chainshare.execution.contracts.membership import (
    compute_validator_set_hash,
    get_validator_set_at,
    get_validator_sets,
)
from chainshare.execution.runtime import BlockEnv, get_nonce
from chainshare.ledger.chain import P_BLOCK, P_QC, ChainStore
from chainshare.ledger.quorum import aggregate_qc, sign_proposal, sign_vote
from chainshare.ledger.state import StateView
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Block
from chainshare.verify import StoreSource, verify_chain

ALICE, BOB = account("alice"), account("bob")
V1 = validator("v1", "Agency A")
NEW = [validator("v1", "Agency A"), validator("v2", "Agency B"), validator("v3", "Agency A"),
       validator("v4", "Agency B")]
GENESIS = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], [V1])
SET_VALIDATORS = "setValidators(string[],string[],bytes[],bytes[],uint256)"


class Gov:
    """Drives Governance with signed transactions in produced blocks (2 agencies: 2 votes needed)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def send(self, acct: Any, to: bytes, data: bytes) -> Any:
        raw = sign_call(acct, to, data, get_nonce(self.chain.chain.state, acct.address))
        executed = self.chain.produce([raw])
        return executed.receipts[0]

    def decide(self, data: bytes) -> Any:
        """Propose a Membership call, vote it through and execute it; the execute receipt."""
        r = self.send(ALICE, GOVERNANCE, call_data("propose(address,bytes,string)", "0x" + MEMBERSHIP.hex(), data,
                                                   "validators"))
        assert r.status == STATUS_SUCCESS
        pid = int.from_bytes(r.output[-32:], "big")
        for acct in (ALICE, BOB):
            assert self.send(acct, GOVERNANCE, call_data("vote(uint256,bool)", pid, True)).status == STATUS_SUCCESS
        return self.send(ALICE, GOVERNANCE, call_data("execute(uint256)", pid))


def set_call(vals: list[Any], activation: int, *, pops: list[bytes] | None = None) -> bytes:
    return call_data(SET_VALIDATORS, [v.name for v in vals], [v.agency for v in vals], [v.public_key for v in vals],
                     pops if pops is not None else [v.pop for v in vals], activation)


def changed_chain(extra_blocks: int = 3) -> tuple[Chain, int]:
    """1 validator at genesis; Governance schedules 4 for a later height; blocks past it."""
    chain = Chain(GENESIS, V1, other_keys=NEW[1:])
    gov = Gov(chain)
    chain.produce([])
    activation = chain.chain.head_height + 4 + 3  # propose, 2 votes, execute, then 3 more blocks
    assert gov.decide(set_call(NEW, activation)).status == STATUS_SUCCESS
    while chain.chain.head_height < activation + extra_blocks:
        chain.produce([])
    return chain, activation


def test_the_new_set_certifies_every_block_from_its_activation_height_and_the_chain_verifies() -> None:
    chain, h = changed_chain()
    store = chain.chain
    sets = get_validator_sets(store.state)
    assert [(vs.epoch, vs.activation_height, len(vs.validators)) for vs in sets] == [(0, 0, 1), (1, h, 4)]
    assert get_validator_set_at(store.state, h - 1).epoch == 0 and get_validator_set_at(store.state, h).epoch == 1
    last_old, first_new = store.get_block(h - 1), store.get_block(h)
    # The last block of epoch 0 announces the set that certifies its successor.
    assert last_old.header.validator_set_hash == compute_validator_set_hash(sets[1].validators)
    assert store.get_block(h - 2).header.validator_set_hash == compute_validator_set_hash(sets[0].validators)
    assert last_old.header.proposer == sets[0].validators[0]["address"]
    assert first_new.header.proposer == sets[1].validators[first_new.header.round % 4]["address"]
    # Block h carries the 1-of-1 QC of epoch 0; its own QC has four signers of epoch 1.
    assert first_new.justify is not None and first_new.justify.signer_indices() == [0]
    qc = store.get_qc(h)
    assert qc is not None and qc.signer_indices() == [0, 1, 2, 3]
    report = verify_chain(StoreSource(ChainStore(chain.store)))
    assert report.blocks == h + 4
    assert report.to_json()["validator_sets"] == [{"epoch": 0, "activation_height": 0, "validators": 1},
                                                  {"epoch": 1, "activation_height": h, "validators": 4}]


def test_the_validators_at_view_reports_each_height() -> None:
    chain, h = changed_chain(extra_blocks=0)
    for height, epoch, names in ((h - 1, 0, ["v1"]), (h, 1, ["v1", "v2", "v3", "v4"])):
        ok, out = _view(chain, call_data("validatorsAt(uint256)", height))
        assert ok
        got_epoch, activation, got_names, addresses = eth_abi.decode(["uint256", "uint256", "string[]", "address[]"],
                                                                     out)
        assert (got_epoch, list(got_names)) == (epoch, names)
        assert activation == (0 if epoch == 0 else h) and len(addresses) == len(names)


def _view(chain: Chain, data: bytes) -> tuple[bool, bytes]:
    head = chain.chain.get_head().header
    env = BlockEnv(GENESIS.chain_id, head.height + 1, head.timestamp_ms, head.proposer, head.gas_limit)
    ok, out, _ = chain.runtime.call(StateView(chain.chain.state), bytes(20), MEMBERSHIP, data, env, 10_000_000)
    return ok, out


def test_a_qc_of_the_old_set_on_a_block_of_the_new_set_is_refused_by_verify() -> None:
    chain, h = changed_chain()
    block = chain.chain.get_block(h + 1)
    vote = sign_vote(V1.secret_key, GENESIS.chain_id, block.hash, block.height, block.header.round, 0)
    old_style = aggregate_qc(block.hash, block.height, block.header.round, {0: vote}, 1)
    chain.store.write_batch({P_QC + (h + 1).to_bytes(8, "big"): old_style.encode()})
    with pytest.raises(ConsensusError, match=f"block {h + 1}: its stored QC does not verify against validator set 1: "
                       "QC has 1 signers, quorum is 3 of 4"):
        verify_chain(StoreSource(ChainStore(chain.store)))


def test_a_quorum_of_the_new_set_signing_for_another_epoch_is_refused_by_verify() -> None:
    chain, h = changed_chain()
    block = chain.chain.get_block(h + 1)
    votes = {i: sign_vote(v.secret_key, GENESIS.chain_id, block.hash, block.height, block.header.round, 0)
             for i, v in enumerate(NEW)}
    replayed = aggregate_qc(block.hash, block.height, block.header.round, votes, 4)
    chain.store.write_batch({P_QC + (h + 1).to_bytes(8, "big"): replayed.encode()})
    with pytest.raises(ConsensusError, match=f"block {h + 1}: its stored QC .* invalid aggregate signature"):
        verify_chain(StoreSource(ChainStore(chain.store)))


def test_a_signature_of_the_right_key_but_the_wrong_epoch_is_refused_by_verify() -> None:
    chain, h = changed_chain()
    block = chain.chain.get_block(h)
    leader = NEW[block.header.round % 4]
    forged = dataclasses.replace(block, signature=sign_proposal(leader.secret_key, GENESIS.chain_id, block.hash, 0))
    chain.store.write_batch({P_BLOCK + h.to_bytes(8, "big"): forged.encode()})
    with pytest.raises(ConsensusError, match=f"block {h}: invalid proposer signature"):
        verify_chain(StoreSource(ChainStore(chain.store)))
    assert Block.decode(forged.encode()).hash == block.hash  # the header is untouched: only the epoch differs


def test_only_governance_may_schedule_a_validator_set() -> None:
    chain = Chain(GENESIS, V1)
    gov = Gov(chain)
    r = gov.send(ALICE, MEMBERSHIP, set_call(NEW, 10))
    assert r.status == STATUS_FAILURE and "only Governance" in revert_reason(r.output)
    assert len(get_validator_sets(chain.chain.state)) == 1


@pytest.mark.parametrize("case, expected", [
    ("past", "activation height must be after this block"),
    ("bad_pop", "invalid BLS public key or proof of possession"),
    ("unknown_agency", "'Agency Z' is not an active agency"),
    ("duplicate", "validator names and keys must be unique"),
    ("empty", "a validator set has 1..64 validators"),
])
def test_an_invalid_validator_set_is_refused_with_its_reason(case: str, expected: str) -> None:
    chain = Chain(GENESIS, V1)
    gov = Gov(chain)
    far = 1000
    data = {
        "past": set_call(NEW, 3),
        "bad_pop": set_call(NEW, far, pops=[NEW[1].pop, *[v.pop for v in NEW[1:]]]),
        "unknown_agency": set_call([dataclasses.replace(NEW[1], agency="Agency Z")], far),
        "duplicate": set_call([NEW[1], NEW[1]], far),
        "empty": set_call([], far),
    }[case]
    r = gov.decide(data)
    assert r.status == STATUS_FAILURE and expected in revert_reason(r.output)
    assert len(get_validator_sets(chain.chain.state)) == 1


def test_a_pending_set_is_replaced_and_the_next_epoch_follows_activation() -> None:
    chain, h = changed_chain(extra_blocks=-2)  # stop two blocks before activation
    assert chain.chain.head_height == h - 2
    gov = Gov(chain)
    # The proposal passes at heights >= h, after the first change took effect, so it schedules epoch 2.
    r = gov.decide(set_call(NEW[:1], h + 20))
    assert r.status == STATUS_SUCCESS
    sets = get_validator_sets(chain.chain.state)
    assert [(vs.epoch, vs.activation_height) for vs in sets] == [(0, 0), (1, h), (2, h + 20)]
    # Before it is active, Governance may replace it (same epoch number, new members and height).
    replaced = gov.decide(set_call(NEW[:2], h + 30))
    assert replaced.status == STATUS_SUCCESS
    sets = get_validator_sets(chain.chain.state)
    assert [(vs.epoch, vs.activation_height, len(vs.validators)) for vs in sets] == [
        (0, 0, 1), (1, h, 4), (2, h + 30, 2)]
    while chain.chain.head_height < h + 32:
        chain.produce([])
    assert verify_chain(StoreSource(ChainStore(chain.store))).to_json()["validator_sets"][-1] == {
        "epoch": 2, "activation_height": h + 30, "validators": 2}


def test_a_validator_key_keeps_its_name_and_agency() -> None:
    chain = Chain(GENESIS, V1)
    renamed = dataclasses.replace(V1, name="v1-renamed")
    r = Gov(chain).decide(set_call([renamed], 1000))
    assert r.status == STATUS_FAILURE and "validator key of 'v1' (Agency A) must keep its name and agency" in \
        revert_reason(r.output)


def test_checking_the_proofs_of_possession_costs_gas() -> None:
    one = Gov(Chain(GENESIS, V1)).decide(set_call(NEW[:1], 1000))
    four = Gov(Chain(GENESIS, V1)).decide(set_call(NEW, 1000))
    assert one.status == four.status == STATUS_SUCCESS
    assert four.gas_used - one.gas_used >= 3 * 50_000


def test_a_revocation_that_would_halt_a_validator_set_is_refused() -> None:
    """Revoking an agency cuts its nodes off but its validators still count: with 2 of 4 validators
    (f = 1) in Agency B, revoking B would halt the chain, so it is refused until they are retired."""
    genesis = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], NEW)
    chain = Chain(genesis, NEW[0], other_keys=NEW[1:])
    gov = Gov(chain)
    revoke = call_data("revokeAgency(string)", "Agency B")
    r = gov.decide(revoke)
    assert r.status == STATUS_FAILURE and revert_reason(r.output) == (
        "revoking 'Agency B' would cut off 2 of the 4 validators of validator set 0 (v2, v4), more than the 1 it "
        "tolerates: retire them first with setValidators")
    # Scheduling a set without them is not enough while they are still in force...
    h = chain.chain.head_height + 20
    assert gov.decide(set_call([NEW[0], NEW[2], NEW[3]], h)).status == STATUS_SUCCESS
    assert gov.decide(revoke).status == STATUS_FAILURE
    while chain.chain.head_height < h:
        chain.produce([])
    # ...once the set of three (one of them in Agency B: f = 0) is in force, B's last validator still blocks it.
    assert "cut off 1 of the 3 validators of validator set 1 (v4)" in revert_reason(gov.decide(revoke).output)
