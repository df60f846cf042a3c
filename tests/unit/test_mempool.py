"""The mempool: admission refuses each bad transaction with its precise error; ready transactions come
out in consecutive-nonce order; what one sender can make a node hold is bounded (nonce window, byte
caps, expiry of queued transactions) and system records always find room."""

from __future__ import annotations

import pytest
from chainkit import (
    GOVERNANCE,
    MEMBERSHIP,
    NOTARY,
    Account,
    Ledger,
    account,
    call_data,
    make_genesis,
    sign_call,
)
from chainkit import validator as make_validator

from chainshare.crypto.hashing import keccak256
from chainshare.errors import (
    DecodeError,
    GasLimitExceeded,
    InvalidTransaction,
    KnownTransaction,
    MempoolFull,
    NonceTooHigh,
    NonceTooLow,
    TransactionTooLarge,
    Unauthorized,
    UnknownSelector,
    WrongChainId,
)
from chainshare.execution.contracts import ACCESS_CONTROL, EVIDENCE
from chainshare.execution.runtime import compute_intrinsic_gas
from chainshare.ledger.state import DictReader
from chainshare.ledger.txs import Transaction
from chainshare.mempool import Admission, Mempool, MempoolLimits

ALICE, BOB, CAROL, MALLORY = account("alice"), account("bob"), account("carol"), account("mallory")
GENESIS = make_genesis([("Agency A", [ALICE.address, CAROL.address]), ("Agency B", [BOB.address])],
                       [make_validator("v1", "Agency A")])
GAS_LIMIT = GENESIS.params.block_gas_limit


def anchor(acct: Account, nonce: int, digest_byte: int | None = None, **kw: int) -> bytes:
    digest = bytes([digest_byte if digest_byte is not None else nonce]) * 32
    return sign_call(acct, NOTARY, call_data("anchor(bytes32)", digest), nonce, **kw)


def record_delivery(acct: Account, nonce: int, grant: int = 1) -> bytes:
    return sign_call(acct, ACCESS_CONTROL, call_data("recordDelivery(uint256,bytes32,bytes32,uint64)", grant,
                                                     b"\x01" * 32, b"\x02" * 32, 10), nonce)


class Pool:
    def __init__(self, limits: MempoolLimits | None = None, dry_run: bool | None = None,
                 index_raw: bool = False) -> None:
        self.ledger = Ledger(GENESIS)
        self.included: dict[bytes, int] = {}
        self.now = 1000.0
        self.dry_runs: list[Transaction] = []

        def run(tx: Transaction) -> bool:
            self.dry_runs.append(tx)
            return bool(dry_run)

        self.pool = Mempool(self.ledger.runtime, GENESIS.chain_id, limits or MempoolLimits(), self.included.get,
                            dry_run=run if dry_run is not None else None, clock=lambda: self.now,
                            index_raw=index_raw)

    @property
    def state(self) -> DictReader:
        return self.ledger.reader()

    def add(self, raw: bytes) -> Transaction:
        return self.admit(raw).tx

    def admit(self, raw: bytes) -> Admission:
        return self.pool.add_raw(raw, self.state, GAS_LIMIT)

    def pending(self) -> list[tuple[bytes, int]]:
        return sorted((t.sender, t.nonce) for raw_hash in list(self.pool._by_hash)
                      if (t := self.pool.get(raw_hash)) is not None)

    def commit(self, raws: list[bytes]) -> None:
        """Include ``raws`` in a block and remove them from the pool, as the node does."""
        executed = self.ledger.execute(raws)
        for raw in executed.block.transactions:
            self.included[keccak256(raw)] = executed.block.height
        self.pool.remove([tx for raw in raws if (tx := self.pool.get(keccak256(raw))) is not None])


@pytest.fixture
def pool() -> Pool:
    return Pool()


