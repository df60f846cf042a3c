"""Credit records cut into ``publishBatch`` transactions that fit, each with a tight gas limit.

A block takes transactions while each one's *declared* gas limit fits the gas left, so a batch that declares
twice what it uses leaves half of every block empty. ``publish_batch_gas`` is an upper bound of the gas a
batch uses, computed from the gas schedule and the exact sizes of what ``CreditRegistry._publish`` stores and
emits (the contract's own encoders, with the largest values the unknown fields can take: record id, block
height and time); ``plan_batches`` cuts records into batches under the transaction size limit (and so far
under the P2P frame), the contract's batch limit and a gas cap. The price of a stored word differs between
protocol versions (forks/v2); ``choose_sstore_word`` picks the cheapest schedule whose bound covers what the
node reports for one real batch (``eth_estimateGas``), so the bound stays an upper bound on either version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chainshare import codec
from chainshare.execution import abi
from chainshare.execution.contracts.credit_registry import (
    ACTIVE,
    MAX_BATCH,
    OBJ_NONE,
    REPAIR_NONE,
    CreditRegistry,
    Record,
    RecordVersion,
)
from chainshare.execution.runtime import (
    G_LOG,
    G_LOG_DATA_BYTE,
    G_LOG_TOPIC,
    G_SLOAD,
    G_SSTORE_RESET,
    G_SSTORE_SET,
    G_TRANSACTION,
    G_TXDATA_NONZERO,
    compute_intrinsic_gas,
)
from chainshare.ledger.txs import MAX_TX_BYTES

REGISTRY = CreditRegistry()
_PUBLISH = next(s for s in REGISTRY.methods.values() if s.name == "publish")
_PUBLISH_TYPES = [p.type for p in _PUBLISH.params]
_BATCH = next(s for s in REGISTRY.methods.values() if s.name == "publishBatch")
_EVENT_DATA_TYPES = [p.type for p in CreditRegistry.E_PUBLISHED.params if not p.indexed]
_LARGEST = 2**64 - 1  # record id, block height and block time are at most uint64 (9 msgpack bytes)
# r:, v:, s: written to fresh slots, count and sc: rewritten, both read, one log with 4 topics
_PER_RECORD = 2 * G_SLOAD + 3 * G_SSTORE_SET + 2 * G_SSTORE_RESET + G_LOG + 4 * G_LOG_TOPIC
_FRESH = G_SSTORE_SET - G_SSTORE_RESET  # once a batch for count, once per subject for sc:, if not yet written
_PER_BATCH = _FRESH
_PER_SUBJECT = _FRESH
_PER_CATEGORY = 2 * G_SLOAD  # the category and the issuer authorisation, read once a batch
TX_ENVELOPE_BYTES = 512  # a signed EIP-1559 envelope around its call data takes ~120 bytes; the rest is margin
MAX_BATCH_DATA_BYTES = MAX_TX_BYTES - TX_ENVELOPE_BYTES


def encode_publish_record(row: Sequence[Any]) -> bytes:
    """ABI encoding of ``publish``'s arguments: one element of ``publishBatch``."""
    return abi.encode_values(_PUBLISH_TYPES, list(row))


def encode_publish_batch(rows: Sequence[Sequence[Any]]) -> bytes:
    """``publishBatch`` call data for ``rows`` (each the arguments of ``publish``), or ``publish`` for one row."""
    return _publish_data(rows, [encode_publish_record(r) for r in rows])


def _publish_data(rows: Sequence[Sequence[Any]], records: Sequence[bytes]) -> bytes:
    if len(rows) == 1:
        return _PUBLISH.selector + records[0]
    return _BATCH.selector + abi.encode_values(["bytes[]"], [list(records)])


def compute_record_gas(row: Sequence[Any], issuer: str, sstore_word: int) -> int:
    """Upper bound of the gas ``_publish`` spends on ``row`` (beyond the call data), for an issuer agency
    named ``issuer`` and ``sstore_word`` gas per stored word beyond the first."""
    (subject, category, polarity, severity, doc, authority, legal_basis, summary, summary_hash, decision_date,
     effective_from, display_min, display_max, evidence_hash) = row
    content = RecordVersion(polarity, severity, doc, authority, legal_basis, summary, summary_hash, decision_date,
                            effective_from, display_min, display_max, evidence_hash)
    stored = Record(_LARGEST, subject, category, issuer, 1, ACTIVE, OBJ_NONE, 0, REPAIR_NONE, _LARGEST, bytes(32),
                    content).encode()
    version = codec.encode_trusted([content.to_list(), bytes(32), bytes(32), _LARGEST, _LARGEST, bytes(20)])
    log_data = abi.encode_values(_EVENT_DATA_TYPES, [
        1, subject, category, issuer, "0x" + "00" * 20, polarity, severity, doc, authority, legal_basis, summary,
        bytes(32), decision_date, effective_from, display_min, display_max, evidence_hash, bytes(32), bytes(32)])
    words = (len(stored) - 1) // 32 + (len(version) - 1) // 32
    return _PER_RECORD + sstore_word * words + G_LOG_DATA_BYTE * len(log_data)


