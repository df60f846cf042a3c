"""Protocol versions (execution/forks/): Governance schedules ``upgrade(version, activationHeight)``,
each block runs under the version of its height, a release runs only the versions it supports (gated in
one place), and `chain verify` re-executes old blocks under the rules of their height across an upgrade."""

from __future__ import annotations

from typing import Any

import pytest
from chainkit import (
    GOVERNANCE,
    NOTARY,
    Chain,
    Ledger,
    account,
    call_data,
    make_genesis,
    revert_reason,
    sign_call,
    validator,
)

from chainshare.errors import ConfigError, ConsensusError, UnsupportedProtocolVersion
from chainshare.execution import forks
from chainshare.execution.contracts.governance import ProtocolUpgrade, get_upgrade_schedule
from chainshare.execution.forks import (
    SUPPORTED_VERSIONS_ENV,
    UpgradeRequired,
    get_runtime_at,
    get_runtime_for,
    get_upgrade_required,
    get_version_at,
    parse_supported_versions,
    v1,
    v2,
    v3,
)
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS
from chainshare.verify import StoreSource, verify_chain

ALICE = account("alice")
VAL = validator("v1", "Agency A")
GENESIS = make_genesis([("Agency A", [ALICE.address])], [VAL])  # one agency: a proposal needs its one vote
UPGRADE = "upgrade(uint256,uint256)"
PROPOSE = "propose(address,bytes,string)"
LONG = "x" * 600  # a proposal record of ~25 words: its storage price differs between v1 and v2


def gov_call(ledger: Ledger, inner: bytes, description: str = "upgrade") -> list[Any]:
    """propose(GOVERNANCE, inner), vote, execute: the receipts of the three transactions."""
    propose = ledger.send(ALICE, GOVERNANCE, call_data(PROPOSE, GOVERNANCE, inner, description))
    assert propose.status == STATUS_SUCCESS
    pid = int.from_bytes(propose.output[-32:], "big")
    vote = ledger.send(ALICE, GOVERNANCE, call_data("vote(uint256,bool)", pid, True))
    return [propose, vote, ledger.send(ALICE, GOVERNANCE, call_data("execute(uint256)", pid))]


def test_only_governance_schedules_an_upgrade() -> None:
    ledger = Ledger(GENESIS)
    r = ledger.send(ALICE, GOVERNANCE, call_data(UPGRADE, 2, 100))
    assert r.status == STATUS_FAILURE and "only Governance" in revert_reason(r.output)
    assert get_upgrade_schedule(ledger.reader()) == ()


def test_an_executed_proposal_schedules_the_upgrade_and_the_view_reports_it() -> None:
    ledger = Ledger(GENESIS)
    receipts = gov_call(ledger, call_data(UPGRADE, 2, 50))
    assert receipts[-1].status == STATUS_SUCCESS, revert_reason(receipts[-1].output)
    assert get_upgrade_schedule(ledger.reader()) == (ProtocolUpgrade(2, 50),)
    topics = [lg.topics[0] for lg in receipts[-1].logs]
    assert forks.v1.build_runtime().by_name["Governance"].E_UPGRADE_SCHEDULED.topic in topics
    for height, expected in ((49, (1, 0)), (50, (2, 50)), (10**6, (2, 50))):
        ok, out = ledger.view(GOVERNANCE, call_data("protocolVersionAt(uint256)", height))
        assert ok and (int.from_bytes(out[:32], "big"), int.from_bytes(out[32:], "big")) == expected
    state = ledger.reader()
    assert (get_version_at(state, 49), get_version_at(state, 50)) == (1, 2)


@pytest.mark.parametrize(("version", "activation", "reason"), [
    (2, 0, "activation height must be after this block"),  # in the past
    (2, 2_000_000, "at most"),  # too far ahead
    (1, 50, "above the version in force (1)"),  # not an upgrade
])
def test_bad_upgrades_revert_through_the_proposal(version: int, activation: int, reason: str) -> None:
    ledger = Ledger(GENESIS)
    execute = gov_call(ledger, call_data(UPGRADE, version, activation))[-1]
    assert execute.status == STATUS_FAILURE and reason in revert_reason(execute.output)
    assert get_upgrade_schedule(ledger.reader()) == ()