def test_pending_transaction_is_found_by_its_exact_raw_bytes_until_it_leaves() -> None:
    pool = Pool(index_raw=True)
    raws = [anchor(ALICE, 0), anchor(ALICE, 1)]
    txs = [pool.add(raw) for raw in raws]
    assert [pool.pool.get_by_raw(bytes(bytearray(raw))) for raw in raws] == txs  # equal bytes, another object
    assert pool.pool.get_by_raw(anchor(ALICE, 2)) is None and pool.pool.get_by_raw(raws[0][:-1]) is None
    pool.commit(raws[:1])
    assert pool.pool.get_by_raw(raws[0]) is None and pool.pool.get_by_raw(raws[1]) is txs[1]
    pool.pool.remove(txs[1:])
    assert pool.pool.get_by_raw(raws[1]) is None and len(pool.pool) == 0
    unindexed = Pool()
    unindexed.add(raws[0])
    assert unindexed.pool.get_by_raw(raws[0]) is None  # made without index_raw: never found by its bytes


def test_admitted_transaction_is_pending_with_its_recovered_sender(pool: Pool) -> None:
    raw = anchor(ALICE, 0)
    tx = pool.add(raw)
    assert pool.pool.get(keccak256(raw)) is tx and len(pool.pool) == 1
    assert tx.sender == ALICE.address  # type: ignore[attr-defined]


def test_replayed_pending_transaction_is_rejected(pool: Pool) -> None:
    raw = anchor(ALICE, 0)
    pool.add(raw)
    with pytest.raises(KnownTransaction, match="already pending"):
        pool.add(raw)
    assert len(pool.pool) == 1


def test_replayed_included_transaction_is_rejected(pool: Pool) -> None:
    raw = anchor(ALICE, 0)
    pool.add(raw)
    pool.commit([raw])
    assert len(pool.pool) == 0
    with pytest.raises(KnownTransaction, match="already included in block 1"):
        pool.add(raw)


def test_second_transaction_with_a_pending_nonce_is_rejected(pool: Pool) -> None:
    pool.add(anchor(ALICE, 0, 1))
    with pytest.raises(KnownTransaction, match="nonce 0"):
        pool.add(anchor(ALICE, 0, 2))


def test_nonce_below_the_state_nonce_is_too_low(pool: Pool) -> None:
    first, second = anchor(ALICE, 0), anchor(ALICE, 1)
    pool.commit([first, second])
    with pytest.raises(NonceTooLow, match="next nonce is 2"):
        pool.add(anchor(ALICE, 1, 0x77))  # a different tx that reuses nonce 1


def test_future_nonce_waits_until_the_gap_is_filled(pool: Pool) -> None:
    pool.add(anchor(ALICE, 2))
    pool.add(anchor(ALICE, 1))
    assert pool.pool.select(pool.state, 100) == []
    assert pool.pool.get_pending_nonce(pool.state, ALICE.address) == 0
    pool.add(anchor(ALICE, 0))
    assert [t.nonce for t in pool.pool.select(pool.state, 100)] == [0, 1, 2]
    assert pool.pool.get_pending_nonce(pool.state, ALICE.address) == 3


def test_select_returns_only_consecutive_nonces_per_sender_in_arrival_order(pool: Pool) -> None:
    for raw in (anchor(BOB, 0, 0xB0), anchor(ALICE, 0), anchor(ALICE, 1), anchor(ALICE, 3), anchor(BOB, 1, 0xB1),
                anchor(CAROL, 1, 0xC1)):
        pool.add(raw)
    selected = [(t.sender, t.nonce) for t in pool.pool.select(pool.state, 100)]
    # one per sender per round, senders in arrival order
    assert selected == [(BOB.address, 0), (ALICE.address, 0), (BOB.address, 1), (ALICE.address, 1)]
    assert len(pool.pool.select(pool.state, 3)) == 3


def test_select_follows_the_committed_nonce(pool: Pool) -> None:
    raws = [anchor(ALICE, n) for n in range(3)]
    for raw in raws:
        pool.add(raw)
    pool.ledger.execute(raws[:2])  # included elsewhere (e.g. by another proposer)
    assert [t.nonce for t in pool.pool.select(pool.state, 100)] == [2]
    assert pool.pool.prune(pool.state) == 2
    assert len(pool.pool) == 1


def test_prune_drops_transactions_of_revoked_senders(pool: Pool) -> None:
    pool.add(anchor(BOB, 0))
    # Bob's agency is revoked: his account entry disappears from Membership's state.
    state = {k: v for k, v in pool.state.data.items() if not k.endswith(b"acct:" + BOB.address)}
    assert pool.pool.prune(DictReader(state)) == 1 and len(pool.pool) == 0


