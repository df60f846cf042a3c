"""publishBatch planning: batches under the transaction size limit whose declared gas bounds what the contract
really spends (both protocol versions' word prices), executed in certified blocks."""

from __future__ import annotations

from typing import Any

import pytest
from credit_kit import DAY, ISSUER_B, CreditKit, events, ok

from chainshare.bench_credit import make_uscc
from chainshare.credit.batches import (
    MAX_BATCH_DATA_BYTES,
    choose_sstore_word,
    plan_batches,
    publish_batch_gas,
)
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.forks import v1, v2
from chainshare.execution.runtime import BlockEnv
from chainshare.ledger.state import StateView
from chainshare.ledger.txs import MAX_TX_BYTES


def _rows(kit: CreditKit, n: int, *, legal: str = "Advertising Law art. 55") -> list[list[Any]]:
    now = kit.now
    rows: list[list[Any]] = []
    for i in range(n):
        if i % 5 == 4:  # a person: handle, no summary, the summary's hash only
            rows.append([f"P-{i:064x}", "penalty", 2, 1 + i % 5, f"DOC-{i}", "Tax Bureau", legal, "",
                         bytes([i % 250 + 1]) * 32, now, now, 90 * DAY, 3 * 365 * DAY, b"\xee" * 32])
        else:
            category, polarity = ("red_list", 1) if i % 3 == 0 else ("penalty", 2)
            rows.append([make_uscc(i), category, polarity, 1 + i % 5, f"DOC-{i}", "Tax Bureau 税务局", legal,
                         "summary " * (i % 40) + "罚款", bytes(32), now - i, now, 0, 365 * DAY, b"\xef" * 32])
    return rows


@pytest.fixture
def kit() -> CreditKit:
    k = CreditKit()
    k.configure()
    return k


def test_declared_gas_bounds_the_gas_used_closely(kit: CreditKit) -> None:
    rows = _rows(kit, 40)
    batches = plan_batches(rows, ISSUER_B, v1.GAS.sstore_word, per_tx=9)
    assert [len(b.rows) for b in batches] == [9, 9, 9, 9, 4]
    assert [r for b in batches for r in b.rows] == rows and [b.start for b in batches] == [0, 9, 18, 27, 36]
    for b in batches:
        receipt = ok(kit.send(ISSUER_B, b.data, gas=b.gas))
        assert sum(1 for name, _ in events(receipt) if name == "RecordPublished") == len(b.rows)
        # the slack: 1%, and the record count may already exist (a fresh slot is assumed, 15,000 gas more)
        assert receipt.gas_used <= b.gas <= receipt.gas_used * 1.01 + 15_000, (receipt.gas_used, b.gas)


def test_the_bound_holds_under_version_2_prices_and_the_probe_tells_the_versions_apart(kit: CreditKit) -> None:
    rows = _rows(kit, 12)
    data = plan_batches(rows, ISSUER_B, v2.GAS.sstore_word)[0].data
    h = kit.chain.chain.get_head().header
    env = BlockEnv(4242, h.height + 1, h.timestamp_ms + 1000, h.proposer, h.gas_limit)
    sender = kit.accounts[ISSUER_B].address
    used = {}
    for fork in (v1, v2):
        success, _, used[fork.VERSION] = fork.build_runtime().call(StateView(kit.chain.chain.state), sender,
                                                                   CREDIT_REGISTRY, data, env, 50_000_000)
        assert success
    assert used[1] <= publish_batch_gas(rows, ISSUER_B, v1.GAS.sstore_word) <= used[1] * 1.01
    assert used[2] <= publish_batch_gas(rows, ISSUER_B, v2.GAS.sstore_word) <= used[2] * 1.01
    assert choose_sstore_word(rows, ISSUER_B, used[1]) == v1.GAS.sstore_word
    assert choose_sstore_word(rows, ISSUER_B, used[2]) == v2.GAS.sstore_word
    with pytest.raises(ValueError, match="no gas schedule"):
        choose_sstore_word(rows, ISSUER_B, used[2] * 2)


def test_batches_stay_under_the_transaction_size_limit_and_the_gas_cap(kit: CreditKit) -> None:
    rows = _rows(kit, 200, legal="Regulation text " * 120)  # ~2 KiB a record: 200 would be ~400 KiB
    batches = plan_batches(rows, ISSUER_B, v1.GAS.sstore_word)
    assert len(batches) > 3 and all(len(b.data) <= MAX_BATCH_DATA_BYTES < MAX_TX_BYTES for b in batches)
    assert [r for b in batches for r in b.rows] == rows
    capped = plan_batches(rows[:50], ISSUER_B, v1.GAS.sstore_word, gas_cap=2_000_000)
    assert len(capped) > 2 and all(b.gas <= 2_000_000 for b in capped)
    ok(kit.send(ISSUER_B, batches[0].data, gas=batches[0].gas))
