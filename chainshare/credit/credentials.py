"""Zero-knowledge credit credentials with Hyperledger AnonCreds (``anoncreds``, Rust core, CL signatures).

An authorised credit issuer signs a credential over a subject's credit status (``ATTRIBUTES``, computed from
the chain's records at one finalized height); the subject proves predicates over it ("score >= 700") to a
verifier who learns only that each predicate holds, that an issuer whose keys are on chain signed it and that
it is not revoked in the latest revocation status list on chain. Nothing here is hand-rolled cryptography:
every signature, proof and accumulator operation is a call into ``anoncreds``.

This module is pure (no I/O beyond a temporary tails file): the objects published on chain come in as
``PublicObjects``; ``chainshare.credit.credential_chain`` reads and writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anoncreds
from anoncreds import (
    AnoncredsError,
    Credential,
    CredentialDefinition,
    CredentialOffer,
    CredentialRequest,
    CredentialRevocationConfig,
    CredentialRevocationState,
    Presentation,
    PresentCredentials,
    RevocationRegistryDefinition,
    RevocationStatusList,
    Schema,
)

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import InvalidInput
from chainshare.execution.contracts.credential_registry import compute_issuer_id

SCHEMA_NAME = "chainshare-credit-status"
SCHEMA_VERSION = "1.0"
ATTRIBUTES = ("black_list_active", "penalties_3y", "score", "computed_height")
CREDENTIAL_FORMAT = "chainshare-anoncreds-credential/1"
PROOF_FORMAT = "chainshare-anoncreds-proof/1"
ISSUER_FORMAT = "chainshare-anoncreds-issuer/1"
MAX_PROOF_BYTES = 256 * 1024
MAX_PREDICATES = 8
MAX_NONCE_DIGITS = 30  # AnonCreds nonces are 80-bit decimal numbers (24 digits); a little slack
_PREDICATE = re.compile(r"^\s*([a-z0-9_]{1,32})\s*(>=|<=|>|<)\s*(-?[0-9]{1,10})\s*$")
_MAX_INT = 2**31 - 1
LINK_SECRET_WARNING = ("this file holds the subject's link secret: whoever has it can prove with every credential "
                       "issued to it. A real subject generates it in its own wallet and sends the issuer only a "
                       "credential request; the devnet CLI generated it here for convenience")


@dataclass(frozen=True)
class Predicate:
    """``attribute op value`` with op one of ``>=``, ``<=``, ``>``, ``<`` (what AnonCreds can prove)."""

    attribute: str
    op: str
    value: int

    def __str__(self) -> str:
        return f"{self.attribute}{self.op}{self.value}"

    def holds(self, actual: int) -> bool:
        return {">=": actual >= self.value, "<=": actual <= self.value, ">": actual > self.value,
                "<": actual < self.value}[self.op]


def parse_predicate(text: str) -> Predicate:
    """A Predicate from ``"score>=700"``; InvalidInput naming the problem."""
    m = _PREDICATE.match(text) if isinstance(text, str) and len(text) <= 64 else None
    if m is None:
        raise InvalidInput(f"predicate {text!r} must be ATTRIBUTE OP INTEGER with OP one of >=, <=, >, < "
                           f"(e.g. score>=700); attributes: {', '.join(ATTRIBUTES)}")
    attribute, op, value = m.group(1), m.group(2), int(m.group(3))
    if attribute not in ATTRIBUTES:
        raise InvalidInput(f"predicate {text!r}: unknown attribute {attribute!r}; attributes: {', '.join(ATTRIBUTES)}")
    if not -_MAX_INT <= value <= _MAX_INT:
        raise InvalidInput(f"predicate {text!r}: the value must fit in 32 bits")
    return Predicate(attribute, op, value)


def parse_predicates(texts: list[str] | tuple[str, ...]) -> tuple[Predicate, ...]:
    if not 1 <= len(texts) <= MAX_PREDICATES:
        raise InvalidInput(f"give 1..{MAX_PREDICATES} predicates")
    preds = tuple(parse_predicate(t) for t in texts)
    if len(set(preds)) != len(preds):
        raise InvalidInput("a predicate is repeated")
    return preds


def check_nonce(nonce: str) -> str:
    """``nonce`` if it is a decimal number as AnonCreds takes it; InvalidInput otherwise."""
    if not isinstance(nonce, str) or parse_ascii_decimal(nonce, max_digits=MAX_NONCE_DIGITS) is None:
        raise InvalidInput(f"a nonce is 1..{MAX_NONCE_DIGITS} decimal digits (make one with "
                           "`chainshare credit credential nonce`)")
    return nonce


def generate_nonce() -> str:
    return str(anoncreds.generate_nonce())


def create_link_secret() -> str:
    """A new link secret (the holder's; every credential it requests is bound to it)."""
    return str(anoncreds.create_link_secret())


def get_library_version() -> str:
    return f"anoncreds {anoncreds.library_version()}"


# -- what is on chain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicObjects:
    """The issuer's public objects as read from the chain (CredentialRegistry)."""

    agency: str
    category: str
    schema_id: str
    schema_json: str
    cred_def_id: str
    cred_def_json: str
    rev_reg_id: str
    rev_reg_def_json: str
    status_list_json: str
    status_timestamp: int
    status_height: int


# -- issuer ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuerState:
    """An issuer's keys and registry (PRIVATE: the credential definition's and registry's private keys).
    ``issued`` maps a revocation index to the subject it was issued to, ``signed`` to the attribute values
    signed (what ``find_changed`` compares the chain's current values with)."""

    agency: str
    category: str
    schema_id: str
    schema_json: str
    cred_def_id: str
    cred_def_json: str
    cred_def_private_json: str
    key_proof_json: str
    rev_reg_id: str
    rev_reg_def_json: str
    rev_reg_private_json: str
    status_list_json: str
    status_timestamp: int
    tails: bytes
    issued: Mapping[int, str] = field(default_factory=dict)
    signed: Mapping[int, Mapping[str, int]] = field(default_factory=dict)

    @property
    def max_cred_num(self) -> int:
        return int(json.loads(self.rev_reg_def_json)["value"]["maxCredNum"])

    def to_public(self, status_height: int) -> PublicObjects:
        """The public half, as a verifier would read it from the chain at ``status_height``."""
        return PublicObjects(self.agency, self.category, self.schema_id, self.schema_json, self.cred_def_id,
                             self.cred_def_json, self.rev_reg_id, self.rev_reg_def_json, self.status_list_json,
                             self.status_timestamp, status_height)

    def revoked(self) -> set[int]:
        return {i for i, bit in enumerate(json.loads(self.status_list_json)["revocationList"]) if bit}

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("tails", "issued", "signed")}
        return {"format": ISSUER_FORMAT, **out, "tails": base64.b64encode(self.tails).decode(),
                "issued": {str(k): v for k, v in self.issued.items()},
                "signed": {str(k): dict(v) for k, v in self.signed.items()}}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IssuerState:
        if obj.get("format") != ISSUER_FORMAT:
            raise InvalidInput(f"not an issuer state file (format {ISSUER_FORMAT!r})")
        fields = {k: obj[k] for k in cls.__dataclass_fields__ if k not in ("tails", "issued", "signed")}
        return cls(**fields, tails=base64.b64decode(obj["tails"]),
                   issued={int(k): v for k, v in obj.get("issued", {}).items()},
                   signed={int(k): v for k, v in obj.get("signed", {}).items()})