def test_per_sender_limit_makes_the_pool_full_for_that_sender(pool: Pool) -> None:
    p = Pool(MempoolLimits(max_per_sender=2, max_total=10))
    p.add(anchor(ALICE, 0))
    p.add(anchor(ALICE, 1))
    with pytest.raises(MempoolFull, match="limit 2"):
        p.add(anchor(ALICE, 2))
    p.add(anchor(BOB, 0))  # other senders are unaffected


def test_total_limit_makes_the_pool_full(pool: Pool) -> None:
    p = Pool(MempoolLimits(max_per_sender=2, max_total=3))
    p.add(anchor(ALICE, 0))
    p.add(anchor(ALICE, 1))
    p.add(anchor(BOB, 0))
    with pytest.raises(MempoolFull, match="mempool is full"):
        p.add(anchor(CAROL, 0))
    assert len(p.pool) == 3


def test_non_member_sender_is_unauthorized(pool: Pool) -> None:
    with pytest.raises(Unauthorized, match="not an account of a member agency"):
        pool.add(anchor(MALLORY, 0))


def test_gas_over_the_block_gas_limit_is_refused(pool: Pool) -> None:
    with pytest.raises(GasLimitExceeded):
        pool.add(anchor(ALICE, 0, gas=GAS_LIMIT + 1))


def test_gas_below_intrinsic_gas_is_refused(pool: Pool) -> None:
    data = call_data("anchor(bytes32)", b"\x01" * 32)
    with pytest.raises(InvalidTransaction, match="intrinsic"):
        pool.add(sign_call(ALICE, NOTARY, data, 0, gas=compute_intrinsic_gas(data) - 1))


def test_unknown_selector_is_refused(pool: Pool) -> None:
    with pytest.raises(UnknownSelector, match="Notary has no method with selector 0xdeadbeef"):
        pool.add(sign_call(ALICE, NOTARY, b"\xde\xad\xbe\xef", 0))


def test_undecodable_arguments_are_refused(pool: Pool) -> None:
    with pytest.raises(DecodeError):
        pool.add(sign_call(ALICE, NOTARY, call_data("anchor(bytes32)", b"\x01" * 32)[:10], 0))


def test_contract_creation_is_refused(pool: Pool) -> None:
    with pytest.raises(InvalidTransaction, match="contract creation is not supported"):
        pool.add(sign_call(ALICE, None, b"\x60\x00", 0))


def test_call_to_a_non_system_address_is_refused(pool: Pool) -> None:
    with pytest.raises(InvalidTransaction, match="is not a system contract"):
        pool.add(sign_call(ALICE, BOB.address, b"", 0))


def test_value_transfer_is_refused(pool: Pool) -> None:
    with pytest.raises(InvalidTransaction, match="value must be 0"):
        pool.add(anchor(ALICE, 0, value=1))


@pytest.mark.parametrize("target,data", [(MEMBERSHIP, call_data("agencyNames()")),
                                         (GOVERNANCE, call_data("requiredVotes()"))])
def test_calls_to_every_system_contract_are_admitted(pool: Pool, target: bytes, data: bytes) -> None:
    raw = sign_call(ALICE, target, data, 0)
    tx = pool.add(raw)
    assert pool.pool.get(keccak256(raw)) is tx and tx.to == target
    assert [t.hash for t in pool.pool.select(pool.state, 10)] == [tx.hash]


def test_decoding_errors_surface_unchanged(pool: Pool) -> None:
    with pytest.raises(WrongChainId):
        pool.add(anchor(ALICE, 0, chain_id=1))
    with pytest.raises(DecodeError):
        pool.add(b"\x02\xc0")
    with pytest.raises(TransactionTooLarge):
        pool.add(b"\x02" + b"\x00" * (128 * 1024))
    assert len(pool.pool) == 0


def test_refused_transactions_leave_no_trace(pool: Pool) -> None:
    raw = anchor(MALLORY, 0)
    with pytest.raises(Unauthorized):
        pool.add(raw)
    with pytest.raises(Unauthorized):  # not KnownTransaction: nothing was kept
        pool.add(raw)
    assert pool.pool.get(keccak256(raw)) is None


