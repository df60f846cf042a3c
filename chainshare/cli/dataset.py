"""``chainshare dataset ...``: publish, list, show, fetch and query shared datasets.

``publish`` uploads the file into the agency's OWN node's encrypted vault (streamed; the upload is
signed by the agency account over the file's Keccak-256) and then registers it on chain with
``Datasets.register`` (signed by the same account): the raw data never goes on chain, only its
hash, size, schema and access policy. ``fetch`` and ``query`` ask the agency's node, which gets the
data (or the aggregate result) from the owner's node under a finalized grant and verifies it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from chainshare.cli.common import acting_options, emit, json_option, parse_positive_id, resolve_actor
from chainshare.cli.signing import (
    REQUEST_TIMEOUT,
    api_get,
    compute_signed_headers,
    get_node_audience,
    new_request_stamp,
    raise_api_error,
)
from chainshare.client import NodeClient, NodeUnreachable, transact_checked
from chainshare.crypto.envelope import new_keccak256
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.execution.abi import to_jsonable
from chainshare.execution.contracts import DATASETS
from chainshare.execution.runtime import encode_call
from chainshare.sharing import protocol as wire
from chainshare.sharing.records import DATASETS_CONTRACT, decode_receipt_events
from chainshare.sharing.schema import (
    Schema,
    canonical_json,
    check_format,
    hash_stream,
    load_schema,
    open_dataset,
    with_min_group,
)

group = click.Group("dataset", help="Publish, list, show, fetch and query shared datasets.")

_BLOCK = 1 << 20
def _file_blocks(path: Path) -> Iterator[bytes]:
    with open_dataset(path) as src:
        while block := src.read(_BLOCK):
            yield block


def _guess_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return check_format(fmt)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "jsonl", "ndjson"):
        return check_format(suffix)
    raise InvalidInput(f"cannot tell the format of {path.name} from its name: give --format csv or --format jsonl")


# --------------------------------------------------------------------------- commands



def read_query_file(path: Path) -> dict[str, Any]:
    """The JSON object of a query file; InvalidInput naming the file if it is unreadable or not an object."""
    try:
        query_obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the query {path} as JSON: {exc}") from None
    if not isinstance(query_obj, dict):
        raise InvalidInput(f"the query in {path} must be a JSON object")
    return query_obj

@group.command("publish")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--title", required=True, help="Title of the dataset (1..256 characters).")
@click.option("--policy", "policy_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Cedar policy of the dataset (see contracts/policies/examples/).")
@click.option("--schema", "schema_file", type=click.Path(dir_okay=False, path_type=Path),
              help='Schema JSON {"columns": [{"name", "kind"}], "min_group": n}; without it, column names and '
                   "kinds are inferred and NO column is personal.")
@click.option("--min-group", type=click.IntRange(2, 1_000_000),
              help="Smallest group (noisy row count) a compute query may report (default: the schema's, else 5).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Default: from the file name.")
@acting_options
@json_option
def publish(file: Path, title: str, policy_file: Path, schema_file: Path | None, min_group: int | None,
            fmt: str | None, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
            password_file: object, as_json: bool) -> None:
    """Upload FILE into this agency's node vault and register it on chain."""
    fmt = _guess_format(file, fmt)
    try:
        policy = policy_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the policy {policy_file}: {exc}") from None
    schema = None
    if schema_file is not None:
        schema = load_schema(schema_file)
        if min_group is not None:
            schema = with_min_group(schema, min_group)
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    uploaded = upload_to_vault(url, key, file, fmt, schema, min_group=min_group)
    receipt = send_datasets_call(url, key, "register", title, bytes.fromhex(uploaded["content_hash"][2:]),
                                 canonical_json(uploaded["schema"]).decode(), uploaded["size"], policy)
    registered = decode_receipt_events(receipt["logs"])
    size = uploaded["size"]
    result = {
        "dataset_id": int(registered["DatasetRegistered"]["id"]),
        "title": title, "content_hash": uploaded["content_hash"], "size": size, "format": fmt,
        "schema": uploaded["schema"], "schema_source": uploaded["schema_source"],
        "policy_id": registered.get("DatasetPolicySet", {}).get("policyId"),
        "transactionHash": receipt["transactionHash"], "blockNumber": int(receipt["blockNumber"], 16),
    }
    emit(result, as_json, f"published dataset {result['dataset_id']} ({size} bytes, {fmt}, schema "
                          f"{result['schema_source']}), policy {result['policy_id']}, tx {receipt['transactionHash']}")