def create_issuer_state(agency: str, category: str, max_cred_num: int, timestamp: int,
                        registry_tag: str = "1") -> IssuerState:
    """New schema, credential definition (CL, with revocation) and revocation registry of ``max_cred_num``
    credentials (all issued by default; revocation flips a bit) for ``agency``. Slow: the CL key
    generation searches safe primes (seconds to tens of seconds)."""
    issuer_id = compute_issuer_id(agency)
    schema_id = f"{issuer_id}/schema/{SCHEMA_NAME}/{SCHEMA_VERSION}"
    schema = Schema.create(SCHEMA_NAME, SCHEMA_VERSION, issuer_id, list(ATTRIBUTES))
    cred_def_id = f"{issuer_id}/creddef/{SCHEMA_NAME}/{category}"
    cred_def, cred_def_private, key_proof = CredentialDefinition.create(
        schema_id, schema, issuer_id, category, "CL", support_revocation=True)
    rev_reg_id = f"{cred_def_id}/revreg/{registry_tag}"
    with tempfile.TemporaryDirectory(prefix="chainshare-tails-") as tails_dir:
        rev_reg_def, rev_reg_private = RevocationRegistryDefinition.create(
            cred_def_id, cred_def, issuer_id, registry_tag, "CL_ACCUM", max_cred_num, tails_dir_path=tails_dir)
        tails = Path(rev_reg_def.tails_location).read_bytes()
    status = RevocationStatusList.create(cred_def, rev_reg_id, rev_reg_def, rev_reg_private, issuer_id, True,
                                         timestamp)
    return IssuerState(agency, category, schema_id, schema.to_json(), cred_def_id, cred_def.to_json(),
                       cred_def_private.to_json(), key_proof.to_json(), rev_reg_id, rev_reg_def.to_json(),
                       rev_reg_private.to_json(), status.to_json(), timestamp, tails, {})