# -- bounds on what one sender can make a node hold (issue: one member account pinning memory) -----

SIZE = len(anchor(ALICE, 0))  # every anchor and recordDelivery below has about this size


def test_nonce_far_ahead_is_refused_with_the_window_named() -> None:
    p = Pool()
    with pytest.raises(NonceTooHigh, match=r"nonce 100000 is 100000 ahead .* at most 1023 ahead .*max_nonce_gap"):
        p.add(anchor(ALICE, 100_000, 7))
    p.add(anchor(ALICE, 1023, 1))  # the last nonce inside the default window of 1024
    with pytest.raises(NonceTooHigh) as exc:
        p.add(anchor(ALICE, 1024, 2))
    assert exc.value.rpc_code == -32003 and exc.value.data == {"limit": "max_nonce_gap", "max": 1024}
    assert len(p.pool) == 1


def test_nonce_window_counts_from_the_next_executable_nonce() -> None:
    p = Pool(MempoolLimits(max_nonce_gap=4))
    for n in range(10):  # a burst of consecutive nonces is executable: no window applies to it
        p.add(anchor(ALICE, n))
    p.add(anchor(ALICE, 13))
    with pytest.raises(NonceTooHigh, match="next executable nonce 10"):
        p.add(anchor(ALICE, 14))
    p.commit([anchor(ALICE, n) for n in range(10)])
    assert p.pool.get_pending_nonce(p.state, ALICE.address) == 10
    p.add(anchor(ALICE, 12))


def test_admission_reports_which_transactions_became_executable() -> None:
    p = Pool()
    assert p.admit(anchor(ALICE, 2)).executable == ()  # queued behind the gap at 0: not gossiped
    assert p.admit(anchor(ALICE, 1)).executable == ()
    done = p.admit(anchor(ALICE, 0))
    assert [t.nonce for t in done.executable] == [0, 1, 2]
    assert [t.nonce for t in p.admit(anchor(ALICE, 3)).executable] == [3]


def test_per_sender_byte_cap_refuses_and_leaves_other_senders_alone() -> None:
    p = Pool(MempoolLimits(max_sender_bytes=3 * SIZE + 10))
    for n in range(3):
        p.add(anchor(ALICE, n))
    with pytest.raises(MempoolFull, match=r"per-sender limit of \d+ bytes \(\[mempool\] max_sender_bytes\)") as exc:
        p.add(anchor(ALICE, 3))
    assert exc.value.rpc_code == -32005 and exc.value.http_status == 429
    p.add(anchor(BOB, 0))
    p.commit([anchor(ALICE, 0)])  # room comes back as transactions are included
    p.add(anchor(ALICE, 3))


def test_total_byte_cap_keeps_the_reserved_share_for_system_records() -> None:
    # 10 transactions' worth of bytes, 20% (2 of them) reserved for system records
    p = Pool(MempoolLimits(max_total_bytes=10 * SIZE + 50, reserved_percent=20, max_sender_bytes=10 * SIZE + 50))
    for n in range(8):
        p.add(anchor(ALICE, n))
    with pytest.raises(MempoolFull, match=r"max_total_bytes, less the 20% reserved for system records"):
        p.add(anchor(BOB, 0))
    record = p.add(record_delivery(CAROL, 0))  # the owner node's recordDelivery still gets in
    ordinary = p.pool.get(keccak256(anchor(ALICE, 0)))
    assert p.pool.is_system_record(record) and ordinary is not None and not p.pool.is_system_record(ordinary)


def test_total_count_cap_keeps_the_reserved_share_for_system_records() -> None:
    p = Pool(MempoolLimits(max_per_sender=10, max_total=10, reserved_percent=20))
    for n in range(8):
        p.add(anchor(ALICE, n))
    with pytest.raises(MempoolFull, match=r"8 transactions pending \(limit 8: \[mempool\] max_total, less the 20%"):
        p.add(anchor(BOB, 0))
    p.add(record_delivery(CAROL, 0))
    p.add(sign_call(CAROL, EVIDENCE, call_data("report(bytes)", b"\x00" * 8), 1))  # evidence is a record too
    with pytest.raises(MempoolFull, match=r"limit 10: \[mempool\] max_total\)"):
        p.add(record_delivery(BOB, 0))


