"""``chainshare joint query``: secure aggregation over several agencies' datasets.

The agency's own node creates the job on chain (under the agency's ``compute_joint`` grants, one per
dataset: ``chainshare access request ID --action compute_joint --purpose ...``), has every owner's
node compute its share of the answer over mutual TLS, and returns only the combined,
differentially private result (see README, "Secure aggregation across agencies")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx

from chainshare.cli.common import acting_options, emit, json_option, parse_positive_id, resolve_actor
from chainshare.cli.dataset import read_query_file
from chainshare.cli.signing import (
    REQUEST_TIMEOUT,
    api_get,
    compute_signed_headers,
    get_node_audience,
    new_request_stamp,
    raise_api_error,
)
from chainshare.client import NodeClient, NodeUnreachable, transact_checked
from chainshare.decimal_text import parse_ascii_decimals
from chainshare.errors import InvalidInput
from chainshare.execution.abi import to_jsonable
from chainshare.execution.contracts.addresses import JOINT_COMPUTE
from chainshare.execution.runtime import encode_call
from chainshare.privacy.aggregate import check_commitment_opening, parse_commitment_opening
from chainshare.privacy.service import compute_joint_opening_message, compute_joint_query_message
from chainshare.sharing import protocol as wire
from chainshare.sharing.records import JOINT_CONTRACT, decode_receipt_events
from chainshare.sharing.schema import canonical_json

group = click.Group("joint", help="Secure aggregation across agencies (joint queries over several owners' datasets).")


def _parse_datasets(text: str) -> list[int]:
    ids = parse_ascii_decimals((p.strip() for p in text.split(",")), max_digits=20)
    if ids is None or not 2 <= len(ids) <= 16 or not all(1 <= n < 2**64 for n in ids):
        raise InvalidInput(f"--datasets is 2..16 dataset ids separated by commas, got {text[:80]!r}")
    if len(set(ids)) != len(ids):
        raise InvalidInput("--datasets names a dataset twice")
    return ids


@group.command("query")
@click.option("--datasets", "datasets_text", required=True, help="Dataset ids, e.g. 1,2,3 (one per owner agency).")
@click.option("--query", "query_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help='Joint query JSON: {"select": [...], "where": [...], "group_by": [...], "domain": {...}}.')
@acting_options
@json_option
def query(datasets_text: str, query_file: Path, devnet_dir: object, as_agency: str | None, node_url: str | None,
          keystore: object, password_file: object, as_json: bool) -> None:
    """Run a joint query: each owner's rows stay on its node; only the combined result comes back."""
    ids = _parse_datasets(datasets_text)
    query_obj = read_query_file(query_file)
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    timestamp, nonce = new_request_stamp()
    digest = wire.compute_query_digest(canonical_json(query_obj))
    message = compute_joint_query_message(ids, digest, *get_node_audience(url), timestamp, nonce)
    try:
        response = httpx.post(url.rstrip("/") + "/api/v1/joint/query", json={"datasets": ids, "query": query_obj},
                              headers=compute_signed_headers(key, message, timestamp, nonce), timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot reach node at {url}: {exc}") from exc
    if response.status_code != 200:
        raise_api_error(response)
    out = response.json()
    result = out["result"]
    table = [" | ".join(result["columns"])] + [" | ".join(str(v) for v in row) for row in result["groups"]]
    emit(to_jsonable(out), as_json, f"joint job {out['job_id']} ({', '.join(out['participants'])}):\n" + "\n".join(table))


@group.command("show")
@click.argument("job_id")
@acting_options
@json_option
def show(job_id: str, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
         password_file: object, as_json: bool) -> None:
    """Show joint job JOB_ID as recorded on chain (status, participants, commitments, deadline)."""
    ident = parse_positive_id(job_id, "JOB_ID")
    url, _ = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    emit(api_get(url, f"/joint/jobs/{ident}"), as_json)


@group.command("expire")
@click.argument("job_id")
@acting_options
@json_option
def expire(job_id: str, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
           password_file: object, as_json: bool) -> None:
    """Record on chain that joint job JOB_ID passed its deadline (as its requester or a participant)."""
    ident = parse_positive_id(job_id, "JOB_ID")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    with NodeClient(url) as client:
        receipt = transact_checked(client, key, JOINT_COMPUTE, encode_call(JOINT_CONTRACT, "expireJob", ident),
                                   failure=f"expiring joint job {ident} failed")
    expired = decode_receipt_events(receipt["logs"])["JointJobExpired"]
    result = {"job_id": ident, "expired_by": expired["by"], "expires_at": int(expired["expiresAt"]),
              "transactionHash": receipt["transactionHash"], "blockNumber": int(receipt["blockNumber"], 16)}
    emit(result, as_json, f"joint job {ident} expired (deadline block time {result['expires_at']}; "
                          f"tx {result['transactionHash']})")


@group.command("opening")
@click.argument("job_id")
@click.option("--full", is_flag=True, help="Also reveal this agency's exact local vector and salt (its subtotals: "
              "for an auditor only; the request is signed and the node logs it).")
@acting_options
@json_option
def opening(job_id: str, full: bool, devnet_dir: object, as_agency: str | None, node_url: str | None,
            keystore: object, password_file: object, as_json: bool) -> None:
    """This owner's opening of its input commitment to joint job JOB_ID, for an auditor
    (``chainshare joint verify-opening``). Without --full it reveals nothing of the rows."""
    ident = parse_positive_id(job_id, "JOB_ID")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file, need_key=full)
    if not full:
        emit(api_get(url, f"/joint/jobs/{ident}/opening"), True)
        return
    assert key is not None
    timestamp, nonce = new_request_stamp()
    message = compute_joint_opening_message(ident, *get_node_audience(url), timestamp, nonce)
    try:
        response = httpx.post(url.rstrip("/") + f"/api/v1/joint/jobs/{ident}/opening",
                              headers=compute_signed_headers(key, message, timestamp, nonce), timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot reach node at {url}: {exc}") from exc
    if response.status_code != 200:
        raise_api_error(response)
    emit(response.json(), True)


def _registered_version(url: str, dataset_id: int, content_hash: str) -> int | None:
    """The version of ``dataset_id`` registered on chain with ``content_hash``, if any."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"after": cursor} if cursor else {})}
        page = api_get(url, f"/datasets/{dataset_id}/audit", params)
        for item in page["items"]:
            args = item.get("args") or {}
            if item.get("event") in ("DatasetRegistered", "DatasetVersionAdded") \
                    and str(args.get("contentHash", "")).lower() == content_hash:
                return int(args.get("version", 1))
        cursor = page.get("next")
        if not cursor:
            return None


@group.command("verify-opening")
@click.argument("opening_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@acting_options
@json_option
def verify_opening(opening_file: Path, devnet_dir: object, as_agency: str | None, node_url: str | None,
                   keystore: object, password_file: object, as_json: bool) -> None:
    """Check an owner's commitment opening (OPENING_FILE, from ``chainshare joint opening``) against
    the job's on-chain commitment and the dataset's registered versions, on your own node's chain."""
    if opening_file.stat().st_size > 1 << 20:
        raise InvalidInput(f"{opening_file} is over 1 MiB: not a commitment opening")
    try:
        obj = json.loads(opening_file.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{opening_file} is not JSON: {exc}") from None
    op = parse_commitment_opening(obj)
    url, _ = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file, need_key=False)
    job = api_get(url, f"/joint/jobs/{op.job_id}")
    if op.dataset_id not in job["datasets"]:
        raise InvalidInput(f"dataset {op.dataset_id} is not an input of joint job {op.job_id} "
                           f"(its datasets: {job['datasets']})")
    index = job["datasets"].index(op.dataset_id)
    commitment = bytes.fromhex(job["commitments"][index][2:])
    if commitment == bytes(32):
        raise InvalidInput(f"{job['participants'][index]} committed no input to joint job {op.job_id}")
    check_commitment_opening(op, commitment)
    content_hash = "0x" + op.content_hash.hex()
    version = _registered_version(url, op.dataset_id, content_hash)
    if version is None:
        raise InvalidInput(f"the committed content hash {content_hash} is not a registered version of dataset "
                           f"{op.dataset_id}: the owner's input was not the registered data")
    result = {"valid": True, "job_id": op.job_id, "participant": job["participants"][index],
              "dataset_id": op.dataset_id, "dataset_version": version, "content_hash": content_hash,
              "commitment": "0x" + commitment.hex(), "full": op.is_full,
              **({"vector": list(op.vector)} if op.vector is not None else {})}
    emit(result, as_json, f"valid: {result['participant']}'s commitment to joint job {op.job_id} opens to dataset "
                          f"{op.dataset_id} version {version} (content hash {content_hash})"
                          + (f"; its exact local vector: {list(op.vector)}" if op.vector is not None else ""))
