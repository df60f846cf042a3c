"""Datasets: the on-chain register of shared datasets (the data itself stays in its owner's vault).

A dataset has a sequential id (uint256 from 1; its Cedar entity is ``Dataset::"<id>"``), an owner
agency (the agency of the account that registered it), a title, a schema, and versions (content
hash = keccak-256 of the raw bytes, size). Only the owner's accounts may add versions, change the
policy or retire it; a retired dataset stays on record, takes no new version or policy, and
AccessControl denies every request for it.

Schema: JSON ``{"columns": [{"name", "kind"}], "min_group": n}`` with kinds ``string integer number
boolean date personal``, 1..256 uniquely named columns (names of 1..128 characters without control
characters), ``min_group`` an integer in 2..1000000 (default 5); anything else is refused. It is
stored in canonical JSON (sorted keys, no spaces, ``min_group`` written out), the form
``chainshare.sharing.schema`` (the off-chain compute engine that consumes ``personal`` and
``min_group``) produces. These rules are consensus rules, so they are written out here rather than
imported from the data plane, whose rules may evolve; a test checks that the two agree.

Policy: each dataset has one Cedar policy text (see ``cedar``), validated against the schema at
``register``/``setPolicy``; an empty text is allowed and denies everything (Cedar's default deny).
Its id is ``ds<id>-p<revision>`` (revision 1 at registration, +1 at each ``setPolicy``). Grants
already issued are not affected by a policy change (the owner revokes them if needed).

Storage (under this contract's prefix): ``count``; ``d:<id 8B>`` the record; ``v:<id><version 8B>``
each version; ``h:<id><content hash>`` version number by hash; ``p:<id>`` [revision, policy text].
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.execution.contracts import cedar
from chainshare.execution.contracts.addresses import DATASETS
from chainshare.execution.contracts.json_depth import load_contract_json
from chainshare.execution.contracts.membership import get_agency_of
from chainshare.execution.runtime import CONTRACT_PREFIX, CallContext, Revert, SystemContract, event, method

K_COUNT = b"count"
MAX_TITLE = 256
MAX_SCHEMA_BYTES = 64 * 1024
MAX_COLUMNS = 256
MAX_COLUMN_NAME = 128
KINDS = ("string", "integer", "number", "boolean", "date", "personal")
DEFAULT_MIN_GROUP = 5
MIN_MIN_GROUP = 2
MAX_MIN_GROUP = 1_000_000
ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class Dataset:
    id: int
    owner: str
    title: str
    schema_json: str
    size_bytes: int  # of the latest version
    version: int  # number of versions (the latest one)
    content_hash: bytes  # of the latest version
    policy_revision: int
    retired: bool
    registered_height: int

    @property
    def policy_id(self) -> str:
        return compute_policy_id(self.id, self.policy_revision)

    def encode(self) -> bytes:
        return codec.encode([self.owner, self.title, self.schema_json, self.size_bytes, self.version,
                             self.content_hash, self.policy_revision, self.retired, self.registered_height])


def compute_policy_id(dataset_id: int, revision: int) -> str:
    return f"ds{dataset_id}-p{revision}"


def _id_bytes(dataset_id: int) -> bytes | None:
    return dataset_id.to_bytes(8, "big") if 0 < dataset_id < 2**64 else None


def _key(k: bytes) -> bytes:
    return CONTRACT_PREFIX + DATASETS + k


@functools.lru_cache(maxsize=128)
def _decode(dataset_id: int, raw: bytes) -> Dataset:
    """The record ``raw`` of ``dataset_id``. Memoised by its bytes (a Dataset is immutable), as every
    access request decodes the same few records again."""
    owner, title, schema_json, size, version, content_hash, revision, retired, height = codec.decode(raw)
    return Dataset(dataset_id, owner, title, schema_json, size, version, content_hash, revision, retired, height)


def get_dataset(state: Any, dataset_id: int) -> Dataset | None:
    """The dataset record, or None (one state read)."""
    idb = _id_bytes(dataset_id)
    raw = state.get(_key(b"d:" + idb)) if idb else None
    return _decode(dataset_id, bytes(raw)) if raw is not None else None


def get_policy_text(state: Any, dataset_id: int) -> str:
    """The dataset's current policy text ("" if none; one state read)."""
    idb = _id_bytes(dataset_id)
    raw = state.get(_key(b"p:" + idb)) if idb else None
    return _decode_policy_text(bytes(raw)) if raw is not None else ""