def test_a_pending_upgrade_is_replaced_and_an_active_one_kept() -> None:
    ledger = Ledger(GENESIS)
    gov_call(ledger, call_data(UPGRADE, 2, 8))
    gov_call(ledger, call_data(UPGRADE, 2, 9))  # still pending at height 4..6: replaced
    assert get_upgrade_schedule(ledger.reader()) == (ProtocolUpgrade(2, 9),)
    while ledger.parent_header.height < 9:
        ledger.execute([])
    execute = gov_call(ledger, call_data(UPGRADE, 2, 40))[-1]  # v2 is in force: 2 is no upgrade
    assert "above the version in force (2)" in revert_reason(execute.output)
    gov_call(ledger, call_data(UPGRADE, 3, 40))
    assert get_upgrade_schedule(ledger.reader()) == (ProtocolUpgrade(2, 9), ProtocolUpgrade(3, 40))


def test_v2_changes_only_the_price_of_stored_words() -> None:
    one, two = v1.build_runtime(), v2.build_runtime()
    assert (one.version, two.version) == (1, 2)
    assert one.contracts.keys() == two.contracts.keys()
    assert {a: c.methods.keys() for a, c in one.contracts.items()} == {a: c.methods.keys() for a, c in two.contracts.items()}
    assert (one.gas.sstore_word, two.gas.sstore_word) == (3, v2.SSTORE_WORD)


def test_blocks_run_under_the_version_of_their_height() -> None:
    """The same proposal costs v1 gas before the activation height and v2 gas from it on."""
    ledger = Ledger(GENESIS)
    gov_call(ledger, call_data(UPGRADE, 2, 6))  # blocks 1-3
    ledger.runtime = get_runtime_at(ledger.reader(), 4)
    before = ledger.send(ALICE, GOVERNANCE, call_data(PROPOSE, NOTARY, b"", LONG))  # block 4: v1
    ledger.execute([])  # block 5
    ledger.runtime = get_runtime_at(ledger.reader(), 6)
    assert ledger.runtime.version == 2
    after = ledger.send(ALICE, GOVERNANCE, call_data(PROPOSE, NOTARY, b"", LONG))  # block 6: v2
    assert before.status == after.status == STATUS_SUCCESS
    extra = after.gas_used - before.gas_used
    assert extra > 0 and extra % (v2.SSTORE_WORD - 3) == 0


def test_supported_versions_are_gated_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_supported_versions(None) == forks.SUPPORTED_VERSIONS == frozenset({1, 2, 3})
    assert parse_supported_versions("1") == frozenset({1})
    for bad in ("2", "1,7", "one"):
        with pytest.raises(ConfigError):
            parse_supported_versions(bad)
    ledger = Ledger(GENESIS)
    gov_call(ledger, call_data(UPGRADE, 2, 6))
    state = ledger.reader()
    assert get_upgrade_required(state, 6) is None
    monkeypatch.setenv(SUPPORTED_VERSIONS_ENV, "1")
    assert get_upgrade_required(state, 5) is None
    assert get_upgrade_required(state, 6) == UpgradeRequired(2, 6, (1,))
    assert get_runtime_at(state, 5).version == 1
    with pytest.raises(UnsupportedProtocolVersion) as info:
        get_runtime_at(state, 6)
    assert info.value.data == {"version": 2, "height": 6}
    with pytest.raises(UnsupportedProtocolVersion):
        get_runtime_for(2)


def upgraded_chain() -> Chain:
    """A single-validator chain (built as the node builds it) that upgrades to v2 at height 8, with a
    multi-word proposal in a v1 block (4) and in a v2 block (9)."""
    chain = Chain(GENESIS, VAL)
    nonce = iter(range(100))

    def tx(data: bytes) -> bytes:
        return sign_call(ALICE, GOVERNANCE, data, next(nonce))

    chain.produce([tx(call_data(PROPOSE, GOVERNANCE, call_data(UPGRADE, 2, 8), "v2"))])
    chain.produce([tx(call_data("vote(uint256,bool)", 1, True))])
    chain.produce([tx(call_data("execute(uint256)", 1))])
    chain.produce([tx(call_data(PROPOSE, NOTARY, b"", LONG))])  # 4
    while chain.chain.head_height < 8:
        chain.produce([])
    chain.produce([tx(call_data(PROPOSE, NOTARY, b"", LONG))])  # 9
    return chain


def test_chain_verify_re_executes_each_block_under_the_version_of_its_height() -> None:
    chain = upgraded_chain()
    gas = [chain.chain.get_receipts(h)[0].gas_used for h in (4, 9)]
    assert gas[1] > gas[0]  # the same call, priced by v1 then by v2
    report = verify_chain(StoreSource(ChainStore(chain.store)))
    assert report.head_final and report.blocks == 10
    assert report.protocol_versions == ((1, 0, 7), (2, 8, 9))
    assert report.to_json()["protocol_versions"][1] == {"version": 2, "first_height": 8, "last_height": 9}


