"""Independent verification of a chain from genesis: what an auditor runs.

For every block it checks the hash link, the proposer (PoA rotation) and its signature, the QC
the block carries and the QC stored beside it (BLS aggregates, each against the validator set that
certifies its block: the genesis set, then each set Governance scheduled, from its activation
height, as recorded in the re-executed state),
the transaction and receipts Merkle roots and the state root by re-executing every transaction
from the genesis state, each under the protocol version of its height (the rules Governance
scheduled, read from the re-executed state: execution/forks/), and that the stored receipts equal
the re-executed ones. It trusts nothing
of the source but the genesis document's hash, which it prints for comparison.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chainshare import codec
from chainshare.consensus.messages import BlsCrypto, decode_block_tc, get_qc_view
from chainshare.errors import ConsensusError, DecodeError
from chainshare.execution.block import apply_block
from chainshare.execution.contracts.membership import ValidatorSet, get_validator_set_at
from chainshare.execution.forks import get_runtime_at
from chainshare.execution.genesis import compute_genesis_block, parse_genesis
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.finality import decode_finality_proof, is_finality_proof_of, is_two_chain
from chainshare.ledger.quorum import compute_proposer_index, verify_proposal_signature, verify_qc
from chainshare.ledger.types import Block, QuorumCertificate, Receipt


class BlockSource(Protocol):
    def genesis_document(self) -> bytes: ...

    def head_height(self) -> int: ...

    def block(self, height: int) -> tuple[Block, QuorumCertificate | None, list[Receipt]]: ...

    def finality_proof(self) -> bytes | None:
        """The encoded proof (ledger/finality.py) that the head is final, if the source keeps one."""


class StoreSource:
    def __init__(self, chain: ChainStore) -> None:
        self.chain = chain

    def genesis_document(self) -> bytes:
        return self.chain.get_genesis_document()

    def head_height(self) -> int:
        return self.chain.head_height

    def block(self, height: int) -> tuple[Block, QuorumCertificate | None, list[Receipt]]:
        return self.chain.get_block(height), self.chain.get_qc(height), self.chain.get_receipts(height)

    def finality_proof(self) -> bytes | None:
        return self.chain.get_finality_proof()


class ApiSource:
    """A node's public API. The claimed head is the block its finality proof proves when it serves
    one (the proof and the head are read in one request, so a block finalized meanwhile does not
    make the head look unproven), else its block number."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._proof: bytes | None = None

    def genesis_document(self) -> bytes:
        return json.dumps(self.client.rest("/genesis")).encode()

    def head_height(self) -> int:
        served = self.client.rest("/finality")
        self._proof = bytes.fromhex(served["proof"][2:]) if served.get("proof") else None
        return int(served["height"])

    def finality_proof(self) -> bytes | None:
        return self._proof

    def block(self, height: int) -> tuple[Block, QuorumCertificate | None, list[Receipt]]:
        raw = self.client.rest(f"/blocks/{height}/raw")
        block = Block.decode(bytes.fromhex(raw["block"][2:]))
        qc = QuorumCertificate.from_list(codec.decode(bytes.fromhex(raw["qc"][2:]))) if raw["qc"] else None
        receipts = [Receipt.from_list(r) for r in codec.decode(bytes.fromhex(raw["receipts"][2:]))]
        return block, qc, receipts


@dataclass(frozen=True)
class VerifyReport:
    chain_id: int
    genesis_hash: str
    blocks: int
    transactions: int
    head_hash: str
    epochs: tuple[tuple[int, int, int], ...] = ()  # (epoch, activation height, validators) seen
    finalized_height: int = 0  # the highest block proven final (with all its ancestors)
    finality: str = "genesis"  # how the head's finality was proven: quorum-of-one | 2-chain | finality-proof | unproven
    protocol_versions: tuple[tuple[int, int, int], ...] = ((1, 0, 0),)  # (version, first, last height) re-executed

    @property
    def head_final(self) -> bool:
        return self.finalized_height == self.blocks - 1

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.head_final, "chain_id": self.chain_id, "genesis_hash": self.genesis_hash,
                "blocks": self.blocks, "transactions": self.transactions, "head_hash": self.head_hash,
                "head_height": self.blocks - 1, "head_final": self.head_final,
                "finalized_height": self.finalized_height, "finality": self.finality,
                "validator_sets": [{"epoch": e, "activation_height": a, "validators": n} for e, a, n in self.epochs],
                "protocol_versions": [{"version": v, "first_height": a, "last_height": b}
                                      for v, a, b in self.protocol_versions]}


class _Overlay:
    """The re-executed state: genesis entries plus every block's changes, in memory."""

    def __init__(self, base: dict[bytes, bytes]) -> None:
        self.data = dict(base)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def apply(self, changes: dict[bytes, bytes | None]) -> None:
        for k, v in changes.items():
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v


