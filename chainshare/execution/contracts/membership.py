"""Membership: the agencies of the consortium, their accounts, certificates and roles.

Agencies come from genesis; afterwards they are added or revoked only by Governance. Only an
account of an active agency may send transactions (``is_member``: one state read).

Agency attributes (what access policies see of an agency besides its role) live under their own
key prefix ``attr:<2-byte name length><name><key>``: only the keys in ``AGENCY_ATTRIBUTE_KEYS``
(those of the Cedar schema), set at genesis or by Governance (``setAgencyAttribute``); an unset
attribute reads as "" and setting "" deletes it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.execution.contracts.addresses import GOVERNANCE, MEMBERSHIP
from chainshare.execution.runtime import (
    CONTRACT_PREFIX,
    G_BLS_VERIFY,
    G_SLOAD,
    CallContext,
    Revert,
    SystemContract,
    event,
    method,
)

K_AGENCY = b"agency:"
K_ACCOUNT = b"acct:"
K_NAMES = b"names"
K_VALIDATORS = b"validators"
K_CA = b"ca"
K_ATTRIBUTE = b"attr:"
K_VALIDATOR_CHANGES = b"vchanges"
K_REVOKED_CERT = b"crl:"
MAX_VALIDATORS = 64
MAX_ACTIVATION_DELAY = 1_000_000
MAX_NAME = 64
MAX_CERT = 8192
AGENCY_ATTRIBUTE_KEYS = ("jurisdiction",)
MAX_ATTRIBUTE_VALUE = 64
MAX_REVOCATION_REASON = 256


def _key(k: bytes) -> bytes:
    return CONTRACT_PREFIX + MEMBERSHIP + k


def is_member(state: Any, address: bytes) -> bool:
    """True iff ``address`` is an account of an active agency."""
    return state.get(_key(K_ACCOUNT + address)) is not None


def get_agency_of(state: Any, address: bytes) -> str | None:
    raw = state.get(_key(K_ACCOUNT + address))
    return raw.decode() if raw is not None else None


def get_agency(state: Any, name: str) -> dict[str, Any] | None:
    raw = state.get(_key(K_AGENCY + name.encode()))
    if raw is None:
        return None
    n, role, accounts, cert, active, added = codec.decode(raw)
    return {"name": n, "role": role, "accounts": accounts, "certificate": cert, "active": active, "added_height": added}


def get_agency_standing(state: Any, name: str) -> tuple[str, bool] | None:
    """(role, active) of agency ``name``, or None if there is no such agency (one state read)."""
    raw = state.get(_key(K_AGENCY + name.encode()))
    return _decode_standing(bytes(raw)) if raw is not None else None


@functools.lru_cache(maxsize=256)
def _decode_standing(raw: bytes) -> tuple[str, bool]:
    """Role and activity in an agency record; memoised by its bytes, as every access request decodes
    the records (certificate included) of the same few agencies again."""
    _, role, _, _, active, _ = codec.decode(raw)
    return role, bool(active)


def _attribute_key(name: str, key: str) -> bytes:
    raw = name.encode()
    return K_ATTRIBUTE + len(raw).to_bytes(2, "big") + raw + key.encode()


def get_agency_attribute(state: Any, name: str, key: str) -> str:
    """An agency attribute ("" when unset)."""
    raw = state.get(_key(_attribute_key(name, key)))
    return raw.decode() if raw is not None else ""


def get_certificate_revocation(state: Any, fingerprint: bytes) -> dict[str, Any] | None:
    """The revocation of the certificate whose DER SHA-256 is ``fingerprint`` ({agency, node, height,
    reason}), or None if it is not revoked: one state read, what every node checks at peer admission."""
    raw = state.get(_key(K_REVOKED_CERT + fingerprint))
    if raw is None:
        return None
    agency, node, height, reason = codec.decode(raw)
    return {"agency": agency, "node": node, "height": height, "reason": reason}


def get_agency_names(state: Any) -> list[str]:
    raw = state.get(_key(K_NAMES))
    return list(codec.decode(raw)) if raw else []


def get_active_agency_names(state: Any) -> list[str]:
    return [n for n in get_agency_names(state) if (a := get_agency(state, n)) and a["active"]]


def get_active_agency_count(state: Any) -> int:
    return len(get_active_agency_names(state))


@dataclass(frozen=True)
class ValidatorSet:
    """The validators that propose and sign blocks from ``activation_height`` on, until the next
    set's activation: epoch 0 is the genesis set, each Governance change starts the next epoch.
    ``validators[i]`` = {name, agency, address, bls_public_key, bls_pop}; i is the index in QC
    bitmaps and the PoA rotation."""

    epoch: int
    activation_height: int
    validators: tuple[dict[str, Any], ...]

    def index_of_key(self, bls_public_key: bytes) -> int | None:
        return next((i for i, v in enumerate(self.validators) if v["bls_public_key"] == bls_public_key), None)


def _decode_validators(items: Any) -> tuple[dict[str, Any], ...]:
    return tuple({"name": v[0], "agency": v[1], "address": v[2], "bls_public_key": v[3], "bls_pop": v[4]}
                 for v in items)


def _validator_rows(validators: Any) -> list[list[Any]]:
    return [[v["name"], v["agency"], v["address"], v["bls_public_key"], v["bls_pop"]] for v in validators]


def get_validator_sets(state: Any) -> list[ValidatorSet]:
    """Every validator set of the chain so far, epoch order (the last may not be active yet)."""
    raw = state.get(_key(K_VALIDATORS))
    sets = [ValidatorSet(0, 0, _decode_validators(codec.decode(raw)) if raw else ())]
    changes = state.get(_key(K_VALIDATOR_CHANGES))
    for epoch, activation, rows in codec.decode(changes) if changes else ():
        sets.append(ValidatorSet(epoch, activation, _decode_validators(rows)))
    return sets


def get_validator_set_at(state: Any, height: int) -> ValidatorSet:
    """The set that proposes and certifies the block at ``height``, read from the state after
    block ``height - 1`` (or any later state: the history is append-only)."""
    return select_validator_set(get_validator_sets(state), height)


def select_validator_set(sets: list[ValidatorSet], height: int) -> ValidatorSet:
    """The set of ``sets`` (epoch order, as ``get_validator_sets`` returns them) in force at ``height``."""
    for vs in reversed(sets):
        if vs.activation_height <= height:
            return vs
    raise AssertionError("the genesis set is active from height 0")


def encode_validators(validators: list[dict[str, Any]]) -> bytes:
    return codec.encode(_validator_rows(validators))


def compute_validator_set_hash(validators: Any) -> bytes:
    """The hash a header carries of the set that certifies the next block."""
    return keccak256(encode_validators(list(validators)))


def genesis_agency_entries(name: str, role: str, accounts: list[bytes], cert: bytes) -> dict[bytes, bytes]:
    """State entries that create an agency at genesis."""
    out = {_key(K_AGENCY + name.encode()): codec.encode([name, role, list(accounts), cert, True, 0])}
    for a in accounts:
        out[_key(K_ACCOUNT + a)] = name.encode()
    return out


def genesis_entries(agencies: list[tuple[str, str, list[bytes], bytes]], validators: list[dict[str, Any]],
                    ca_cert: bytes, attributes: dict[str, dict[str, str]] | None = None) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name, role, accounts, cert in agencies:
        out.update(genesis_agency_entries(name, role, accounts, cert))
    for name, attrs in (attributes or {}).items():
        for key, value in attrs.items():
            if value:
                out[_key(_attribute_key(name, key))] = value.encode()
    out[_key(K_NAMES)] = codec.encode([a[0] for a in agencies])
    out[_key(K_VALIDATORS)] = encode_validators(validators)
    out[_key(K_CA)] = ca_cert
    return out


class Membership(SystemContract):
    NAME = "Membership"
    ADDRESS = MEMBERSHIP
    E_ADDED = event("AgencyAdded(string name, string role, address[] accounts)")
    E_REVOKED = event("AgencyRevoked(string name)")
    E_ATTRIBUTE_SET = event("AgencyAttributeSet(string name, string key, string value)")
    E_VALIDATORS_SCHEDULED = event("ValidatorSetScheduled(uint256 indexed epoch, uint256 activationHeight, "
                                   "string[] names)")
    E_CERTIFICATE_REVOKED = event("CertificateRevoked(bytes32 indexed fingerprint, string agency, string node, "
                                  "string reason)")
    EVENTS = (E_ADDED, E_REVOKED, E_ATTRIBUTE_SET, E_VALIDATORS_SCHEDULED, E_CERTIFICATE_REVOKED)

    @method("isMember(address account)", returns="bool", view=True)
    def is_member(self, ctx: CallContext, account: str) -> bool:
        return ctx.sload(K_ACCOUNT + bytes.fromhex(account[2:])) is not None

    @method("agencyOf(address account)", returns="string", view=True)
    def agency_of(self, ctx: CallContext, account: str) -> str:
        raw = ctx.sload(K_ACCOUNT + bytes.fromhex(account[2:]))
        if raw is None:
            raise Revert("account is not a member of any active agency")
        return raw.decode()

    @method("getAgency(string name)",
            returns="string name, string role, address[] accounts, bytes certificate, bool active", view=True)
    def get_agency(self, ctx: CallContext, name: str) -> tuple[Any, ...]:
        raw = ctx.sload(K_AGENCY + name.encode())
        if raw is None:
            raise Revert(f"no agency named {name!r}")
        n, role, accounts, cert, active, _ = codec.decode(raw)
        return n, role, ["0x" + a.hex() for a in accounts], cert, active

    @method("agencyNames()", returns="string[] names", view=True)
    def agency_names(self, ctx: CallContext) -> list[str]:
        raw = ctx.sload(K_NAMES)
        return list(codec.decode(raw)) if raw else []

    @method("addAgency(string name, string role, address[] accounts, bytes certificate)")
    def add_agency(self, ctx: CallContext, name: str, role: str, accounts: list[str], certificate: bytes) -> None:
        _only_governance(ctx)
        if not 0 < len(name) <= MAX_NAME or not 0 < len(role) <= MAX_NAME:
            raise Revert(f"agency name and role must be 1..{MAX_NAME} characters")
        if len(certificate) > MAX_CERT:
            raise Revert("certificate too large")
        if ctx.sload(K_AGENCY + name.encode()) is not None:
            raise Revert(f"agency {name!r} already exists")
        if not accounts:
            raise Revert("an agency needs at least one account")
        raw_accounts = [bytes.fromhex(a[2:]) for a in accounts]
        for a in raw_accounts:
            if ctx.sload(K_ACCOUNT + a) is not None:
                raise Revert(f"account 0x{a.hex()} already belongs to an agency")
        _check_certificate(ctx, name, certificate, accounts)
        ctx.sstore(K_AGENCY + name.encode(), codec.encode([name, role, raw_accounts, certificate, True, ctx.env.height]))
        for a in raw_accounts:
            ctx.sstore(K_ACCOUNT + a, name.encode())
        names = self.agency_names(ctx)
        ctx.sstore(K_NAMES, codec.encode(names + [name]))
        ctx.emit(self.E_ADDED, name, role, accounts)

    @method("getAgencyAttribute(string name, string key)", returns="string value", view=True)
    def get_agency_attribute(self, ctx: CallContext, name: str, key: str) -> str:
        raw = ctx.sload(_attribute_key(name, key))
        return raw.decode() if raw is not None else ""

    @method("setAgencyAttribute(string name, string key, string value)")
    def set_agency_attribute(self, ctx: CallContext, name: str, key: str, value: str) -> None:
        _only_governance(ctx)
        if key not in AGENCY_ATTRIBUTE_KEYS:
            raise Revert(f"unknown agency attribute {key!r}: use one of {', '.join(AGENCY_ATTRIBUTE_KEYS)}")
        if len(value) > MAX_ATTRIBUTE_VALUE:
            raise Revert(f"agency attribute values are at most {MAX_ATTRIBUTE_VALUE} characters")
        if ctx.sload(K_AGENCY + name.encode()) is None:
            raise Revert(f"no agency named {name!r}")
        ctx.sstore(_attribute_key(name, key), value.encode() if value else None)
        ctx.emit(self.E_ATTRIBUTE_SET, name, key, value)

    @method("setValidators(string[] names, string[] agencies, bytes[] blsPublicKeys, bytes[] blsPops, "
            "uint256 activationHeight)")
    def set_validators(self, ctx: CallContext, names: list[str], agencies: list[str], pks: list[bytes],
                       pops: list[bytes], activation: int) -> None:
        """Schedule the next validator set: it proposes and certifies every block from height
        ``activationHeight`` on (the current set finalizes every block before it). A set
        scheduled but not yet active is replaced by this one; a key already used by a validator
        keeps that validator's name and agency."""
        _only_governance(ctx)
        height = ctx.env.height
        if not height < activation <= height + MAX_ACTIVATION_DELAY:
            raise Revert(f"activation height must be after this block ({height}) and at most "
                         f"{MAX_ACTIVATION_DELAY} blocks later")
        if not 0 < len(names) <= MAX_VALIDATORS or not len(names) == len(agencies) == len(pks) == len(pops):
            raise Revert(f"a validator set has 1..{MAX_VALIDATORS} validators, each with a name, an agency, "
                         "a BLS public key and its proof of possession")
        sets = get_validator_sets(ctx.state)
        ctx.charge(G_SLOAD * 2)
        if sets[-1].activation_height > height:
            sets = sets[:-1]  # a set scheduled but not yet active is replaced (its epoch number is reused)
        if len(set(names)) != len(names) or len(set(pks)) != len(pks):
            raise Revert("validator names and keys must be unique")
        known = {v["bls_public_key"]: (v["name"], v["agency"]) for vs in sets for v in vs.validators}
        rows = []
        for name, agency, pk, pop in zip(names, agencies, pks, pops, strict=True):
            if not 0 < len(name) <= MAX_NAME:
                raise Revert(f"validator names must be 1..{MAX_NAME} characters")
            if known.get(pk, (name, agency)) != (name, agency):
                was = known[pk]
                raise Revert(f"validator key of {was[0]!r} ({was[1]}) must keep its name and agency: a node is "
                             "known to its peers by the name in its certificate")
            ctx.charge(G_BLS_VERIFY)
            raw = ctx.sload(K_AGENCY + agency.encode())
            if raw is None or not codec.decode(raw)[4]:
                raise Revert(f"validator {name!r}: {agency!r} is not an active agency")
            if len(pk) != bls.PUBLIC_KEY_SIZE or len(pop) != bls.SIGNATURE_SIZE or not bls.verify_possession(pk, pop):
                raise Revert(f"validator {name!r}: invalid BLS public key or proof of possession")
            rows.append([name, agency, keccak256(pk)[12:], pk, pop])
        epoch = sets[-1].epoch + 1
        history = [[vs.epoch, vs.activation_height, _validator_rows(vs.validators)] for vs in sets[1:]]
        ctx.sstore(K_VALIDATOR_CHANGES, codec.encode(history + [[epoch, activation, rows]]))
        ctx.emit(self.E_VALIDATORS_SCHEDULED, epoch, activation, names)

    @method("validatorsAt(uint256 height)", returns="uint256 epoch, uint256 activationHeight, string[] names, "
            "address[] addresses", view=True)
    def validators_at(self, ctx: CallContext, height: int) -> tuple[Any, ...]:
        ctx.charge(G_SLOAD * 2)
        vs = get_validator_set_at(ctx.state, height)
        return (vs.epoch, vs.activation_height, [v["name"] for v in vs.validators],
                ["0x" + v["address"].hex() for v in vs.validators])

    @method("revokeAgency(string name)")
    def revoke_agency(self, ctx: CallContext, name: str) -> None:
        _only_governance(ctx)
        raw = ctx.sload(K_AGENCY + name.encode())
        if raw is None:
            raise Revert(f"no agency named {name!r}")
        n, role, accounts, cert, active, added = codec.decode(raw)
        if not active:
            raise Revert(f"agency {name!r} is already revoked")
        _check_sets_survive_revocation(ctx, name)
        ctx.sstore(K_AGENCY + name.encode(), codec.encode([n, role, accounts, cert, False, added]))
        for a in accounts:
            ctx.sstore(K_ACCOUNT + a, None)
        ctx.emit(self.E_REVOKED, name)

    @method("revokeCertificate(bytes certificate, string reason)")
    def revoke_certificate(self, ctx: CallContext, certificate: bytes, reason: str) -> None:
        """Revoke a certificate of the consortium CA for good: from the block that makes this final,
        every node refuses a peer presenting it and drops the sessions that use it. The agency the
        certificate names may revoke it at once (its node's key was compromised); Governance may
        revoke any certificate."""
        if not 0 < len(reason.encode()) <= MAX_REVOCATION_REASON:
            raise Revert(f"a revocation needs a reason of 1..{MAX_REVOCATION_REASON} bytes")
        if len(certificate) > MAX_CERT:
            raise Revert("certificate too large")
        ctx.charge(G_BLS_VERIFY)  # one certificate signature check, priced like a signature check
        subject = _verify_consortium_certificate(ctx, certificate)
        if ctx.sender != GOVERNANCE and get_agency_of(ctx.state, ctx.sender) != subject.agency:
            raise Revert(f"only agency {subject.agency!r} (the certificate's) or Governance may revoke this "
                         "certificate")
        if ctx.sload(K_REVOKED_CERT + subject.fingerprint) is not None:
            raise Revert(f"certificate 0x{subject.fingerprint.hex()} is already revoked")
        node = subject.node or ""
        ctx.sstore(K_REVOKED_CERT + subject.fingerprint, codec.encode([subject.agency, node, ctx.env.height, reason]))
        ctx.emit(self.E_CERTIFICATE_REVOKED, subject.fingerprint, subject.agency, node, reason)

    @method("certificateRevocation(bytes32 fingerprint)",
            returns="bool revoked, string agency, string node, uint256 height, string reason", view=True)
    def certificate_revocation(self, ctx: CallContext, fingerprint: bytes) -> tuple[Any, ...]:
        raw = ctx.sload(K_REVOKED_CERT + fingerprint)
        if raw is None:
            return False, "", "", 0, ""
        agency, node, height, reason = codec.decode(raw)
        return True, agency, node, height, reason


