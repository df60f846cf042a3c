"""Provenance of a credit record: every lifecycle event back to the original publication, each with the
block header, the QC that certified the block, and the Merkle inclusion proof of the receipt that carries
the event, so an auditor verifies offline, with the genesis document alone, who published the record, when,
and every step that changed it. Across validator-set changes the bundle carries the chain's epoch-change
proofs (``consensus/epochs.py``), which the verifier walks from the genesis set with the same code a node
catching up runs (``verify_epoch_changes``), so each QC is checked against the set in force at its block.

``build_provenance`` runs where the chain is (a node, or a stopped node's data directory);
``verify_provenance`` needs only the bundle and the genesis, and uses the ledger's own Merkle and QC
verifiers (``chainshare.ledger.merkle``, ``chainshare.ledger.quorum``).
"""

from __future__ import annotations

import json
from typing import Any

from chainshare import codec
from chainshare.consensus.epochs import prove_sets_from
from chainshare.credit.events import CreditEvent, CreditSource, decode_credit_log
from chainshare.credit.lifecycle import fold_records
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, ConsensusError, DecodeError, InvalidInput
from chainshare.execution.abi import to_jsonable
from chainshare.execution.contracts.credit_registry import RecordVersion
from chainshare.execution.contracts.membership import (
    ValidatorSet,
    compute_validator_set_hash,
    get_validator_sets,
    select_validator_set,
)
from chainshare.execution.genesis import compute_genesis_block, parse_genesis
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.merkle import InclusionProof, compute_inclusion_proof, verify_inclusion_proof
from chainshare.ledger.quorum import verify_qc
from chainshare.ledger.types import Header, QuorumCertificate, Receipt

PROVENANCE_FORMAT = 1
MAX_EPOCH_CHANGES = 10_000


class ProvenanceError(ChainshareError, ValueError):
    """A provenance bundle does not prove what it claims."""


def _hx(b: bytes) -> str:
    return "0x" + b.hex()


def build_provenance(chain: ChainStore, source: CreditSource, record_id: int) -> dict[str, Any]:
    """The provenance bundle of ``record_id`` (NotFound if there is no such record)."""
    from chainshare.credit.query import get_record

    _, record = get_record(source, record_id)
    steps = []
    for ev in record.events:
        block = chain.get_block(ev.height)
        receipts = chain.get_receipts(ev.height)
        receipt = receipts[ev.tx_index]
        first = sum(len(r.logs) for r in receipts[:ev.tx_index])
        qc = chain.get_qc(ev.height)
        steps.append(compose_step(ev, block.header.encode(), qc.encode() if qc is not None else None,
                                  receipt.encode(), ev.log_index - first,
                                  compute_inclusion_proof([r.encode() for r in receipts], ev.tx_index)))
    return compose_bundle(record_id, chain.get_block(0).hash, steps, chain.get_epoch_change_proofs())


def compose_step(ev: CreditEvent, header: bytes, qc: bytes | None, receipt: bytes, log_in_receipt: int,
                 receipt_proof: InclusionProof) -> dict[str, Any]:
    """One step of a bundle: the event and what proves it (wherever the block data is read from)."""
    return {"event": ev.name, "args": to_jsonable(ev.args), "block": ev.height, "block_hash": _hx(keccak256(header)),
            "timestamp": ev.timestamp_ms // 1000, "transaction": _hx(ev.tx_hash), "tx_index": ev.tx_index,
            "log_in_receipt": log_in_receipt, "header": _hx(header), "qc": _hx(qc) if qc is not None else None,
            "receipt": _hx(receipt), "receipt_proof": receipt_proof.to_json()}


def compose_bundle(record_id: int, genesis_hash: bytes, steps: list[dict[str, Any]],
                   epoch_changes: list[bytes] | tuple[bytes, ...] = ()) -> dict[str, Any]:
    """The bundle of ``steps``; ``epoch_changes`` (encoded epoch-change proofs) let a verifier walk from the
    genesis set to the set in force at each step's block."""
    return {"format": PROVENANCE_FORMAT, "record": record_id, "genesis_hash": _hx(genesis_hash), "steps": steps,
            "epoch_changes": [_hx(raw) for raw in epoch_changes]}