def upload_to_vault(url: str, key: bytes, file: Path, fmt: str, schema: Schema | None, *,
                    min_group: int | None = None) -> dict[str, Any]:
    """Stream ``file`` into the vault of the node at ``url`` (its agency's own node), signed by ``key`` over
    the file's Keccak-256; the node's answer (content_hash, size, schema, schema_source), checked to be of
    exactly these bytes."""
    headers: dict[str, str] = {}
    if schema is not None:
        headers[wire.SCHEMA_HEADER] = base64.urlsafe_b64encode(schema.to_canonical_json()).decode().rstrip("=")
    with open_dataset(file) as src:
        size, content_hash = hash_stream(src)
    timestamp, nonce = new_request_stamp()
    headers[wire.CONTENT_HASH_HEADER] = "0x" + content_hash.hex()
    headers.update(compute_signed_headers(key, wire.compute_upload_message(content_hash, *get_node_audience(url), timestamp, nonce),
                                   timestamp, nonce))
    params: dict[str, Any] = {"format": fmt}
    if min_group is not None and schema is None:
        params["min_group"] = min_group
    try:
        response = httpx.post(url.rstrip("/") + "/api/v1/vault", params=params, headers=headers,
                              content=_file_blocks(file), timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot upload to node at {url}: {exc}") from exc
    if response.status_code != 201:
        raise_api_error(response)
    uploaded: dict[str, Any] = response.json()
    if uploaded["content_hash"] != "0x" + content_hash.hex() or uploaded["size"] != size:
        raise ChainshareError("the node stored other bytes than this file (the file changed during the upload?)")
    return uploaded


def send_datasets_call(url: str, key: bytes, method: str, *args: Any) -> dict[str, Any]:
    """Send ``Datasets.method(*args)`` signed by ``key``; its receipt (ChainshareError with the reason if it
    reverted: the uploaded file stays in the vault, and sending again reuses it)."""
    with NodeClient(url) as client:
        return transact_checked(client, key, DATASETS, encode_call(DATASETS_CONTRACT, method, *args),
                                failure=f"Datasets.{method} reverted", no_reason="no reason given",
                                advice="the file stays in the vault; publishing again reuses it")


@group.command("list")
@click.option("--after", type=click.IntRange(0), default=0, help="List datasets with an id above this one.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@acting_options
@json_option
def list_datasets(after: int, limit: int, devnet_dir: object, as_agency: str | None, node_url: str | None,
                  keystore: object, password_file: object, as_json: bool) -> None:
    """List the datasets registered on chain."""
    url, _ = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file, need_key=False)
    result = api_get(url, "/datasets", {"after": after, "limit": limit})
    lines = [f"{d['id']:>6}  {d['owner']:<24} {d['size']:>12} B  {'retired ' if d['retired'] else ''}{d['title']}"
             for d in result["items"]]
    emit(result, as_json, "\n".join(lines) if lines else "no datasets")


@group.command("show")
@click.argument("dataset_id")
@acting_options
@json_option
def show(dataset_id: str, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
         password_file: object, as_json: bool) -> None:
    """Show one dataset: owner, schema, versions and access policy."""
    ident = parse_positive_id(dataset_id, "DATASET_ID")
    url, _ = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file, need_key=False)
    emit(api_get(url, f"/datasets/{ident}"), as_json)


