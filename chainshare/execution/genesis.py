"""Genesis: the network's founding document and the state and block 0 it defines.

The genesis file is JSON; ``load_genesis`` validates it field by field with clear errors. Block 0
commits (through its state root) to every agency, validator, parameter and to the keccak-256 of
the canonical genesis document itself, so the genesis block hash *is* the network's identity:
a node refuses a data directory whose block 0 differs.

An agency may carry an optional ``"jurisdiction"`` (a string, default ""), the Membership attribute
that access policies compare; it appears in the document (and its hash) only when non-empty, so
genesis files written before it existed keep their identity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chainshare import codec
from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConfigError, StorageError
from chainshare.execution.contracts import governance, membership
from chainshare.ledger.state import StateView

GENESIS_FORMAT = 1
K_GENESIS = b"g"
K_PARAMS = b"p"


@dataclass(frozen=True)
class ChainParams:
    block_gas_limit: int = 60_000_000
    max_block_txs: int = 2_000
    governance_threshold: tuple[int, int] = (2, 3)
    voting_period_blocks: int = 100_000


@dataclass(frozen=True)
class GenesisAgency:
    name: str
    role: str
    accounts: tuple[bytes, ...]
    certificate: bytes
    jurisdiction: str = ""


@dataclass(frozen=True)
class GenesisValidator:
    name: str
    agency: str
    bls_public_key: bytes
    bls_pop: bytes

    @property
    def address(self) -> bytes:
        return compute_validator_address(self.bls_public_key)


@dataclass(frozen=True)
class Genesis:
    chain_id: int
    timestamp_ms: int
    ca_certificate: bytes
    agencies: tuple[GenesisAgency, ...]
    validators: tuple[GenesisValidator, ...]
    params: ChainParams

    def to_json(self) -> dict[str, Any]:
        return {
            "format": GENESIS_FORMAT,
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "ca_certificate": self.ca_certificate.decode(),
            "agencies": [{"name": a.name, "role": a.role, "accounts": ["0x" + x.hex() for x in a.accounts],
                          "certificate": a.certificate.decode(),
                          **({"jurisdiction": a.jurisdiction} if a.jurisdiction else {})} for a in self.agencies],
            "validators": [{"name": v.name, "agency": v.agency, "bls_public_key": "0x" + v.bls_public_key.hex(),
                            "bls_pop": "0x" + v.bls_pop.hex()} for v in self.validators],
            "params": {"block_gas_limit": self.params.block_gas_limit, "max_block_txs": self.params.max_block_txs,
                       "governance_threshold": list(self.params.governance_threshold),
                       "voting_period_blocks": self.params.voting_period_blocks},
        }

    def compute_document_hash(self) -> bytes:
        """keccak-256 of the canonical encoding of the genesis document."""
        j = self.to_json()
        return keccak256(codec.encode([
            j["format"], j["chain_id"], j["timestamp_ms"], j["ca_certificate"],
            [[a["name"], a["role"], a["accounts"], a["certificate"]]
             + ([a["jurisdiction"]] if "jurisdiction" in a else []) for a in j["agencies"]],
            [[v["name"], v["agency"], v["bls_public_key"], v["bls_pop"]] for v in j["validators"]],
            [self.params.block_gas_limit, self.params.max_block_txs, list(self.params.governance_threshold),
             self.params.voting_period_blocks],
        ]))


def compute_validator_address(bls_public_key: bytes) -> bytes:
    """A validator's 20-byte id: the last 20 bytes of keccak(BLS public key)."""
    return keccak256(bls_public_key)[12:]


def validator_records(validators: tuple[GenesisValidator, ...]) -> list[dict[str, Any]]:
    return [{"name": v.name, "agency": v.agency, "address": v.address, "bls_public_key": v.bls_public_key,
             "bls_pop": v.bls_pop} for v in validators]


def compute_genesis_state(genesis: Genesis) -> dict[bytes, bytes]:
    """Every state entry of block 0."""
    state: dict[bytes, bytes] = {}
    state.update(membership.genesis_entries(
        [(a.name, a.role, list(a.accounts), a.certificate) for a in genesis.agencies],
        validator_records(genesis.validators), genesis.ca_certificate,
        {a.name: {"jurisdiction": a.jurisdiction} for a in genesis.agencies if a.jurisdiction}))
    num, den = genesis.params.governance_threshold
    state.update(governance.genesis_entries(num, den, genesis.params.voting_period_blocks))
    state[K_GENESIS] = genesis.compute_document_hash()
    p = genesis.params
    state[K_PARAMS] = codec.encode([p.block_gas_limit, p.max_block_txs])
    return state


def get_chain_params(state: StateView | Any) -> tuple[int, int]:
    """(block gas limit, max transactions per block) in force."""
    raw = state.get(K_PARAMS)
    if raw is None:
        raise StorageError("chain parameters missing from state: the ledger is incomplete")
    return _decode_params(raw)


@functools.lru_cache(maxsize=16)
def _decode_params(raw: bytes) -> tuple[int, int]:
    """The parameters stored as ``raw`` (a node asks for them at every admission: decoded once per value)."""
    gas, max_txs = codec.decode(raw)
    return int(gas), int(max_txs)


# -- loading and validation -------------------------------------------------------------------

