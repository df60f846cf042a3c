"""Fuzz what a validator decodes from its peers: consensus messages, blocks (fetched or synced),
timeout certificates, QCs, finality and epoch-change proofs; and the core stepped with what decodes.

Contract: each decoder returns its value or raises ``DecodeError`` (what the replica catches),
nothing else; a decoded message re-encodes to the same bytes; the verifiers return a bool and
``core.step`` never raises (consensus/core.py), whatever the message.
The first input byte picks the decoder; the rest is its input.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import _fuzzkit
import atheris

with atheris.instrument_imports(include=["chainshare"]):
    from chainkit import Chain, account, make_genesis, validator

    from chainshare import codec
    from chainshare.consensus import core
    from chainshare.consensus.epochs import decode_epoch_change_proof, encode_epoch_change_proof
    from chainshare.consensus.messages import (
        BlsCrypto,
        Proposal,
        QcAnnouncement,
        Timeout,
        TimeoutCertificate,
        Vote,
        check_tc_shape,
        decode_block_tc,
        decode_message,
        encode_message,
    )
    from chainshare.errors import DecodeError
    from chainshare.execution.contracts.membership import get_validator_set_at
    from chainshare.ledger.finality import decode_finality_proof, encode_finality_proof
    from chainshare.ledger.types import Block, QuorumCertificate

VALS = [validator(f"fuzz-v{i}", "Agency A") for i in range(4)]
GENESIS = make_genesis([("Agency A", [account("fuzz-alice").address])], VALS)
CHAIN = Chain(GENESIS, VALS[0], other_keys=VALS[1:])
GENESIS_BLOCK = CHAIN.chain.get_block(0)
VSET = get_validator_set_at(CHAIN.chain.state, 1)
ORDER = {v.public_key: v for v in VALS}
KEYS = [ORDER[v["bls_public_key"]] for v in VSET.validators]  # in validator-set order
CRYPTO = BlsCrypto(GENESIS.chain_id, [k.public_key for k in KEYS], 0, KEYS[0].secret_key)
CORE = core.initial_state(
    core.CoreConfig(GENESIS.chain_id, tuple(v["address"] for v in VSET.validators), 0), CRYPTO, GENESIS_BLOCK)

MESSAGE, TC, BLOCK, FINALITY, EPOCH, QC = range(6)


def seeds() -> Iterable[bytes]:
    first, qc1 = CHAIN.certify_next()
    CHAIN.chain.commit_block(first.block, first.receipts, first.senders, first.tx_hashes, first.state_changes,
                             first.accumulator, qc1)
    CHAIN.accumulator = first.accumulator
    child, qc2 = CHAIN.certify_next()
    signers = [BlsCrypto(GENESIS.chain_id, CRYPTO.public_keys, i, k.secret_key) for i, k in enumerate(KEYS)]
    tc = CRYPTO.aggregate_tc(3, {i: (1, s.sign_timeout(3, 1)) for i, s in enumerate(signers)}, qc1)
    vote = Vote(qc1.block_hash, 1, qc1.round, 1, signers[1].sign_vote(qc1.block_hash, 1, qc1.round))
    timeout = Timeout(4, 2, qc1, tc, signers[2].sign_timeout(4, 1))
    proof = encode_finality_proof([], child.block, qc2)
    for message in (Proposal(first.block), Proposal(child.block), vote, timeout, QcAnnouncement(qc1)):
        yield bytes([MESSAGE]) + encode_message(message)
    yield bytes([TC]) + tc.encode()
    yield bytes([BLOCK]) + first.block.encode()
    yield bytes([FINALITY]) + proof
    yield bytes([EPOCH]) + encode_epoch_change_proof(first.block, proof, VSET)
    yield bytes([QC]) + qc2.encode()


def _step(event: core.Event) -> None:
    state, actions = core.step(CORE, event)
    assert isinstance(actions, list)


def check(data: bytes) -> None:
    if not data:
        return
    kind, payload = data[0] % 6, data[1:]
    try:
        if kind == MESSAGE:
            message = decode_message(payload)
            assert encode_message(message) == payload, payload.hex()
            _step(core.event_of(message, data[0] // 6 % 4))
        elif kind == TC:
            tc = TimeoutCertificate.decode(payload)
            check_tc_shape(tc, 4)
            assert isinstance(CRYPTO.verify_tc(tc), bool)
        elif kind == BLOCK:
            block = Block.decode(payload)
            try:
                decode_block_tc(block)
            except DecodeError:
                pass
            _step(core.ProposalReceived(Proposal(block), data[0] // 6 % 4))
        elif kind == FINALITY:
            decode_finality_proof(payload)
        elif kind == EPOCH:
            decode_epoch_change_proof(payload)
        else:
            assert isinstance(CRYPTO.verify_qc(QuorumCertificate.from_list(codec.decode(payload))), bool)
    except DecodeError:
        return


if __name__ == "__main__":
    _fuzzkit.run(check, seeds)
    sys.exit(0)