def publish_batch_gas(rows: Sequence[Sequence[Any]], issuer: str, sstore_word: int, data: bytes | None = None) -> int:
    """Upper bound of the gas of the transaction carrying ``encode_publish_batch(rows)`` (``data``, when the
    caller has it already): intrinsic gas, the per-category checks and each record's bound."""
    data = encode_publish_batch(rows) if data is None else data
    return (compute_intrinsic_gas(data) + _PER_BATCH + _PER_CATEGORY * len({r[1] for r in rows})
            + _PER_SUBJECT * len({r[0] for r in rows}) + sum(compute_record_gas(r, issuer, sstore_word) for r in rows))


@dataclass(frozen=True)
class Batch:
    """Rows ``start .. start + len(rows)`` of the input, their call data and the gas limit to declare."""

    start: int
    rows: tuple[Sequence[Any], ...]
    data: bytes
    gas: int


def plan_batches(rows: Sequence[Sequence[Any]], issuer: str, sstore_word: int, *, per_tx: int = MAX_BATCH,
                 gas_cap: int = 60_000_000) -> list[Batch]:
    """Cut ``rows`` in order into batches of at most ``per_tx`` records whose call data stays under
    ``MAX_BATCH_DATA_BYTES`` and whose gas bound stays under ``gas_cap`` (a block's gas limit, or less so
    that several batches share a block). A single record over either limit is a batch of its own (the node
    refuses it with the precise reason)."""
    per_tx = max(1, min(per_tx, MAX_BATCH))
    out: list[Batch] = []
    current: list[Sequence[Any]] = []
    records: list[bytes] = []
    record_gas: list[int] = []
    size = gas = 0
    categories: set[str] = set()
    subjects: set[str] = set()

    def close() -> None:
        data = _publish_data(current, records)
        start = out[-1].start + len(out[-1].rows) if out else 0
        exact = (compute_intrinsic_gas(data) + _PER_BATCH + _PER_CATEGORY * len(categories)
                 + _PER_SUBJECT * len(subjects) + sum(record_gas))
        out.append(Batch(start, tuple(current), data, exact))

    for row in rows:
        record = encode_publish_record(row)
        row_size = 64 + len(record) + (-len(record) % 32)  # its offset word, length word and padded bytes
        own_gas = compute_record_gas(row, issuer, sstore_word)
        # every call-data byte priced as non-zero: a bound of the exact figure that close() computes
        row_gas = own_gas + G_TXDATA_NONZERO * row_size
        extra = (0 if row[1] in categories else _PER_CATEGORY) + (0 if row[0] in subjects else _PER_SUBJECT)
        if current and (len(current) >= per_tx or size + row_size > MAX_BATCH_DATA_BYTES
                        or gas + row_gas + extra > gas_cap):
            close()
            current, records, record_gas, categories, subjects = [], [], [], set(), set()
            extra = _PER_CATEGORY + _PER_SUBJECT
        if not current:
            size, gas = 4 + 64, G_TRANSACTION + G_TXDATA_NONZERO * (4 + 64) + _PER_BATCH
        gas += row_gas + extra
        current.append(row)
        records.append(record)
        record_gas.append(own_gas)
        categories.add(row[1])
        subjects.add(row[0])
        size += row_size
    if current:
        close()
    return out


def sstore_word_prices() -> list[int]:
    """The price of a stored word in each protocol version this release runs, cheapest first."""
    from chainshare.execution.forks import FORKS

    return sorted({factory().gas.sstore_word for factory in FORKS.values()})


def choose_sstore_word(rows: Sequence[Sequence[Any]], issuer: str, estimated: int,
                       prices: Iterable[int] | None = None) -> int:
    """The cheapest word price whose bound for ``rows`` covers ``estimated`` (the gas the node reports for
    them); ValueError if none does (the bound no longer matches the contract: fail loudly, never under-declare)."""
    for price in sorted(prices if prices is not None else sstore_word_prices()):
        if publish_batch_gas(rows, issuer, price) >= estimated:
            return price
    raise ValueError(f"no gas schedule's bound covers the {estimated} gas the node estimated for a publishBatch")
