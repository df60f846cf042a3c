"""Test helpers shared by the unit tests and tests/vectors/generate.py: deterministic keys, genesis
documents, signed calls to the system contracts, and an in-memory chain built, signed, certified
and committed exactly as ``chainshare.node.Node._propose_and_commit`` does it.

Nothing here re-implements chainshare logic: every step calls the node's own functions, so a
change in them shows up in the tests and vectors that use this kit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import eth_abi

from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import address_of_private_key, to_checksum_address
from chainshare.errors import InvalidTransaction
from chainshare.execution.block import ExecutedBlock, apply_block, build_block
from chainshare.execution.contracts import GOVERNANCE, MEMBERSHIP, NOTARY, build_runtime
from chainshare.execution.contracts.membership import get_validator_set_at
from chainshare.execution.forks import get_runtime_at
from chainshare.execution.genesis import (
    ChainParams,
    Genesis,
    GenesisAgency,
    GenesisValidator,
    compute_genesis_block,
)
from chainshare.execution.runtime import BlockEnv, Runtime
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.quorum import aggregate_qc, compute_proposer_index, sign_proposal, sign_vote
from chainshare.ledger.state import DictReader, StateView
from chainshare.ledger.store import KeyValueStore, MemoryStore
from chainshare.ledger.txs import Transaction, decode_transaction, sign_eip1559
from chainshare.ledger.types import Header, QuorumCertificate
from chainshare.node import open_chain

CHAIN_ID = 4242
GENESIS_TIMESTAMP_MS = 1_700_000_000_000
DEFAULT_GAS = 1_000_000
# Genesis does not check certificates; only Membership.addAgency does (against the CA below).
PLACEHOLDER_PEM = b"-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n"

__all__ = [
    "CHAIN_ID", "DEFAULT_GAS", "GENESIS_TIMESTAMP_MS", "GOVERNANCE", "MEMBERSHIP", "NOTARY",
    "Account", "Chain", "Ledger", "Validator", "account", "call_data", "make_genesis", "revert_reason",
    "selector", "sign_call", "validator",
]


# -- keys ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    private_key: bytes
    address: bytes

    @property
    def checksum(self) -> str:
        return to_checksum_address(self.address)


def account(label: str) -> Account:
    """A deterministic secp256k1 account derived from ``label``."""
    key = keccak256(b"chainshare/test/account/" + label.encode())
    return Account(key, address_of_private_key(key))


@dataclass(frozen=True)
class Validator:
    name: str
    agency: str
    secret_key: bytes
    public_key: bytes
    pop: bytes

    def genesis_entry(self) -> GenesisValidator:
        return GenesisValidator(self.name, self.agency, self.public_key, self.pop)


def validator(label: str, agency: str) -> Validator:
    """A deterministic BLS validator key derived from ``label``."""
    sk = bls.generate_secret_key(keccak256(b"chainshare/test/bls/" + label.encode()))
    return Validator(label, agency, sk, bls.public_key(sk), bls.prove_possession(sk))


# -- genesis ------------------------------------------------------------------------------------

def make_genesis(agencies: Sequence[tuple[str, Sequence[bytes]]] | Sequence[tuple[str, Sequence[bytes], bytes]],
                 validators: Sequence[Validator], *, ca_certificate: bytes = PLACEHOLDER_PEM,
                 chain_id: int = CHAIN_ID, timestamp_ms: int = GENESIS_TIMESTAMP_MS,
                 params: ChainParams | None = None) -> Genesis:
    """A Genesis of ``agencies`` [(name, accounts[, certificate])] and ``validators``."""
    out = []
    for entry in agencies:
        name, accounts = entry[0], entry[1]
        cert = entry[2] if len(entry) > 2 else PLACEHOLDER_PEM  # type: ignore[misc]
        out.append(GenesisAgency(name, "member", tuple(accounts), cert))
    return Genesis(chain_id, timestamp_ms, ca_certificate, tuple(out),
                   tuple(v.genesis_entry() for v in validators), params or ChainParams())


# -- calls --------------------------------------------------------------------------------------

def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def call_data(signature: str, *args: Any) -> bytes:
    """ABI call data for a canonical signature such as ``"anchor(bytes32)"`` (via eth_abi)."""
    types = signature[signature.index("(") + 1:-1]
    type_list = [t for t in types.split(",") if t] if types else []
    return selector(signature) + eth_abi.encode(type_list, list(args))


def revert_reason(output: bytes) -> str:
    """Decode standard ``Error(string)`` revert data independently of chainshare."""
    assert output[:4] == selector("Error(string)"), output.hex()
    return str(eth_abi.decode(["string"], output[4:])[0])


def sign_call(acct: Account, to: bytes | None, data: bytes, nonce: int, *, gas: int = DEFAULT_GAS,
              chain_id: int = CHAIN_ID, value: int = 0) -> bytes:
    return sign_eip1559(acct.private_key, chain_id=chain_id, nonce=nonce, to=to, data=data, gas=gas,
                        value=value, max_fee_per_gas=1, max_priority_fee_per_gas=1)


# -- execution over plain dicts -----------------------------------------------------------------

def _strict(tx: Transaction, exc: InvalidTransaction) -> None:
    raise AssertionError(f"test transaction 0x{tx.hash.hex()} was dropped as invalid: {exc.message}")


@dataclass
class Ledger:
    """Genesis state in a dict; ``execute`` builds a block on it (build_block) and folds it in."""

    genesis: Genesis
    runtime: Runtime = field(default_factory=build_runtime)
    state: dict[bytes, bytes] = field(default_factory=dict)
    header: Header | None = None
    accumulator: int = 0
    nonces: dict[bytes, int] = field(default_factory=dict)
    blocks: list[ExecutedBlock] = field(default_factory=list)

    def __post_init__(self) -> None:
        block0, state, acc = compute_genesis_block(self.genesis)
        self.state, self.header, self.accumulator = dict(state), block0.header, acc

    @property
    def parent_header(self) -> Header:
        assert self.header is not None
        return self.header

    def reader(self) -> DictReader:
        return DictReader(self.state)

    def build(self, raws: Sequence[bytes], *, timestamp_ms: int | None = None,
              proposer: bytes = bytes(20)) -> ExecutedBlock:
        """Build (without committing) the next block over the current state."""
        txs = [decode_transaction(r, self.genesis.chain_id) for r in raws]
        ts = timestamp_ms if timestamp_ms is not None else self.parent_header.timestamp_ms + 1000
        return build_block(self.runtime, self.reader(), self.parent_header, self.accumulator, txs,
                           chain_id=self.genesis.chain_id, round=self.parent_header.round + 1, timestamp_ms=ts,
                           proposer=proposer, justify=None, on_invalid=_strict)

    def apply(self, executed: ExecutedBlock) -> None:
        """Fold a block's state changes into the dict state and make it the parent."""
        for k, v in executed.state_changes.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
        self.header = executed.block.header
        self.accumulator = executed.accumulator
        self.blocks.append(executed)

    def execute(self, raws: Sequence[bytes], *, timestamp_ms: int | None = None) -> ExecutedBlock:
        executed = self.build(raws, timestamp_ms=timestamp_ms)
        self.apply(executed)
        return executed

    def send(self, acct: Account, to: bytes | None, data: bytes, *, gas: int = DEFAULT_GAS,
             timestamp_ms: int | None = None) -> Any:
        """Sign the sender's next-nonce call, execute it alone in a block, return its receipt."""
        nonce = self.nonces.get(acct.address, 0)
        raw = sign_call(acct, to, data, nonce, gas=gas, chain_id=self.genesis.chain_id)
        self.nonces[acct.address] = nonce + 1
        executed = self.execute([raw], timestamp_ms=timestamp_ms)
        assert len(executed.receipts) == 1
        return executed.receipts[0]

    def view(self, to: bytes, data: bytes, sender: bytes = bytes(20)) -> tuple[bool, bytes]:
        h = self.parent_header
        env = BlockEnv(self.genesis.chain_id, h.height + 1, h.timestamp_ms, h.proposer, h.gas_limit)
        ok, out, _ = self.runtime.call(StateView(self.reader()), sender, to, data, env, 10_000_000)
        return ok, out

    def reapply(self, executed: ExecutedBlock, parent_state: dict[bytes, bytes], parent_header: Header,
                parent_accumulator: int) -> ExecutedBlock:
        return apply_block(self.runtime, DictReader(parent_state), parent_header, parent_accumulator,
                           executed.block, chain_id=self.genesis.chain_id)


