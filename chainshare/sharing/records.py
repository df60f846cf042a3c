"""The data plane's view of the chain: datasets, grants and their audit trail, read from a node's
finalized state and log indexes only (never from another node).

Calls are encoded with the contracts' own ABI specs; grants are read through the ``getGrant`` /
``isGrantValid`` views (run by the node on its latest finalized state); events are found through
the ledger's topic index and decoded with the contracts' event specs, in chain order (block,
transaction index, log index).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from chainshare.decimal_text import parse_ascii_decimals
from chainshare.errors import ExecutionReverted, InvalidInput, NotFound
from chainshare.execution import abi
from chainshare.execution.contracts import ACCESS_CONTROL, DATASETS, cedar
from chainshare.execution.contracts.access_control import AccessControl, compute_emergency_reason
from chainshare.execution.contracts.datasets import Dataset, Datasets, get_dataset, get_policy_text
from chainshare.execution.contracts.joint import JointCompute
from chainshare.execution.contracts.membership import get_agency
from chainshare.execution.runtime import EventSpec, SystemContract, decode_return, encode_call
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.types import Log

DATASETS_CONTRACT = Datasets()
ACCESS_CONTRACT = AccessControl()
JOINT_CONTRACT = JointCompute()
READ_ACTIONS = (cedar.ACTION_READ, cedar.ACTION_READ_IDENTIFIED)
COMPUTE_ACTIONS = (cedar.ACTION_COMPUTE,)
MAX_ID = 2**64 - 1
_VIEW_GAS = 10_000_000


class ChainNode(Protocol):
    """What the data plane reads of a node: its finalized chain and view calls on it."""

    @property
    def chain_id(self) -> int: ...

    @property
    def chain(self) -> ChainStore: ...

    def call(self, sender: bytes, to: bytes, data: bytes, gas: int | None = None) -> tuple[bool, bytes, int]: ...


# --------------------------------------------------------------------------- calls


def call_view(node: ChainNode, contract: SystemContract, name: str, *args: Any) -> tuple[Any, ...]:
    """Run a view on the node's latest finalized state; NotFound for "no dataset/grant ..." reverts,
    ExecutionReverted for any other."""
    ok, out, _ = node.call(bytes(20), contract.ADDRESS, encode_call(contract, name, *args), _VIEW_GAS)
    if not ok:
        reason = abi.decode_revert_reason(out) or "reverted"
        if reason.startswith(("no dataset", "no grant")):
            raise NotFound(f"{reason} on this node's chain")
        raise ExecutionReverted(reason, data="0x" + out.hex())
    return decode_return(contract, name, out)


def check_id(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise InvalidInput(f"{what} must be an integer in 1..{MAX_ID}")
    return value


# --------------------------------------------------------------------------- datasets


def read_dataset(node: ChainNode, dataset_id: int) -> Dataset:
    """The dataset record; NotFound if the chain has none."""
    record = get_dataset(node.chain.state, check_id(dataset_id, "dataset id"))
    if record is None:
        raise NotFound(f"no dataset {dataset_id} on this node's chain (head {node.chain.head_height})")
    return record


def count_datasets(node: ChainNode) -> int:
    return int(call_view(node, DATASETS_CONTRACT, "datasetCount")[0])


class DatasetTitleIndex:
    """The datasets of a node's chain by (owner, title). A dataset's owner and title never change once it is
    registered, so each dataset is read once, as it appears (the first lookup reads those registered so far,
    each later one only the new ones); a lookup then reads just its candidates, as they are now."""

    def __init__(self, node: ChainNode) -> None:
        self.node = node
        self._indexed = 0
        self._ids: dict[tuple[str, str], list[int]] = {}
        self._lock = threading.Lock()

    def find(self, owner: str, title: str) -> list[Dataset]:
        """The datasets ``owner`` registered under ``title``, oldest first (retired ones too)."""
        with self._lock:
            total = count_datasets(self.node)
            for dataset_id in range(self._indexed + 1, total + 1):
                d = read_dataset(self.node, dataset_id)
                self._ids.setdefault((d.owner, d.title), []).append(d.id)
            self._indexed = max(self._indexed, total)
            ids = list(self._ids.get((owner, title), ()))
        return [read_dataset(self.node, i) for i in ids]


def read_versions(node: ChainNode, record: Dataset) -> list[dict[str, Any]]:
    out = []
    for version in range(1, record.version + 1):
        content_hash, size, height, timestamp = call_view(node, DATASETS_CONTRACT, "getVersion", record.id, version)
        out.append({"version": version, "content_hash": "0x" + bytes(content_hash).hex(), "size": size,
                    "block": height, "timestamp": timestamp})
    return out


def dataset_json(record: Dataset, *, detail: bool = False, node: ChainNode | None = None) -> dict[str, Any]:
    """A dataset as the API and CLI show it (``detail``: with its policy text and versions)."""
    out: dict[str, Any] = {
        "id": record.id, "owner": record.owner, "title": record.title,
        "content_hash": "0x" + record.content_hash.hex(), "size": record.size_bytes, "version": record.version,
        "policy_id": record.policy_id, "retired": record.retired, "registered_block": record.registered_height,
        "schema": json.loads(record.schema_json),
    }
    if detail:
        assert node is not None
        out["policy_text"] = get_policy_text(node.chain.state, record.id)
        out["versions"] = read_versions(node, record)
    return out


# --------------------------------------------------------------------------- grants


@dataclass(frozen=True)
class GrantRecord:
    id: int
    dataset_id: int
    grantee: str
    action: str
    purpose: str
    expires_at: int  # unix seconds
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "dataset_id": self.dataset_id, "grantee": self.grantee, "action": self.action,
                "purpose": self.purpose, "expires_at": self.expires_at,
                "expires_at_iso": _iso(self.expires_at), "revoked": self.revoked}


def read_grant(node: ChainNode, grant_id: int) -> GrantRecord:
    """The grant as the chain records it; NotFound if there is none."""
    check_id(grant_id, "grant id")
    dataset_id, grantee, action, purpose, expires_at, revoked = call_view(node, ACCESS_CONTRACT, "getGrant", grant_id)
    return GrantRecord(grant_id, int(dataset_id), str(grantee), str(action), str(purpose), int(expires_at),
                       bool(revoked))


def is_grant_valid_on_chain(node: ChainNode, grant: GrantRecord) -> bool:
    """AccessControl's own ``isGrantValid`` (block time: the node's pending block)."""
    return bool(call_view(node, ACCESS_CONTRACT, "isGrantValid", grant.id, grant.grantee)[0])


def compute_chain_time(node: ChainNode, clock: float | None = None) -> int:
    """Now, in unix seconds, for deciding whether a grant has expired: the later of this node's
    clock and its head block's time (an owner never serves a grant its chain says has expired)."""
    wall = time.time() if clock is None else clock
    return max(int(wall), node.chain.get_head().header.timestamp_ms // 1000)


def get_grant_invalid_reason(node: ChainNode, grant: GrantRecord, now: int) -> str | None:
    """Why ``grant`` cannot be used at ``now`` (the rules of AccessControl's grant validity), or None."""
    if grant.revoked:
        return f"grant {grant.id} was revoked"
    if now >= grant.expires_at:
        return (f"grant {grant.id} expired at {_iso(grant.expires_at)} (this node's time is {_iso(now)}); "
                "request a new grant")
    record = get_dataset(node.chain.state, grant.dataset_id)
    if record is None or record.retired:
        return f"dataset {grant.dataset_id} is retired"
    stopped = compute_emergency_reason(node.chain.state, grant.dataset_id)
    if stopped is not None:
        return stopped
    for name in (grant.grantee, record.owner):
        agency = get_agency(node.chain.state, name)
        if agency is None or not agency["active"]:
            return f"agency {name!r} is revoked"
    return None


def grant_json(node: ChainNode, grant: GrantRecord, now: int | None = None) -> dict[str, Any]:
    at = compute_chain_time(node) if now is None else now
    reason = get_grant_invalid_reason(node, grant, at)
    return {**grant.to_json(), "valid": reason is None, "invalid_reason": reason, "checked_at": at}


def find_grants(node: ChainNode, dataset_id: int, grantee: str, actions: tuple[str, ...]) -> list[GrantRecord]:
    """The grants issued to ``grantee`` for ``dataset_id`` with one of ``actions``, newest first."""
    found = []
    for event in iter_dataset_events(node.chain, dataset_id):
        if (event.name == "GrantIssued" and event.args["grantee"] == grantee
                and event.args["action"] in actions):
            found.append(int(event.args["grantId"]))
    return [read_grant(node, grant_id) for grant_id in reversed(found)]


def select_grant(node: ChainNode, dataset_id: int, grantee: str, actions: tuple[str, ...], now: int) -> GrantRecord:
    """The newest grant of ``grantee`` for ``dataset_id`` and one of ``actions`` that is valid now."""
    grants = find_grants(node, dataset_id, grantee, actions)
    for grant in grants:
        if get_grant_invalid_reason(node, grant, now) is None:
            return grant
    wanted = " or ".join(repr(a) for a in actions)
    if not grants:
        raise NotFound(f"agency {grantee!r} holds no {wanted} grant for dataset {dataset_id}: "
                       f"request one first (chainshare access request {dataset_id} --action ...)")
    raise NotFound(f"none of agency {grantee!r}'s {wanted} grants for dataset {dataset_id} is valid now "
                   f"({', '.join(f'grant {g.id}' for g in grants[:5])}...; the newest: "
                   f"{get_grant_invalid_reason(node, grants[0], now)}): request a new one")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ChainEvent:
    block: int
    tx_index: int
    log_index: int  # within the block, as eth_getLogs numbers them
    tx_hash: bytes
    timestamp_ms: int
    contract: str
    name: str
    args: dict[str, Any]

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.block, self.tx_index, self.log_index)

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "tx_index": self.tx_index, "log_index": self.log_index,
                "tx_hash": "0x" + self.tx_hash.hex(), "timestamp_ms": self.timestamp_ms,
                "time": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(),
                "contract": self.contract, "event": self.name, "args": abi.to_jsonable(self.args)}