def test_a_record_whose_dry_run_fails_gets_no_reserved_room() -> None:
    p = Pool(MempoolLimits(max_per_sender=10, max_total=10, reserved_percent=20), dry_run=False)
    for n in range(8):
        p.add(anchor(ALICE, n))
    assert p.dry_runs == []  # no dry run while there is ordinary room
    with pytest.raises(MempoolFull, match="less the 20% reserved"):
        p.add(record_delivery(CAROL, 0))
    assert [t.sender for t in p.dry_runs] == [CAROL.address]


def test_queued_transaction_expires_and_an_executable_one_never_does() -> None:
    p = Pool(MempoolLimits(queued_ttl_s=60))
    p.add(anchor(ALICE, 0))
    p.add(anchor(BOB, 5))  # queued behind Bob's nonces 0..4
    p.now += 59
    assert p.pool.prune(p.state) == 0
    p.now += 2
    assert p.pool.prune(p.state) == 1
    assert p.pending() == [(ALICE.address, 0)]
    p.now += 10_000
    assert p.pool.prune(p.state) == 0 and len(p.pool) == 1


def test_a_queued_transaction_whose_gap_was_filled_does_not_expire() -> None:
    p = Pool(MempoolLimits(queued_ttl_s=60))
    p.add(anchor(BOB, 1))
    p.now += 30
    p.add(anchor(BOB, 0))
    p.now += 100
    assert p.pool.prune(p.state) == 0 and len(p.pool) == 2


def test_an_executable_transaction_evicts_a_flood_of_queued_ones_never_the_reverse() -> None:
    # The flooder (Alice) fills the pool with queued far nonces; Bob's next transaction takes their room.
    p = Pool(MempoolLimits(max_per_sender=10, max_total=10, reserved_percent=0, max_nonce_gap=64))
    for n in range(1, 11):
        p.add(anchor(ALICE, n))
    with pytest.raises(MempoolFull):
        p.add(anchor(CAROL, 7))  # a queued transaction evicts nothing
    p.add(anchor(BOB, 0))
    assert (ALICE.address, 10) not in p.pending() and (BOB.address, 0) in p.pending()
    p.add(anchor(ALICE, 0))  # Alice's own next nonce takes the room of her furthest queued one
    assert p.pending() == sorted([(BOB.address, 0)] + [(ALICE.address, n) for n in range(9)])


def test_executable_transactions_are_never_evicted() -> None:
    p = Pool(MempoolLimits(max_per_sender=5, max_total=5, reserved_percent=0))
    for n in range(5):
        p.add(anchor(ALICE, n))
    with pytest.raises(MempoolFull, match="mempool is full"):
        p.add(anchor(BOB, 0))
    assert p.pending() == [(ALICE.address, n) for n in range(5)]


def test_select_puts_system_records_first_then_every_senders_next_transaction() -> None:
    p = Pool()
    huge = GAS_LIMIT // 2
    for n in range(4):  # the flooder arrived first, with transactions declaring half a block of gas each
        p.add(anchor(ALICE, n, gas=huge))
    p.add(anchor(BOB, 0))
    p.add(record_delivery(CAROL, 0))
    selected = p.pool.select(p.state, 100)
    assert [(t.sender, t.nonce) for t in selected] == [(CAROL.address, 0), (BOB.address, 0)] + \
        [(ALICE.address, n) for n in range(4)]
    executed = p.ledger.execute([t.raw for t in selected])  # the block takes them in order while gas lasts
    assert [keccak256(raw) for raw in executed.block.transactions][:3] == [t.hash for t in selected[:3]]


def test_a_senders_next_transaction_takes_the_room_of_its_own_furthest_queued_ones() -> None:
    p = Pool(MempoolLimits(max_sender_bytes=3 * SIZE + 10))
    for n in (1, 2, 3):
        p.add(anchor(ALICE, n))
    with pytest.raises(MempoolFull, match="max_sender_bytes"):
        p.add(anchor(ALICE, 4))  # queued: evicts nothing
    done = p.admit(anchor(ALICE, 0))  # the gap: Alice's furthest queued (3) makes room for it
    assert [t.nonce for t in done.executable] == [0, 1, 2]
    assert p.pending() == [(ALICE.address, n) for n in range(3)]