# -- a committed, certified chain (as the single-validator node builds it) ---------------------

class Chain:
    """A chain in ``store``: blocks built by build_block, signed by the leader of their view and
    certified by every validator of the set in force (1-of-1 for the usual single-validator
    genesis), then committed, reproducing ``Node._propose_and_commit`` with explicit timestamps.
    ``other_keys`` are the keys of validators that later sets (scheduled by Governance) hold."""

    def __init__(self, genesis: Genesis, validator_key: Validator, store: KeyValueStore | None = None,
                 other_keys: Sequence[Validator] = ()) -> None:
        self.genesis = genesis
        self.key = validator_key
        self.keys = {k.public_key: k for k in (validator_key, *other_keys)}
        self.store = store if store is not None else MemoryStore()
        self.chain: ChainStore = open_chain(self.store, genesis)
        self.runtime = build_runtime()
        self.accumulator = self.chain.get_accumulator()

    def produce(self, raws: Sequence[bytes], *, timestamp_ms: int | None = None,
                round: int | None = None, timeout_cert: bytes | None = None) -> ExecutedBlock:
        """Build, sign, certify and commit the next block; its view (header round) is the parent's + 1
        unless ``round`` says otherwise (then pass the encoded TC that lets validators vote for it)."""
        executed, qc = self.certify_next(raws, timestamp_ms=timestamp_ms, round=round, timeout_cert=timeout_cert)
        self.chain.commit_block(executed.block, executed.receipts, executed.senders, executed.tx_hashes,
                                executed.state_changes, executed.accumulator, qc)
        self.accumulator = executed.accumulator
        return executed

    def certify_next(self, raws: Sequence[bytes] = (), *, timestamp_ms: int | None = None,
                     round: int | None = None, timeout_cert: bytes | None = None,
                     signers: Sequence[int] | None = None) -> tuple[ExecutedBlock, QuorumCertificate]:
        """The next block, built, signed by its leader and certified by ``signers`` (indices in the set in
        force; all by default), without committing it (what a finality proof's certified child is)."""
        chain_id = self.genesis.chain_id
        parent = self.chain.get_head()
        justify = self.chain.get_qc(parent.height) if parent.height > 0 else None
        vs = get_validator_set_at(self.chain.state, parent.height + 1)
        view = parent.header.round + 1 if round is None else round
        leader = vs.validators[compute_proposer_index(view, len(vs.validators))]
        ts = timestamp_ms if timestamp_ms is not None else parent.header.timestamp_ms + 1000
        txs = [decode_transaction(r, chain_id) for r in raws]
        runtime = get_runtime_at(self.chain.state, parent.height + 1)  # the protocol version of its height
        executed = build_block(runtime, self.chain.state, parent.header, self.accumulator, txs,
                               chain_id=chain_id, round=view, timestamp_ms=ts, proposer=leader["address"],
                               justify=justify, on_invalid=_strict, timeout_cert=timeout_cert)
        block = executed.block
        signature = sign_proposal(self.keys[leader["bls_public_key"]].secret_key, chain_id, block.hash, vs.epoch)
        block = dataclasses.replace(block, signature=signature)
        indices = range(len(vs.validators)) if signers is None else signers
        votes = {i: sign_vote(self.keys[vs.validators[i]["bls_public_key"]].secret_key, chain_id, block.hash,
                              block.height, block.header.round, vs.epoch) for i in indices}
        qc = aggregate_qc(block.hash, block.height, block.header.round, votes, len(vs.validators))
        return dataclasses.replace(executed, block=block), qc