def test_chain_verify_fails_if_old_blocks_ran_under_the_new_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `build_runtime()` ignoring height did: re-executing v1 blocks under v2 does not verify."""
    chain = upgraded_chain()
    monkeypatch.setattr("chainshare.verify.get_runtime_at", lambda state, height: get_runtime_for(2))
    with pytest.raises(ConsensusError, match="block 1 does not re-execute|block 1: stored receipts"):
        verify_chain(StoreSource(ChainStore(chain.store)))


def test_chain_verify_says_which_version_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = upgraded_chain()
    monkeypatch.setenv(SUPPORTED_VERSIONS_ENV, "1")
    with pytest.raises(UnsupportedProtocolVersion, match="block 8 runs under protocol version 2"):
        verify_chain(StoreSource(ChainStore(chain.store)))


def test_single_validator_producer_halts_before_an_unsupported_version_and_continues_once_upgraded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's own producer (and /healthz through the node's ASGI app): an "old" node stops at block 7,
    the last before v2, and keeps serving; restarted with support it produces v2 blocks on the same data."""
    import asyncio

    import httpx

    from chainshare.api.app import create_app
    from chainshare.config import BlockSection, NodeConfig
    from chainshare.node import Node, ValidatorKey

    chain = Chain(GENESIS, VAL)
    nonce = iter(range(100))
    for data in (call_data(PROPOSE, GOVERNANCE, call_data(UPGRADE, 2, 8), "v2"), call_data("vote(uint256,bool)", 1, True),
                 call_data("execute(uint256)", 1)):
        chain.produce([sign_call(ALICE, GOVERNANCE, data, next(nonce))])
    cfg = NodeConfig(block=BlockSection(block_time_ms=10, empty_block_interval_ms=10))
    key = ValidatorKey(VAL.secret_key, VAL.public_key)

    async def run(node: Node, until: Any) -> tuple[int, Any]:
        producer = asyncio.create_task(node.run_producer())
        for _ in range(1000):
            if until():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time to (wrongly) go on
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            r = await client.get("/healthz")
        await node.stop()
        await producer
        return r.status_code, r.json()

    monkeypatch.setenv(SUPPORTED_VERSIONS_ENV, "1")
    old = Node(cfg, GENESIS, chain.store, key)
    status, body = asyncio.run(run(old, lambda: old.upgrade_required is not None))
    assert old.chain.head_height == 7 and old.runtime.version == 1
    assert status == 503 and body == {"status": "upgrade_required", "version": 2, "activation_height": 8,
                                      "supported_versions": [1], "head": 7}
    old._executor.shutdown(wait=True)  # the store is handed over as is (LevelDB would be closed and reopened)

    monkeypatch.delenv(SUPPORTED_VERSIONS_ENV)
    new = Node(cfg, GENESIS, chain.store, key)
    status, body = asyncio.run(run(new, lambda: new.chain.head_height >= 10))
    assert status == 200 and new.upgrade_required is None and new.chain.head_height >= 10
    report = verify_chain(StoreSource(ChainStore(chain.store)))
    assert report.protocol_versions == ((1, 0, 7), (2, 8, report.blocks - 1))
    new.close()


def test_a_node_refuses_to_start_with_versions_this_release_does_not_implement(monkeypatch: pytest.MonkeyPatch) -> None:
    from chainshare.config import NodeConfig
    from chainshare.ledger.store import MemoryStore
    from chainshare.node import Node, ValidatorKey

    monkeypatch.setenv(SUPPORTED_VERSIONS_ENV, "1,4")
    with pytest.raises(ConfigError, match="implements versions 1,2,3"):
        Node(NodeConfig(), GENESIS, MemoryStore(), ValidatorKey(VAL.secret_key, VAL.public_key))