def _bytes(v: Any, what: str) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise ProvenanceError(f"{what} must be 0x-hex")
    try:
        return bytes.fromhex(v[2:])
    except ValueError as exc:
        raise ProvenanceError(f"{what} is not hex") from exc


def _proof(v: Any) -> InclusionProof:
    try:
        index, size = v["index"], v["size"]  # JSON integers: int() would also take "٣", "1_0", 2.5 or true
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (index, size)):
            raise TypeError("index and size must be integers")
        return InclusionProof(index, size, tuple(_bytes(p, "proof path") for p in v["path"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProvenanceError("receipt_proof must be {index, size, path}") from exc


def verify_provenance(bundle: dict[str, Any], genesis_document: bytes) -> dict[str, Any]:
    """Check ``bundle`` against the genesis alone; returns the verified history (ProvenanceError otherwise).

    For each step: the header hashes to the QC's block, the QC carries a quorum of valid BLS signatures of
    the genesis validators, the receipt is in the header's receipts root (RFC 6962 proof), and the event is
    that receipt's log. Across steps: the first is the publication, each version's hash is recomputed from
    its fields and links to the previous version, and every step names the same record, subject and issuer.
    The QC of a block verifies against the validator set in force at its height, as proven from the genesis
    set by the bundle's epoch-change proofs; a header naming a next set that those proofs do not prove (a
    change left out of the bundle) is refused."""
    try:
        genesis = parse_genesis(json.loads(genesis_document))
    except (ValueError, ChainshareError) as exc:
        raise ProvenanceError(f"genesis document is invalid: {exc}") from exc
    block0, state0, _ = compute_genesis_block(genesis)
    if _hx(block0.hash) != bundle.get("genesis_hash"):
        raise ProvenanceError("the bundle is of another chain (genesis hash differs)")
    sets = _prove_validator_sets(bundle.get("epoch_changes", []), get_validator_sets(state0)[0], genesis.chain_id)
    steps = bundle.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ProvenanceError("a bundle has at least one step")
    out = []
    events = []
    for i, step in enumerate(steps):
        where = f"step {i + 1} ({step.get('event')})"
        try:
            header = Header.from_list(codec.decode(_bytes(step["header"], "header")))
            if step.get("qc") is None:
                raise ProvenanceError(f"{where}: no QC for block {header.height}")
            qc = QuorumCertificate.from_list(codec.decode(_bytes(step["qc"], "qc")))
            receipt = Receipt.from_list(codec.decode(_bytes(step["receipt"], "receipt")))
        except (KeyError, DecodeError) as exc:
            raise ProvenanceError(f"{where}: undecodable header, QC or receipt: {exc}") from exc
        if qc.block_hash != header.hash or qc.height != header.height:
            raise ProvenanceError(f"{where}: the QC certifies another block")
        vs = select_validator_set(sets, header.height)
        if header.validator_set_hash != compute_validator_set_hash(select_validator_set(sets, header.height + 1)
                                                                   .validators):
            raise ProvenanceError(f"{where}: block {header.height} names a next validator set that the bundle's "
                                  "epoch-change proofs do not prove (a validator-set change is missing)")
        try:
            verify_qc(qc, list(vs.validators), genesis.chain_id, vs.epoch)
        except ConsensusError as exc:
            raise ProvenanceError(f"{where}: QC does not verify against validator set {vs.epoch} (in force at "
                                  f"block {header.height}): {exc.message}") from exc
        if not verify_inclusion_proof(receipt.encode(), _proof(step.get("receipt_proof")), header.receipts_root):
            raise ProvenanceError(f"{where}: the receipt is not in block {header.height}'s receipts root")
        k = step.get("log_in_receipt")
        if receipt.status != 1 or not isinstance(k, int) or not 0 <= k < len(receipt.logs):
            raise ProvenanceError(f"{where}: the receipt does not carry the event")
        decoded = decode_credit_log(receipt.logs[k])
        if decoded is None or decoded[0] != step.get("event") or to_jsonable(decoded[1]) != step.get("args"):
            raise ProvenanceError(f"{where}: the event in the receipt differs from the one claimed")
        events.append(CreditEvent(header.height, k, int(step.get("tx_index", 0)), _bytes(step["transaction"], "tx"),
                                  header.timestamp_ms, decoded[0], decoded[1]))
        out.append({"event": decoded[0], "block": header.height, "block_hash": _hx(header.hash),
                    "timestamp": header.timestamp_ms // 1000, "signers": len(qc.signer_indices()),
                    "validator_set": vs.epoch})
    _check_versions(events, bundle.get("record"))
    record = fold_records(events).get(bundle["record"])
    assert record is not None
    return {"record": record.id, "subject": record.subject, "category": record.category, "issuer": record.issuer,
            "versions": len(record.versions), "steps": out, "verified": True,
            "validator_sets": [{"epoch": vs.epoch, "activation_height": vs.activation_height,
                                "validators": len(vs.validators)} for vs in sets]}


def _prove_validator_sets(raws: Any, genesis_set: ValidatorSet, chain_id: int) -> list[ValidatorSet]:
    """The validator sets, genesis first, that the epoch-change proofs ``raws`` prove one after the other from
    the genesis set (``verify_epoch_changes``, as a node catching up checks them); ProvenanceError otherwise."""
    if not isinstance(raws, list) or len(raws) > MAX_EPOCH_CHANGES:
        raise ProvenanceError(f"epoch_changes must be a list of at most {MAX_EPOCH_CHANGES} proofs")
    try:
        return [genesis_set, *prove_sets_from(genesis_set, [_bytes(r, "epoch-change proof") for r in raws], chain_id)]
    except DecodeError as exc:
        raise ProvenanceError(f"an epoch-change proof is undecodable: {exc.message}") from exc
    except ConsensusError as exc:
        raise ProvenanceError(exc.message) from exc


def _check_versions(events: list[Any], record_id: Any) -> None:
    if events[0].name != "RecordPublished":
        raise ProvenanceError("the history does not start at the publication")
    first = events[0].args
    if first["id"] != record_id:
        raise ProvenanceError("the publication is of another record")
    previous = bytes(32)
    expected_version = 1
    for ev in events:
        a = ev.args
        if a["id"] != record_id or a["subjectKey"] != first["subjectKey"]:
            raise ProvenanceError(f"event {ev.name} at block {ev.height} is about another record")
        if ev.name not in ("RecordPublished", "RecordCorrected"):
            continue
        if ev.name == "RecordPublished" and ev is not events[0]:
            raise ProvenanceError("a record is published once")
        content = RecordVersion(a["polarity"], a["severity"], a["documentNumber"], a["authority"], a["legalBasis"],
                                a["summary"], a["summaryHash"], a["decisionDate"], a["effectiveFrom"],
                                a["displayMinSeconds"], a["displayMaxSeconds"], a["evidenceHash"])
        digest = content.compute_hash(record_id, a["version"], a["subject"], a["category"], a["issuer"], previous)
        if (a["version"] != expected_version or a["previousVersionHash"] != previous or a["versionHash"] != digest
                or a["issuer"] != first["issuer"] or a["subject"] != first["subject"]):
            raise ProvenanceError(f"version {a['version']} at block {ev.height} does not follow version "
                                  f"{expected_version - 1} (hash chain broken)")
        previous = digest
        expected_version += 1


def load_bundle(text: str) -> dict[str, Any]:
    try:
        bundle = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"provenance bundle is not JSON: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != PROVENANCE_FORMAT:
        raise InvalidInput(f"not a provenance bundle of format {PROVENANCE_FORMAT}")
    return bundle
