"""The per-peer budget of failed consensus checks (chainshare/consensus/peergate.py): a burst, a
refill rate, a mute when overdrawn; an honest peer's few failures around an epoch change never mute it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chainshare.consensus.peergate import GateConfig, charge_failed_checks, is_muted, new_gate

CFG = GateConfig(burst=20, per_second=2.0, mute_s=2.0)


def test_a_burst_of_failures_up_to_the_budget_does_not_mute() -> None:
    gate = None
    for _ in range(20):
        gate = charge_failed_checks(gate, 1, 100.0, CFG)
    assert not is_muted(gate, 100.0)
    gate = charge_failed_checks(gate, 1, 100.0, CFG)  # the 21st at the same instant
    assert is_muted(gate, 100.0) and is_muted(gate, 101.99) and not is_muted(gate, 102.0)


def test_the_budget_refills_at_its_rate_up_to_the_burst() -> None:
    gate = charge_failed_checks(None, 20, 0.0, CFG)  # empty
    gate = charge_failed_checks(gate, 4, 2.0, CFG)  # two seconds later: 4 back
    assert not is_muted(gate, 2.0) and gate.tokens == 0
    gate = charge_failed_checks(gate, 1, 2.0, CFG)
    assert is_muted(gate, 2.0)
    later = charge_failed_checks(new_gate(CFG, 0.0), 0, 1000.0, CFG)
    assert later.tokens == CFG.burst  # never above the burst


def test_an_unknown_or_fresh_peer_is_not_muted() -> None:
    assert not is_muted(None, 0.0)
    assert not is_muted(new_gate(CFG, 5.0), 5.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 5)), min_size=1, max_size=200))
def test_failures_verified_per_peer_stay_within_burst_plus_rate_times_time(
        steps: list[tuple[float, int]]) -> None:
    """Whatever a peer sends, the failed checks it makes this node run (those of messages that arrive
    while it is not muted) stay within burst + per_second x elapsed + the one overdraw per mute."""
    gate, now, charged, mutes = None, 0.0, 0, 0
    for dt, failures in steps:
        now += dt
        if is_muted(gate, now):
            continue  # dropped unverified
        charged += failures
        gate = charge_failed_checks(gate, failures, now, CFG)
        mutes += is_muted(gate, now)
    assert charged <= CFG.burst + CFG.per_second * now + mutes * 5
    assert mutes <= 1 + now / CFG.mute_s