_EVENTS: dict[bytes, tuple[bytes, str, EventSpec]] = {
    spec.topic: (contract.ADDRESS, contract.NAME, spec)
    for contract in (DATASETS_CONTRACT, ACCESS_CONTRACT, JOINT_CONTRACT) for spec in contract.EVENTS
}


def decode_event(lg: Log) -> tuple[str, str, dict[str, Any]] | None:
    """(contract name, event name, args) of a Datasets, AccessControl or JointCompute log, or None for any other."""
    if not lg.topics:
        return None
    known = _EVENTS.get(lg.topics[0])
    if known is None or known[0] != lg.address:
        return None
    _, contract_name, spec = known
    args = spec.decode(lg)
    return (contract_name, spec.name, args) if args is not None else None


def _dataset_topic(dataset_id: int) -> bytes:
    return dataset_id.to_bytes(32, "big")


def _names_dataset(lg: Log, topic: bytes) -> bool:
    # Datasets events index the dataset id first; AccessControl events second (after the request or
    # grant id). Consortium-policy events name no dataset.
    if lg.address == DATASETS:
        return len(lg.topics) > 1 and lg.topics[1] == topic
    if lg.address == ACCESS_CONTROL:
        return len(lg.topics) > 2 and lg.topics[2] == topic
    return False


