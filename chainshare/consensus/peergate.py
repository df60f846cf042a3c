"""How much failed signature checking a peer's consensus messages may cost this validator.

Checking a proposal, vote, timeout, QC or TC costs one or two BLS pairings (~1-2 ms), and a message
that fails its check is simply ignored by the core. So without a bound, one connected validator
(byzantine, or with a leaked node certificate) could send announcements of ever newer QCs with wrong
signatures and keep an honest node's consensus loop busy verifying them. Each peer therefore has a
budget of failed checks, a token bucket: ``burst`` failures at once, refilled at ``per_second``. A
peer that overdraws it is muted for ``mute_s``: its consensus messages are dropped unverified.

An honest peer's messages fail only across a validator-set change (signed with another epoch's
keys): a handful at the switch, and the replica forgives every budget when a new set's core starts.
A node that lags a whole epoch behind its peers may mute them until it has synced (their messages
are of no use to it before); muting never disconnects a peer. Pure functions over frozen values:
the replica keeps one ``PeerGate`` per peer and the clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateConfig:
    """The failure budget of one peer."""

    burst: int = 20
    per_second: float = 2.0
    mute_s: float = 2.0


@dataclass(frozen=True)
class PeerGate:
    """One peer's budget: ``tokens`` left at ``updated_at``; muted until ``muted_until``."""

    tokens: float
    updated_at: float
    muted_until: float = float("-inf")


def new_gate(config: GateConfig, now: float) -> PeerGate:
    """A full budget."""
    return PeerGate(float(config.burst), now)


def is_muted(gate: PeerGate | None, now: float) -> bool:
    """Whether the peer's consensus messages are dropped unverified at ``now``."""
    return gate is not None and now < gate.muted_until


def charge_failed_checks(gate: PeerGate | None, failures: int, now: float, config: GateConfig) -> PeerGate:
    """The budget after ``failures`` failed checks of one of the peer's messages at ``now``: refilled
    for the time since the last charge (up to ``burst``), then drawn; overdrawn, the peer is muted
    for ``mute_s`` from ``now`` and its budget starts again from empty."""
    if gate is None:
        gate = new_gate(config, now)
    elapsed = max(0.0, now - gate.updated_at)
    tokens = min(float(config.burst), gate.tokens + elapsed * config.per_second) - failures
    if tokens < 0:
        return PeerGate(0.0, now, now + config.mute_s)
    return PeerGate(tokens, now, gate.muted_until)