def verify_chain(source: BlockSource, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Re-check every block of ``source`` from genesis; raises ConsensusError at the first fault. The
    report says up to which height the chain is proven final (``head_final`` when that is the head)."""
    genesis = parse_genesis(json.loads(source.genesis_document()))
    chain_id = genesis.chain_id
    block0, state0, acc = compute_genesis_block(genesis)
    stored0, _, _ = source.block(0)
    if stored0.hash != block0.hash:
        raise ConsensusError("block 0 does not match the genesis document")
    versions: list[list[int]] = [[1, 0, 0]]  # block 0 is genesis, version 1's by definition
    state = _Overlay(state0)
    parent = block0
    txs = 0
    head = source.head_height()
    parent_set: ValidatorSet | None = None
    epochs: list[tuple[int, int, int]] = []
    finalized, how = 0, "genesis"
    for h in range(1, head + 1):
        block, qc, receipts = source.block(h)
        where = f"block {h}"
        vs = get_validator_set_at(state, h)
        if not epochs or epochs[-1][0] != vs.epoch:
            epochs.append((vs.epoch, vs.activation_height, len(vs.validators)))
        validators = list(vs.validators)
        n = len(validators)
        expected = validators[compute_proposer_index(block.header.round, n)]
        if block.header.proposer != expected["address"]:
            raise ConsensusError(f"{where}: proposer is not the leader of its view, validators[round mod n] "
                                 f"of validator set {vs.epoch}")
        if not verify_proposal_signature(expected["bls_public_key"], chain_id, block.hash, block.signature, vs.epoch):
            raise ConsensusError(f"{where}: invalid proposer signature")
        if h > 1:
            assert parent_set is not None
            if block.justify is None or block.justify.block_hash != parent.hash or block.justify.height != h - 1:
                raise ConsensusError(f"{where}: does not carry the QC of its parent")
            _verify_qc_at(where, "the QC it carries", block.justify, parent_set, chain_id)
        elif block.justify is not None:
            raise ConsensusError(f"{where}: block 1 extends genesis, whose QC is implicit, but carries one")
        _verify_view_entry(where, block, vs, chain_id)
        runtime = get_runtime_at(state, h)  # raises UnsupportedProtocolVersion for a version it lacks
        if runtime.version == versions[-1][0]:
            versions[-1][2] = h
        else:
            versions.append([runtime.version, h, h])
        executed = apply_block(runtime, state, parent.header, acc, block, chain_id=chain_id)
        if list(executed.receipts) != receipts:
            raise ConsensusError(f"{where}: stored receipts differ from re-execution")
        if qc is None:
            raise ConsensusError(f"{where}: no quorum certificate stored with the block")
        if qc.block_hash != block.hash or qc.height != h or qc.round != block.header.round:
            raise ConsensusError(f"{where}: stored QC certifies another block")
        _verify_qc_at(where, "its stored QC", qc, vs, chain_id)
        if len(vs.validators) == 1:
            finalized, how = h, "quorum-of-one"
        elif is_two_chain(parent, block):
            finalized, how = h - 1, "2-chain"  # the verified QC on this block finalizes its parent
        state.apply(executed.state_changes)
        parent_set = vs
        acc = executed.accumulator
        parent = block
        txs += len(block.transactions)
        if progress is not None:
            progress(h, head)
    if finalized < head and parent_set is not None:
        if _is_proven_final(source.finality_proof(), parent, parent_set, chain_id):
            finalized, how = head, "finality-proof"
        else:
            how = "unproven"
    return VerifyReport(chain_id, "0x" + block0.hash.hex(), head + 1, txs, "0x" + parent.hash.hex(), tuple(epochs),
                        finalized, how, tuple((v, a, b) for v, a, b in versions))


def _is_proven_final(raw: bytes | None, head: Block, vs: ValidatorSet, chain_id: int) -> bool:
    """True iff ``raw`` is a finality proof of ``head`` whose QCs all verify against ``vs``, the set that
    certified the head (it also certifies the empty suffix past the last block of a set)."""
    if raw is None:
        return False
    try:
        proof = decode_finality_proof(raw)
    except DecodeError:
        return False
    if not is_finality_proof_of(proof, head):
        return False
    try:
        for b in proof.blocks:
            assert b.justify is not None  # checked by is_finality_proof_of
            verify_qc(b.justify, list(vs.validators), chain_id, vs.epoch)
        verify_qc(proof.qc, list(vs.validators), chain_id, vs.epoch)
    except ConsensusError:
        return False
    return True


def _verify_view_entry(where: str, block: Block, vs: ValidatorSet, chain_id: int) -> None:
    """The voting rule honest validators applied (docs/consensus.md rule 2): a block's view follows its
    QC's view, or it carries a valid timeout certificate of the view before, whose highest QC view
    its QC is not below. A TC, when carried, must verify against the set of the block's height."""
    try:
        tc = decode_block_tc(block)
    except DecodeError as exc:
        raise ConsensusError(f"{where}: undecodable timeout certificate: {exc.message}") from exc
    if tc is not None:
        verifier = BlsCrypto(chain_id, [v["bls_public_key"] for v in vs.validators], -1, None, vs.epoch)
        if tc.view != block.header.round - 1 or not verifier.verify_tc(tc):
            raise ConsensusError(f"{where}: its timeout certificate is not a valid TC of view "
                                 f"{block.header.round - 1} by validator set {vs.epoch}")
    qc_view = get_qc_view(block.justify)
    if block.header.round == qc_view + 1:
        return
    if tc is None or qc_view < tc.max_high_qc_view:
        raise ConsensusError(f"{where}: view {block.header.round} does not follow its QC's view {qc_view} and "
                             "carries no timeout certificate that allows it")


def _verify_qc_at(where: str, what: str, qc: QuorumCertificate, vs: ValidatorSet, chain_id: int) -> None:
    try:
        verify_qc(qc, list(vs.validators), chain_id, vs.epoch)
    except ConsensusError as exc:
        raise ConsensusError(f"{where}: {what} does not verify against validator set {vs.epoch}: {exc.message}") from exc
