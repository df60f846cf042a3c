"""CredentialRegistry: the public half of zero-knowledge credit credentials (Hyperledger AnonCreds objects).

An agency that Governance authorises to issue records of a credit category (CreditRegistry ``setIssuer``)
publishes, as JSON blobs, the AnonCreds schema of its credential, the public credential definition (issuer
keys), a revocation registry definition (whose tails file stays off chain; its hash is in the definition) and
every revocation status list; it also records each issuance (revocation index, subject key, the height the
attributes were computed at; never the attribute values). Verifiers read all of it back and check proofs
against it. Anyone else reverts with the reason; every step is an event.

The contract does not interpret AnonCreds cryptography; it checks what binds the objects together: each
object's ``issuerId`` is ``chainshare:agency:<the sender's agency>``, ids are unique and prefixed by that
issuer id, a credential definition names a published schema of the same issuer, a registry names a published
definition, a status list names its registry and has a timestamp later than the previous list's and not more
than ``MAX_CLOCK_SKEW`` seconds after the block's time. The latest list is the one verifiers use.

Storage (under this contract's prefix): ``o:<kind><id>`` [agency, category, parent id, height, json] for
kind ``s`` schema, ``d`` definition, ``r`` registry; ``l:<registry id>`` [count, timestamp, height, json]
of the latest status list; ``i:<registry id>`` the number of issuances recorded.
"""

from __future__ import annotations

import json
from typing import Any

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.execution.contracts.addresses import CREDENTIAL_REGISTRY
from chainshare.execution.contracts.credit_registry import is_authorised_issuer
from chainshare.execution.contracts.json_depth import is_json_nested_deeper_than, load_contract_json
from chainshare.execution.contracts.membership import get_agency_of
from chainshare.execution.runtime import G_SLOAD, CallContext, Revert, SystemContract, event, method

ISSUER_PREFIX = "chainshare:agency:"
MAX_ID = 256
MAX_CATEGORY = 64
MAX_JSON = 48 * 1024  # a CL credential definition with revocation is ~9 KB; a status list of 1,000 is ~3 KB
MAX_REASON = 256
MAX_CLOCK_SKEW = 300
KIND_SCHEMA, KIND_DEFINITION, KIND_REGISTRY = b"s", b"d", b"r"
KIND_NAMES = {KIND_SCHEMA: "schema", KIND_DEFINITION: "credential definition", KIND_REGISTRY: "revocation registry"}


def compute_issuer_id(agency: str) -> str:
    """The AnonCreds issuer id of an agency (what every object it publishes names as ``issuerId``)."""
    return ISSUER_PREFIX + agency


def _parse(text: str, what: str, depth_cap: int | None) -> dict[str, Any]:
    if len(text.encode()) > MAX_JSON:
        raise Revert(f"{what} JSON is larger than {MAX_JSON} bytes")
    try:
        obj = load_contract_json(text, what, depth_cap)
    except ValueError as exc:
        raise Revert(str(exc)) from exc
    if not isinstance(obj, dict):
        raise Revert(f"{what} must be a JSON object")
    return obj


