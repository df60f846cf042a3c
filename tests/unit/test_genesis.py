"""Genesis: the document is validated field by field, and block 0 is the network's identity."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from chainkit import account, make_genesis, validator

from chainshare.errors import ConfigError
from chainshare.execution.contracts.membership import get_validator_set_at, is_member
from chainshare.execution.genesis import compute_genesis_block, get_chain_params, load_genesis, parse_genesis
from chainshare.ledger.state import DictReader

ALICE, BOB = account("alice"), account("bob")
V1 = validator("v1", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address]), ("Agency B", [BOB.address])], [V1])
DOC: dict[str, Any] = GENESIS.to_json()


def test_document_round_trips_through_json(tmp_path: Path) -> None:
    assert parse_genesis(json.loads(json.dumps(DOC))) == GENESIS
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(DOC))
    assert load_genesis(path) == GENESIS


def test_block_zero_commits_to_members_validators_and_params() -> None:
    block0, state, acc = compute_genesis_block(GENESIS)
    reader = DictReader(state)
    assert is_member(reader, ALICE.address) and is_member(reader, BOB.address)
    assert not is_member(reader, account("mallory").address)
    assert [v["bls_public_key"] for v in get_validator_set_at(reader, 1).validators] == [V1.public_key]
    assert get_chain_params(reader) == (GENESIS.params.block_gas_limit, GENESIS.params.max_block_txs)
    assert block0.height == 0 and block0.transactions == () and block0.justify is None
    assert compute_genesis_block(GENESIS)[0].hash == block0.hash  # deterministic


@pytest.mark.parametrize("change", [
    lambda d: d.update(chain_id=d["chain_id"] + 1),
    lambda d: d.update(timestamp_ms=d["timestamp_ms"] + 1),
    lambda d: d["agencies"][0].update(role="observer"),
    lambda d: d["params"].update(max_block_txs=7),
    lambda d: d["params"].update(governance_threshold=[3, 4]),
], ids=["chain-id", "timestamp", "role", "params", "threshold"])
def test_any_change_to_the_document_changes_the_genesis_hash(change: Any) -> None:
    doc = copy.deepcopy(DOC)
    change(doc)
    assert compute_genesis_block(parse_genesis(doc))[0].hash != compute_genesis_block(GENESIS)[0].hash


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(format=2), "format 2 is not supported"),
    (lambda d: d.pop("chain_id"), "missing 'chain_id'"),
    (lambda d: d.update(chain_id=0), "chain_id must be a positive integer"),
    (lambda d: d.update(chain_id=True), r"genesis.chain_id must be int"),
    (lambda d: d.update(agencies=[]), "at least one agency"),
    (lambda d: d["agencies"][1].update(name="Agency A"), "agency names must be unique"),
    (lambda d: d["agencies"][1].update(accounts=d["agencies"][0]["accounts"]), "appears in two agencies"),
    (lambda d: d["agencies"][0].update(accounts=["0x1234"]), r"agencies\[0\].accounts must be 20 bytes"),
    (lambda d: d["agencies"][0].update(accounts=[]), "needs at least one account"),
    (lambda d: d.update(validators=[]), "at least one validator"),
    (lambda d: d["validators"][0].update(agency="Nobody"), "is not a genesis agency"),
    (lambda d: d["validators"][0].update(bls_pop="0x" + "00" * 96), "invalid BLS proof of possession"),
    (lambda d: d["validators"].append(dict(d["validators"][0])), "validator keys must be unique"),
    (lambda d: d["params"].update(governance_threshold=[3, 2]), "governance_threshold"),
    (lambda d: d["params"].update(block_gas_limit=0), "params.block_gas_limit must be a positive integer"),
], ids=["format", "no-chain-id", "zero-chain-id", "bool-chain-id", "no-agencies", "duplicate-name",
        "shared-account", "short-account", "no-accounts", "no-validators", "unknown-agency", "bad-pop",
        "duplicate-validator", "threshold", "gas-limit"])
def test_invalid_documents_are_refused_naming_the_field(change: Any, match: str) -> None:
    doc = copy.deepcopy(DOC)
    change(doc)
    with pytest.raises(ConfigError, match=match):
        parse_genesis(doc)


def test_missing_or_unreadable_genesis_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_genesis(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_genesis(tmp_path / "bad.json")


def test_negative_genesis_timestamp_is_refused() -> None:
    doc = copy.deepcopy(DOC)
    doc["timestamp_ms"] = -1
    with pytest.raises(ConfigError, match="timestamp_ms must be between 0 and 2\\*\\*63 - 1"):
        parse_genesis(doc)
