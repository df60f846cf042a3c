"""Signed system-contract calls for explorer tests: anchors, datasets, access requests, governance."""

from __future__ import annotations

import os
from typing import Any

from chainshare.client import NodeClient, transact
from chainshare.crypto.hashing import keccak256
from chainshare.execution.abi import compute_selector, encode_values, parse_signature
from chainshare.execution.contracts.addresses import ACCESS_CONTROL, DATASETS, GOVERNANCE, NOTARY


def calldata(signature: str, *args: Any) -> bytes:
    name, params = parse_signature(signature)
    return compute_selector(name, params) + encode_values([p.type for p in params], list(args))


def anchor(client: NodeClient, key: bytes, digest: bytes | None = None) -> dict[str, Any]:
    return transact(client, key, NOTARY, calldata("anchor(bytes32 digest)", digest or os.urandom(32)))


def register_dataset(client: NodeClient, key: bytes, title: str, agency: str) -> dict[str, Any]:
    policy = f'permit (principal == Agency::"{agency}", action in [Action::"read"], resource);\n'
    data = os.urandom(64)
    return transact(client, key, DATASETS, calldata(
        "register(string title, bytes32 contentHash, string schemaJson, uint64 sizeBytes, string policyText)",
        title, keccak256(data), '{"columns":[{"name":"x","kind":"integer"}]}', len(data), policy))


def request_access(client: NodeClient, key: bytes, dataset_id: int, action: str = "read") -> dict[str, Any]:
    return transact(client, key, ACCESS_CONTROL, calldata(
        "request(uint256 datasetId, string action, string purpose, uint64 durationSeconds)",
        dataset_id, action, "audit of explorer", 3600))


def propose(client: NodeClient, key: bytes, description: str) -> dict[str, Any]:
    inner = calldata("anchor(bytes32 digest)", os.urandom(32))
    return transact(client, key, GOVERNANCE, calldata("propose(address target, bytes data, string description)",
                                                      "0x" + NOTARY.hex(), inner, description))
