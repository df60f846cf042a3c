"""The replica carries the core's QC announcements: out under their own P2P message type ("cs.qc", which a
node of an earlier release ignores instead of counting an unknown consensus message against the sender),
and in from a validator as the core's ``QcReceived`` event; garbage under that type costs the sender a strike,
and a peer that is not a validator of the set is not heard."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from chainshare.consensus import core
from chainshare.consensus.messages import Proposal, QcAnnouncement, decode_message, encode_message
from chainshare.consensus.peergate import GateConfig, PeerGate, is_muted
from chainshare.ledger.types import QuorumCertificate
from chainshare.replica import MSG_CONSENSUS, MSG_QC_ANNOUNCEMENT, Replica, _FromPeer

QC = QuorumCertificate(b"\x11" * 32, 7, 9, b"\x07", b"\x22" * 96)


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.strikes: list[tuple[str, str]] = []

    def broadcast(self, msg_type: str, body: Any) -> int:
        self.sent.append((msg_type, body))
        return 3

    def strike(self, peer: str, reason: str) -> None:
        self.strikes.append((peer, reason))


def listening_replica() -> Replica:
    r = Replica.__new__(Replica)
    r.transport = RecordingTransport()
    r._tx_out, r._tx_out_bytes, r._tx_flush_scheduled = [], 0, False
    r.stats = {"timeouts": 0, "failed_checks": 0, "muted_messages": 0}
    r._gate_config, r._gates, r._generation = GateConfig(), {}, 0
    r.index_of = {"node1": 0, "node2": 1, "node3": 2, "node4": 3}
    r.events = asyncio.Queue()
    r._recent, r._recent_bytes = deque(), 0
    return r


def test_an_announcement_goes_out_under_its_own_message_type() -> None:
    r = listening_replica()
    asyncio.run(r._apply(core.Broadcast(QcAnnouncement(QC))))
    assert [t for t, _ in r.transport.sent] == [MSG_QC_ANNOUNCEMENT]  # type: ignore[attr-defined]
    assert decode_message(r.transport.sent[0][1]) == QcAnnouncement(QC)  # type: ignore[attr-defined]
    assert MSG_QC_ANNOUNCEMENT != MSG_CONSENSUS


def test_an_announcement_from_a_validator_reaches_the_core_as_qc_received() -> None:
    r = listening_replica()
    asyncio.run(r.on_message("node2", MSG_QC_ANNOUNCEMENT, encode_message(QcAnnouncement(QC))))
    assert r.events.get_nowait() == _FromPeer("node2", 0, core.QcReceived(QcAnnouncement(QC)))
    assert r.transport.strikes == []  # type: ignore[attr-defined]


def test_a_muted_peer_is_not_heard_until_its_mute_ends_and_others_still_are() -> None:
    r = listening_replica()
    r._gates["node2"] = PeerGate(0.0, 0.0, muted_until=float("inf"))
    asyncio.run(r.on_message("node2", MSG_QC_ANNOUNCEMENT, encode_message(QcAnnouncement(QC))))
    assert r.events.empty() and r.stats["muted_messages"] == 1
    asyncio.run(r.on_message("node3", MSG_QC_ANNOUNCEMENT, encode_message(QcAnnouncement(QC))))
    assert r.events.get_nowait() == _FromPeer("node3", 0, core.QcReceived(QcAnnouncement(QC)))
    r._gates["node2"] = PeerGate(0.0, 0.0, muted_until=0.0)  # the mute is over
    asyncio.run(r.on_message("node2", MSG_QC_ANNOUNCEMENT, encode_message(QcAnnouncement(QC))))
    assert r.events.get_nowait() == _FromPeer("node2", 0, core.QcReceived(QcAnnouncement(QC)))


def test_an_announcement_from_a_peer_outside_the_set_is_not_heard_and_garbage_costs_a_strike() -> None:
    r = listening_replica()
    asyncio.run(r.on_message("observer", MSG_QC_ANNOUNCEMENT, encode_message(QcAnnouncement(QC))))
    assert r.events.empty()
    asyncio.run(r.on_message("node3", MSG_QC_ANNOUNCEMENT, b"\x92\x04\x90"))  # [4, []]: not a QC
    assert r.events.empty()
    assert r.transport.strikes == [("node3", "undecodable consensus message")]  # type: ignore[attr-defined]


def test_failed_checks_are_charged_to_the_peer_whose_message_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    r = listening_replica()
    crypto = SimpleNamespace(failed_checks=0)
    r.state, r.crypto, r.node = object(), crypto, SimpleNamespace(upgrade_required=None)  # type: ignore[assignment]
    r._generation, r._epoch_ended = 0, False

    def step_failing_one_check(state: Any, event: Any) -> tuple[Any, list[Any]]:
        crypto.failed_checks += 1
        return state, []

    monkeypatch.setattr(core, "step", step_failing_one_check)
    event = core.QcReceived(QcAnnouncement(QC))
    for _ in range(GateConfig().burst):
        asyncio.run(r._handle(event, "node2"))
    assert not is_muted(r._gates["node2"], time.monotonic())
    asyncio.run(r._handle(event, "node2"))  # one more than the burst: muted
    assert is_muted(r._gates["node2"], time.monotonic()) and "node3" not in r._gates
    asyncio.run(r._handle(event, None))  # a replayed or local event: counted, charged to no one
    assert r.stats["failed_checks"] == GateConfig().burst + 2 and set(r._gates) == {"node2"}


def test_a_queued_message_of_a_muted_peer_is_dropped_and_one_from_before_a_restore_is_charged_to_no_one() -> None:
    r = listening_replica()
    r._generation = 3
    event = core.QcReceived(QcAnnouncement(QC))
    assert r._take(_FromPeer("node2", 3, event)) == ("node2", event)
    assert r._take(_FromPeer("node2", 2, event)) == (None, event)  # the core was restored since
    r._gates["node2"] = PeerGate(0.0, 0.0, muted_until=float("inf"))
    assert r._take(_FromPeer("node2", 3, event)) is None and r.stats["muted_messages"] == 1


def test_a_muted_peer_fills_no_replay_buffer() -> None:
    r = listening_replica()
    r._gates["node2"] = PeerGate(0.0, 0.0, muted_until=float("inf"))
    for _ in range(10):
        asyncio.run(r.on_message("node2", MSG_QC_ANNOUNCEMENT, encode_message(QcAnnouncement(QC))))
    assert not r._recent and r.stats["muted_messages"] == 10


class FetchingTransport(RecordingTransport):
    def __init__(self, answer: Any, on_request: Any = None) -> None:
        super().__init__()
        self.answer, self.on_request = answer, on_request

    async def request(self, peer: str, msg_type: str, body: Any, timeout: float) -> Any:
        if self.on_request is not None:
            self.on_request()
        return self.answer


def test_a_fetched_block_must_be_the_one_asked_for_and_reaches_the_core_ungated() -> None:
    from chainshare.consensus.sim import build_sim_block, make_genesis_block, validator_address

    block = build_sim_block(core.BuildProposal(1, make_genesis_block(), None, None), validator_address(1), 0, (b"t",))
    other = build_sim_block(core.BuildProposal(1, make_genesis_block(), None, None), validator_address(1), 0, (b"u",))
    r = listening_replica()
    r.names, r._generation = ["node1", "node2", "node3", "node4"], 0
    r._gates["node2"] = PeerGate(0.0, 0.0, muted_until=float("inf"))  # muted: a fetch it answers still counts
    r.transport = FetchingTransport(block.encode())
    asyncio.run(r._fetch(core.FetchBlock(block.hash, 1)))
    assert r.events.get_nowait() == core.ProposalReceived(Proposal(block), 1) and r.transport.strikes == []
    r.transport = FetchingTransport(other.encode())
    asyncio.run(r._fetch(core.FetchBlock(block.hash, 1)))
    assert r.events.empty() and r.transport.strikes == [("node2", "answered a block request with another block")]

    def restore() -> None:
        r._generation += 1  # the core that asked is replaced while the request is out

    r.transport = FetchingTransport(block.encode(), restore)
    asyncio.run(r._fetch(core.FetchBlock(block.hash, 1)))
    assert r.events.empty() and r.transport.strikes == []