def test_submissions_past_the_backlog_are_refused_busy_and_peer_and_record_txs_still_enter() -> None:
    from chainshare.errors import NodeBusy, RateLimited

    p = Pool(MempoolLimits(busy_backlog_s=1.0, busy_min_pending=4))
    submit = lambda raw: p.pool.add_raw(raw, p.state, GAS_LIMIT, submitted=True)  # noqa: E731
    first = [anchor(ALICE, n) for n in range(4)]
    for raw in first:
        submit(raw)
    assert p.pool.executable_count == 4
    with pytest.raises(NodeBusy, match="node busy, retry: 4 transactions wait") as refused:
        submit(anchor(ALICE, 4))
    assert isinstance(refused.value, RateLimited) and refused.value.data["retryAfter"] >= 1  # -32005 / 429
    assert len(p.pool) == 4  # nothing kept
    p.pool.add_raw(anchor(ALICE, 4), p.state, GAS_LIMIT)  # a peer's transaction is not refused
    p.pool.add_raw(record_delivery(BOB, 0), p.state, GAS_LIMIT, submitted=True)  # nor a system record
    # The node finalizes 5 in one block at t = 1000. The interval before it is not measured (the first prune
    # has no start); the next one, which begins with Bob's record waiting, is: 2 in 0.5 s.
    p.ledger.execute(first + [anchor(ALICE, 4)])
    assert p.pool.prune(p.state) == 5 and p.pool.executable_count == 1
    assert p.pool.get_finalized_rate() == 0.0
    submit(anchor(CAROL, 0))
    p.now += 0.5
    p.ledger.execute([record_delivery(BOB, 0), anchor(CAROL, 0)])
    assert p.pool.prune(p.state) == 2
    assert p.pool.get_finalized_rate() == pytest.approx(4.0)
    p.now += 10  # the window moves past that block: the rate is unknown again, the floor holds
    assert p.pool.get_finalized_rate() == 0.0


def test_the_finalize_rate_counts_only_time_with_work_waiting_and_retry_after_is_when_the_backlog_clears() -> None:
    """A burst after a quiet spell: the empty blocks before it do not dilute the rate, so the refusal tells
    the client to come back about when the backlog is under the limit (not seconds later, node idle)."""
    from chainshare.errors import NodeBusy

    p = Pool(MempoolLimits(busy_backlog_s=1.0, busy_min_pending=4))
    for _ in range(8):  # 4 s of empty blocks
        p.pool.prune(p.state)
        p.now += 0.5
    p.pool.prune(p.state)
    burst = [anchor(ALICE, n) for n in range(16)]
    for raw in burst[:6]:
        p.pool.add_raw(raw, p.state, GAS_LIMIT)  # from a peer: never refused busy
    p.pool.prune(p.state)  # a block finalized as they came: the next interval begins with work waiting
    p.now += 0.5
    p.ledger.execute(burst[:4])  # a block of 4 in 0.5 s: 8 tx/s while busy (0.8 tx/s over the 5 s window)
    p.pool.prune(p.state)
    assert p.pool.get_finalized_rate() == pytest.approx(8.0)
    for raw in burst[6:16]:
        p.pool.add_raw(raw, p.state, GAS_LIMIT)
    assert p.pool.executable_count == 12
    with pytest.raises(NodeBusy) as refused:
        p.pool.add_raw(anchor(ALICE, 16), p.state, GAS_LIMIT, submitted=True)
    # 12 waiting against a limit of max(4, 8 tx/s x 1 s) = 8: under it after 5 more at 8 tx/s, 0.625 s (in
    # tenths, 0.7). Measured over the whole window (0.8 tx/s) it would have said 5 s, the node idle after 1.5.
    assert refused.value.data["retryAfter"] == pytest.approx(0.7)


def test_the_backlog_limit_scales_with_the_measured_finalize_rate() -> None:
    from chainshare.mempool import is_backlogged

    limits = MempoolLimits(busy_backlog_s=1.0, busy_min_pending=2_000)
    assert not is_backlogged(1_999, 0.0, limits) and is_backlogged(2_000, 0.0, limits)
    assert not is_backlogged(2_999, 3_000.0, limits) and is_backlogged(3_000, 3_000.0, limits)
    assert is_backlogged(1_500, 1_000.0, MempoolLimits(busy_backlog_s=1.0, busy_min_pending=1_000))