def compute_next_index(state: IssuerState) -> int:
    """The lowest revocation index not yet issued; InvalidInput when the registry is full. Indexes are
    1..maxCredNum-1: the status list's position ``index`` is the credential's bit (position 0 is unused)."""
    for index in range(1, state.max_cred_num):
        if index not in state.issued:
            return index
    raise InvalidInput(f"revocation registry {state.rev_reg_id} is full ({state.max_cred_num - 1} credentials): "
                       "start a new issuer state with a larger --registry-size")


def issue_credential(state: IssuerState, subject: str, attributes: Mapping[str, int], link_secret: str,
                     computed_at_height: int) -> tuple[IssuerState, dict[str, Any]]:
    """Run the AnonCreds issuance protocol (offer -> the holder's request bound to ``link_secret`` -> signed
    credential -> the holder's processing) and return the issuer's new state and the holder's credential
    file. In production the holder side (request, processing) runs in the subject's wallet."""
    missing = set(ATTRIBUTES) - set(attributes)
    if missing:
        raise InvalidInput(f"missing attributes {sorted(missing)}")
    for name, value in attributes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
            raise InvalidInput(f"attribute {name} = {value!r}: AnonCreds predicates need integers in 0..{_MAX_INT}")
    index = compute_next_index(state)
    cred_def = CredentialDefinition.load(state.cred_def_json)
    rev_reg_def = RevocationRegistryDefinition.load(state.rev_reg_def_json)
    offer = CredentialOffer.create(state.schema_id, state.cred_def_id, state.key_proof_json)
    request, request_metadata = CredentialRequest.create(
        hashlib.sha256(subject.encode()).hexdigest(), None, cred_def, link_secret, "chainshare", offer)
    credential = Credential.create(
        cred_def, state.cred_def_private_json, offer, request, {k: str(attributes[k]) for k in ATTRIBUTES}, None,
        CredentialRevocationConfig(rev_reg_def, state.rev_reg_private_json, state.status_list_json, index))
    credential = credential.process(request_metadata, link_secret, cred_def, rev_reg_def)
    holder = {"format": CREDENTIAL_FORMAT, "warning": LINK_SECRET_WARNING, "subject": subject,
              "issuer": state.agency, "category": state.category, "schema_id": state.schema_id,
              "cred_def_id": state.cred_def_id, "rev_reg_id": state.rev_reg_id, "revocation_index": index,
              "computed_at_height": computed_at_height, "attributes": {k: attributes[k] for k in ATTRIBUTES},
              "credential": json.loads(credential.to_json()), "link_secret": link_secret,
              "tails": base64.b64encode(state.tails).decode()}
    return replace(state, issued={**state.issued, index: subject},
                   signed={**state.signed, index: dict(attributes)}), holder


def find_changed(state: IssuerState, current: Callable[[str], Mapping[str, int]]) -> list[int]:
    """The unrevoked indexes whose subject's credit status ``current(subject)`` (attribute values, the
    computation height aside) differs from what was signed: the credentials to revoke."""
    revoked, cache, changed = state.revoked(), {}, []
    for index, subject in sorted(state.issued.items()):
        if index in revoked or index not in state.signed:
            continue
        if subject not in cache:
            cache[subject] = {k: v for k, v in current(subject).items() if k != "computed_height"}
        if any(state.signed[index].get(k) != v for k, v in cache[subject].items()):
            changed.append(index)
    return changed


