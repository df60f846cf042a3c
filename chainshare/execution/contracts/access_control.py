"""AccessControl: access requests decided by Cedar policies inside the transaction, grants, and the
on-chain record of what was delivered or computed under them.

``request(datasetId, action, purpose, durationSeconds)`` evaluates, with ``cedar.evaluate_access``,
the requesting agency (principal) asking to ``read`` / ``read_identified`` / ``compute`` the dataset
(resource, owner = its agency) for ``purpose`` at the block time (seconds), under the dataset's
policy plus every consortium-wide policy. Every request emits ``AccessRequested`` then
``AccessDecided`` with the decision, the ids of the policies that determined it (``<set>#<k>``, see
``cedar``) and Cedar's evaluation errors; a denied request is a successful transaction (status 1) so
that the decision stays on chain. A malformed request (unknown dataset or action, purpose of 0 or
more than 256 bytes, duration over 365 days) reverts instead: no decision was taken. An allowed
request issues a grant (``GrantIssued``) to the requesting agency, for that action and purpose,
expiring ``durationSeconds`` after the block time (0 means 30 days).

Without evaluating any policy a request is denied when the dataset is retired or its owner agency
has been revoked (the reason is in ``errors``). An owner requesting its own dataset is decided by
the policies like anyone else (a policy may permit ``principal == resource.owner``).

Consortium-wide policies are installed and removed only by Governance (a proposal calling
``installConsortiumPolicy`` / ``removeConsortiumPolicy``), must contain ``forbid`` statements only,
and so always win over a dataset's permits (Cedar: any applicable forbid denies). Their ids are
1..64 characters of ``[A-Za-z0-9_.-]`` not starting with ``ds<digit>`` (reserved for dataset
policies); installing an existing id replaces it. At most 32 of them, 64 KiB in total.

A grant is valid while: not revoked, block time < ``expiresAt``, the dataset is not retired, and
both agencies are active. The grantee or the owner may revoke it. Policy changes do not touch
grants already issued. ``recordDelivery`` (a valid ``read``/``read_identified`` grant, a content
hash that is a version of the dataset, and the hash of the bytes delivered: the version itself
under ``read_identified``, its pseudonymized transform under ``read``, which the requester checks
against this record) and ``recordComputation`` (a valid ``compute`` grant) are sent by accounts of
the owner agency, whose node did the work.

Compute-to-data privacy (see ``chainshare.sharing.compute``): each answered query spends part of a
differential-privacy budget, in micro-epsilon (``EPSILON_UNIT`` = 1 epsilon). The budget belongs to
the grantee agency on the dataset, across all its grants (a new grant does not renew it); the owner
sets it, and the queries each grant may run per hour of block time, with ``setComputeLimits``
(defaults ``DEFAULT_BUDGET_MICRO``, ``DEFAULT_QUERIES_PER_HOUR``). ``recordComputation`` reverts when
the query's epsilon would overrun the budget or the grant has used its queries this hour, so a node
that releases a result only once its record is final can never release more than the budget.
``recordRefusal`` puts a refused query on chain with its reason code (``REFUSAL_REASONS``) and the
epsilon its noisy check spent (charged like an answer); it counts against the hour's queries,
except a ``rate_limit`` refusal, of which one per grant and hour is recorded.

Emergency stops (docs/runbook.md): ``freezeDataset(datasetId, reason)`` suspends every grant of one
dataset (no delivery or computation can be recorded, ``isGrantValid`` is false, new requests are
denied with the reason) until ``unfreezeDataset``; ``pauseSharing(reason)`` does the same for every
dataset of the consortium until ``resumeSharing``. Both are checked before any Cedar policy, so they
always win. Governance may freeze, pause, lift either; the owner of a dataset may also freeze it at
once (one transaction, no vote) and lift a freeze it made itself, never one made by Governance.
Grants are suspended, not revoked: lifting the stop makes the unexpired ones valid again. Every stop
and lift is an event (``DatasetFrozen``/``DatasetUnfrozen``/``SharingPaused``/``SharingResumed``).

Gas: on top of storage and events, evaluation costs ``cedar.compute_evaluation_gas`` (base plus
per byte of every policy evaluated) and policy installation ``cedar.compute_validation_gas``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.execution.contracts import cedar, datasets
from chainshare.execution.contracts.addresses import ACCESS_CONTROL, GOVERNANCE, JOINT_COMPUTE
from chainshare.execution.contracts.membership import (
    get_agency,
    get_agency_attribute,
    get_agency_of,
    get_agency_standing,
)
from chainshare.execution.runtime import (
    CONTRACT_PREFIX,
    G_SLOAD,
    CallContext,
    Revert,
    SystemContract,
    event,
    method,
)

K_REQUESTS = b"requests"
K_GRANTS = b"grants"
K_CONSORTIUM_IDS = b"cids"
K_PAUSE = b"pause"  # [reason, height] while consortium-wide sharing is paused
MAX_REASON_BYTES = 256
BY_GOVERNANCE = "governance"
MAX_PURPOSE_BYTES = 256
DAY = 86_400
DEFAULT_DURATION = 30 * DAY
MAX_DURATION = 365 * DAY
MAX_CONSORTIUM_POLICIES = 32
MAX_CONSORTIUM_BYTES = 64 * 1024
_CONSORTIUM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RESERVED_ID = re.compile(r"ds[0-9]")
READ_ACTIONS = (cedar.ACTION_READ, cedar.ACTION_READ_IDENTIFIED)
EPSILON_UNIT = 1_000_000  # micro-epsilon per epsilon
DEFAULT_BUDGET_MICRO = 10 * EPSILON_UNIT
MAX_BUDGET_MICRO = 1_000 * EPSILON_UNIT
MAX_QUERY_EPSILON_MICRO = 10 * EPSILON_UNIT
DEFAULT_QUERIES_PER_HOUR = 30
MAX_QUERIES_PER_HOUR = 3_600
HOUR = 3_600
REFUSED_MIN_GROUP = "min_group"  # the noisy row count is below the dataset's minimum group
REFUSED_BUDGET = "budget_exhausted"
REFUSED_RATE_LIMIT = "rate_limit"
REFUSED_PERSONAL = "personal_column"
REFUSAL_REASONS = (REFUSED_MIN_GROUP, REFUSED_BUDGET, REFUSED_RATE_LIMIT, REFUSED_PERSONAL)


@dataclass(frozen=True)
class Grant:
    id: int
    dataset_id: int
    grantee: str
    action: str
    purpose: str
    expires_at: int  # seconds
    revoked: bool
    request_id: int

    def encode(self) -> bytes:
        return codec.encode([self.dataset_id, self.grantee, self.action, self.purpose, self.expires_at,
                             self.revoked, self.request_id])


def _grant_key(grant_id: int) -> bytes:
    return b"g:" + grant_id.to_bytes(8, "big")


def _is_grant_id(grant_id: int) -> bool:
    return 0 < grant_id < 2**64


def _limits_key(dataset_id: int) -> bytes:
    return b"cl:" + dataset_id.to_bytes(8, "big")


def _spent_key(dataset_id: int, grantee: str) -> bytes:
    return b"ps:" + dataset_id.to_bytes(8, "big") + grantee.encode()


def _freeze_key(dataset_id: int) -> bytes:
    return b"fz:" + dataset_id.to_bytes(8, "big")


def get_sharing_pause(state: Any) -> str | None:
    """The reason consortium-wide sharing is paused, or None when it is not (one state read)."""
    raw = state.get(CONTRACT_PREFIX + ACCESS_CONTROL + K_PAUSE)
    return str(codec.decode(raw)[0]) if raw is not None else None


def get_dataset_freeze(state: Any, dataset_id: int) -> tuple[str, str] | None:
    """(reason, who froze it: an agency name or "governance") while ``dataset_id`` is frozen, else None."""
    if not 0 < dataset_id < 2**64:
        return None
    raw = state.get(CONTRACT_PREFIX + ACCESS_CONTROL + _freeze_key(dataset_id))
    if raw is None:
        return None
    reason, by, _ = codec.decode(raw)
    return str(reason), str(by)


def compute_emergency_reason(state: Any, dataset_id: int) -> str | None:
    """Why no grant of ``dataset_id`` may be used now because of an emergency stop, or None."""
    paused = get_sharing_pause(state)
    if paused is not None:
        return f"all data sharing is paused by Governance: {paused}"
    frozen = get_dataset_freeze(state, dataset_id)
    if frozen is not None:
        who = "Governance" if frozen[1] == BY_GOVERNANCE else f"its owner {frozen[1]!r}"
        return f"dataset {dataset_id} is frozen by {who}: {frozen[0]}"
    return None


def _window_key(grant_id: int) -> bytes:
    return b"rw:" + grant_id.to_bytes(8, "big")


def _next(ctx: CallContext, key: bytes) -> int:
    raw = ctx.sload(key)
    n = (int.from_bytes(raw, "big") if raw else 0) + 1
    ctx.sstore(key, n.to_bytes(8, "big"))
    return n


def _agency_facts(ctx: CallContext, name: str) -> tuple[cedar.AgencyFacts, bool]:
    """(what Cedar sees of agency ``name``, whether it is active); two metered reads."""
    ctx.charge(2 * G_SLOAD)
    standing = get_agency_standing(ctx.state, name)
    if standing is None:
        return cedar.AgencyFacts(name, "", ""), False
    role, active = standing
    return cedar.AgencyFacts(name, role, get_agency_attribute(ctx.state, name, "jurisdiction")), active


class AccessControl(SystemContract):
    NAME = "AccessControl"
    ADDRESS = ACCESS_CONTROL
    E_REQUESTED = event("AccessRequested(uint256 indexed requestId, uint256 indexed datasetId, string requester, "
                        "address account, string action, string purpose, uint64 durationSeconds)")
    E_DECIDED = event("AccessDecided(uint256 indexed requestId, uint256 indexed datasetId, string requester, "
                      "string action, string purpose, bool allowed, string[] policyIds, string[] errors)")
    E_GRANTED = event("GrantIssued(uint256 indexed grantId, uint256 indexed datasetId, string grantee, string action, "
                      "string purpose, uint64 expiresAt)")
    E_REVOKED = event("GrantRevoked(uint256 indexed grantId, uint256 indexed datasetId, string by)")
    E_DELIVERED = event("DeliveryRecorded(uint256 indexed grantId, uint256 indexed datasetId, string grantee, "
                        "bytes32 contentHash, bytes32 deliveredHash, uint64 bytesDelivered)")
    E_COMPUTED = event("ComputationRecorded(uint256 indexed grantId, uint256 indexed datasetId, string grantee, "
                       "bytes32 queryHash, bytes32 resultHash, uint64 epsilonMicro, uint64 spentMicro)")
    E_REFUSED = event("ComputationRefused(uint256 indexed grantId, uint256 indexed datasetId, string grantee, "
                      "bytes32 queryHash, string reason, uint64 epsilonMicro, uint64 spentMicro)")
    # The account comes first so that datasetId is the second topic, as in every AccessControl event
    # about a dataset (the audit trail finds them by it).
    E_LIMITS = event("ComputeLimitsSet(address indexed account, uint256 indexed datasetId, uint64 budgetMicro, "
                     "uint32 queriesPerHour, string by)")
    E_POLICY_INSTALLED = event("ConsortiumPolicyInstalled(string policyId, string policyText, bool replaced)")
    E_POLICY_REMOVED = event("ConsortiumPolicyRemoved(string policyId)")
    # As in ComputeLimitsSet, the account comes first so that datasetId is the second topic (audit trail).
    E_FROZEN = event("DatasetFrozen(address indexed account, uint256 indexed datasetId, string reason, string by)")
    E_UNFROZEN = event("DatasetUnfrozen(address indexed account, uint256 indexed datasetId, string by)")
    E_PAUSED = event("SharingPaused(string reason)")
    E_RESUMED = event("SharingResumed()")
    EVENTS = (E_REQUESTED, E_DECIDED, E_GRANTED, E_REVOKED, E_DELIVERED, E_COMPUTED, E_REFUSED, E_LIMITS,
              E_POLICY_INSTALLED, E_POLICY_REMOVED, E_FROZEN, E_UNFROZEN, E_PAUSED, E_RESUMED)

    # -- emergency stops (docs/runbook.md) ----------------------------------------------------------

    def _stopper(self, ctx: CallContext, dataset: datasets.Dataset | None) -> str:
        """Who is stopping: "governance", or the owner agency of ``dataset``; Revert for anyone else."""
        if ctx.sender == GOVERNANCE:
            return BY_GOVERNANCE
        caller = get_agency_of(ctx.state, ctx.sender)
        if dataset is not None and caller is not None and caller == dataset.owner:
            return caller
        what = f"the owner of dataset {dataset.id}" if dataset is not None else "nobody else"
        raise Revert(f"only Governance (a proposal) or {what} may do this")

    @method("freezeDataset(uint256 datasetId, string reason)")
    def freeze_dataset(self, ctx: CallContext, dataset_id: int, reason: str) -> None:
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, dataset_id)
        if dataset is None:
            raise Revert(f"no dataset {dataset_id}")
        by = self._stopper(ctx, dataset)
        if not 1 <= len(reason.encode()) <= MAX_REASON_BYTES:
            raise Revert(f"reason must be 1..{MAX_REASON_BYTES} bytes")
        current = get_dataset_freeze(ctx.state, dataset_id)
        if current is not None and current[1] == BY_GOVERNANCE and by != BY_GOVERNANCE:
            raise Revert(f"dataset {dataset_id} is already frozen by Governance")
        ctx.sstore(_freeze_key(dataset_id), codec.encode([reason, by, ctx.env.height]))
        ctx.emit(self.E_FROZEN, ctx.sender, dataset_id, reason, by)

    @method("unfreezeDataset(uint256 datasetId)")
    def unfreeze_dataset(self, ctx: CallContext, dataset_id: int) -> None:
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, dataset_id)
        by = self._stopper(ctx, dataset)
        current = get_dataset_freeze(ctx.state, dataset_id)
        if current is None:
            raise Revert(f"dataset {dataset_id} is not frozen")
        if current[1] == BY_GOVERNANCE and by != BY_GOVERNANCE:
            raise Revert(f"dataset {dataset_id} was frozen by Governance: only a proposal may lift it")
        ctx.sstore(_freeze_key(dataset_id), None)
        ctx.emit(self.E_UNFROZEN, ctx.sender, dataset_id, by)

    @method("pauseSharing(string reason)")
    def pause_sharing(self, ctx: CallContext, reason: str) -> None:
        self._stopper(ctx, None)
        if not 1 <= len(reason.encode()) <= MAX_REASON_BYTES:
            raise Revert(f"reason must be 1..{MAX_REASON_BYTES} bytes")
        ctx.sstore(K_PAUSE, codec.encode([reason, ctx.env.height]))
        ctx.emit(self.E_PAUSED, reason)

    @method("resumeSharing()")
    def resume_sharing(self, ctx: CallContext) -> None:
        self._stopper(ctx, None)
        if ctx.sload(K_PAUSE) is None:
            raise Revert("data sharing is not paused")
        ctx.sstore(K_PAUSE, None)
        ctx.emit(self.E_RESUMED)

    @method("getEmergencyStop(uint256 datasetId)", returns="bool paused, bool frozen, string reason", view=True)
    def get_emergency_stop(self, ctx: CallContext, dataset_id: int) -> tuple[bool, bool, str]:
        ctx.charge(2 * G_SLOAD)
        reason = compute_emergency_reason(ctx.state, dataset_id)
        return (get_sharing_pause(ctx.state) is not None, get_dataset_freeze(ctx.state, dataset_id) is not None,
                reason or "")

    # -- consortium-wide policies (Governance only) -------------------------------------------------

    def _consortium_ids(self, ctx: CallContext) -> list[str]:
        raw = ctx.sload(K_CONSORTIUM_IDS)
        return list(codec.decode(raw)) if raw else []

    def _consortium_policies(self, ctx: CallContext) -> list[tuple[str, str]]:
        out = []
        for pid in self._consortium_ids(ctx):
            raw = ctx.sload(b"cp:" + pid.encode())
            out.append((pid, raw.decode() if raw is not None else ""))
        return out

    @method("installConsortiumPolicy(string policyId, string policyText)")
    def install_consortium_policy(self, ctx: CallContext, policy_id: str, policy_text: str) -> None:
        _only_governance(ctx)
        if not _CONSORTIUM_ID.fullmatch(policy_id) or _RESERVED_ID.match(policy_id):
            raise Revert("consortium policy id must be 1..64 characters of A-Z a-z 0-9 _ . - and not start with "
                         "'ds' and a digit (reserved for dataset policies)")
        datasets.check_policy(ctx, policy_text, forbid_only=True, allow_empty=False)
        ids = self._consortium_ids(ctx)
        replaced = policy_id in ids
        others = [t for pid, t in self._consortium_policies(ctx) if pid != policy_id]
        if not replaced and len(ids) >= MAX_CONSORTIUM_POLICIES:
            raise Revert(f"at most {MAX_CONSORTIUM_POLICIES} consortium policies: remove one first")
        if sum(len(t.encode()) for t in others) + len(policy_text.encode()) > MAX_CONSORTIUM_BYTES:
            raise Revert(f"consortium policies would exceed {MAX_CONSORTIUM_BYTES} bytes in total")
        if not replaced:
            ctx.sstore(K_CONSORTIUM_IDS, codec.encode(sorted(ids + [policy_id])))
        ctx.sstore(b"cp:" + policy_id.encode(), policy_text.encode())
        ctx.emit(self.E_POLICY_INSTALLED, policy_id, policy_text, replaced)

    @method("removeConsortiumPolicy(string policyId)")
    def remove_consortium_policy(self, ctx: CallContext, policy_id: str) -> None:
        _only_governance(ctx)
        ids = self._consortium_ids(ctx)
        if policy_id not in ids:
            raise Revert(f"no consortium policy {policy_id!r}")
        ctx.sstore(K_CONSORTIUM_IDS, codec.encode([i for i in ids if i != policy_id]))
        ctx.sstore(b"cp:" + policy_id.encode(), None)
        ctx.emit(self.E_POLICY_REMOVED, policy_id)

    @method("getConsortiumPolicyIds()", returns="string[] policyIds", view=True)
    def get_consortium_policy_ids(self, ctx: CallContext) -> list[str]:
        return self._consortium_ids(ctx)

    @method("getConsortiumPolicy(string policyId)", returns="string policyText", view=True)
    def get_consortium_policy(self, ctx: CallContext, policy_id: str) -> str:
        raw = ctx.sload(b"cp:" + policy_id.encode())
        if raw is None:
            raise Revert(f"no consortium policy {policy_id!r}")
        return raw.decode()

    # -- requests and grants ---------------------------------------------------------------------

    @method("request(uint256 datasetId, string action, string purpose, uint64 durationSeconds)",
            returns="uint256 requestId, bool allowed, uint256 grantId")
    def request(self, ctx: CallContext, dataset_id: int, action: str, purpose: str,
                duration: int) -> tuple[int, bool, int]:
        requester = get_agency_of(ctx.state, ctx.sender)
        if requester is None:
            raise Revert("only accounts of member agencies may request access")
        if action not in cedar.ACTIONS:
            raise Revert(f"unknown action {action!r}: use one of {', '.join(cedar.ACTIONS)}")
        if not 1 <= len(purpose.encode()) <= MAX_PURPOSE_BYTES:
            raise Revert(f"purpose must be 1..{MAX_PURPOSE_BYTES} bytes")
        if duration > MAX_DURATION:
            raise Revert(f"durationSeconds must be at most {MAX_DURATION} (365 days); 0 means 30 days")
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, dataset_id)
        if dataset is None:
            raise Revert(f"no dataset {dataset_id}")
        request_id = _next(ctx, K_REQUESTS)
        ctx.emit(self.E_REQUESTED, request_id, dataset_id, requester, "0x" + ctx.sender.hex(), action, purpose,
                 duration)
        now = ctx.env.timestamp_ms // 1000
        decision = self._decide(ctx, dataset, requester, action, purpose, now)
        ctx.emit(self.E_DECIDED, request_id, dataset_id, requester, action, purpose, decision.allowed,
                 list(decision.policy_ids), list(decision.errors))
        if not decision.allowed:
            return request_id, False, 0
        grant = Grant(_next(ctx, K_GRANTS), dataset_id, requester, action, purpose,
                      now + (duration or DEFAULT_DURATION), False, request_id)
        ctx.sstore(_grant_key(grant.id), grant.encode())
        ctx.emit(self.E_GRANTED, grant.id, dataset_id, requester, action, purpose, grant.expires_at)
        return request_id, True, grant.id

    def _decide(self, ctx: CallContext, dataset: datasets.Dataset, requester: str, action: str, purpose: str,
                now: int) -> cedar.AccessDecision:
        if dataset.retired:
            return cedar.AccessDecision(False, (), (f"dataset {dataset.id} is retired",))
        # not metered (two bounded reads): the gas of requests and records stays what it was, so
        # chains written before the emergency stops existed re-execute to the same receipts
        stopped = compute_emergency_reason(ctx.state, dataset.id)
        if stopped is not None:
            return cedar.AccessDecision(False, (), (stopped,))
        owner, owner_active = _agency_facts(ctx, dataset.owner)
        if not owner_active:
            return cedar.AccessDecision(False, (), (f"agency {dataset.owner!r}, the owner of dataset {dataset.id}, "
                                                    "is revoked",))
        principal, _ = _agency_facts(ctx, requester)
        ctx.charge(G_SLOAD)
        policy_sets = [(dataset.policy_id, datasets.get_policy_text(ctx.state, dataset.id))]
        policy_sets += self._consortium_policies(ctx)
        ctx.charge(cedar.compute_evaluation_gas([text for _, text in policy_sets]))
        query = cedar.AccessQuery(principal, owner, dataset.id, action, purpose, now)
        return cedar.evaluate_access(query, policy_sets)

    def _load_grant(self, ctx: CallContext, grant_id: int) -> Grant:
        raw = ctx.sload(_grant_key(grant_id)) if _is_grant_id(grant_id) else None
        if raw is None:
            raise Revert(f"no grant {grant_id}")
        dataset_id, grantee, action, purpose, expires_at, revoked, request_id = codec.decode(raw)
        return Grant(grant_id, dataset_id, grantee, action, purpose, expires_at, revoked, request_id)

    def _invalid_reason(self, ctx: CallContext, grant: Grant) -> str | None:
        """Why ``grant`` is not valid at this block, or None."""
        if grant.revoked:
            return f"grant {grant.id} was revoked"
        if ctx.env.timestamp_ms // 1000 >= grant.expires_at:
            return f"grant {grant.id} expired at {grant.expires_at}"
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, grant.dataset_id)
        if dataset is None or dataset.retired:
            return f"dataset {grant.dataset_id} is retired"
        # not metered (two bounded reads): the gas of requests and records stays what it was, so
        # chains written before the emergency stops existed re-execute to the same receipts
        stopped = compute_emergency_reason(ctx.state, grant.dataset_id)
        if stopped is not None:
            return stopped
        for name in (grant.grantee, dataset.owner):
            ctx.charge(G_SLOAD)
            record = get_agency(ctx.state, name)
            if record is None or not record["active"]:
                return f"agency {name!r} is revoked"
        return None

    @method("revokeGrant(uint256 grantId)")
    def revoke_grant(self, ctx: CallContext, grant_id: int) -> None:
        grant = self._load_grant(ctx, grant_id)
        caller = get_agency_of(ctx.state, ctx.sender)
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, grant.dataset_id)
        owner = dataset.owner if dataset else None
        if caller is None or caller not in (grant.grantee, owner):
            raise Revert(f"only the grantee {grant.grantee!r} or the dataset owner {owner!r} may revoke grant "
                         f"{grant_id}")
        if grant.revoked:
            raise Revert(f"grant {grant_id} is already revoked")
        ctx.sstore(_grant_key(grant_id), Grant(grant.id, grant.dataset_id, grant.grantee, grant.action,
                                                      grant.purpose, grant.expires_at, True, grant.request_id).encode())
        ctx.emit(self.E_REVOKED, grant_id, grant.dataset_id, caller)

    def _check_owner_use(self, ctx: CallContext, grant_id: int, actions: tuple[str, ...]) -> Grant:
        grant = self._load_grant(ctx, grant_id)
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, grant.dataset_id)
        if dataset is None or get_agency_of(ctx.state, ctx.sender) != dataset.owner:
            raise Revert(f"only accounts of the owner of dataset {grant.dataset_id} may record its use")
        if grant.action not in actions:
            raise Revert(f"grant {grant_id} is for {grant.action!r}, not {' or '.join(actions)}")
        reason = self._invalid_reason(ctx, grant)
        if reason:
            raise Revert(reason)
        return grant

    @method("recordDelivery(uint256 grantId, bytes32 contentHash, bytes32 deliveredHash, uint64 bytesDelivered)")
    def record_delivery(self, ctx: CallContext, grant_id: int, content_hash: bytes, delivered_hash: bytes,
                        bytes_delivered: int) -> None:
        grant = self._check_owner_use(ctx, grant_id, READ_ACTIONS)
        ctx.charge(G_SLOAD)
        if datasets.get_version_of_hash(ctx.state, grant.dataset_id, content_hash) is None:
            raise Revert(f"content hash is not a version of dataset {grant.dataset_id}")
        if grant.action == cedar.ACTION_READ_IDENTIFIED and delivered_hash != content_hash:
            raise Revert("a read_identified delivery is the dataset version itself: the delivered hash must be "
                         "its content hash")
        ctx.emit(self.E_DELIVERED, grant_id, grant.dataset_id, grant.grantee, content_hash, delivered_hash,
                 bytes_delivered)

    # -- compute-to-data: privacy budget and rate ---------------------------------------------------

    def _limits(self, ctx: CallContext, dataset_id: int) -> tuple[int, int]:
        raw = ctx.sload(_limits_key(dataset_id)) if dataset_id < 2**64 else None  # no dataset has such an id
        if raw is None:
            return DEFAULT_BUDGET_MICRO, DEFAULT_QUERIES_PER_HOUR
        budget, per_hour = codec.decode(raw)
        return int(budget), int(per_hour)

    def _spent(self, ctx: CallContext, grant: Grant) -> int:
        raw = ctx.sload(_spent_key(grant.dataset_id, grant.grantee))
        return int.from_bytes(raw, "big") if raw else 0

    def _window(self, ctx: CallContext, grant_id: int) -> tuple[int, int, bool]:
        """(this hour of block time, queries recorded in it, whether a rate-limit refusal was)."""
        hour = ctx.env.timestamp_ms // 1000 // HOUR
        raw = ctx.sload(_window_key(grant_id))
        if raw is None:
            return hour, 0, False
        stored_hour, used, rate_refused = codec.decode(raw)
        return (hour, int(used), bool(rate_refused)) if stored_hour == hour else (hour, 0, False)

    @method("setComputeLimits(uint256 datasetId, uint64 budgetMicro, uint32 queriesPerHour)")
    def set_compute_limits(self, ctx: CallContext, dataset_id: int, budget_micro: int, queries_per_hour: int) -> None:
        ctx.charge(G_SLOAD)
        dataset = datasets.get_dataset(ctx.state, dataset_id)
        if dataset is None:
            raise Revert(f"no dataset {dataset_id}")
        caller = get_agency_of(ctx.state, ctx.sender)
        if caller != dataset.owner:
            raise Revert(f"only accounts of the owner of dataset {dataset_id} may set its compute limits")
        if not 0 <= budget_micro <= MAX_BUDGET_MICRO:
            raise Revert(f"budgetMicro must be 0..{MAX_BUDGET_MICRO} (micro-epsilon; {EPSILON_UNIT} = epsilon 1)")
        if not 1 <= queries_per_hour <= MAX_QUERIES_PER_HOUR:
            raise Revert(f"queriesPerHour must be 1..{MAX_QUERIES_PER_HOUR}")
        ctx.sstore(_limits_key(dataset_id), codec.encode([budget_micro, queries_per_hour]))
        ctx.emit(self.E_LIMITS, ctx.sender, dataset_id, budget_micro, queries_per_hour, caller)

    @method("getComputeLimits(uint256 datasetId)", returns="uint64 budgetMicro, uint32 queriesPerHour", view=True)
    def get_compute_limits(self, ctx: CallContext, dataset_id: int) -> tuple[int, int]:
        return self._limits(ctx, dataset_id)

    @method("getComputeAllowance(uint256 grantId)", returns="uint64 budgetMicro, uint64 spentMicro, "
            "uint32 queriesPerHour, uint32 usedThisHour, uint64 windowEndsAt", view=True)
    def get_compute_allowance(self, ctx: CallContext, grant_id: int) -> tuple[int, int, int, int, int]:
        grant = self._load_grant(ctx, grant_id)
        budget, per_hour = self._limits(ctx, grant.dataset_id)
        hour, used, _ = self._window(ctx, grant_id)
        return budget, self._spent(ctx, grant), per_hour, used, (hour + 1) * HOUR

    def _charge_query(self, ctx: CallContext, grant: Grant, epsilon_micro: int, *, rate_refusal: bool) -> int:
        """Count the query in the grant's hour and charge its epsilon to the grantee's budget (or
        revert); the budget spent afterwards."""
        if not 0 <= epsilon_micro <= MAX_QUERY_EPSILON_MICRO:
            raise Revert(f"epsilonMicro must be 0..{MAX_QUERY_EPSILON_MICRO}")
        budget, per_hour = self._limits(ctx, grant.dataset_id)
        hour, used, rate_refused = self._window(ctx, grant.id)
        if rate_refusal:
            if used < per_hour:
                raise Revert(f"grant {grant.id} is not rate-limited: it ran {used} of {per_hour} queries this hour")
            if rate_refused:
                raise Revert(f"a rate-limit refusal of grant {grant.id} is already recorded for this hour")
            rate_refused = True
        else:
            if used >= per_hour:
                raise Revert(f"rate limit: grant {grant.id} ran its {per_hour} queries of this hour")
            used += 1
        spent = self._spent(ctx, grant)
        if spent + epsilon_micro > budget:
            raise Revert(f"privacy budget exhausted: {spent} of {budget} micro-epsilon spent, the query needs "
                         f"{epsilon_micro}")
        ctx.sstore(_window_key(grant.id), codec.encode([hour, used, rate_refused]))
        if epsilon_micro:
            spent += epsilon_micro
            ctx.sstore(_spent_key(grant.dataset_id, grant.grantee), spent.to_bytes(8, "big"))
        return spent

    @method("recordComputation(uint256 grantId, bytes32 queryHash, bytes32 resultHash, uint64 epsilonMicro)")
    def record_computation(self, ctx: CallContext, grant_id: int, query_hash: bytes, result_hash: bytes,
                           epsilon_micro: int) -> None:
        grant = self._check_owner_use(ctx, grant_id, (cedar.ACTION_COMPUTE,))
        if epsilon_micro == 0:
            raise Revert("an answered query spends a positive epsilonMicro")
        spent = self._charge_query(ctx, grant, epsilon_micro, rate_refusal=False)
        ctx.emit(self.E_COMPUTED, grant_id, grant.dataset_id, grant.grantee, query_hash, result_hash, epsilon_micro,
                 spent)

    @method("recordRefusal(uint256 grantId, bytes32 queryHash, string reason, uint64 epsilonMicro)")
    def record_refusal(self, ctx: CallContext, grant_id: int, query_hash: bytes, reason: str,
                       epsilon_micro: int) -> None:
        grant = self._check_owner_use(ctx, grant_id, (cedar.ACTION_COMPUTE,))
        if reason not in REFUSAL_REASONS:
            raise Revert(f"unknown refusal reason {reason[:64]!r}: use one of {', '.join(REFUSAL_REASONS)}")
        if epsilon_micro and reason != REFUSED_MIN_GROUP:
            raise Revert(f"a {reason} refusal ran no noisy check: its epsilonMicro must be 0")
        spent = self._charge_query(ctx, grant, epsilon_micro, rate_refusal=reason == REFUSED_RATE_LIMIT)
        ctx.emit(self.E_REFUSED, grant_id, grant.dataset_id, grant.grantee, query_hash, reason, epsilon_micro, spent)

    @method("chargeJointComputation(uint256 grantId, bytes32 queryHash, bytes32 resultHash, uint64 epsilonMicro)")
    def charge_joint_computation(self, ctx: CallContext, grant_id: int, query_hash: bytes, result_hash: bytes,
                                 epsilon_micro: int) -> None:
        """JointCompute only: a completed joint job charges its epsilon to the requester's budget on
        this grant's dataset (the same budget as single-owner compute) and is recorded like an answer."""
        if ctx.sender != JOINT_COMPUTE:
            raise Revert("only JointCompute charges joint computations")
        grant = self._load_grant(ctx, grant_id)
        if grant.action != cedar.ACTION_COMPUTE_JOINT:
            raise Revert(f"grant {grant_id} is for {grant.action!r}, not {cedar.ACTION_COMPUTE_JOINT!r}")
        reason = self._invalid_reason(ctx, grant)
        if reason:
            raise Revert(reason)
        spent = self._charge_query(ctx, grant, epsilon_micro, rate_refusal=False)
        ctx.emit(self.E_COMPUTED, grant_id, grant.dataset_id, grant.grantee, query_hash, result_hash, epsilon_micro,
                 spent)

    @method("getGrant(uint256 grantId)", returns="uint256 datasetId, string grantee, string action, string purpose, "
            "uint64 expiresAt, bool revoked", view=True)
    def get_grant(self, ctx: CallContext, grant_id: int) -> tuple[Any, ...]:
        g = self._load_grant(ctx, grant_id)
        return g.dataset_id, g.grantee, g.action, g.purpose, g.expires_at, g.revoked

    @method("isGrantValid(uint256 grantId, string grantee)", returns="bool valid", view=True)
    def is_grant_valid(self, ctx: CallContext, grant_id: int, grantee: str) -> bool:
        if not _is_grant_id(grant_id) or ctx.sload(_grant_key(grant_id)) is None:
            return False
        grant = self._load_grant(ctx, grant_id)
        return grant.grantee == grantee and self._invalid_reason(ctx, grant) is None

    @method("requestCount()", returns="uint256 count", view=True)
    def request_count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_REQUESTS)
        return int.from_bytes(raw, "big") if raw else 0

    @method("grantCount()", returns="uint256 count", view=True)
    def grant_count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_GRANTS)
        return int.from_bytes(raw, "big") if raw else 0


def _only_governance(ctx: CallContext) -> None:
    if ctx.sender != GOVERNANCE:
        raise Revert("only Governance may change consortium policies: submit a proposal")