def test_a_busy_refusal_never_sends_a_client_away_for_long() -> None:
    from chainshare.errors import NodeBusy
    from chainshare.mempool import MAX_RETRY_AFTER_S

    p = Pool(MempoolLimits(busy_backlog_s=1.0, busy_min_pending=2))
    first = anchor(ALICE, 0)
    p.pool.add_raw(first, p.state, GAS_LIMIT)
    p.pool.prune(p.state)
    p.now += 5
    p.ledger.execute([first])
    p.pool.prune(p.state)  # one finalized in 5 busy seconds: 0.2 tx/s
    for n in (1, 2, 3):
        p.pool.add_raw(anchor(ALICE, n), p.state, GAS_LIMIT)
    with pytest.raises(NodeBusy) as refused:  # 3 waiting at 0.2 tx/s, 2 over the floor: 10 s, but retry in 5 s
        p.pool.add_raw(anchor(ALICE, 4), p.state, GAS_LIMIT, submitted=True)
    assert refused.value.data["retryAfter"] == MAX_RETRY_AFTER_S


def test_the_finalize_rate_over_a_sliding_window_is_the_intervals_still_inside_it() -> None:
    """Intervals of different lengths and counts enter and leave the window one by one; the rate is always
    the count over the busy time of those still inside it (the pool keeps running sums, not a rescan)."""
    from chainshare.mempool import DRAIN_WINDOW_S

    p = Pool(MempoolLimits(busy_min_pending=10**6))
    kept: list[tuple[float, int, float]] = []
    nonce = 0
    pending = [anchor(ALICE, 0), anchor(ALICE, 1)]
    for raw in pending:
        p.pool.add_raw(raw, p.state, GAS_LIMIT)
    p.pool.prune(p.state)  # the first interval starts here, with work waiting
    nonce = 2
    for k, dt in enumerate([0.5, 1.25, 0.25, 2.0, 0.75, 1.5, 0.5, 3.0, 0.25, 1.0]):
        p.now += dt
        included = pending[:1 + k % 2]  # 1 or 2 of those waiting make it into the block
        p.ledger.execute(included)
        pending = pending[len(included):] + [anchor(ALICE, nonce), anchor(ALICE, nonce + 1)]
        for raw in pending[-2:]:
            p.pool.add_raw(raw, p.state, GAS_LIMIT)
        nonce += 2
        p.pool.prune(p.state)
        kept = [x for x in kept + [(p.now, len(included), dt)] if x[0] >= p.now - DRAIN_WINDOW_S]
        assert p.pool.get_finalized_rate() == pytest.approx(sum(n for _, n, _ in kept) / sum(d for _, _, d in kept))
    p.now += DRAIN_WINDOW_S + 0.01
    assert p.pool.get_finalized_rate() == 0.0


def test_a_never_idle_lightly_loaded_pool_keeps_only_the_last_seconds_of_finalize_intervals() -> None:
    """Under busy_min_pending the busy check never reads the rate; the window still forgets old blocks
    (a node with a little work always waiting must not grow it a block at a time), and the rate read
    when it is needed is the one over the window."""
    from chainshare.mempool import DRAIN_WINDOW_S

    p = Pool(MempoolLimits(busy_backlog_s=1.0, busy_min_pending=4))
    submit = lambda raw: p.pool.add_raw(raw, p.state, GAS_LIMIT, submitted=True)  # noqa: E731
    submit(anchor(ALICE, 0))
    p.pool.prune(p.state)
    block_s = 0.5
    for n in range(1, 256):  # 255 blocks (about 2 min) of one transaction each, one always waiting
        submit(anchor(ALICE, n))
        p.now += block_s
        p.ledger.execute([anchor(ALICE, n - 1)])
        p.pool.prune(p.state)
        assert len(p.pool._drained) <= DRAIN_WINDOW_S / block_s + 1
    assert p.pool.get_finalized_rate() == pytest.approx(1 / block_s)