class CredentialRegistry(SystemContract):
    """The contract as versions 1-3 run it; ``forks/v4`` runs it with ``JSON_DEPTH_CAP``."""

    NAME = "CredentialRegistry"
    ADDRESS = CREDENTIAL_REGISTRY
    JSON_DEPTH_CAP: int | None = None  # v1-v3: an object's nesting is bounded only by the stack (fixed in v4)
    E_SCHEMA = event("SchemaPublished(bytes32 indexed idHash, string schemaId, string category, string agency)")
    E_DEFINITION = event("CredentialDefinitionPublished(bytes32 indexed idHash, string credDefId, string schemaId, "
                         "string agency)")
    E_REGISTRY = event("RevocationRegistryPublished(bytes32 indexed idHash, string revRegId, string credDefId, "
                       "string agency)")
    E_STATUS = event("RevocationStatusListPublished(bytes32 indexed revRegIdHash, string revRegId, uint64 sequence, "
                     "uint64 timestamp, bytes32 listHash, string reason, string agency)")
    E_ISSUED = event("CredentialIssued(bytes32 indexed revRegIdHash, bytes32 indexed subjectKey, string revRegId, "
                     "uint64 revocationIndex, uint64 computedAtHeight, string agency)")
    EVENTS = (E_SCHEMA, E_DEFINITION, E_REGISTRY, E_STATUS, E_ISSUED)

    # -- helpers --

    @staticmethod
    def _agency(ctx: CallContext) -> str:
        agency = get_agency_of(ctx.state, ctx.sender)
        if agency is None:
            raise Revert("only accounts of member agencies may publish credential objects")
        return agency

    @staticmethod
    def _check_authorised(ctx: CallContext, category: str, agency: str) -> None:
        ctx.charge(2 * G_SLOAD)
        if not is_authorised_issuer(ctx.state, category, agency):
            raise Revert(f"agency {agency!r} is not authorised by Governance to issue {category!r} credit records, "
                         "so it may not issue credentials over them")

    @staticmethod
    def _check_id(object_id: str, agency: str, what: str) -> None:
        if not 1 <= len(object_id) <= MAX_ID:
            raise Revert(f"{what} id must be 1..{MAX_ID} characters")
        if not object_id.startswith(compute_issuer_id(agency) + "/"):
            raise Revert(f"{what} id must start with {compute_issuer_id(agency) + '/'!r} (the issuer's namespace)")

    @staticmethod
    def _check_issuer_field(obj: dict[str, Any], agency: str, what: str) -> None:
        if obj.get("issuerId") != compute_issuer_id(agency):
            raise Revert(f"{what} issuerId must be {compute_issuer_id(agency)!r}")

    def _load(self, ctx: CallContext, kind: bytes, object_id: str) -> list[Any] | None:
        if len(object_id) > MAX_ID:
            return None
        raw = ctx.sload(b"o:" + kind + object_id.encode())
        return list(codec.decode(raw)) if raw is not None else None

    def _load_owned(self, ctx: CallContext, kind: bytes, object_id: str, agency: str) -> list[Any]:
        found = self._load(ctx, kind, object_id)
        if found is None:
            raise Revert(f"no {KIND_NAMES[kind]} {object_id!r} on chain")
        if found[0] != agency:
            raise Revert(f"{KIND_NAMES[kind]} {object_id!r} belongs to agency {found[0]!r}")
        self._check_authorised(ctx, found[1], agency)
        return found

    def _parse_child(self, ctx: CallContext, object_id: str, text: str, what: str, parent_field: str,
                     parent_kind: bytes) -> tuple[str, dict[str, Any], str, list[Any]]:
        """(agency, object, parent id, parent record) of an object that names its parent (a definition its
        schema, a registry its definition), which must be the sender agency's and still authorised."""
        agency = self._agency(ctx)
        self._check_id(object_id, agency, what)
        obj = _parse(text, what, self.JSON_DEPTH_CAP)
        self._check_issuer_field(obj, agency, what)
        parent_id = obj.get(parent_field)
        if not isinstance(parent_id, str):
            raise Revert(f"{what} must name its {parent_field}")
        return agency, obj, parent_id, self._load_owned(ctx, parent_kind, parent_id, agency)

    def _store_new(self, ctx: CallContext, kind: bytes, object_id: str, record: list[Any]) -> None:
        if self._load(ctx, kind, object_id) is not None:
            raise Revert(f"{KIND_NAMES[kind]} {object_id!r} is already published (objects are immutable)")
        ctx.sstore(b"o:" + kind + object_id.encode(), codec.encode(record))

    def _store_status_list(self, ctx: CallContext, rev_reg_id: str, timestamp: int, text: str, reason: str,
                           agency: str) -> None:
        obj = _parse(text, "revocation status list", self.JSON_DEPTH_CAP)
        self._check_issuer_field(obj, agency, "revocation status list")
        if obj.get("revRegDefId") != rev_reg_id:
            raise Revert(f"revocation status list revRegDefId must be {rev_reg_id!r}")
        if obj.get("timestamp") != timestamp:
            raise Revert("revocation status list timestamp must equal the timestamp argument")
        if len(reason) > MAX_REASON:
            raise Revert(f"reason is at most {MAX_REASON} characters")
        raw = ctx.sload(b"l:" + rev_reg_id.encode())
        count, previous = (codec.decode(raw)[0], codec.decode(raw)[1]) if raw is not None else (0, -1)
        if timestamp <= previous:
            raise Revert(f"timestamp {timestamp} must be later than the previous list's ({previous})")
        if timestamp > ctx.env.timestamp_ms // 1000 + MAX_CLOCK_SKEW:
            raise Revert(f"timestamp {timestamp} is more than {MAX_CLOCK_SKEW} s after the block's time")
        ctx.sstore(b"l:" + rev_reg_id.encode(), codec.encode([count + 1, timestamp, ctx.env.height, text]))
        ctx.emit(self.E_STATUS, keccak256(rev_reg_id.encode()), rev_reg_id, count + 1, timestamp,
                 keccak256(text.encode()), reason, agency)

    # -- publishing (authorised issuers only) --

    @method("publishSchema(string category, string schemaId, string schemaJson)")
    def publish_schema(self, ctx: CallContext, category: str, schema_id: str, schema_json: str) -> None:
        agency = self._agency(ctx)
        if not 1 <= len(category) <= MAX_CATEGORY:
            raise Revert(f"category must be 1..{MAX_CATEGORY} characters")
        self._check_authorised(ctx, category, agency)
        self._check_id(schema_id, agency, "schema")
        obj = _parse(schema_json, "schema", self.JSON_DEPTH_CAP)
        self._check_issuer_field(obj, agency, "schema")
        if not isinstance(obj.get("attrNames"), list) or not obj["attrNames"]:
            raise Revert("schema must name its attributes (attrNames)")
        self._store_new(ctx, KIND_SCHEMA, schema_id, [agency, category, "", ctx.env.height, schema_json])
        ctx.emit(self.E_SCHEMA, keccak256(schema_id.encode()), schema_id, category, agency)

    @method("publishCredentialDefinition(string credDefId, string credDefJson)")
    def publish_credential_definition(self, ctx: CallContext, cred_def_id: str, cred_def_json: str) -> None:
        agency, obj, schema_id, schema = self._parse_child(ctx, cred_def_id, cred_def_json, "credential definition",
                                                           "schemaId", KIND_SCHEMA)
        if not isinstance(obj.get("value"), dict) or "revocation" not in obj["value"]:
            raise Revert("credential definition must support revocation (value.revocation)")
        self._store_new(ctx, KIND_DEFINITION, cred_def_id, [agency, schema[1], schema_id, ctx.env.height,
                                                             cred_def_json])
        ctx.emit(self.E_DEFINITION, keccak256(cred_def_id.encode()), cred_def_id, schema_id, agency)

    @method("publishRevocationRegistry(string revRegId, string revRegDefJson, uint64 timestamp, "
            "string statusListJson)")
    def publish_revocation_registry(self, ctx: CallContext, rev_reg_id: str, rev_reg_def_json: str, timestamp: int,
                                    status_list_json: str) -> None:
        """A registry definition and its first status list (nothing can be proven before one exists)."""
        agency, obj, cred_def_id, definition = self._parse_child(ctx, rev_reg_id, rev_reg_def_json,
                                                                 "revocation registry definition", "credDefId",
                                                                 KIND_DEFINITION)
        value = obj.get("value")
        if not isinstance(value, dict) or not isinstance(value.get("tailsHash"), str):
            raise Revert("revocation registry definition must carry the tails file hash (value.tailsHash)")
        self._store_new(ctx, KIND_REGISTRY, rev_reg_id, [agency, definition[1], cred_def_id, ctx.env.height,
                                                          rev_reg_def_json])
        ctx.emit(self.E_REGISTRY, keccak256(rev_reg_id.encode()), rev_reg_id, cred_def_id, agency)
        self._store_status_list(ctx, rev_reg_id, timestamp, status_list_json, "initial", agency)

    @method("publishStatusList(string revRegId, uint64 timestamp, string statusListJson, string reason)")
    def publish_status_list(self, ctx: CallContext, rev_reg_id: str, timestamp: int, status_list_json: str,
                            reason: str) -> None:
        """A new revocation status list (after a revocation): proofs must use it once it is final."""
        agency = self._agency(ctx)
        self._load_owned(ctx, KIND_REGISTRY, rev_reg_id, agency)
        self._store_status_list(ctx, rev_reg_id, timestamp, status_list_json, reason, agency)

    @method("recordIssuance(string revRegId, uint64 revocationIndex, bytes32 subjectKey, uint64 computedAtHeight)")
    def record_issuance(self, ctx: CallContext, rev_reg_id: str, index: int, subject_key: bytes,
                        computed_at: int) -> None:
        """That a credential with ``index`` in the registry was issued to the subject (keccak of its id) from
        the credit state at ``computedAtHeight``; the attribute values stay off chain."""
        agency = self._agency(ctx)
        registry = self._load_owned(ctx, KIND_REGISTRY, rev_reg_id, agency)
        if self.JSON_DEPTH_CAP is not None and is_json_nested_deeper_than(registry[4], self.JSON_DEPTH_CAP):
            # v4: a definition stored under v1-v3 may nest deeper than v4 lets anyone publish
            raise Revert(f"revocation registry {rev_reg_id!r} nests deeper than {self.JSON_DEPTH_CAP} levels")
        max_cred = json.loads(registry[4]).get("value", {}).get("maxCredNum", 0)
        if not 1 <= index < max_cred:  # the status list's bit ``index``; position 0 is unused
            raise Revert(f"revocation index must be 1..{max_cred - 1}")
        if computed_at > ctx.env.height:
            raise Revert(f"computedAtHeight {computed_at} is after this block ({ctx.env.height})")
        raw = ctx.sload(b"i:" + rev_reg_id.encode())
        ctx.sstore(b"i:" + rev_reg_id.encode(), codec.encode((codec.decode(raw) if raw else 0) + 1))
        ctx.emit(self.E_ISSUED, keccak256(rev_reg_id.encode()), subject_key, rev_reg_id, index, computed_at, agency)

    # -- reading --

    def _get(self, ctx: CallContext, kind: bytes, object_id: str) -> tuple[str, str, str, str, int]:
        found = self._load(ctx, kind, object_id)
        if found is None:
            raise Revert(f"no {KIND_NAMES[kind]} {object_id!r} on chain")
        agency, category, parent, height, text = found
        return text, agency, category, parent, height

    @method("getSchema(string schemaId)", returns="string json, string agency, string category, string parent, "
            "uint64 height", view=True)
    def get_schema(self, ctx: CallContext, schema_id: str) -> tuple[str, str, str, str, int]:
        return self._get(ctx, KIND_SCHEMA, schema_id)

    @method("getCredentialDefinition(string credDefId)", returns="string json, string agency, string category, "
            "string schemaId, uint64 height", view=True)
    def get_credential_definition(self, ctx: CallContext, cred_def_id: str) -> tuple[str, str, str, str, int]:
        return self._get(ctx, KIND_DEFINITION, cred_def_id)

    @method("getRevocationRegistry(string revRegId)", returns="string json, string agency, string category, "
            "string credDefId, uint64 height", view=True)
    def get_revocation_registry(self, ctx: CallContext, rev_reg_id: str) -> tuple[str, str, str, str, int]:
        return self._get(ctx, KIND_REGISTRY, rev_reg_id)

    @method("getStatusList(string revRegId)", returns="string json, uint64 timestamp, uint64 sequence, "
            "uint64 height", view=True)
    def get_status_list(self, ctx: CallContext, rev_reg_id: str) -> tuple[str, int, int, int]:
        """The latest revocation status list of the registry (the one proofs must use)."""
        raw = ctx.sload(b"l:" + rev_reg_id.encode()) if len(rev_reg_id) <= MAX_ID else None
        if raw is None:
            raise Revert(f"no revocation registry {rev_reg_id!r} on chain")
        count, timestamp, height, text = codec.decode(raw)
        return text, timestamp, count, height

    @method("issuanceCount(string revRegId)", returns="uint64", view=True)
    def issuance_count(self, ctx: CallContext, rev_reg_id: str) -> int:
        raw = ctx.sload(b"i:" + rev_reg_id.encode()) if len(rev_reg_id) <= MAX_ID else None
        return int(codec.decode(raw)) if raw else 0