def _check_sets_survive_revocation(ctx: CallContext, name: str) -> None:
    """A revoked agency's nodes are cut off at once but its validators still count in their set:
    refuse a revocation that would leave the set in force, or the one scheduled, with more such
    validators than the f faults it tolerates (the chain would halt; retire them first)."""
    height = ctx.env.height
    ctx.charge(G_SLOAD * 2)
    sets = get_validator_sets(ctx.state)
    current = select_validator_set(sets, height + 1)
    for vs in [current] + [s for s in sets if s.activation_height > height + 1]:
        cut = [v["name"] for v in vs.validators
               if v["agency"] == name or not (get_agency(ctx.state, v["agency"]) or {}).get("active")]
        f = (len(vs.validators) - 1) // 3
        if len(cut) > f:
            raise Revert(f"revoking {name!r} would cut off {len(cut)} of the {len(vs.validators)} validators of "
                         f"validator set {vs.epoch} ({', '.join(cut)}), more than the {f} it tolerates: retire "
                         "them first with setValidators")


def _only_governance(ctx: CallContext) -> None:
    if ctx.sender != GOVERNANCE:
        raise Revert("only Governance may change membership: submit a proposal")


def _check_certificate(ctx: CallContext, name: str, certificate: bytes, accounts: list[str]) -> None:
    """The agency certificate must be issued by the consortium CA and valid at block time."""
    subject = _verify_consortium_certificate(ctx, certificate)
    if subject.agency != name:
        raise Revert(f"certificate is for agency {subject.agency!r}, not {name!r}")
    certified = (subject.account or "").lower()
    if certified not in [a.lower() for a in accounts]:
        raise Revert(f"the certificate binds account {subject.account or 'none'}, which is not among the "
                     "agency's accounts")


def _verify_consortium_certificate(ctx: CallContext, certificate: bytes) -> Any:
    """The subject of ``certificate`` if the consortium CA issued it and it is valid at block time."""
    from datetime import UTC, datetime

    from chainshare.crypto.ca import verify_certificate
    from chainshare.errors import CryptoError

    ca = ctx.sload(K_CA)
    if not ca:
        raise Revert("no consortium CA recorded at genesis")
    try:
        at = datetime.fromtimestamp(ctx.env.timestamp_ms / 1000, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise Revert("block time is outside the range a certificate can be checked at") from exc
    try:
        return verify_certificate(ca, certificate, at=at)
    except CryptoError as exc:
        raise Revert(f"certificate refused: {exc.message}") from exc
