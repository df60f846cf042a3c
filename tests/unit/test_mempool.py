"""The mempool: admission refuses each bad transaction with its precise error; ready transactions come
out in consecutive-nonce order."""

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
    NonceTooLow,
    TransactionTooLarge,
    Unauthorized,
    UnknownSelector,
    WrongChainId,
)
from chainshare.execution.runtime import compute_intrinsic_gas
from chainshare.ledger.state import DictReader
from chainshare.mempool import Mempool, MempoolLimits

ALICE, BOB, CAROL, MALLORY = account("alice"), account("bob"), account("carol"), account("mallory")
GENESIS = make_genesis([("Agency A", [ALICE.address, CAROL.address]), ("Agency B", [BOB.address])],
                       [make_validator("v1", "Agency A")])
GAS_LIMIT = GENESIS.params.block_gas_limit


def anchor(acct: Account, nonce: int, digest_byte: int | None = None, **kw: int) -> bytes:
    digest = bytes([digest_byte if digest_byte is not None else nonce]) * 32
    return sign_call(acct, NOTARY, call_data("anchor(bytes32)", digest), nonce, **kw)


class Pool:
    def __init__(self, limits: MempoolLimits | None = None) -> None:
        self.ledger = Ledger(GENESIS)
        self.included: dict[bytes, int] = {}
        self.pool = Mempool(self.ledger.runtime, GENESIS.chain_id, limits or MempoolLimits(), self.included.get)

    @property
    def state(self) -> DictReader:
        return self.ledger.reader()

    def add(self, raw: bytes) -> object:
        return self.pool.add_raw(raw, self.state, GAS_LIMIT)

    def commit(self, raws: list[bytes]) -> None:
        """Include ``raws`` in a block and remove them from the pool, as the node does."""
        executed = self.ledger.execute(raws)
        for raw in executed.block.transactions:
            self.included[keccak256(raw)] = executed.block.height
        self.pool.remove([tx for raw in raws if (tx := self.pool.get(keccak256(raw))) is not None])


@pytest.fixture
def pool() -> Pool:
    return Pool()


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
    assert selected == [(BOB.address, 0), (BOB.address, 1), (ALICE.address, 0), (ALICE.address, 1)]
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
    pool.add(sign_call(ALICE, target, data, 0))


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