def revoke_credentials(state: IssuerState, indexes: list[int], timestamp: int) -> IssuerState:
    """The state with ``indexes`` revoked in a new status list at ``timestamp`` (publish it on chain)."""
    unknown = [i for i in indexes if i not in state.issued]
    if unknown:
        raise InvalidInput(f"no credential issued at revocation index {unknown[0]} of {state.rev_reg_id}")
    if timestamp <= state.status_timestamp:
        timestamp = state.status_timestamp + 1
    current = RevocationStatusList.load(state.status_list_json)
    updated = current.update(CredentialDefinition.load(state.cred_def_json), state.rev_reg_def_json,
                             anoncreds.RevocationRegistryDefinitionPrivate.load(state.rev_reg_private_json),
                             None, list(indexes), timestamp)
    return replace(state, status_list_json=updated.to_json(), status_timestamp=timestamp)


# -- holder ------------------------------------------------------------------------------------------


def build_presentation_request(predicates: tuple[Predicate, ...], nonce: str, cred_def_id: str,
                               timestamp: int) -> dict[str, Any]:
    """The AnonCreds presentation request both sides derive: only the predicates (no attribute is requested),
    restricted to ``cred_def_id``, non-revoked as of the status list at ``timestamp``."""
    return {"name": "chainshare credit credential proof", "version": "1.0", "nonce": check_nonce(nonce),
            "requested_attributes": {},
            "requested_predicates": {f"predicate{i}": {"name": p.attribute, "p_type": p.op, "p_value": p.value,
                                                       "restrictions": [{"cred_def_id": cred_def_id}]}
                                     for i, p in enumerate(predicates)},
            "non_revoked": {"from": timestamp, "to": timestamp}}


def load_credential_file(obj: Any) -> dict[str, Any]:
    need = ("credential", "link_secret", "tails", "rev_reg_id", "cred_def_id", "schema_id", "revocation_index",
            "attributes")
    if not isinstance(obj, dict) or obj.get("format") != CREDENTIAL_FORMAT or any(k not in obj for k in need):
        raise InvalidInput(f"not a credential file (format {CREDENTIAL_FORMAT!r} with {', '.join(need)})")
    return obj


def create_proof(cred: dict[str, Any], predicates: tuple[Predicate, ...], nonce: str,
                 public: PublicObjects) -> dict[str, Any]:
    """A proof document: the AnonCreds presentation of ``predicates`` (no attribute revealed) with the
    non-revocation proof against the latest status list ``public`` carries. InvalidInput if a predicate is
    false or the credential is revoked there (neither can be proven)."""
    cred = load_credential_file(cred)
    if public.cred_def_id != cred["cred_def_id"] or public.rev_reg_id != cred["rev_reg_id"]:
        raise InvalidInput("the on-chain objects are not this credential's issuer's")
    for p in predicates:
        actual = cred["attributes"][p.attribute]
        if not p.holds(int(actual)):
            raise InvalidInput(f"predicate {p} is false for this credential ({p.attribute} is not {p.op} {p.value}): "
                               "it cannot be proven")
    index = int(cred["revocation_index"])
    bits = json.loads(public.status_list_json)["revocationList"]
    if not 0 < index < len(bits) or bits[index]:
        raise InvalidInput(f"this credential is revoked (index {index} in the status list of time "
                           f"{public.status_timestamp}, height {public.status_height}): ask the issuer for a new one")
    request = build_presentation_request(predicates, nonce, public.cred_def_id, public.status_timestamp)
    credential = Credential.load(json.dumps(cred["credential"]))
    rev_reg_def = RevocationRegistryDefinition.load(public.rev_reg_def_json)
    with tempfile.TemporaryDirectory(prefix="chainshare-tails-") as tails_dir:
        tails_path = Path(tails_dir) / "tails"
        tails_path.write_bytes(base64.b64decode(cred["tails"]))
        rev_state = CredentialRevocationState.create(rev_reg_def, public.status_list_json, index, str(tails_path))
    present = PresentCredentials()
    present.add_predicates(credential, *request["requested_predicates"], timestamp=public.status_timestamp,
                           rev_state=rev_state)
    try:
        presentation = Presentation.create(request, present, None, cred["link_secret"],
                                           {public.schema_id: public.schema_json},
                                           {public.cred_def_id: public.cred_def_json})
    except AnoncredsError as exc:
        raise InvalidInput(f"the proof could not be made: {exc}") from exc
    return {"format": PROOF_FORMAT, "predicates": [str(p) for p in predicates], "issuer": public.agency,
            "schema_id": public.schema_id, "cred_def_id": public.cred_def_id, "rev_reg_id": public.rev_reg_id,
            "status_timestamp": public.status_timestamp, "presentation": json.loads(presentation.to_json())}


