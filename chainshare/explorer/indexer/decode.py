"""Decoding of system-contract calls and events with the ABIs of contracts/*.json.

``build_artifacts`` is what ``make contracts`` writes to contracts/*.json (a test keeps the two
equal), so the explorer decodes with exactly the published ABIs. Decoding is total: data that
does not match its ABI yields ``None``, never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.errors import DecodeError
from chainshare.execution.abi import decode_values
from chainshare.execution.contracts.export import build_artifacts


@dataclass(frozen=True)
class AbiEntry:
    contract: str
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    indexed: tuple[bool, ...] = ()


@dataclass(frozen=True)
class AbiRegistry:
    contracts: dict[bytes, str]  # address -> contract name
    methods: dict[tuple[bytes, bytes], AbiEntry]  # (address, selector) -> method
    events: dict[tuple[bytes, bytes], AbiEntry]  # (address, topic0) -> event


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"


@cache
def get_registry() -> AbiRegistry:
    contracts, methods, events = {}, {}, {}
    for name, art in build_artifacts().items():
        addr = bytes.fromhex(art["address"][2:])
        contracts[addr] = name
        for e in art["abi"]:
            names = tuple(i["name"] for i in e["inputs"])
            types = tuple(i["type"] for i in e["inputs"])
            digest = keccak256(_signature(e).encode())
            if e["type"] == "function":
                methods[(addr, digest[:4])] = AbiEntry(name, e["name"], names, types)
            elif e["type"] == "event":
                events[(addr, digest)] = AbiEntry(name, e["name"], names, types,
                                                  tuple(bool(i.get("indexed")) for i in e["inputs"]))
    return AbiRegistry(contracts, methods, events)


def to_jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, str) and v.startswith("0x") and len(v) == 42:
        return v.lower()
    return v


def dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def decode_call(to: bytes | None, data: bytes) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(contract, method, args) of a call; args None when the data does not decode."""
    reg = get_registry()
    if to is None or to not in reg.contracts:
        return None, None, None
    entry = reg.methods.get((to, data[:4]))
    if entry is None:
        return reg.contracts[to], None, None
    try:
        values = decode_values(list(entry.types), data[4:])
    except DecodeError:
        return entry.contract, entry.name, None
    return entry.contract, entry.name, dict(zip(entry.names, to_jsonable(list(values)), strict=True))


def decode_event(address: bytes, topics: tuple[bytes, ...], data: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """(event name, args) of a log emitted by a system contract; (None, None) otherwise."""
    if not topics:
        return None, None
    entry = get_registry().events.get((address, topics[0]))
    if entry is None:
        return None, None
    indexed_types = [t for t, ix in zip(entry.types, entry.indexed, strict=True) if ix]
    plain_types = [t for t, ix in zip(entry.types, entry.indexed, strict=True) if not ix]
    if len(topics) != 1 + len(indexed_types):
        return entry.name, None
    try:
        plain = list(decode_values(plain_types, data))
        indexed = [decode_values([t], tp)[0] if t in ("uint256", "uint64", "address", "bytes32", "bool") else tp
                   for t, tp in zip(indexed_types, topics[1:], strict=True)]
    except DecodeError:
        return entry.name, None
    args: dict[str, Any] = {}
    for name, ix in zip(entry.names, entry.indexed, strict=True):
        args[name] = to_jsonable(indexed.pop(0) if ix else plain.pop(0))
    return entry.name, args