def iter_dataset_events(chain: ChainStore, dataset_id: int,
                        after: tuple[int, int, int] | None = None) -> Iterator[ChainEvent]:
    """Every Datasets and AccessControl event about ``dataset_id`` in chain order, after the
    position ``after`` (block, tx index, log index) if given; found through the topic index."""
    from chainshare.crypto.hashing import keccak256

    topic = _dataset_topic(check_id(dataset_id, "dataset id"))
    start = after[0] if after is not None else 0
    head = chain.head_height
    for height in chain.iter_log_heights(topic, start, head, by_topic=True):
        block = chain.get_block(height)
        receipts = chain.get_receipts(height)
        log_index = 0
        for tx_index, receipt in enumerate(receipts):
            for lg in receipt.logs:
                position = (height, tx_index, log_index)
                log_index += 1
                if (after is not None and position <= after) or not _names_dataset(lg, topic):
                    continue
                decoded = decode_event(lg)
                if decoded is None:
                    continue
                contract_name, name, args = decoded
                yield ChainEvent(height, tx_index, position[2], keccak256(block.transactions[tx_index]),
                                 block.header.timestamp_ms, contract_name, name, args)


def parse_cursor(cursor: str | None) -> tuple[int, int, int] | None:
    """An audit cursor ``block-tx-log`` (as returned in ``next``)."""
    if cursor is None or cursor == "":
        return None
    numbers = parse_ascii_decimals(cursor.split("-"), max_digits=19)
    if numbers is None or len(numbers) != 3:
        raise InvalidInput(f"cursor {cursor[:40]!r} must look like BLOCK-TX-LOG (as returned in 'next')")
    return numbers[0], numbers[1], numbers[2]


def audit_dataset(node: ChainNode, dataset_id: int, *, after: str | None = None, limit: int = 1000) -> dict[str, Any]:
    """The audit trail of a dataset: registration, policies, requests, decisions with their reasons,
    grants, revocations, deliveries and computations, in chain order, ``limit`` at a time."""
    record = read_dataset(node, dataset_id)
    items: list[dict[str, Any]] = []
    next_cursor = None
    for event in iter_dataset_events(node.chain, dataset_id, parse_cursor(after)):
        if len(items) == limit:
            last = items[-1]
            next_cursor = f"{last['block']}-{last['tx_index']}-{last['log_index']}"
            break
        items.append(event.to_json())
    return {"dataset": dataset_json(record), "items": items, "next": next_cursor,
            "head": node.chain.head_height}


def decode_receipt_events(logs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{event name: args} of the Datasets/AccessControl logs of a JSON-RPC receipt (``logs``)."""
    out = {}
    for entry in logs:
        try:
            lg = Log(bytes.fromhex(entry["address"][2:]), tuple(bytes.fromhex(t[2:]) for t in entry["topics"]),
                     bytes.fromhex(entry["data"][2:]))
        except (KeyError, TypeError, ValueError):
            continue
        decoded = decode_event(lg)
        if decoded is not None:
            out[decoded[1]] = decoded[2]
    return out




def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(seconds)