# -- verifier ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The verdict on a proof: ``valid`` and, if not, why; what was proven and by whose credential."""

    valid: bool
    reason: str
    predicates: tuple[str, ...] = ()
    issuer: str = ""
    category: str = ""
    status_height: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "reason": self.reason, "predicates": list(self.predicates),
                "issuer": self.issuer, "category": self.category, "status_list_height": self.status_height}


@dataclass(frozen=True)
class ProofClaim:
    """What a proof document says it proves, checked for shape only (``parse_proof``)."""

    predicates: tuple[Predicate, ...]
    cred_def_id: str
    rev_reg_id: str
    schema_id: str
    timestamp: int
    presentation: dict[str, Any]


def parse_proof(raw: bytes | str) -> ProofClaim:
    """The claim of a proof document; InvalidInput with what is wrong for anything that is not one."""
    if len(raw) > MAX_PROOF_BYTES:
        raise InvalidInput(f"a proof is at most {MAX_PROOF_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the proof is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != PROOF_FORMAT:
        raise InvalidInput(f"not a chainshare credential proof (a JSON object with format {PROOF_FORMAT!r})")
    pres = doc.get("presentation")
    preds = doc.get("predicates")
    if not isinstance(pres, dict) or not isinstance(preds, list) or not all(isinstance(p, str) for p in preds):
        raise InvalidInput("a proof has 'predicates' (a list of strings) and 'presentation' (an object)")
    idents = pres.get("identifiers")
    if not isinstance(idents, list) or len(idents) != 1 or not isinstance(idents[0], dict):
        raise InvalidInput("the presentation must come from exactly one credential (one identifier)")
    ident = idents[0]
    fields = [ident.get(k) for k in ("cred_def_id", "rev_reg_id", "schema_id")]
    if not all(isinstance(f, str) and 0 < len(f) <= 256 for f in fields) or not isinstance(ident.get("timestamp"),
                                                                                          int):
        raise InvalidInput("the presentation's identifier must name cred_def_id, rev_reg_id, schema_id and a "
                           "timestamp (a credential without revocation is not accepted)")
    return ProofClaim(parse_predicates(preds), str(fields[0]), str(fields[1]), str(fields[2]), ident["timestamp"], pres)


def verify_proof(claim: ProofClaim, nonce: str, public: PublicObjects,
                 required: tuple[Predicate, ...] = ()) -> Verification:
    """Verify ``claim`` for the verifier's ``nonce`` against the objects on chain: the issuer's schema and
    credential definition, and the LATEST revocation status list (a proof made against an older list is
    refused, so a revocation takes effect as soon as its list is final). ``required`` predicates must all be
    among those proven."""
    check_nonce(nonce)
    proven = tuple(str(p) for p in claim.predicates)

    def verdict(valid: bool, reason: str) -> Verification:
        return Verification(valid, reason, proven, public.agency, public.category, public.status_height)

    missing = [str(p) for p in required if p not in claim.predicates]
    if missing:
        return verdict(False, f"the proof does not prove the required predicate(s) {', '.join(missing)}")
    if claim.timestamp != public.status_timestamp:
        return verdict(False, f"the proof uses the revocation status list of time {claim.timestamp}; the latest "
                                   f"on chain is of time {public.status_timestamp} (height {public.status_height}): "
                                   "ask the holder for a fresh proof")
    revealed = claim.presentation.get("requested_proof", {})
    if any(revealed.get(k) for k in ("revealed_attrs", "revealed_attr_groups", "self_attested_attrs",
                                     "unrevealed_attrs")):
        return verdict(False, "the presentation carries attributes; only predicates are accepted")
    request = build_presentation_request(claim.predicates, nonce, public.cred_def_id, public.status_timestamp)
    try:
        ok = Presentation.load(json.dumps(claim.presentation)).verify(
            request, {public.schema_id: public.schema_json}, {public.cred_def_id: public.cred_def_json},
            {public.rev_reg_id: public.rev_reg_def_json}, [public.status_list_json])
    except AnoncredsError as exc:
        return verdict(False, f"the presentation does not verify: {exc}")
    if not ok:
        return verdict(False, "the proof does not verify for this nonce against the issuer's keys and the "
                                   "latest revocation status list (tampered, replayed or revoked)")
    return verdict(True, "valid")