@group.command("fetch")
@click.argument("dataset_id")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the dataset (replaced only once it has verified).")
@click.option("--grant", "grant_id", type=click.IntRange(1), help="Read grant to use (default: the newest valid).")
@acting_options
@json_option
def fetch(dataset_id: str, out: Path, grant_id: int | None, devnet_dir: object, as_agency: str | None,
          node_url: str | None, keystore: object, password_file: object, as_json: bool) -> None:
    """Fetch a dataset under a read grant of this agency (personal columns pseudonymized under
    'read', raw under 'read_identified')."""
    ident = parse_positive_id(dataset_id, "DATASET_ID")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    result = fetch_dataset(url, key, ident, grant_id, out)
    emit(result, as_json, f"wrote {result['bytes']} bytes of dataset {ident} to {out} (grant {result['grant_id']}, "
                          f"{result['action']}; the node matched them to the delivery recorded in tx "
                          f"{result['record_tx']}, block {result['recorded_height']})")


def fetch_dataset(url: str, key: bytes, ident: int, grant_id: int | None, out: Path) -> dict[str, Any]:
    """Have the node at ``url`` (the agency's own) fetch dataset ``ident`` from its owner's node under a grant
    of ``key``'s agency, and write it to ``out`` only once it hashes to what the node announced (which the
    node matched to the delivery recorded on chain). Unauthorized (HTTP 403) without a valid grant."""
    timestamp, nonce = new_request_stamp()
    message = wire.compute_fetch_message(ident, grant_id, *get_node_audience(url), timestamp, nonce)
    headers = compute_signed_headers(key, message, timestamp, nonce)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        with httpx.stream("POST", url.rstrip("/") + f"/api/v1/datasets/{ident}/fetch", json={"grant_id": grant_id},
                          headers=headers, timeout=REQUEST_TIMEOUT) as response:
            if response.status_code != 200:
                raise_api_error(response)
            hasher = new_keccak256()
            size = 0
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as dst:
                for block in response.iter_bytes(_BLOCK):
                    hasher.update(block)
                    size += len(block)
                    dst.write(block)
            meta = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-chainshare-")}
        digest = "0x" + hasher.digest().hex()
        if digest != meta.get("x-chainshare-delivered-hash"):
            raise ChainshareError(f"the download hashes to {digest}, the node announced "
                                  f"{meta.get('x-chainshare-delivered-hash')}: discarded")
        os.replace(tmp, out)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot fetch from node at {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return {"dataset_id": ident, "grant_id": int(meta["x-chainshare-grant"]), "action": meta["x-chainshare-action"],
            "out": str(out), "bytes": size, "format": meta.get("x-chainshare-format"),
            "content_hash": meta.get("x-chainshare-content-hash"), "delivered_hash": digest,
            "record_tx": meta.get("x-chainshare-record-tx") or None,
            "recorded_height": int(meta["x-chainshare-recorded-height"])}


@group.command("query")
@click.argument("dataset_id")
@click.option("--query", "query_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help='Aggregate query JSON: {"select": [...], "group_by": [...], "where": [...]}.')
@click.option("--grant", "grant_id", type=click.IntRange(1), help="Compute grant (default: the newest valid).")
@acting_options
@json_option
def query(dataset_id: str, query_file: Path, grant_id: int | None, devnet_dir: object, as_agency: str | None,
          node_url: str | None, keystore: object, password_file: object, as_json: bool) -> None:
    """Run an aggregate query on the owner's node under a compute grant; only the result comes back."""
    ident = parse_positive_id(dataset_id, "DATASET_ID")
    query_obj = read_query_file(query_file)
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    timestamp, nonce = new_request_stamp()
    digest = wire.compute_query_digest(canonical_json(query_obj))
    message = wire.compute_query_message(ident, grant_id, digest, *get_node_audience(url), timestamp, nonce)
    headers = compute_signed_headers(key, message, timestamp, nonce)
    try:
        response = httpx.post(url.rstrip("/") + f"/api/v1/datasets/{ident}/query",
                              json={"grant_id": grant_id, "query": query_obj}, headers=headers, timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot reach node at {url}: {exc}") from exc
    if response.status_code != 200:
        raise_api_error(response)
    result = response.json()
    table = [" | ".join(result["columns"])] + [" | ".join(str(v) for v in row) for row in result["groups"]]
    emit(to_jsonable(result), as_json, "\n".join(table))
