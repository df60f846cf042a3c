"""Fuzz call data into the system contracts: what any member (or a proposal Governance executes)
can put in a transaction, run exactly as a block runs it (``Runtime.apply_transaction``).

Contract: ``apply_transaction`` always returns a receipt, whatever the call data (a malformed or
refused call is a revert, status 0): any other exception would escape ``execute_transactions``,
so a proposer could not build a block with the transaction and a validator would fail the block
its peers accept. ``Runtime.call`` (eth_call) returns (ok, output, gas) alike, and
``Runtime.check_call`` (mempool admission) returns or raises a ``ChainshareError``. Each input runs
one to three calls on one genesis state; the fuzzer picks method, sender, and either ABI-encoded
arguments of the method's types or raw bytes after its selector. A revert the runtime made of a contract's unexpected exception counts as a finding too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import _fuzzkit
import atheris

with atheris.instrument_imports(include=["chainshare", "eth_abi"]):
    from chainkit import CHAIN_ID, account, make_genesis, validator

    from chainshare.crypto.hashing import keccak256
    from chainshare.errors import ChainshareError
    from chainshare.execution import abi
    from chainshare.execution.contracts import GOVERNANCE, all_contracts, build_runtime
    from chainshare.execution.genesis import compute_genesis_block
    from chainshare.execution.runtime import BlockEnv, get_nonce
    from chainshare.ledger.state import DictReader, StateView
    from chainshare.ledger.txs import Transaction
    from chainshare.ledger.types import Receipt

ALICE, OUTSIDER = account("fuzz-alice"), account("fuzz-outsider")
VALIDATOR = validator("fuzz-v1", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address])], [VALIDATOR])
_, GENESIS_STATE, _ = compute_genesis_block(GENESIS)
RUNTIME = build_runtime()
METHODS = sorted(((c.ADDRESS, spec) for c in all_contracts() for spec in c.methods.values()),
                 key=lambda m: (m[0], m[1].name))
SENDERS = [ALICE.address, GOVERNANCE, OUTSIDER.address, *sorted({a for a, _ in METHODS} - {GOVERNANCE})]
ENV = BlockEnv(CHAIN_ID, 1, GENESIS.timestamp_ms + 1000, bytes(20), 30_000_000)
STRINGS = [
    "", "Agency A", "read", "compute", "CN-31", "0x" + ALICE.address.hex(), "penalty", "demo", "v1",
    "permit (principal, action, resource);",
    'permit (principal, action == Action::"read", resource) when { principal.jurisdiction == "CN-31" };',
    '{"columns": [{"name": "age", "kind": "integer"}, {"name": "id", "kind": "personal"}], "min_group": 5}',
    '{"name": "demo", "base": 1000, "min": 0, "max": 2000, "weights": {"penalty": {"1": -10}}, '
    '"decay_days": {"penalty": 100}, "caps": {}}',
    '{"value": {"maxCredNum": 100}}', '{"id": "schema:1", "attrNames": ["a"]}', "91310000MA1FL8TQ32",
]


def _value(typ: str, fdp: Any, depth: int = 0) -> Any:
    if typ.endswith("[]"):
        return [_value(typ[:-2], fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4 if depth == 0 else 2))]
    if typ == "address":
        return ("0x" + SENDERS[fdp.ConsumeIntInRange(0, len(SENDERS) - 1)].hex() if fdp.ConsumeBool()
                else "0x" + fdp.ConsumeBytes(20).ljust(20, b"\0").hex())
    if typ == "bool":
        return fdp.ConsumeBool()
    if typ == "bytes32":
        return fdp.ConsumeBytes(32).ljust(32, b"\0")
    if typ.startswith("uint"):
        bits = int(typ[4:])
        small = fdp.ConsumeIntInRange(0, 3)
        return fdp.ConsumeIntInRange(0, 8) if small else fdp.ConsumeIntInRange(0, 2**bits - 1)
    if typ == "bytes":
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    if typ == "string":
        if fdp.ConsumeBool():
            return STRINGS[fdp.ConsumeIntInRange(0, len(STRINGS) - 1)]
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    raise AssertionError(f"no generator for ABI type {typ}")


def _call_data(fdp: Any) -> tuple[bytes, bytes]:
    to, spec = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    if fdp.ConsumeIntInRange(0, 3) == 0:  # raw bytes after a known selector
        return to, spec.selector + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
    types = [p.type for p in spec.params]
    return to, spec.selector + abi.encode_values(types, [_value(t, fdp) for t in types])


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    state = StateView(DictReader(GENESIS_STATE))
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        to, call = _call_data(fdp)
        sender = SENDERS[fdp.ConsumeIntInRange(0, len(SENDERS) - 1)]
        if fdp.ConsumeIntInRange(0, 4) == 0:
            ok, out, gas = RUNTIME.call(StateView(state), sender, to, call, ENV, 10_000_000)
            assert isinstance(ok, bool) and isinstance(out, bytes)
        else:
            tx = Transaction(b"", keccak256(data), 2, CHAIN_ID, get_nonce(state, sender), 10_000_000, to, 0,
                             call, 0, 0, 0, (), 0, 1, 1, sender)
            receipt = RUNTIME.apply_transaction(state, tx, ENV, 0)
            assert isinstance(receipt, Receipt)
            out = receipt.output
        # The runtime turns a contract's unexpected exception into this revert (safe, but still a bug
        # in the contract, which should refuse the arguments with its own reason).
        assert ": the call failed; check its arguments" not in (abi.decode_revert_reason(out) or ""), abi.decode_revert_reason(out)
        try:
            RUNTIME.check_call(to, call)
        except ChainshareError:
            pass


def seeds() -> Iterable[bytes]:
    for i in range(64):  # a few calls of each method (the provider reads these bytes as its choices)
        yield keccak256(b"seed%d" % i) * 8


if __name__ == "__main__":
    _fuzzkit.run(check, seeds)
    sys.exit(0)