def _req(d: dict[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"genesis: {where} is missing '{key}'")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise ConfigError(f"genesis: {where}.{key} must be {typ.__name__}")
    return v


def _hex(s: str, n: int | None, where: str) -> bytes:
    try:
        b = bytes.fromhex(s[2:] if s.startswith("0x") else s)
    except ValueError as exc:
        raise ConfigError(f"genesis: {where} is not hex") from exc
    if n is not None and len(b) != n:
        raise ConfigError(f"genesis: {where} must be {n} bytes")
    return b


def parse_genesis(doc: Any) -> Genesis:
    """Validate a genesis JSON document; every problem is a ConfigError naming the field."""
    if not isinstance(doc, dict):
        raise ConfigError("genesis must be a JSON object")
    fmt = _req(doc, "format", int, "genesis")
    if fmt != GENESIS_FORMAT:
        raise ConfigError(f"genesis format {fmt} is not supported (this node reads format {GENESIS_FORMAT})")
    chain_id = _req(doc, "chain_id", int, "genesis")
    if not 0 < chain_id < 2**53:
        raise ConfigError("genesis: chain_id must be a positive integer below 2**53")
    ts = _req(doc, "timestamp_ms", int, "genesis")
    if not 0 <= ts < 2**63:
        raise ConfigError("genesis: timestamp_ms must be between 0 and 2**63 - 1")
    ca = _req(doc, "ca_certificate", str, "genesis").encode()
    agencies = []
    seen_accounts: set[bytes] = set()
    for i, a in enumerate(_req(doc, "agencies", list, "genesis")):
        where = f"agencies[{i}]"
        if not isinstance(a, dict):
            raise ConfigError(f"genesis: {where} must be an object")
        name = _req(a, "name", str, where)
        accounts = tuple(_hex(x, 20, f"{where}.accounts") for x in _req(a, "accounts", list, where))
        if not accounts:
            raise ConfigError(f"genesis: {where} needs at least one account")
        for acc in accounts:
            if acc in seen_accounts:
                raise ConfigError(f"genesis: account 0x{acc.hex()} appears in two agencies")
            seen_accounts.add(acc)
        jurisdiction = a.get("jurisdiction", "")
        if not isinstance(jurisdiction, str) or len(jurisdiction) > membership.MAX_ATTRIBUTE_VALUE:
            raise ConfigError(f"genesis: {where}.jurisdiction must be a string of at most "
                              f"{membership.MAX_ATTRIBUTE_VALUE} characters")
        agencies.append(GenesisAgency(name, _req(a, "role", str, where), accounts,
                                      _req(a, "certificate", str, where).encode(), jurisdiction))
    if not agencies:
        raise ConfigError("genesis: at least one agency is required")
    names = [a.name for a in agencies]
    if len(set(names)) != len(names):
        raise ConfigError("genesis: agency names must be unique")
    validators = []
    for i, v in enumerate(_req(doc, "validators", list, "genesis")):
        where = f"validators[{i}]"
        if not isinstance(v, dict):
            raise ConfigError(f"genesis: {where} must be an object")
        pk = _hex(_req(v, "bls_public_key", str, where), bls.PUBLIC_KEY_SIZE, f"{where}.bls_public_key")
        pop = _hex(_req(v, "bls_pop", str, where), bls.SIGNATURE_SIZE, f"{where}.bls_pop")
        if not bls.verify_possession(pk, pop):
            raise ConfigError(f"genesis: {where} has an invalid BLS proof of possession")
        agency = _req(v, "agency", str, where)
        if agency not in names:
            raise ConfigError(f"genesis: {where}.agency {agency!r} is not a genesis agency")
        validators.append(GenesisValidator(_req(v, "name", str, where), agency, pk, pop))
    if not validators:
        raise ConfigError("genesis: at least one validator is required")
    if len({v.bls_public_key for v in validators}) != len(validators):
        raise ConfigError("genesis: validator keys must be unique")
    p = doc.get("params", {})
    if not isinstance(p, dict):
        raise ConfigError("genesis: params must be an object")
    d = ChainParams()
    thr = p.get("governance_threshold", list(d.governance_threshold))
    if (not isinstance(thr, list) or len(thr) != 2 or not all(isinstance(x, int) for x in thr)
            or not 0 < thr[0] <= thr[1]):
        raise ConfigError("genesis: params.governance_threshold must be [num, den] with 0 < num <= den")
    params = ChainParams(
        block_gas_limit=_pos(p.get("block_gas_limit", d.block_gas_limit), "block_gas_limit"),
        max_block_txs=_pos(p.get("max_block_txs", d.max_block_txs), "max_block_txs"),
        governance_threshold=(thr[0], thr[1]),
        voting_period_blocks=_pos(p.get("voting_period_blocks", d.voting_period_blocks), "voting_period_blocks"),
    )
    return Genesis(chain_id, ts, ca, tuple(agencies), tuple(validators), params)


def _pos(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f"genesis: params.{name} must be a positive integer")
    return v


def load_genesis(path: Path) -> Genesis:
    from chainshare.config import read_json_file

    return parse_genesis(read_json_file(path, "genesis file"))


def compute_genesis_block(genesis: Genesis) -> tuple[Any, dict[bytes, bytes], int]:
    """Block 0, the genesis state and its state accumulator."""
    from chainshare.crypto.hashing import EMPTY_KECCAK, ZERO_HASH
    from chainshare.ledger.statehash import IDENTITY, apply_state_changes, compute_state_root
    from chainshare.ledger.types import EMPTY_BLOOM, Block, Header

    state = compute_genesis_state(genesis)
    acc = apply_state_changes(IDENTITY, [(k, None, v) for k, v in sorted(state.items())])
    header = Header(
        parent_hash=ZERO_HASH, height=0, round=0, timestamp_ms=genesis.timestamp_ms, proposer=bytes(20),
        tx_root=EMPTY_KECCAK, receipts_root=EMPTY_KECCAK, state_root=compute_state_root(acc),
        logs_bloom=EMPTY_BLOOM, validator_set_hash=membership.compute_validator_set_hash(validator_records(genesis.validators)),
        gas_limit=genesis.params.block_gas_limit, gas_used=0, justify_hash=ZERO_HASH,
    )
    return Block(header, (), None), state, acc
