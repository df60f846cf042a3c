"""CreditRegistry: append-only credit records published by agencies that Governance authorises per category.

Subjects (consensus rules, so written here; ``chainshare.credit.subjects`` builds on them):
- an organisation by its Unified Social Credit Code (GB 32100-2015), validated with python-stdnum
  (``stdnum.cn.uscc``, pinned) in canonical form (18 upper-case characters); a wrong check character
  reverts with the expected one;
- a natural person only by a handle ``P-`` + 64 hex digits, which registrars derive off chain with a key
  no member holds; no personal identifier is ever accepted here, and a person's summary is a hash only.

A record has an id (sequential from 1), versions (a correction appends version n+1 that points to the
hash of version n), and a lifecycle in which every step is an event and nothing is erased:
publish -> [objection filed -> under review -> upheld | corrected] -> [repair requested after the
minimum display period -> repaired (no longer displayed) | rejected] -> expired after the maximum
period | withdrawn. Periods are counted from ``effectiveFrom`` in block time (seconds), never the wall
clock. Every record event carries the record id, the keccak of its subject and of its category as
topics 1..3, so a watcher or an indexer filters by subject or category with ``eth_getLogs``.

Governance (only) defines categories, authorises issuer agencies per category, grants the
``credit_registrar`` role, sets the objection deadline and installs scoring rules (numbered versions;
an installed rule is never changed, a new one is a new version).

Storage (under this contract's prefix): ``cat:<code>`` [title, active]; ``iss:<code>\\x00<agency>``;
``reg:<agency>``; ``deadline``; ``rules`` count, ``rule:<v 8B>`` [json, height]; ``count``;
``r:<id 8B>`` the record's current state; ``v:<id><version 8B>`` each version's fields;
``sc:<subject key>`` count and ``s:<subject key><n 8B>`` the subject's record ids.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from stdnum.cn import uscc as _uscc
from stdnum.exceptions import ValidationError as _StdnumError

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY, GOVERNANCE
from chainshare.execution.contracts.json_depth import load_contract_json
from chainshare.execution.contracts.membership import get_agency, get_agency_of
from chainshare.execution.runtime import CONTRACT_PREFIX, CallContext, Revert, SystemContract, event, method

# -- subjects ------------------------------------------------------------------------------------

SUBJECT_ORGANISATION = 1
SUBJECT_PERSON = 2
PERSON_HANDLE = re.compile(r"^P-[0-9a-f]{64}$")  # v1/v2 rule: ``match`` with ``$`` also takes a final "\n"
PERSON_HANDLE_EXACT = re.compile(r"P-[0-9a-f]{64}")  # from v3 (forks/v3): ``fullmatch``, the handle and nothing else
_USCC_SHAPE = re.compile(r"^[0-9A-HJ-NP-RTUW-Y]{18}$")  # 0-9 and A-Y without I, O, S, V, Z


def validate_uscc(code: str) -> str:
    """``code`` if it is a valid USCC in canonical form; ValueError naming the problem (the expected check
    character when only that is wrong)."""
    if not isinstance(code, str) or len(code) > 64:
        raise ValueError("a USCC is 18 characters")
    problem = _uscc_problem(code)
    if problem:
        raise ValueError(problem)
    return code


_CANONICAL_USCC = re.compile(r"[0-9]{8}[0-9A-HJ-NP-RTUW-Y]{10}")  # the form stdnum's validate accepts, compacted


@functools.lru_cache(maxsize=65536)
def _uscc_problem(code: str) -> str:
    """What is wrong with ``code`` as a canonical USCC ("" if nothing); pure, so cached. A code already in
    canonical form (stdnum's ``compact`` leaves it unchanged and its format checks pass) is judged by the
    check character alone, which is all ``validate`` has left to check; anything else takes the full path
    that names the problem (profiling: the three ``compact`` calls cost ~2/3 of a USCC check)."""
    if _CANONICAL_USCC.fullmatch(code) and code[17] == _uscc.calc_check_digit(code[:17]):
        return ""
    canonical = _uscc.compact(code)
    if len(canonical) != 18:
        return f"USCC {code!r} has {len(canonical)} characters; a USCC has 18 (GB 32100-2015)"
    if not _USCC_SHAPE.match(canonical):
        return f"USCC {code!r} has characters outside 0-9 and A-Y without I, O, S, V, Z"
    try:
        _uscc.validate(canonical)
    except _StdnumError as exc:
        expected = _uscc.calc_check_digit(canonical[:17])
        if expected != canonical[17]:
            return f"USCC {code!r} has check character {canonical[17]!r}; expected {expected!r} for {canonical[:17]}"
        return f"USCC {code!r} is invalid: {exc}"
    if canonical != code:
        return f"USCC {code!r} must be written in canonical form {canonical!r}"
    return ""


def get_subject_kind(subject: str, *, exact_handle: bool = True) -> int:
    """SUBJECT_ORGANISATION or SUBJECT_PERSON; ValueError if ``subject`` is neither a valid USCC nor a handle.
    ``exact_handle=False`` is the rule of protocol versions 1 and 2, which also took a handle followed by "\n"."""
    if isinstance(subject, str) and subject.startswith("P-"):
        if not (PERSON_HANDLE_EXACT.fullmatch(subject) if exact_handle else PERSON_HANDLE.match(subject)):
            raise ValueError("a person's subject is a handle 'P-' + 64 lower-case hex digits from a registrar")
        return SUBJECT_PERSON
    validate_uscc(subject)
    return SUBJECT_ORGANISATION


def compute_subject_key(subject: str) -> bytes:
    return keccak256(subject.encode())


@functools.lru_cache(maxsize=1024)
def compute_category_key(category: str) -> bytes:
    return keccak256(category.encode())


# -- scoring rules (the form Governance installs; chainshare.credit.scoring evaluates them) ---------

MAX_RULE_BYTES = 16 * 1024
MAX_ABS_POINTS = 10**9
SEVERITIES = range(1, 6)


def canonicalize_scoring_rule(text: str, depth_cap: int | None = None) -> str:
    """Canonical JSON of a valid scoring rule, or ValueError naming the first problem. With ``depth_cap``
    (protocol version 4 on) a text nested deeper is refused before it is parsed, whatever the stack depth.

    ``{"name": str, "base": int, "min": int, "max": int,
       "weights": {category: {"1".."5": int points}},   # signed; a missing severity weighs 0
       "decay_days": {category: int >= 0},               # linear decay to 0 over that many days; 0/absent: none
       "caps": {category: int >= 0}}``                   # bound on |sum of the category's contributions|
    """
    if len(text.encode()) > MAX_RULE_BYTES:
        raise ValueError(f"scoring rule is larger than {MAX_RULE_BYTES} bytes")
    obj = load_contract_json(text, "scoring rule", depth_cap)
    if not isinstance(obj, dict) or not {"name", "base", "min", "max", "weights"} <= set(obj) \
            or not set(obj) <= {"name", "base", "min", "max", "weights", "decay_days", "caps"}:
        raise ValueError('scoring rule must be {"name", "base", "min", "max", "weights"[, "decay_days", "caps"]}')

    def _int(v: Any, what: str, lo: int = -MAX_ABS_POINTS) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_ABS_POINTS:
            raise ValueError(f"scoring rule: {what} must be an integer in {lo}..{MAX_ABS_POINTS}")
        return v

    if not isinstance(obj["name"], str) or not 1 <= len(obj["name"]) <= 128:
        raise ValueError("scoring rule: name must be 1..128 characters")
    base, lo, hi = _int(obj["base"], "base"), _int(obj["min"], "min"), _int(obj["max"], "max")
    if not lo <= base <= hi:
        raise ValueError("scoring rule: min <= base <= max is required")
    weights = obj["weights"]
    if not isinstance(weights, dict) or not weights:
        raise ValueError("scoring rule: weights must map categories to {severity: points}")
    out_w: dict[str, dict[str, int]] = {}
    for cat, per in weights.items():
        if not isinstance(per, dict) or not set(per) <= {str(s) for s in SEVERITIES}:
            raise ValueError(f"scoring rule: weights[{cat!r}] must map severities '1'..'5' to points")
        out_w[cat] = {s: _int(p, f"weights[{cat!r}][{s}]") for s, p in per.items()}
    out: dict[str, Any] = {"name": obj["name"], "base": base, "min": lo, "max": hi, "weights": out_w}
    for key in ("decay_days", "caps"):
        m = obj.get(key, {})
        if not isinstance(m, dict):
            raise ValueError(f"scoring rule: {key} must map categories to non-negative integers")
        out[key] = {c: _int(v, f"{key}[{c!r}]", 0) for c, v in m.items()}
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- records ---------------------------------------------------------------------------------------

POSITIVE, NEGATIVE = 1, 2
ACTIVE, REPAIRED, EXPIRED, WITHDRAWN = 1, 2, 3, 4
STATUS_NAMES = {ACTIVE: "active", REPAIRED: "repaired", EXPIRED: "expired", WITHDRAWN: "withdrawn"}
OBJ_NONE, OBJ_FILED, OBJ_UNDER_REVIEW, OBJ_UPHELD, OBJ_CORRECTED = 0, 1, 2, 3, 4
OBJECTION_NAMES = {OBJ_NONE: "none", OBJ_FILED: "filed", OBJ_UNDER_REVIEW: "under_review",
                   OBJ_UPHELD: "upheld", OBJ_CORRECTED: "corrected"}
REPAIR_NONE, REPAIR_REQUESTED, REPAIR_REJECTED, REPAIR_APPROVED = 0, 1, 2, 3
REPAIR_NAMES = {REPAIR_NONE: "none", REPAIR_REQUESTED: "requested", REPAIR_REJECTED: "rejected",
                REPAIR_APPROVED: "approved"}
DEFAULT_OBJECTION_DEADLINE = 20 * 86400
MAX_PERIOD = 100 * 366 * 86400
MAX_CODE = 64
MAX_TEXT = 256
MAX_LONG_TEXT = 2048
ZERO = bytes(32)

K_COUNT = b"count"
K_DEADLINE = b"deadline"
K_RULES = b"rules"
REGISTRAR_ROLE = "credit_registrar"


@dataclass(frozen=True)
class RecordVersion:
    """The content of one version (what a correction replaces)."""

    polarity: int
    severity: int
    document_number: str
    authority: str
    legal_basis: str
    summary: str
    summary_hash: bytes
    decision_date: int
    effective_from: int
    display_min: int
    display_max: int
    evidence_hash: bytes

    def to_list(self) -> list[Any]:
        return [self.polarity, self.severity, self.document_number, self.authority, self.legal_basis, self.summary,
                self.summary_hash, self.decision_date, self.effective_from, self.display_min, self.display_max,
                self.evidence_hash]

    def compute_hash(self, record_id: int, version: int, subject: str, category: str, issuer: str,
                     previous: bytes, *, trusted: bool = False) -> bytes:
        """keccak of the canonical encoding of this version and what it is bound to (its predecessor).
        ``trusted``: every value was built by the contract from ABI-typed arguments, so the type walk of
        ``codec.encode`` is skipped (same bytes); values from elsewhere (a provenance bundle) are checked."""
        preimage = [record_id, version, subject, category, issuer, previous, self.to_list()]
        return keccak256(codec.encode_trusted(preimage) if trusted else codec.encode(preimage))


@dataclass(frozen=True)
class Record:
    id: int
    subject: str
    category: str
    issuer: str
    version: int
    status: int
    objection: int
    objection_deadline: int  # block time (s) by which the issuer must answer an open objection
    repair: int
    published_at: int  # block time (s) of the first version
    version_hash: bytes  # of the current version
    content: RecordVersion

    def encode(self) -> bytes:
        """Canonical bytes of the stored state. Every field comes from ABI-typed arguments or the contract
        itself (strings, bytes, uint8/uint64 integers), so the type walk of ``codec.encode`` is skipped;
        the bytes are the same."""
        return codec.encode_trusted([self.subject, self.category, self.issuer, self.version, self.status, self.objection,
                             self.objection_deadline, self.repair, self.published_at, self.version_hash,
                             self.content.to_list()])


def _decode_record(record_id: int, raw: bytes) -> Record:
    s, c, i, v, st, ob, od, rp, pa, vh, content = codec.decode(raw)
    return Record(record_id, s, c, i, v, st, ob, od, rp, pa, vh, RecordVersion(*content))


def _key(k: bytes) -> bytes:
    return CONTRACT_PREFIX + CREDIT_REGISTRY + k


def is_authorised_issuer(state: Any, category: str, agency: str) -> bool:
    """True if ``category`` is an active category and Governance authorises ``agency`` to issue it
    (two state reads; the rule ``publish`` applies)."""
    if len(category) > MAX_CODE:
        return False
    cat = state.get(_key(b"cat:" + category.encode()))
    if cat is None or not codec.decode(cat)[1]:
        return False
    return state.get(_key(b"iss:" + category.encode() + b"\x00" + agency.encode())) is not None


def get_record(state: Any, record_id: int) -> Record | None:
    """The record's current state, or None (one state read)."""
    if not 0 < record_id < 2**64:
        return None
    raw = state.get(_key(b"r:" + record_id.to_bytes(8, "big")))
    return _decode_record(record_id, raw) if raw is not None else None


def is_overdue(record: Record, now: int) -> bool:
    """An open objection the issuer has not answered by its deadline."""
    return record.objection in (OBJ_FILED, OBJ_UNDER_REVIEW) and now > record.objection_deadline


def compute_display_status(record: Record, now: int) -> str:
    """What a reader should show at block time ``now``: the stored status, or ``expired`` once the maximum
    period has passed (before anyone sent ``expire``), or ``pending`` before ``effectiveFrom``."""
    if record.status == ACTIVE:
        if now >= record.content.effective_from + record.content.display_max:
            return "expired"
        if now < record.content.effective_from:
            return "pending"
    return STATUS_NAMES[record.status]


_PUBLISH_PARAMS = ("string subject, string category, uint8 polarity, uint8 severity, string documentNumber, "
                   "string authority, string legalBasis, string summary, bytes32 summaryHash, uint64 decisionDate, "
                   "uint64 effectiveFrom, uint64 displayMinSeconds, uint64 displayMaxSeconds, bytes32 evidenceHash")
_PUBLISH_TYPES = [p.type for p in abi.parse_params(_PUBLISH_PARAMS)]
MAX_BATCH = 200
_RECORD_TOPICS = "uint256 indexed id, bytes32 indexed subjectKey, bytes32 indexed categoryKey"
_VERSION_FIELDS = ("uint64 version, string subject, string category, string issuer, address account, uint8 polarity, "
                   "uint8 severity, string documentNumber, string authority, string legalBasis, string summary, "
                   "bytes32 summaryHash, uint64 decisionDate, uint64 effectiveFrom, uint64 displayMinSeconds, "
                   "uint64 displayMaxSeconds, bytes32 evidenceHash, bytes32 versionHash, bytes32 previousVersionHash")


_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b-\x1f]")  # below 0x20, except tab and newline