@functools.lru_cache(maxsize=256)
def _decode_policy_text(raw: bytes) -> str:
    """The text in a stored policy record (memoised by its bytes, like ``_decode``)."""
    return str(codec.decode(raw)[1])


def get_version_of_hash(state: Any, dataset_id: int, content_hash: bytes) -> int | None:
    """The version of ``dataset_id`` whose content hash is ``content_hash`` (one state read)."""
    idb = _id_bytes(dataset_id)
    raw = state.get(_key(b"h:" + idb + content_hash)) if idb else None
    return int.from_bytes(raw, "big") if raw is not None else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("an object repeats a key")
    return dict(pairs)


def canonicalize_schema(schema_json: str, depth_cap: int | None = None) -> str:
    """The canonical JSON of a valid dataset schema, or Revert naming the first problem. With ``depth_cap``
    (protocol version 4 on) a schema nested deeper reverts before it is parsed, whatever the stack depth."""
    if len(schema_json.encode()) > MAX_SCHEMA_BYTES:
        raise Revert(f"schema is larger than {MAX_SCHEMA_BYTES} bytes")
    try:
        obj = load_contract_json(schema_json, "schema", depth_cap, object_pairs_hook=_unique_keys,
                                 parse_constant=_reject_constant)
    except ValueError as exc:
        raise Revert(str(exc)) from exc
    if not isinstance(obj, dict) or not set(obj) <= {"columns", "min_group"}:
        raise Revert('schema must be a JSON object {"columns": [...], "min_group": n} and nothing else')
    columns = obj.get("columns")
    if not isinstance(columns, list) or not 1 <= len(columns) <= MAX_COLUMNS:
        raise Revert(f"schema 'columns' must be a list of 1..{MAX_COLUMNS} columns")
    seen: set[str] = set()
    out = []
    for i, col in enumerate(columns):
        if not isinstance(col, dict) or set(col) != {"name", "kind"}:
            raise Revert(f'schema column #{i} must be an object with exactly "name" and "kind"')
        name, kind = col["name"], col["kind"]
        if (not isinstance(name, str) or not 1 <= len(name) <= MAX_COLUMN_NAME
                or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)):
            raise Revert(f"schema column #{i}: a name is 1..{MAX_COLUMN_NAME} characters without control characters")
        if kind not in KINDS:
            raise Revert(f"column {name!r} has unknown kind {kind!r}: use one of {', '.join(KINDS)}")
        if name in seen:
            raise Revert(f"column {name!r} appears twice in the schema")
        seen.add(name)
        out.append({"name": name, "kind": kind})
    min_group = obj.get("min_group", DEFAULT_MIN_GROUP)
    if isinstance(min_group, bool) or not isinstance(min_group, int) or not MIN_MIN_GROUP <= min_group <= MAX_MIN_GROUP:
        raise Revert(f"schema 'min_group' must be an integer in {MIN_MIN_GROUP}..{MAX_MIN_GROUP}")
    return json.dumps({"columns": out, "min_group": min_group}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def check_policy(ctx: CallContext, text: str, *, forbid_only: bool = False, allow_empty: bool = True) -> None:
    """Charge for and run Cedar's validation of ``text``; Revert with Cedar's message if refused."""
    if len(text.encode()) > cedar.MAX_POLICY_BYTES:
        raise Revert(f"policy text is larger than {cedar.MAX_POLICY_BYTES} bytes")
    ctx.charge(cedar.compute_validation_gas(text))
    try:
        cedar.check_policy_text(text, forbid_only=forbid_only, allow_empty=allow_empty)
    except cedar.InvalidPolicy as exc:
        raise Revert(f"policy refused: {exc.message}") from exc


class Datasets(SystemContract):
    """The contract as versions 1-3 run it; ``forks/v4`` runs it with ``JSON_DEPTH_CAP``."""

    NAME = "Datasets"
    ADDRESS = DATASETS
    JSON_DEPTH_CAP: int | None = None  # v1-v3: a schema's nesting is bounded only by the stack (fixed in v4)
    E_REGISTERED = event("DatasetRegistered(uint256 indexed id, string owner, string title, bytes32 contentHash, "
                         "uint64 sizeBytes, string schemaJson)")
    E_VERSION = event("DatasetVersionAdded(uint256 indexed id, uint64 version, bytes32 contentHash, uint64 sizeBytes)")
    E_POLICY = event("DatasetPolicySet(uint256 indexed id, string policyId, string policyText)")
    E_RETIRED = event("DatasetRetired(uint256 indexed id, string owner)")
    EVENTS = (E_REGISTERED, E_VERSION, E_POLICY, E_RETIRED)

    def _load(self, ctx: CallContext, dataset_id: int) -> Dataset:
        idb = _id_bytes(dataset_id)
        raw = ctx.sload(b"d:" + idb) if idb else None
        if raw is None:
            raise Revert(f"no dataset {dataset_id}")
        return _decode(dataset_id, bytes(raw))

    def _load_owned(self, ctx: CallContext, dataset_id: int) -> Dataset:
        d = self._load(ctx, dataset_id)
        if get_agency_of(ctx.state, ctx.sender) != d.owner:
            raise Revert(f"only accounts of agency {d.owner!r}, the owner of dataset {dataset_id}, may change it")
        if d.retired:
            raise Revert(f"dataset {dataset_id} is retired")
        return d

    def _store(self, ctx: CallContext, d: Dataset) -> None:
        ctx.sstore(b"d:" + d.id.to_bytes(8, "big"), d.encode())

    def _store_version(self, ctx: CallContext, d: Dataset) -> None:
        idb = d.id.to_bytes(8, "big")
        if ctx.sload(b"h:" + idb + d.content_hash) is not None:
            raise Revert(f"dataset {d.id} already has a version with this content hash")
        ctx.sstore(b"v:" + idb + d.version.to_bytes(8, "big"),
                   codec.encode([d.content_hash, d.size_bytes, ctx.env.height, ctx.env.timestamp_ms // 1000]))
        ctx.sstore(b"h:" + idb + d.content_hash, d.version.to_bytes(8, "big"))

    def _set_policy(self, ctx: CallContext, d: Dataset, text: str) -> None:
        ctx.sstore(b"p:" + d.id.to_bytes(8, "big"), codec.encode([d.policy_revision, text]))
        ctx.emit(self.E_POLICY, d.id, d.policy_id, text)

    @method("register(string title, bytes32 contentHash, string schemaJson, uint64 sizeBytes, string policyText)",
            returns="uint256 id")
    def register(self, ctx: CallContext, title: str, content_hash: bytes, schema_json: str, size_bytes: int,
                 policy_text: str) -> int:
        owner = get_agency_of(ctx.state, ctx.sender)
        if owner is None:
            raise Revert("only accounts of member agencies may register datasets")
        if not 1 <= len(title) <= MAX_TITLE:
            raise Revert(f"title must be 1..{MAX_TITLE} characters")
        if content_hash == ZERO_HASH:
            raise Revert("content hash must not be zero")
        canonical = canonicalize_schema(schema_json, self.JSON_DEPTH_CAP)
        check_policy(ctx, policy_text)
        raw = ctx.sload(K_COUNT)
        dataset_id = (int.from_bytes(raw, "big") if raw else 0) + 1
        ctx.sstore(K_COUNT, dataset_id.to_bytes(8, "big"))
        d = Dataset(dataset_id, owner, title, canonical, size_bytes, 1, content_hash, 1, False, ctx.env.height)
        self._store(ctx, d)
        self._store_version(ctx, d)
        ctx.emit(self.E_REGISTERED, dataset_id, owner, title, content_hash, size_bytes, canonical)
        self._set_policy(ctx, d, policy_text)
        return dataset_id

    @method("addVersion(uint256 id, bytes32 contentHash, uint64 sizeBytes)", returns="uint64 version")
    def add_version(self, ctx: CallContext, dataset_id: int, content_hash: bytes, size_bytes: int) -> int:
        d = self._load_owned(ctx, dataset_id)
        if content_hash == ZERO_HASH:
            raise Revert("content hash must not be zero")
        d = Dataset(d.id, d.owner, d.title, d.schema_json, size_bytes, d.version + 1, content_hash,
                    d.policy_revision, False, d.registered_height)
        self._store_version(ctx, d)
        self._store(ctx, d)
        ctx.emit(self.E_VERSION, d.id, d.version, content_hash, size_bytes)
        return d.version

    @method("setPolicy(uint256 id, string policyText)", returns="string policyId")
    def set_policy(self, ctx: CallContext, dataset_id: int, policy_text: str) -> str:
        d = self._load_owned(ctx, dataset_id)
        check_policy(ctx, policy_text)
        d = Dataset(d.id, d.owner, d.title, d.schema_json, d.size_bytes, d.version, d.content_hash,
                    d.policy_revision + 1, False, d.registered_height)
        self._store(ctx, d)
        self._set_policy(ctx, d, policy_text)
        return d.policy_id

    @method("retire(uint256 id)")
    def retire(self, ctx: CallContext, dataset_id: int) -> None:
        d = self._load_owned(ctx, dataset_id)
        self._store(ctx, Dataset(d.id, d.owner, d.title, d.schema_json, d.size_bytes, d.version, d.content_hash,
                                 d.policy_revision, True, d.registered_height))
        ctx.emit(self.E_RETIRED, d.id, d.owner)

    @method("getDataset(uint256 id)", returns="string owner, string title, bytes32 contentHash, string schemaJson, "
            "uint64 sizeBytes, uint64 version, string policyId, bool retired, uint64 registeredBlock", view=True)
    def get_dataset(self, ctx: CallContext, dataset_id: int) -> tuple[Any, ...]:
        d = self._load(ctx, dataset_id)
        return (d.owner, d.title, d.content_hash, d.schema_json, d.size_bytes, d.version, d.policy_id, d.retired,
                d.registered_height)

    @method("getVersion(uint256 id, uint64 version)",
            returns="bytes32 contentHash, uint64 sizeBytes, uint64 blockNumber, uint64 timestamp", view=True)
    def get_version(self, ctx: CallContext, dataset_id: int, version: int) -> tuple[Any, ...]:
        d = self._load(ctx, dataset_id)
        raw = ctx.sload(b"v:" + d.id.to_bytes(8, "big") + version.to_bytes(8, "big"))
        if raw is None:
            raise Revert(f"dataset {dataset_id} has no version {version}")
        content_hash, size, height, timestamp = codec.decode(raw)
        return content_hash, size, height, timestamp

    @method("getPolicy(uint256 id)", returns="string policyId, string policyText", view=True)
    def get_policy(self, ctx: CallContext, dataset_id: int) -> tuple[str, str]:
        d = self._load(ctx, dataset_id)
        raw = ctx.sload(b"p:" + d.id.to_bytes(8, "big"))
        return d.policy_id, str(codec.decode(raw)[1]) if raw is not None else ""

    @method("datasetCount()", returns="uint256 count", view=True)
    def dataset_count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_COUNT)
        return int.from_bytes(raw, "big") if raw else 0
