"""The owner side of joint jobs (chainshare.privacy.service): a share is accepted only from the node
of the agency whose party index it claims (the mutual-TLS certificate names the agency)."""

from __future__ import annotations

import asyncio
from typing import Any

from chainshare.privacy.aggregate import InputShare, JointSession, split_into_shares
from chainshare.privacy.service import JointService, _Run

PARTICIPANTS = ("agency1", "agency3", "agency4")


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []

    def send(self, peer: str, msg_type: str, body: Any) -> bool:
        self.sent.append((peer, msg_type, body))
        return True


class FakeSharing:
    agency = "agency1"

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.peers = {"node3": "agency3", "node4": "agency4", "node2": "agency2"}

    def _peer_agency(self, peer: str) -> str:
        return self.peers[peer]

    def resolve_owner_peer(self, agency: str) -> str:
        return next(p for p, a in self.peers.items() if a == agency)


def _service_with_run() -> tuple[JointService, _Run]:
    async def make() -> tuple[JointService, _Run]:
        service = JointService(FakeSharing())
        run = _Run(JointSession(9, 1, 3, 1), PARTICIPANTS, asyncio.Event())
        run.session.start([5])
        service._runs[9] = run
        return service, run

    return asyncio.run(make())


def test_a_share_from_another_agencys_node_is_dropped() -> None:
    service, run = _service_with_run()
    forged = InputShare(9, 2, 1, split_into_shares([1], 3)[0]).encode()  # party 2 is agency3
    service.on_share("node4", forged)  # ... but it comes from agency4's node
    service.on_share("node2", forged)  # ... or from the requester's
    assert sorted(run.session._inputs) == [1]
    service.on_share("node3", forged)
    assert sorted(run.session._inputs) == [1, 2]


def test_garbage_and_oversized_shares_are_dropped_without_effect() -> None:
    service, run = _service_with_run()
    for body in (b"\x00", b"x" * (2 << 20), "text", InputShare(9, 3, 1, b"\x01").encode()):
        service.on_share("node4", body)
    assert sorted(run.session._inputs) == [1]


def test_shares_for_a_job_not_started_here_wait_and_are_bounded() -> None:
    service, _ = _service_with_run()
    early = InputShare(10, 2, 1, split_into_shares([1], 3)[0]).encode()
    for _ in range(100):
        service.on_share("node3", early)
    assert len(service._pending[10]) == 64
