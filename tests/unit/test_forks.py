"""Protocol versions (execution/forks/): Governance schedules ``upgrade(version, activationHeight)``,
each block runs under the version of its height, a release runs only the versions it supports (gated in
one place), and `chain verify` re-executes old blocks under the rules of their height across an upgrade."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

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

from chainshare.crypto.secp import to_checksum_address
from chainshare.errors import ConfigError, ConsensusError, UnsupportedProtocolVersion
from chainshare.execution import forks
from chainshare.execution.block import apply_block
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY, DATASETS
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
    v4,
)
from chainshare.execution.runtime import G_SSTORE_RESET, Runtime
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Receipt
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
    assert parse_supported_versions(None) == forks.SUPPORTED_VERSIONS == frozenset({1, 2, 3, 4})
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

    monkeypatch.setenv(SUPPORTED_VERSIONS_ENV, "1,5")
    with pytest.raises(ConfigError, match="implements versions 1,2,3,4"):
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
    from credit_kit import ISSUER_A, CreditKit, ok, reverted


    kit = CreditKit()
    kit.configure()
    handle = "P-" + "ab" * 32

    def publish(subject: str) -> Any:
        return kit.publish(subject=subject, summary="", summary_hash=b"\x42" * 32)

    ok(publish(handle + "\n"))  # v1: taken
    kit.upgrade_protocol(3)
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


# -- v4: JSON nesting bounded before parsing; a failed sub-call's gas charged ----------------------

REGISTER = "register(string,bytes32,string,uint64,string)"
SCHEMA_SHAPE = 'schema must be a JSON object {"columns": [...], "min_group": n} and nothing else'
DEEP = 400  # parses ~100 frames into a test, and does not ~300 frames below the recursion limit (on CPython 3.11)
_T = TypeVar("_T")


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def register_schema(schema: str, nonce: int = 0) -> bytes:
    return sign_call(ALICE, DATASETS, call_data(REGISTER, "t", b"\x01" * 32, schema, 1, ""), nonce, gas=5_000_000)


def at_stack_depth(frames: int, fn: Callable[[], _T]) -> _T:
    return fn() if frames <= 0 else at_stack_depth(frames - 1, fn)


def register_then_re_execute_near_the_recursion_limit(runtime: Runtime, schema: str) -> Receipt:
    """Build a block of one ``Datasets.register(schema)`` here (what the proposer does), re-execute it (what a
    replica's commit and `chain verify` do) with the stack 300 frames short of the recursion limit, and return
    its receipt; ConsensusError if the re-execution's receipts differ."""
    ledger = Ledger(GENESIS, runtime=runtime)
    built = ledger.build([register_schema(schema)])
    padding = sys.getrecursionlimit() - len(inspect.stack(0)) - 300
    again = at_stack_depth(padding, lambda: apply_block(runtime, ledger.reader(), ledger.parent_header,
                                                        ledger.accumulator, built.block, chain_id=GENESIS.chain_id))
    assert again.receipts == built.receipts
    return built.receipts[0]


def test_v4_refuses_a_deeply_nested_schema_alike_at_any_stack_depth() -> None:
    receipt = register_then_re_execute_near_the_recursion_limit(v4.build_runtime(), nested(DEEP))
    assert receipt.status == STATUS_FAILURE
    assert revert_reason(receipt.output) == "schema nests arrays and objects deeper than 32 levels"


def test_v3_keeps_its_json_handling_for_its_blocks() -> None:
    """v3 parses whatever the stack allows: a schema 100 deep is parsed (and refused for its shape), and one
    DEEP levels deep re-executes differently near the recursion limit (what v4 fixes, never in place)."""
    receipt = register_then_re_execute_near_the_recursion_limit(v3.build_runtime(), nested(100))
    assert revert_reason(receipt.output) == SCHEMA_SHAPE
    with pytest.raises(ConsensusError, match="receipts_root"):
        register_then_re_execute_near_the_recursion_limit(v3.build_runtime(), nested(DEEP))


def test_v4_takes_ordinary_schemas_and_counts_only_brackets_outside_strings() -> None:
    ledger = Ledger(GENESIS, runtime=v4.build_runtime())
    tricky_name = '[{\\"' * 20  # brackets, an escaped backslash and an escaped quote inside a string
    schema = json.dumps({"columns": [{"name": "agency", "kind": "string"}, {"name": tricky_name, "kind": "integer"}],
                         "min_group": 5})
    assert ledger.send(ALICE, DATASETS, call_data(REGISTER, "t", b"\x01" * 32, schema, 1, ""),
                       gas=5_000_000).status == STATUS_SUCCESS
    at_cap = ledger.send(ALICE, DATASETS, call_data(REGISTER, "t", b"\x02" * 32, nested(32), 1, ""), gas=5_000_000)
    assert revert_reason(at_cap.output) == SCHEMA_SHAPE
    over = ledger.send(ALICE, DATASETS, call_data(REGISTER, "t", b"\x03" * 32, "[" * 33 + "]]" + '"', 1, ""),
                       gas=5_000_000)
    assert revert_reason(over.output) == "schema nests arrays and objects deeper than 32 levels"


def deadline_batch(calls: int, then_fail: bool) -> bytes:
    """Governance.executeBatch of ``calls`` CreditRegistry.setObjectionDeadline writes, then one that reverts."""
    data = [call_data("setObjectionDeadline(uint64)", 86_400 + i) for i in range(calls)]
    if then_fail:
        data.append(call_data("setObjectionDeadline(uint64)", 0))
    return call_data("executeBatch(address[],bytes[])", [to_checksum_address(CREDIT_REGISTRY)] * len(data), data)


@pytest.mark.parametrize("version", [v3, v4])
def test_the_gas_of_a_sub_call_that_reverts_is_charged_from_v4(version: Any) -> None:
    """A proposal runs a batch of 20 writes whose last call reverts: v4 charges the writes (the failed execute
    costs at least what the same batch without the failing call costs); v1-v3 charged none of them."""
    done = gov_call(Ledger(GENESIS, runtime=version.build_runtime()), deadline_batch(20, then_fail=False))[-1]
    failed = gov_call(Ledger(GENESIS, runtime=version.build_runtime()), deadline_batch(20, then_fail=True))[-1]
    assert done.status == STATUS_SUCCESS and failed.status == STATUS_FAILURE
    assert "objection deadline must be" in revert_reason(failed.output)
    if version is v4:
        assert failed.gas_used >= done.gas_used
    else:
        assert failed.gas_used < done.gas_used - 20 * G_SSTORE_RESET


def nested_batches(levels: int) -> bytes:
    """Governance.executeBatch calling Governance.executeBatch ``levels`` deep, around one ordinary write."""
    data = call_data("setObjectionDeadline(uint64)", 86_400)
    target = CREDIT_REGISTRY
    for _ in range(levels):
        data = call_data("executeBatch(address[],bytes[])", [to_checksum_address(target)], [data])
        target = GOVERNANCE
    return data


@pytest.mark.parametrize("version", [v3, v4])
def test_calls_nest_at_most_8_deep_from_v4(version: Any) -> None:
    """Each nested call takes stack frames: from v4 a call deeper than 8 reverts, whatever the node's own stack
    depth, instead of raising RecursionError near Python's limit on one node and not on another; v1-v3 keep no
    bound for their blocks. Legitimate nesting (a proposal's batch calling a contract that calls another) is 3."""
    shallow = gov_call(Ledger(GENESIS, runtime=version.build_runtime()), nested_batches(7))[-1]
    deep = gov_call(Ledger(GENESIS, runtime=version.build_runtime()), nested_batches(8))[-1]
    assert shallow.status == STATUS_SUCCESS, revert_reason(shallow.output)  # execute's call + 7 more: depth 8
    if version is v4:
        assert deep.status == STATUS_FAILURE and revert_reason(deep.output) == "calls nest deeper than 8"
    else:
        assert deep.status == STATUS_SUCCESS


def test_v4_changes_only_json_nesting_and_failed_call_gas() -> None:
    three, four = v3.build_runtime(), v4.build_runtime()
    assert four.version == 4 and four.gas.sstore_word == three.gas.sstore_word
    assert (three.gas.charge_failed_calls, four.gas.charge_failed_calls) == (False, True)
    assert (three.gas.max_call_depth, four.gas.max_call_depth) == (None, 8)
    capped = {c.NAME for c in four.contracts.values() if getattr(c, "JSON_DEPTH_CAP", None) == 32}
    assert capped == {"Datasets", "CreditRegistry", "CredentialRegistry"}
    assert all(getattr(c, "JSON_DEPTH_CAP", None) is None for c in three.contracts.values())
    assert four.by_name["CreditRegistry"].EXACT_HANDLES
    assert [c.to_abi() for c in three.contracts.values()] == [c.to_abi() for c in four.contracts.values()]


def test_a_chain_reaches_v4_by_a_governance_upgrade_and_caps_json_from_then_on() -> None:
    """From v1, Governance schedules v4: a scoring rule and an AnonCreds schema nested 40 deep revert with the
    cap's reason from v4 on (the scoring rule was refused for its shape before), an ordinary rule installs,
    and `chain verify` re-executes each block under its own version."""
    from credit_kit import ISSUER_A, RULE, CreditKit, ok, reverted

    from chainshare.execution.contracts.addresses import CREDENTIAL_REGISTRY

    kit = CreditKit()
    kit.configure()
    deep_rule = '{"name": "deep", "weights": ' + nested(40) + "}"
    assert "scoring rule must be" in reverted(kit.govern("installScoringRule", deep_rule))  # v1
    kit.upgrade_protocol(4)
    assert reverted(kit.govern("installScoringRule", deep_rule)) == \
        "scoring rule nests arrays and objects deeper than 32 levels"
    ok(kit.govern("installScoringRule", json.dumps(RULE)))
    issuer = "chainshare:agency:" + ISSUER_A
    schema = json.dumps({"issuerId": issuer, "name": "credit", "version": "1.0", "attrNames": ["score"]})
    publish = "publishSchema(string,string,string)"
    deep_schema = schema[:-1] + ', "extra": ' + nested(40) + "}"
    assert reverted(kit.send(ISSUER_A, call_data(publish, "penalty", issuer + "/s/deep", deep_schema),
                             to=CREDENTIAL_REGISTRY)) == "schema nests arrays and objects deeper than 32 levels"
    ok(kit.send(ISSUER_A, call_data(publish, "penalty", issuer + "/s/1", schema), to=CREDENTIAL_REGISTRY))
    report = verify_chain(StoreSource(ChainStore(kit.chain.store)))
    assert report.head_final and [v for v, _, _ in report.protocol_versions] == [1, 4]


@pytest.mark.parametrize(("text", "deepest"), [
    ('{"a": [1, {"b": [[]]}]}', 5),
    ('["[[[[", "\\"[[[", "\\\\", [[]]]', 3),  # brackets in strings, an escaped quote, an escaped backslash
    ('"\\\\"[[[', 3),  # the string ends after an escaped backslash: the brackets after it count
    ("]]]][[", 2),  # a stray closer never hides later nesting
])
def test_json_nesting_counts_only_brackets_outside_strings(text: str, deepest: int) -> None:
    from chainshare.execution.contracts.json_depth import is_json_nested_deeper_than

    assert is_json_nested_deeper_than(text, deepest - 1) and not is_json_nested_deeper_than(text, deepest)