class _Transport:
    """Records what the replica would send (nothing may be sent by a halted replica)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def broadcast(self, *args: Any) -> None:
        self.sent.append(args)

    def send(self, *args: Any) -> None:
        self.sent.append(args)

    def connected_peers(self) -> list[str]:
        raise AssertionError("a replica halted at H-1 asks no peer for blocks")


def test_a_replica_without_the_version_withholds_its_vote_and_its_core_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 validators; upgrade to v2 at 6 scheduled by blocks 1-3; block 5 (H-1) final. A replica of a node
    without v2 has no consensus core (signs nothing), refuses to validate block 6 and fetches nothing; with
    v2 the same replica validates it."""
    import asyncio

    from chainshare.config import NodeConfig, P2PSection
    from chainshare.consensus import core
    from chainshare.node import Node, ValidatorKey
    from chainshare.replica import Replica, ReplicaConfig

    vals = [validator(f"v{i}", "Agency A") for i in range(1, 5)]
    genesis = make_genesis([("Agency A", [ALICE.address])], vals)
    chain = Chain(genesis, vals[0], other_keys=vals[1:])
    nonce = iter(range(10))
    for data in (call_data(PROPOSE, GOVERNANCE, call_data(UPGRADE, 2, 6), "v2"), call_data("vote(uint256,bool)", 1, True),
                 call_data("execute(uint256)", 1)):
        chain.produce([sign_call(ALICE, GOVERNANCE, data, next(nonce))])
    chain.produce([])
    chain.produce([])
    block6, _ = chain.certify_next([])
    cfg = NodeConfig(p2p=P2PSection(listen_port=1))
    rcfg = ReplicaConfig(base_timeout_ms=1000, max_timeout_ms=60_000, block_time_ms=200, idle_block_ms=500)

    async def scenario(supported: str | None) -> tuple[Any, bool, bool, list[Any]]:
        if supported is None:
            monkeypatch.delenv(SUPPORTED_VERSIONS_ENV, raising=False)
        else:
            monkeypatch.setenv(SUPPORTED_VERSIONS_ENV, supported)
        node = Node(cfg, genesis, chain.store, ValidatorKey(vals[0].secret_key, vals[0].public_key))
        transport = _Transport()
        replica = Replica(node, transport, rcfg)
        node.replica = replica
        try:
            valid = replica._validate(block6.block)
            if supported is not None:
                await replica._handle(core.Start())
                assert await replica.sync_from_peers() == 0
            return node.upgrade_required, valid, replica.state is not None, transport.sent
        finally:
            replica._executor.shutdown(wait=True)
            node._executor.shutdown(wait=True)

    halted, valid, has_core, sent = asyncio.run(scenario("1"))
    assert halted == UpgradeRequired(2, 6, (1,)) and not valid and not has_core and sent == []
    halted, valid, has_core, _ = asyncio.run(scenario(None))
    assert halted is None and valid and has_core


def test_v3_takes_a_person_handle_exactly_and_old_blocks_keep_their_rule() -> None:
    """v1/v2 took "P-<64 hex>\\n" (Python's ``$`` matches before a final newline): such a record published before
    the upgrade stays and re-executes as it was; from v3 on the same publish reverts, and `chain verify` checks
    each block under its own rule."""
    from credit_kit import GOV, ISSUER_A, ISSUER_B, CreditKit, encode, ok, reverted

    from chainshare.crypto.secp import to_checksum_address

    kit = CreditKit()
    kit.configure()
    handle = "P-" + "ab" * 32

    def publish(subject: str) -> Any:
        return kit.publish(subject=subject, summary="", summary_hash=b"\x42" * 32)

    ok(publish(handle + "\n"))  # v1: taken
    height = kit.chain.chain.head_height
    inner = call_data(UPGRADE, 3, height + 5)
    created = ok(kit.send(ISSUER_A, encode(GOV, "propose", to_checksum_address(GOVERNANCE), inner, "v3"),
                          to=GOVERNANCE))
    pid = int.from_bytes(created.output[:32], "big")
    for who in (ISSUER_A, ISSUER_B):
        ok(kit.send(who, encode(GOV, "vote", pid, True), to=GOVERNANCE))
    ok(kit.send(ISSUER_A, encode(GOV, "execute", pid), to=GOVERNANCE))
    while kit.chain.chain.head_height < height + 4:
        kit.chain.produce([])
    assert get_runtime_at(kit.chain.chain.state, kit.chain.chain.head_height + 1).version == 3
    assert "a person's subject is a handle" in reverted(publish(handle + "\n"))
    ok(publish(handle))
    assert kit.call(ISSUER_A, "correct", 1, 2, 1, "D-1", "Authority", "Law", "", b"\x43" * 32, kit.now, kit.now,
                    0, 86400, b"\xef" * 32, "corrected under v3").status == 1  # the v1 record stays correctable
    report = verify_chain(StoreSource(ChainStore(kit.chain.store)))
    assert report.head_final and [v for v, _, _ in report.protocol_versions] == [1, 3]


def test_v3_changes_only_the_credit_registry_handle_rule() -> None:
    two, three = v2.build_runtime(), v3.build_runtime()
    assert three.version == 3 and three.gas == two.gas
    assert [c.NAME for c in two.contracts.values()] == [c.NAME for c in three.contracts.values()]
    assert three.by_name["CreditRegistry"].EXACT_HANDLES and not two.by_name["CreditRegistry"].EXACT_HANDLES
    assert three.by_name["CreditRegistry"].to_abi() == two.by_name["CreditRegistry"].to_abi()
