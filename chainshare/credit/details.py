"""A person record's details, kept off chain in the issuer node's vault and read through a governed fetch.

A natural person's record carries only hashes on chain (the summary's Keccak-256). Its details are a
dataset of the issuer agency (``Datasets``, title ``details_title(id)``), one JSONL row per record version
in force: ``{"record", "version", "subject", "summary", "summary_hash"}`` with ``subject`` a *personal*
column. So the sharing plane governs them as it governs any dataset: the dataset's Cedar policy decides each
``AccessControl.request`` on chain, the issuer's node delivers only under a finalized grant over mutual TLS,
every delivery is recorded on chain (``DeliveryRecorded``) before the reader can open it, and under ``read``
the subject arrives as a pseudonym keyed per (issuer, reader, dataset). A correction adds the new version's
details as the dataset's next version. The reader checks what it received against the chain
(``check_details``): the row of the record's current version whose summary hashes to the on-chain hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidInput, NotFound
from chainshare.sharing.schema import Schema, validate_schema

DETAILS_SCHEMA: Schema = validate_schema({"columns": [
    {"name": "record", "kind": "integer"}, {"name": "version", "kind": "integer"},
    {"name": "subject", "kind": "personal"}, {"name": "summary", "kind": "string"},
    {"name": "summary_hash", "kind": "string"}], "min_group": 2})
MAX_DETAILS_BYTES = 1 << 20
# Without --details-policy only the issuer itself may read (an owner is decided by policy like anyone else).
DEFAULT_DETAILS_POLICY = 'permit (principal, action, resource)\nwhen { principal == resource.owner };\n'


class DetailsMismatch(ChainshareError, ValueError):
    """What was delivered is not the details of the record's current version as the chain names them."""


def details_title(record_id: int) -> str:
    """The title of the dataset that holds record ``record_id``'s details (unique per issuer)."""
    return f"credit record {record_id} details"


def encode_details(record_id: int, version: int, subject: str, summary: str) -> bytes:
    """The dataset content for one version of a person record: one JSONL row."""
    if not summary:
        raise InvalidInput("a person record's details need its summary (--summary)")
    row = {"record": record_id, "version": version, "subject": subject, "summary": summary,
           "summary_hash": "0x" + keccak256(summary.encode()).hex()}
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def find_details_dataset(datasets: Iterable[dict[str, Any]], issuer: str, record_id: int) -> dict[str, Any]:
    """The issuer's dataset holding ``record_id``'s details among ``datasets`` (``dataset_json`` views);
    the first registered wins, so no one else can shadow it (only the issuer's own count)."""
    title = details_title(record_id)
    for d in datasets:
        if d.get("owner") == issuer and d.get("title") == title and not d.get("retired"):
            return d
    raise NotFound(f"issuer {issuer!r} has registered no details for record {record_id}")


def check_details(content: bytes, record: dict[str, Any]) -> dict[str, Any]:
    """The delivered details of ``record`` (as ``GET /credit/records/{id}`` serves it): the row of its
    latest version stored (a correction that kept the summary stores none), once that row's summary hashes
    to the on-chain ``summaryHash`` of the current version; DetailsMismatch otherwise."""
    if len(content) > MAX_DETAILS_BYTES:
        raise DetailsMismatch(f"the delivered details exceed {MAX_DETAILS_BYTES} bytes")
    rows = []
    for line in content.splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DetailsMismatch(f"the delivered details are not JSONL: {exc}") from exc
    mine = [r for r in rows if isinstance(r, dict) and r.get("record") == record["id"]
            and isinstance(r.get("version"), int) and r["version"] <= record["version"]]
    if not mine:
        raise DetailsMismatch(f"the delivered details hold no row for record {record['id']}")
    row = max(mine, key=lambda r: int(r["version"]))
    summary = row.get("summary")
    digest = "0x" + keccak256(summary.encode()).hex() if isinstance(summary, str) else None
    if digest != record["summaryHash"]:
        raise DetailsMismatch(f"the delivered summary hashes to {digest}, the chain names {record['summaryHash']} "
                              f"for record {record['id']} version {record['version']}: discarded")
    return {"record": row["record"], "version": record["version"], "details_version": row["version"],
            "subject": row.get("subject"), "summary": summary, "summary_hash": digest}
