"""Governance: proposals voted by member agencies (one vote per agency, M-of-N threshold).

A proposal is a call (target system contract + ABI data) that Governance itself makes when
``execute`` finds at least ``ceil(active agencies * num / den)`` yes votes before the deadline.
Membership, validator, policy and parameter changes go through here and nowhere else.

One decision may make several calls at once: a proposal whose target is Governance itself and whose
data is ``executeBatch(targets, calls)`` runs every call in order when executed, all or none (one
revert reverts the whole execution). The emergency runbook uses it to revoke a compromised agency,
retire its validators and freeze its datasets in the same decision (docs/runbook.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.execution.contracts.addresses import GOVERNANCE
from chainshare.execution.contracts.membership import (
    get_active_agency_count,
    get_active_agency_names,
    get_agency_of,
)
from chainshare.execution.runtime import CONTRACT_PREFIX, CallContext, Revert, SystemContract, event, method

K_COUNT = b"count"
K_PARAMS = b"params"
K_UPGRADES = b"upgrades"
MAX_UPGRADE_DELAY = 1_000_000
MAX_PROTOCOL_VERSION = 2**32 - 1
MAX_DESCRIPTION = 4096
MAX_PROPOSAL_DATA = 64 * 1024
MAX_BATCH_CALLS = 32


def genesis_entries(threshold_num: int, threshold_den: int, voting_period_blocks: int) -> dict[bytes, bytes]:
    return {CONTRACT_PREFIX + GOVERNANCE + K_PARAMS: codec.encode([threshold_num, threshold_den, voting_period_blocks])}


@dataclass(frozen=True)
class ProtocolUpgrade:
    """Protocol version ``version`` governs every block from ``activation_height`` on (until the next)."""

    version: int
    activation_height: int


def get_upgrade_schedule(state: Any) -> tuple[ProtocolUpgrade, ...]:
    """Every upgrade Governance scheduled, in activation order (the last may not be active yet);
    version 1 from genesis is implicit."""
    return decode_upgrade_schedule(state.get(CONTRACT_PREFIX + GOVERNANCE + K_UPGRADES))


def decode_upgrade_schedule(raw: bytes | None) -> tuple[ProtocolUpgrade, ...]:
    return tuple(ProtocolUpgrade(v, h) for v, h in codec.decode(raw)) if raw else ()


def select_protocol_version(schedule: tuple[ProtocolUpgrade, ...], height: int) -> ProtocolUpgrade:
    """The upgrade in force at ``height`` (version 1 from height 0 when none is)."""
    for upgrade in reversed(schedule):
        if upgrade.activation_height <= height:
            return upgrade
    return ProtocolUpgrade(1, 0)


def compute_required_votes(members: int, num: int, den: int) -> int:
    """ceil(members * num / den), at least 1."""
    return max(1, -(-members * num // den))


class Governance(SystemContract):
    NAME = "Governance"
    ADDRESS = GOVERNANCE
    E_CREATED = event("ProposalCreated(uint256 indexed id, address indexed proposer, address target, string description)")
    E_VOTED = event("Voted(uint256 indexed id, address indexed voter, string agency, bool support)")
    E_EXECUTED = event("ProposalExecuted(uint256 indexed id, address target)")
    E_UPGRADE_SCHEDULED = event("UpgradeScheduled(uint256 indexed version, uint256 activationHeight)")
    EVENTS = (E_CREATED, E_VOTED, E_EXECUTED, E_UPGRADE_SCHEDULED)

    def _params(self, ctx: CallContext) -> tuple[int, int, int]:
        raw = ctx.sload(K_PARAMS)
        if raw is None:
            return 2, 3, 100_000
        num, den, period = codec.decode(raw)
        return num, den, period

    def _load(self, ctx: CallContext, pid: int) -> list[Any]:
        raw = ctx.sload(b"p:" + pid.to_bytes(8, "big")) if pid < 2**64 else None  # ids are 64-bit counters
        if raw is None:
            raise Revert(f"no proposal {pid}")
        return list(codec.decode(raw))

    def _agency(self, ctx: CallContext) -> str:
        agency = get_agency_of(ctx.state, ctx.sender)
        if agency is None:
            raise Revert("only accounts of member agencies may take part in governance")
        return agency

    @method("propose(address target, bytes data, string description)", returns="uint256 id")
    def propose(self, ctx: CallContext, target: str, data: bytes, description: str) -> int:
        self._agency(ctx)
        target_b = bytes.fromhex(target[2:])
        if target_b not in ctx.runtime.contracts:
            raise Revert("proposal target must be a system contract")
        if len(description) > MAX_DESCRIPTION or len(data) > MAX_PROPOSAL_DATA:
            raise Revert("proposal description or data too large")
        raw = ctx.sload(K_COUNT)
        pid = (int.from_bytes(raw, "big") if raw else 0) + 1
        _, _, period = self._params(ctx)
        ctx.sstore(K_COUNT, pid.to_bytes(8, "big"))
        record = [ctx.sender, target_b, data, description, 0, 0, False, ctx.env.height + period]
        ctx.sstore(b"p:" + pid.to_bytes(8, "big"), codec.encode(record))
        ctx.emit(self.E_CREATED, pid, "0x" + ctx.sender.hex(), target, description)
        return pid

    @method("vote(uint256 id, bool support)")
    def vote(self, ctx: CallContext, pid: int, support: bool) -> None:
        agency = self._agency(ctx)
        p = self._load(ctx, pid)
        if p[6]:
            raise Revert(f"proposal {pid} was already executed")
        if ctx.env.height > p[7]:
            raise Revert(f"proposal {pid} expired at block {p[7]}")
        vkey = b"v:" + pid.to_bytes(8, "big") + agency.encode()
        if ctx.sload(vkey) is not None:
            raise Revert(f"agency {agency!r} already voted on proposal {pid}")
        ctx.sstore(vkey, b"\x01" if support else b"\x00")
        p[4 if support else 5] += 1
        ctx.sstore(b"p:" + pid.to_bytes(8, "big"), codec.encode(p))
        ctx.emit(self.E_VOTED, pid, "0x" + ctx.sender.hex(), agency, support)

    @method("execute(uint256 id)")
    def execute(self, ctx: CallContext, pid: int) -> None:
        self._agency(ctx)
        p = self._load(ctx, pid)
        if p[6]:
            raise Revert(f"proposal {pid} was already executed")
        if ctx.env.height > p[7]:
            raise Revert(f"proposal {pid} expired at block {p[7]}")
        num, den, _ = self._params(ctx)
        active = get_active_agency_names(ctx.state)
        required = compute_required_votes(len(active), num, den)
        # Count only votes of agencies active now: a revoked agency's vote no longer counts.
        yes = sum(1 for name in active if ctx.sload(b"v:" + pid.to_bytes(8, "big") + name.encode()) == b"\x01")
        if yes < required:
            raise Revert(f"proposal {pid} has {yes} yes votes of active agencies, needs {required}")
        p[6] = True
        ctx.sstore(b"p:" + pid.to_bytes(8, "big"), codec.encode(p))
        ctx.call(p[1], p[2])
        ctx.emit(self.E_EXECUTED, pid, "0x" + p[1].hex())

    @method("executeBatch(address[] targets, bytes[] calls)")
    def execute_batch(self, ctx: CallContext, targets: list[str], calls: list[bytes]) -> None:
        if ctx.sender != GOVERNANCE:
            raise Revert("only Governance may run a batch: make it the data of a proposal to Governance")
        if not 0 < len(targets) == len(calls) <= MAX_BATCH_CALLS:
            raise Revert(f"a batch has 1..{MAX_BATCH_CALLS} calls, one target each")
        for target, data in zip(targets, calls, strict=True):
            target_b = bytes.fromhex(target[2:])
            if target_b not in ctx.runtime.contracts:
                raise Revert(f"batch target {target} is not a system contract")
            ctx.call(target_b, data)

    @method("getProposal(uint256 id)", returns="address proposer, address target, bytes data, string description, "
            "uint256 yes, uint256 no, bool executed, uint256 deadline", view=True)
    def get_proposal(self, ctx: CallContext, pid: int) -> tuple[Any, ...]:
        p = self._load(ctx, pid)
        return ("0x" + p[0].hex(), "0x" + p[1].hex(), p[2], p[3], p[4], p[5], p[6], p[7])

    @method("upgrade(uint256 version, uint256 activationHeight)")
    def upgrade(self, ctx: CallContext, version: int, activation: int) -> None:
        """Schedule protocol ``version`` (execution/forks/) from block ``activationHeight`` on: only
        Governance itself calls this, by an executed proposal. An upgrade scheduled but not yet
        active is replaced. Any version above the one in force is accepted, whether or not this
        node's release implements it: a node that does not halts before that height (never forks)."""
        if ctx.sender != GOVERNANCE:
            raise Revert("only Governance may schedule a protocol upgrade: submit a proposal")
        height = ctx.env.height
        if not height < activation <= height + MAX_UPGRADE_DELAY:
            raise Revert(f"activation height must be after this block ({height}) and at most "
                         f"{MAX_UPGRADE_DELAY} blocks later")
        schedule = decode_upgrade_schedule(ctx.sload(K_UPGRADES))
        current = select_protocol_version(schedule, height)
        if not current.version < version <= MAX_PROTOCOL_VERSION:
            raise Revert(f"protocol version must be above the version in force ({current.version})")
        kept = [[u.version, u.activation_height] for u in schedule if u.activation_height <= height]
        ctx.sstore(K_UPGRADES, codec.encode(kept + [[version, activation]]))
        ctx.emit(self.E_UPGRADE_SCHEDULED, version, activation)

    @method("protocolVersionAt(uint256 height)", returns="uint256 version, uint256 activationHeight", view=True)
    def protocol_version_at(self, ctx: CallContext, height: int) -> tuple[int, int]:
        upgrade = select_protocol_version(decode_upgrade_schedule(ctx.sload(K_UPGRADES)), height)
        return upgrade.version, upgrade.activation_height

    @method("requiredVotes()", returns="uint256 required, uint256 members", view=True)
    def required_votes(self, ctx: CallContext) -> tuple[int, int]:
        num, den, _ = self._params(ctx)
        members = get_active_agency_count(ctx.state)
        return compute_required_votes(members, num, den), members