def _text(value: str, what: str, lo: int, hi: int) -> None:
    if not lo <= len(value) <= hi or _CONTROL_CHARACTER.search(value):
        raise Revert(f"{what} must be {lo}..{hi} characters without control characters")


class CreditRegistry(SystemContract):
    """The contract as versions 1 and 2 run it; ``forks/v3`` runs it with ``EXACT_HANDLES``, ``forks/v4`` also
    with ``JSON_DEPTH_CAP``."""

    NAME = "CreditRegistry"
    ADDRESS = CREDIT_REGISTRY
    EXACT_HANDLES = False  # v1/v2: a person handle followed by "\n" is taken (a rule fixed in v3, never in place)
    JSON_DEPTH_CAP: int | None = None  # v1-v3: a scoring rule's nesting is bounded only by the stack (fixed in v4)
    E_PUBLISHED = event(f"RecordPublished({_RECORD_TOPICS}, {_VERSION_FIELDS})")
    E_CORRECTED = event(f"RecordCorrected({_RECORD_TOPICS}, {_VERSION_FIELDS}, string reason)")
    E_OBJECTION = event(f"ObjectionFiled({_RECORD_TOPICS}, uint64 version, string agency, address account, "
                        "string reason, uint64 deadline)")
    E_REVIEW = event(f"ObjectionUnderReview({_RECORD_TOPICS}, string agency)")
    E_RESOLVED = event(f"ObjectionResolved({_RECORD_TOPICS}, uint8 outcome, uint64 version, string note)")
    E_REPAIR_REQUESTED = event(f"RepairRequested({_RECORD_TOPICS}, string agency, address account, string reason)")
    E_REPAIR_DECIDED = event(f"RepairDecided({_RECORD_TOPICS}, bool approved, string agency, string note)")
    E_EXPIRED = event(f"RecordExpired({_RECORD_TOPICS}, uint64 expiredAt)")
    E_WITHDRAWN = event(f"RecordWithdrawn({_RECORD_TOPICS}, string agency, string reason)")
    E_CATEGORY = event("CategorySet(string code, string title, bool active)")
    E_ISSUER = event("IssuerSet(string category, string agency, bool authorised)")
    E_REGISTRAR = event("RegistrarSet(string agency, bool granted)")
    E_DEADLINE = event("ObjectionDeadlineSet(uint64 seconds)")
    E_RULE = event("ScoringRuleInstalled(uint64 indexed version, string ruleJson)")
    E_LOOKUP = event("HandleLookup(bytes32 indexed requestId, string registrar, string requester, string purpose, "
                     "bool allowed, string reason)")
    EVENTS = (E_PUBLISHED, E_CORRECTED, E_OBJECTION, E_REVIEW, E_RESOLVED, E_REPAIR_REQUESTED, E_REPAIR_DECIDED,
              E_EXPIRED, E_WITHDRAWN, E_CATEGORY, E_ISSUER, E_REGISTRAR, E_DEADLINE, E_RULE, E_LOOKUP)

    # -- helpers --

    @staticmethod
    def _now(ctx: CallContext) -> int:
        return ctx.env.timestamp_ms // 1000

    @staticmethod
    def _only_governance(ctx: CallContext) -> None:
        if ctx.sender != GOVERNANCE:
            raise Revert("only Governance may configure the credit registry (propose it)")

    @staticmethod
    def _member_agency(ctx: CallContext) -> str:
        agency = get_agency_of(ctx.state, ctx.sender)
        if agency is None:
            raise Revert("only accounts of member agencies may act on credit records")
        return agency

    def _load(self, ctx: CallContext, record_id: int) -> Record:
        raw = ctx.sload(b"r:" + record_id.to_bytes(8, "big")) if 0 < record_id < 2**64 else None
        if raw is None:
            raise Revert(f"no credit record {record_id}")
        return _decode_record(record_id, raw)

    def _load_issued(self, ctx: CallContext, record_id: int) -> Record:
        r = self._load(ctx, record_id)
        agency = self._member_agency(ctx)
        if agency != r.issuer:
            raise Revert(f"only accounts of agency {r.issuer!r}, the issuer of record {record_id}, may do this")
        return r

    def _check_issuer(self, ctx: CallContext, category: str) -> str:
        agency = self._member_agency(ctx)
        cat = ctx.sload(b"cat:" + category.encode()) if len(category) <= MAX_CODE else None
        if cat is None or not codec.decode(cat)[1]:
            raise Revert(f"no active credit category {category!r}")
        if ctx.sload(b"iss:" + category.encode() + b"\x00" + agency.encode()) is None:
            raise Revert(f"agency {agency!r} is not authorised by Governance to issue {category!r} records")
        return agency

    def _store(self, ctx: CallContext, r: Record) -> None:
        ctx.sstore(b"r:" + r.id.to_bytes(8, "big"), r.encode())

    def _topics(self, r: Record) -> tuple[int, bytes, bytes]:
        return r.id, compute_subject_key(r.subject), compute_category_key(r.category)

    def _check_content(self, ctx: CallContext, kind: int, v: RecordVersion) -> RecordVersion:
        if v.polarity not in (POSITIVE, NEGATIVE):
            raise Revert("polarity must be 1 (positive) or 2 (negative)")
        if v.severity not in SEVERITIES:
            raise Revert("severity tier must be 1..5")
        _text(v.document_number, "decision document number", 1, MAX_TEXT)
        _text(v.authority, "deciding authority", 1, MAX_TEXT)
        _text(v.legal_basis, "legal basis", 1, MAX_LONG_TEXT)
        if kind == SUBJECT_PERSON:
            if v.summary:
                raise Revert("a person's record carries only the hash of its summary (summary must be empty): "
                             "details stay in the issuer's vault")
            if v.summary_hash == ZERO:
                raise Revert("a person's record needs the summary hash")
        else:
            _text(v.summary, "summary", 1, MAX_LONG_TEXT)
            digest = keccak256(v.summary.encode())
            if v.summary_hash not in (ZERO, digest):
                raise Revert("summaryHash must be zero or keccak256(summary) for an organisation")
            if digest != v.summary_hash:  # (dataclasses.replace costs more than the rest of these checks)
                v = RecordVersion(v.polarity, v.severity, v.document_number, v.authority, v.legal_basis, v.summary,
                                  digest, v.decision_date, v.effective_from, v.display_min, v.display_max,
                                  v.evidence_hash)
        if v.evidence_hash == ZERO:
            raise Revert("evidence hash must not be zero")
        if not 0 < v.display_max <= MAX_PERIOD or v.display_min > v.display_max:
            raise Revert(f"display periods must satisfy 0 <= min <= max, 0 < max <= {MAX_PERIOD} seconds")
        if v.effective_from < v.decision_date:
            raise Revert("effectiveFrom must not be before the decision date")
        if v.decision_date > self._now(ctx) + 86400:
            raise Revert("the decision date is in the future (by block time)")
        return v

    def _emit_version(self, ctx: CallContext, spec: Any, r: Record, previous: bytes, *extra: Any) -> None:
        c = r.content
        ctx.emit(spec, *self._topics(r), r.version, r.subject, r.category, r.issuer, "0x" + ctx.sender.hex(),
                 c.polarity, c.severity, c.document_number, c.authority, c.legal_basis, c.summary, c.summary_hash,
                 c.decision_date, c.effective_from, c.display_min, c.display_max, c.evidence_hash, r.version_hash,
                 previous, *extra)

    def _store_version(self, ctx: CallContext, r: Record, previous: bytes) -> None:
        ctx.sstore(b"v:" + r.id.to_bytes(8, "big") + r.version.to_bytes(8, "big"),
                   codec.encode_trusted([r.content.to_list(), r.version_hash, previous, ctx.env.height, self._now(ctx),
                                 ctx.sender]))

    # -- governance --

    @method("setCategory(string code, string title, bool active)")
    def set_category(self, ctx: CallContext, code: str, title: str, active: bool) -> None:
        self._only_governance(ctx)
        if not re.match(r"^[a-z][a-z0-9_]{0,63}$", code):
            raise Revert("a category code is 1..64 characters of a-z, 0-9 and _ starting with a letter")
        _text(title, "category title", 1, MAX_TEXT)
        ctx.sstore(b"cat:" + code.encode(), codec.encode([title, active]))
        ctx.emit(self.E_CATEGORY, code, title, active)

    @method("setIssuer(string category, string agency, bool authorised)")
    def set_issuer(self, ctx: CallContext, category: str, agency: str, authorised: bool) -> None:
        self._only_governance(ctx)
        if len(category) > MAX_CODE or ctx.sload(b"cat:" + category.encode()) is None:
            raise Revert(f"no credit category {category!r}")
        if get_agency(ctx.state, agency) is None:
            raise Revert(f"no agency named {agency!r}")
        ctx.sstore(b"iss:" + category.encode() + b"\x00" + agency.encode(), b"\x01" if authorised else None)
        ctx.emit(self.E_ISSUER, category, agency, authorised)

    @method("setRegistrar(string agency, bool granted)")
    def set_registrar(self, ctx: CallContext, agency: str, granted: bool) -> None:
        self._only_governance(ctx)
        if get_agency(ctx.state, agency) is None:
            raise Revert(f"no agency named {agency!r}")
        ctx.sstore(b"reg:" + agency.encode(), b"\x01" if granted else None)
        ctx.emit(self.E_REGISTRAR, agency, granted)

    @method("setObjectionDeadline(uint64 seconds)")
    def set_objection_deadline(self, ctx: CallContext, seconds: int) -> None:
        self._only_governance(ctx)
        if not 0 < seconds <= 366 * 86400:
            raise Revert("the objection deadline must be 1 second .. 366 days")
        ctx.sstore(K_DEADLINE, seconds.to_bytes(8, "big"))
        ctx.emit(self.E_DEADLINE, seconds)

    @method("installScoringRule(string ruleJson)", returns="uint64 version")
    def install_scoring_rule(self, ctx: CallContext, rule_json: str) -> int:
        self._only_governance(ctx)
        try:
            canonical = canonicalize_scoring_rule(rule_json, self.JSON_DEPTH_CAP)
        except ValueError as exc:
            raise Revert(str(exc)) from exc
        raw = ctx.sload(K_RULES)
        version = (int.from_bytes(raw, "big") if raw else 0) + 1
        ctx.sstore(K_RULES, version.to_bytes(8, "big"))
        ctx.sstore(b"rule:" + version.to_bytes(8, "big"), codec.encode([canonical, ctx.env.height]))
        ctx.emit(self.E_RULE, version, canonical)
        return version

    @method("recordHandleLookup(bytes32 requestId, string requester, string purpose, bool allowed, string reason)")
    def record_handle_lookup(self, ctx: CallContext, request_id: bytes, requester: str, purpose: str, allowed: bool,
                             reason: str) -> None:
        """A registrar records a person-handle lookup it decided (allowed or not); the ID and the handle
        never appear here, only who asked, for what purpose, and the decision."""
        agency = self._member_agency(ctx)
        if ctx.sload(b"reg:" + agency.encode()) is None:
            raise Revert(f"agency {agency!r} does not hold the credit_registrar role")
        if ctx.sload(b"lk:" + request_id) is not None:
            raise Revert("this lookup is already recorded")
        _text(requester, "requester", 1, MAX_CODE)
        _text(purpose, "purpose", 1, MAX_TEXT)
        _text(reason, "reason", 0, MAX_TEXT)
        ctx.sstore(b"lk:" + request_id, b"\x01" if allowed else b"\x00")
        ctx.emit(self.E_LOOKUP, request_id, agency, requester, purpose, allowed, reason)

    # -- lifecycle --

    @method(f"publish({_PUBLISH_PARAMS})", returns="uint256 id")
    def publish(self, ctx: CallContext, *args: Any) -> int:
        return self._publish(ctx, self._check_issuer(ctx, args[1]), args)

    @method("publishBatch(bytes[] records)", returns="uint256 firstId, uint256 count")
    def publish_batch(self, ctx: CallContext, records: list[bytes]) -> tuple[int, int]:
        """Publish many records in one transaction; each element is the ABI encoding of ``publish``'s
        arguments (``abi.encode(subject, category, ..., evidenceHash)``). All or nothing: the first refused
        record reverts the batch, naming its index. Events are exactly those of ``publish``."""
        if not 1 <= len(records) <= MAX_BATCH:
            raise Revert(f"a batch holds 1..{MAX_BATCH} records")
        issuers: dict[str, str] = {}
        first = 0
        for i, raw in enumerate(records):
            try:
                args = abi.decode_values(_PUBLISH_TYPES, raw)
            except ValueError as exc:
                raise Revert(f"record #{i} does not decode as publish's arguments") from exc
            try:
                issuer = issuers.get(args[1]) or issuers.setdefault(args[1], self._check_issuer(ctx, args[1]))
                record_id = self._publish(ctx, issuer, args)
            except Revert as exc:
                raise Revert(f"record #{i}: {exc.message}") from exc
            first = first or record_id
        return first, len(records)

    def _publish(self, ctx: CallContext, issuer: str, args: tuple[Any, ...]) -> int:
        (subject, category, polarity, severity, doc, authority, legal_basis, summary, summary_hash, decision_date,
         effective_from, display_min, display_max, evidence_hash) = args
        try:
            kind = get_subject_kind(subject, exact_handle=self.EXACT_HANDLES)
        except ValueError as exc:
            raise Revert(str(exc)) from exc
        content = self._check_content(ctx, kind, RecordVersion(
            polarity, severity, doc, authority, legal_basis, summary, summary_hash, decision_date, effective_from,
            display_min, display_max, evidence_hash))
        raw = ctx.sload(K_COUNT)
        record_id = (int.from_bytes(raw, "big") if raw else 0) + 1
        ctx.sstore(K_COUNT, record_id.to_bytes(8, "big"))
        vhash = content.compute_hash(record_id, 1, subject, category, issuer, ZERO, trusted=True)
        r = Record(record_id, subject, category, issuer, 1, ACTIVE, OBJ_NONE, 0, REPAIR_NONE, self._now(ctx), vhash,
                   content)
        self._store(ctx, r)
        self._store_version(ctx, r, ZERO)
        skey = compute_subject_key(subject)
        raw_n = ctx.sload(b"sc:" + skey)
        n = int.from_bytes(raw_n, "big") if raw_n else 0
        ctx.sstore(b"s:" + skey + n.to_bytes(8, "big"), record_id.to_bytes(8, "big"))
        ctx.sstore(b"sc:" + skey, (n + 1).to_bytes(8, "big"))
        self._emit_version(ctx, self.E_PUBLISHED, r, ZERO)
        return record_id

    @method("correct(uint256 id, uint8 polarity, uint8 severity, string documentNumber, string authority, "
            "string legalBasis, string summary, bytes32 summaryHash, uint64 decisionDate, uint64 effectiveFrom, "
            "uint64 displayMinSeconds, uint64 displayMaxSeconds, bytes32 evidenceHash, string reason)",
            returns="uint64 version")
    def correct(self, ctx: CallContext, record_id: int, polarity: int, severity: int, doc: str, authority: str,
                legal_basis: str, summary: str, summary_hash: bytes, decision_date: int, effective_from: int,
                display_min: int, display_max: int, evidence_hash: bytes, reason: str) -> int:
        r = self._load_issued(ctx, record_id)
        self._check_issuer(ctx, r.category)
        if r.status != ACTIVE:
            raise Revert(f"record {record_id} is {STATUS_NAMES[r.status]}; only an active record can be corrected")
        _text(reason, "reason", 1, MAX_LONG_TEXT)
        # the subject was taken when the record was published (by that version's rule): only its kind is asked here
        content = self._check_content(ctx, get_subject_kind(r.subject, exact_handle=False), RecordVersion(
            polarity, severity, doc, authority, legal_basis, summary, summary_hash, decision_date, effective_from,
            display_min, display_max, evidence_hash))
        version = r.version + 1
        vhash = content.compute_hash(r.id, version, r.subject, r.category, r.issuer, r.version_hash, trusted=True)
        open_objection = r.objection in (OBJ_FILED, OBJ_UNDER_REVIEW)
        new = replace(r, version=version, version_hash=vhash, content=content,
                      objection=OBJ_CORRECTED if open_objection else r.objection)
        self._store(ctx, new)
        self._store_version(ctx, new, r.version_hash)
        self._emit_version(ctx, self.E_CORRECTED, new, r.version_hash, reason)
        if open_objection:
            ctx.emit(self.E_RESOLVED, *self._topics(new), OBJ_CORRECTED, version, reason)
        return version

    @method("fileObjection(uint256 id, string reason)")
    def file_objection(self, ctx: CallContext, record_id: int, reason: str) -> None:
        r = self._load(ctx, record_id)
        agency = self._member_agency(ctx)
        if r.status != ACTIVE:
            raise Revert(f"record {record_id} is {STATUS_NAMES[r.status]}; objections are to active records")
        if r.objection in (OBJ_FILED, OBJ_UNDER_REVIEW):
            raise Revert(f"record {record_id} already has an open objection")
        _text(reason, "reason", 1, MAX_LONG_TEXT)
        raw = ctx.sload(K_DEADLINE)
        deadline = self._now(ctx) + (int.from_bytes(raw, "big") if raw else DEFAULT_OBJECTION_DEADLINE)
        new = replace(r, objection=OBJ_FILED, objection_deadline=deadline)
        self._store(ctx, new)
        ctx.emit(self.E_OBJECTION, *self._topics(r), r.version, agency, "0x" + ctx.sender.hex(), reason, deadline)

    @method("startReview(uint256 id)")
    def start_review(self, ctx: CallContext, record_id: int) -> None:
        r = self._load_issued(ctx, record_id)
        if r.objection != OBJ_FILED:
            raise Revert(f"record {record_id} has no objection waiting for review")
        self._store(ctx, replace(r, objection=OBJ_UNDER_REVIEW))
        ctx.emit(self.E_REVIEW, *self._topics(r), r.issuer)

    @method("upholdRecord(uint256 id, string note)")
    def uphold_record(self, ctx: CallContext, record_id: int, note: str) -> None:
        """Answer an open objection by keeping the record as it is (a correction answers it otherwise)."""
        r = self._load_issued(ctx, record_id)
        if r.objection not in (OBJ_FILED, OBJ_UNDER_REVIEW):
            raise Revert(f"record {record_id} has no open objection")
        _text(note, "note", 1, MAX_LONG_TEXT)
        self._store(ctx, replace(r, objection=OBJ_UPHELD))
        ctx.emit(self.E_RESOLVED, *self._topics(r), OBJ_UPHELD, r.version, note)

    @method("requestRepair(uint256 id, string reason)")
    def request_repair(self, ctx: CallContext, record_id: int, reason: str) -> None:
        r = self._load(ctx, record_id)
        agency = self._member_agency(ctx)
        if r.status != ACTIVE:
            raise Revert(f"record {record_id} is {STATUS_NAMES[r.status]}; only an active record can be repaired")
        if r.content.polarity != NEGATIVE:
            raise Revert("only negative records can be repaired")
        if r.repair == REPAIR_REQUESTED:
            raise Revert(f"record {record_id} already has a repair request")
        earliest = r.content.effective_from + r.content.display_min
        if self._now(ctx) < earliest:
            raise Revert(f"repair may be requested from block time {earliest} (after the minimum display period)")
        _text(reason, "reason", 1, MAX_LONG_TEXT)
        self._store(ctx, replace(r, repair=REPAIR_REQUESTED))
        ctx.emit(self.E_REPAIR_REQUESTED, *self._topics(r), agency, "0x" + ctx.sender.hex(), reason)

    @method("decideRepair(uint256 id, bool approved, string note)")
    def decide_repair(self, ctx: CallContext, record_id: int, approved: bool, note: str) -> None:
        r = self._load_issued(ctx, record_id)
        if r.repair != REPAIR_REQUESTED or r.status != ACTIVE:
            raise Revert(f"record {record_id} has no pending repair request")
        _text(note, "note", 1, MAX_LONG_TEXT)
        self._store(ctx, replace(r, repair=REPAIR_APPROVED if approved else REPAIR_REJECTED,
                                 status=REPAIRED if approved else r.status))
        ctx.emit(self.E_REPAIR_DECIDED, *self._topics(r), approved, r.issuer, note)

    @method("expire(uint256 id)")
    def expire(self, ctx: CallContext, record_id: int) -> None:
        """Anyone (a member) may mark a record expired once its maximum display period has passed."""
        r = self._load(ctx, record_id)
        self._member_agency(ctx)
        if r.status != ACTIVE:
            raise Revert(f"record {record_id} is {STATUS_NAMES[r.status]}; only an active record expires")
        end = r.content.effective_from + r.content.display_max
        if self._now(ctx) < end:
            raise Revert(f"record {record_id} is displayed until block time {end}")
        self._store(ctx, replace(r, status=EXPIRED))
        ctx.emit(self.E_EXPIRED, *self._topics(r), end)

    @method("withdraw(uint256 id, string reason)")
    def withdraw(self, ctx: CallContext, record_id: int, reason: str) -> None:
        """The issuer withdraws a record whose underlying decision was revoked."""
        r = self._load_issued(ctx, record_id)
        if r.status not in (ACTIVE, REPAIRED):
            raise Revert(f"record {record_id} is {STATUS_NAMES[r.status]}")
        _text(reason, "reason", 1, MAX_LONG_TEXT)
        self._store(ctx, replace(r, status=WITHDRAWN))
        ctx.emit(self.E_WITHDRAWN, *self._topics(r), r.issuer, reason)

    # -- views --

    @method("getRecord(uint256 id)", returns="string subject, string category, string issuer, uint64 version, "
            "string status, string objection, bool objectionOverdue, string repair, uint8 polarity, uint8 severity, "
            "uint64 effectiveFrom, uint64 displayMaxSeconds, bytes32 versionHash", view=True)
    def get_record(self, ctx: CallContext, record_id: int) -> tuple[Any, ...]:
        r = self._load(ctx, record_id)
        now = self._now(ctx)
        return (r.subject, r.category, r.issuer, r.version, compute_display_status(r, now),
                OBJECTION_NAMES[r.objection], is_overdue(r, now), REPAIR_NAMES[r.repair], r.content.polarity,
                r.content.severity, r.content.effective_from, r.content.display_max, r.version_hash)

    @method("getVersion(uint256 id, uint64 version)", returns="bytes32 versionHash, bytes32 previousVersionHash, "
            "uint64 blockNumber, uint64 timestamp, address account, bytes32 evidenceHash", view=True)
    def get_version(self, ctx: CallContext, record_id: int, version: int) -> tuple[Any, ...]:
        self._load(ctx, record_id)
        raw = ctx.sload(b"v:" + record_id.to_bytes(8, "big") + version.to_bytes(8, "big")) \
            if 0 < version < 2**64 else None
        if raw is None:
            raise Revert(f"record {record_id} has no version {version}")
        content, vhash, prev, height, ts, sender = codec.decode(raw)
        return vhash, prev, height, ts, "0x" + sender.hex(), RecordVersion(*content).evidence_hash

    @method("recordsOf(string subject)", returns="uint256[] ids", view=True)
    def records_of(self, ctx: CallContext, subject: str) -> list[int]:
        skey = compute_subject_key(subject)
        raw = ctx.sload(b"sc:" + skey)
        n = int.from_bytes(raw, "big") if raw else 0
        if n > 10_000:
            raise Revert(f"subject has {n} records: read them from the events (eth_getLogs by subjectKey)")
        return [int.from_bytes(ctx.sload(b"s:" + skey + i.to_bytes(8, "big")) or b"", "big") for i in range(n)]

    @method("recordCount()", returns="uint256 count", view=True)
    def record_count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_COUNT)
        return int.from_bytes(raw, "big") if raw else 0

    @method("isIssuer(string category, string agency)", returns="bool", view=True)
    def is_issuer(self, ctx: CallContext, category: str, agency: str) -> bool:
        return ctx.sload(b"iss:" + category.encode() + b"\x00" + agency.encode()) is not None

    @method("isRegistrar(string agency)", returns="bool", view=True)
    def is_registrar(self, ctx: CallContext, agency: str) -> bool:
        return ctx.sload(b"reg:" + agency.encode()) is not None

    @method("getCategory(string code)", returns="string title, bool active", view=True)
    def get_category(self, ctx: CallContext, code: str) -> tuple[str, bool]:
        raw = ctx.sload(b"cat:" + code.encode()) if len(code) <= MAX_CODE else None
        if raw is None:
            raise Revert(f"no credit category {code!r}")
        title, active = codec.decode(raw)
        return title, active

    @method("objectionDeadline()", returns="uint64 seconds", view=True)
    def objection_deadline(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_DEADLINE)
        return int.from_bytes(raw, "big") if raw else DEFAULT_OBJECTION_DEADLINE

    @method("scoringRule(uint64 version)", returns="string ruleJson, uint64 installedAt", view=True)
    def scoring_rule(self, ctx: CallContext, version: int) -> tuple[str, int]:
        raw = ctx.sload(b"rule:" + version.to_bytes(8, "big")) if 0 < version < 2**64 else None
        if raw is None:
            raise Revert(f"no scoring rule version {version}")
        text, height = codec.decode(raw)
        return text, height

    @method("scoringRuleCount()", returns="uint64 count", view=True)
    def scoring_rule_count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_RULES)
        return int.from_bytes(raw, "big") if raw else 0
