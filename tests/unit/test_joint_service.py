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

    def get_peer_agency(self, peer: str) -> str:
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


# -- joint.start: what an owner's node checks on its own chain before it touches its data ----------------

class LedgerNode:
    """The two things the service reads from a node, over a chainkit Ledger."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    def call(self, sender: bytes, to: bytes, data: bytes, gas: int | None = None) -> tuple[bool, bytes, int]:
        ok, out = self.ledger.view(to, data, sender)
        return ok, out, 0

    @property
    def chain(self) -> Any:
        ledger = self.ledger

        class Chain:
            state = ledger.reader()
            head_height = len(ledger.blocks)

        return Chain()


class OwnerSharing(FakeSharing):
    def __init__(self, node: Any, agency: str) -> None:
        super().__init__()
        self.node, self.agency = node, agency
        self.peers = {"node2": "Statistics Office", "node3": "Agency B"}
        self.vault = None

    def find_vault_entry(self, dataset: Any) -> Any:
        raise AssertionError("the owner's data was touched before the checks passed")


def _job_on_chain() -> tuple[Any, str]:
    import json as _json

    import test_joint_contract as tj
    from chainkit import Ledger, account, make_genesis, validator

    from chainshare.privacy.aggregate import compute_joint_query_hash, parse_joint_query
    from chainshare.sharing.schema import canonical_json, validate_schema

    ledger = Ledger(make_genesis([(n, [account(n).address]) for n in (*tj.OWNERS, tj.REQUESTER)],
                                 [validator("v1", tj.OWNERS[0])]))
    grants = tj.setup_grants(ledger)
    query = {"select": [{"fn": "count"}], "epsilon": 0.5}
    jq = parse_joint_query(query, [validate_schema(_json.loads(tj.SCHEMA))] * 3)
    data = tj.encode(tj.JC, "createJob", grants, compute_joint_query_hash(jq), 500_000)
    tj.ok(ledger.send(tj.who(tj.REQUESTER), tj.JOINT_COMPUTE, data, gas=3_000_000))
    return ledger, canonical_json(jq.to_json()).decode()


def test_an_owner_refuses_a_start_that_does_not_match_the_job_on_its_chain() -> None:
    import pytest

    from chainshare.errors import InvalidInput, NotFound, Unauthorized

    ledger, query_text = _job_on_chain()
    node = LedgerNode(ledger)

    async def start(agency: str, peer: str, job_id: int, text: str) -> Any:
        service = JointService(OwnerSharing(node, agency), phase_timeout=1)
        return await service.serve_start(peer, [job_id, text.encode()])

    with pytest.raises(Unauthorized, match="created by 'Statistics Office', not 'Agency B'"):
        asyncio.run(start("Agency A", "node3", 1, query_text))  # another owner posing as the requester
    with pytest.raises(Unauthorized, match="not a participant"):
        asyncio.run(start("Statistics Office", "node2", 1, query_text))
    with pytest.raises(InvalidInput, match="does not hash"):  # a different query than the one on chain
        asyncio.run(start("Agency A", "node2", 1, query_text.replace("0.5", "0.6")))
    with pytest.raises(InvalidInput, match="malformed"):
        asyncio.run(start("Agency A", "node2", 1, "x" * 20_000))
    with pytest.raises(NotFound):
        asyncio.run(start("Agency A", "node2", 2, query_text))


# -- the requester: the owners' answer is checked against its own chain, once that chain has it -----------------

def test_the_requester_waits_for_its_own_node_to_finalize_the_completion_the_owners_answered(
        monkeypatch: Any) -> None:
    """The owners answer once the job's completion is final on their nodes; the requester's node may commit
    that block a moment later. The requester waits for it (it used to compare at once and report the answer
    as not matching the chain), and still refuses an answer that differs from the chain's record."""
    from dataclasses import replace

    import pytest

    from chainshare.crypto.hashing import keccak256
    from chainshare.privacy import service as service_module
    from chainshare.privacy.service import JointAborted, JointJob

    result = b'{"count": 3}'
    running = JointJob("Statistics Office", (1, 3), (1, 2), ("Agency A", "Agency B"), b"\x01" * 32, 500_000,
                       "running", "", "", bytes(32), (), 0)
    completed = replace(running, status="completed", outcome="released", result_hash=keccak256(result))
    monkeypatch.setattr(service_module, "parse_joint_query", lambda query, schemas: SimpleQuery())
    monkeypatch.setattr(service_module, "select_grant", lambda *args: SimpleGrant())
    monkeypatch.setattr(service_module, "compute_joint_query_hash", lambda jq: b"\x01" * 32)

    async def query(answered: bytes, lag_reads: int) -> dict[str, Any]:
        service = JointService(OwnerSharing(None, "Statistics Office"), phase_timeout=2)
        reads = iter([running] * (1 + lag_reads) + [completed] * 1000)  # 1: the read at creation

        async def record(fn: str, *args: Any, min_gas: int = 0) -> bytes:
            return (7).to_bytes(32, "big")

        async def ask_owner(owner: str, body: list[Any]) -> Any:
            return ["released", answered]

        service._schemas = lambda ids: []  # type: ignore[method-assign]
        service._record = record  # type: ignore[method-assign]
        service._ask_owner = ask_owner  # type: ignore[method-assign]
        service.read_job = lambda job_id: next(reads)  # type: ignore[method-assign]
        return await service.run_joint_query([1, 3], {"select": [{"fn": "count"}], "epsilon": 0.5})

    out = asyncio.run(query(result, lag_reads=3))
    assert out["job_id"] == 7 and out["status"] == "completed" and out["result"] == {"count": 3}
    with pytest.raises(JointAborted, match="does not match its on-chain record"):
        asyncio.run(query(b'{"count": 4}', lag_reads=0))


class SimpleGrant:
    id = 1


class SimpleQuery:
    class query:  # noqa: N801 - the attribute the service reads
        epsilon_micro = 500_000

    def to_json(self) -> dict[str, Any]:
        return {"select": [{"fn": "count"}]}
