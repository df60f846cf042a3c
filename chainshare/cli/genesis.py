"""``chainshare genesis ...``: write and inspect the genesis document of a network."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from chainshare.cli.common import emit, json_option
from chainshare.config import read_json_file
from chainshare.decimal_text import parse_ascii_decimals
from chainshare.errors import ConfigError
from chainshare.execution.genesis import compute_genesis_block, load_genesis, parse_genesis

group = click.Group("genesis", help="Create and inspect the genesis document of a network.")


def _read_json(path: Path, what: str) -> dict[str, object]:
    doc = read_json_file(path, what)
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {path} must be a JSON object")
    return doc


@group.command("create")
@click.option("--chain-id", type=click.IntRange(1, 2**53 - 1), required=True, help="Network chain id.")
@click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Consortium CA directory (its ca.crt is recorded on chain).")
@click.option("--agency", "agency_dirs", multiple=True, required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Agency directory from `ca issue-agency` (repeat for each founding agency).")
@click.option("--validator", "validator_dirs", multiple=True, required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Node directory from `ca issue-node` (repeat for each validator, in rotation order).")
@click.option("--threshold", default="2/3", show_default=True, help="Governance threshold NUM/DEN of agencies.")
@click.option("--block-gas-limit", type=click.IntRange(1_000_000), default=60_000_000, show_default=True)
@click.option("--max-block-txs", type=click.IntRange(1, 100_000), default=2_000, show_default=True)
@click.option("--voting-period-blocks", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@json_option
def create(chain_id: int, ca_dir: Path, agency_dirs: tuple[Path, ...], validator_dirs: tuple[Path, ...],
           threshold: str, block_gas_limit: int, max_block_txs: int, voting_period_blocks: int,
           out: Path, as_json: bool) -> None:
    """Write a genesis document; prints its genesis (block 0) hash that every node checks."""
    terms = parse_ascii_decimals((p.strip() for p in threshold.split("/")), max_digits=9)
    if terms is None or len(terms) != 2:
        raise ConfigError(f"--threshold must look like 2/3, got {threshold!r}")
    num, den = terms
    if out.exists():
        raise ConfigError(f"{out} already exists; refusing to overwrite a genesis document")
    try:
        ca_cert = (ca_dir / "ca.crt").read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {ca_dir / 'ca.crt'}: {exc}") from exc
    agencies = []
    for d in agency_dirs:
        ident = _read_json(d / "identity.json", "agency identity")
        agencies.append({"name": ident["name"], "role": ident["role"], "accounts": [ident["address"]],
                         "certificate": (d / str(ident["cert"])).read_text()})
    validators = []
    for d in validator_dirs:
        nid = _read_json(d / "node-identity.json", "node identity")
        validators.append({"name": nid["name"], "agency": nid["agency"], "bls_public_key": nid["bls_public_key"],
                           "bls_pop": nid["bls_pop"]})
    doc = {"format": 1, "chain_id": chain_id, "timestamp_ms": int(time.time() * 1000), "ca_certificate": ca_cert,
           "agencies": agencies, "validators": validators,
           "params": {"block_gas_limit": block_gas_limit, "max_block_txs": max_block_txs,
                      "governance_threshold": [num, den], "voting_period_blocks": voting_period_blocks}}
    genesis = parse_genesis(doc)
    block0, _, _ = compute_genesis_block(genesis)
    out.write_text(json.dumps(doc, indent=2))
    emit({"genesis": str(out), "chain_id": chain_id, "genesis_hash": "0x" + block0.hash.hex(),
          "agencies": len(agencies), "validators": len(validators)}, as_json)


@group.command("hash")
@click.argument("genesis_file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def hash_(genesis_file: Path, as_json: bool) -> None:
    """Validate a genesis document and print its genesis (block 0) hash."""
    genesis = load_genesis(genesis_file)
    block0, _, _ = compute_genesis_block(genesis)
    emit({"chain_id": genesis.chain_id, "genesis_hash": "0x" + block0.hash.hex()}, as_json)
