"""Storing a person record's details in the issuer's own node vault as a dataset (``chainshare.credit.details``),
used by ``credit publish`` and ``credit correct``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chainshare.errors import InvalidInput


def store_person_details(url: str, key: bytes, record_id: int, version: int, subject: str, summary: str,
                         policy: str | None, dataset_id: int | None = None) -> dict[str, Any]:
    """Put the details of ``record_id`` version ``version`` into the issuer's own node vault (encrypted) and
    register them on chain as the issuer's dataset ``details_title(record_id)`` under the Cedar ``policy``,
    or as the next version of ``dataset_id``; what was stored (dataset id, content hash, transaction)."""
    import tempfile

    from chainshare.cli.dataset import send_datasets_call, upload_to_vault
    from chainshare.credit.details import (
        DEFAULT_DETAILS_POLICY,
        DETAILS_SCHEMA,
        details_title,
        encode_details,
    )
    from chainshare.sharing.records import decode_receipt_events
    from chainshare.sharing.schema import canonical_json

    content = encode_details(record_id, version, subject, summary)
    with tempfile.TemporaryDirectory(prefix="chainshare-details-") as tmp:
        path = Path(tmp) / "details.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as fh:
            fh.write(content)
        uploaded = upload_to_vault(url, key, path, "jsonl", DETAILS_SCHEMA)
    content_hash = bytes.fromhex(uploaded["content_hash"][2:])
    if dataset_id is None:
        receipt = send_datasets_call(url, key, "register", details_title(record_id), content_hash,
                                     canonical_json(uploaded["schema"]).decode(), uploaded["size"],
                                     policy or DEFAULT_DETAILS_POLICY)
        dataset_id = int(decode_receipt_events(receipt["logs"])["DatasetRegistered"]["id"])
    else:
        receipt = send_datasets_call(url, key, "addVersion", dataset_id, content_hash, uploaded["size"])
    return {"dataset_id": dataset_id, "content_hash": uploaded["content_hash"],
            "transaction": receipt["transactionHash"], "block": int(receipt["blockNumber"], 16)}


def read_details_policy(policy_file: Path | None) -> str | None:
    if policy_file is None:
        return None
    try:
        return policy_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the details policy {policy_file}: {exc}") from None
