"""``chainshare joint query``: secure aggregation over several agencies' datasets.

The agency's own node creates the job on chain (under the agency's ``compute_joint`` grants, one per
dataset: ``chainshare access request ID --action compute_joint --purpose ...``), has every owner's
node compute its share of the answer over mutual TLS, and returns only the combined,
differentially private result (see README, "Secure aggregation across agencies")."""

from __future__ import annotations

from pathlib import Path

import click
import httpx

from chainshare.cli.common import acting_options, emit, json_option, resolve_actor
from chainshare.cli.dataset import (
    _TIMEOUT,
    _audience,
    _fresh,
    _signed_headers,
    raise_api_error,
    read_query_file,
)
from chainshare.client import NodeUnreachable
from chainshare.errors import InvalidInput
from chainshare.execution.abi import to_jsonable
from chainshare.privacy.service import compute_joint_query_message
from chainshare.sharing import protocol as wire
from chainshare.sharing.schema import canonical_json

group = click.Group("joint", help="Secure aggregation across agencies (joint queries over several owners' datasets).")


def _parse_datasets(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not 2 <= len(parts) <= 16 or not all(p.isdigit() and 1 <= int(p) < 2**64 for p in parts):
        raise InvalidInput(f"--datasets is 2..16 dataset ids separated by commas, got {text[:80]!r}")
    ids = [int(p) for p in parts]
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
    timestamp, nonce = _fresh()
    digest = wire.compute_query_digest(canonical_json(query_obj))
    message = compute_joint_query_message(ids, digest, *_audience(url), timestamp, nonce)
    try:
        response = httpx.post(url.rstrip("/") + "/api/v1/joint/query", json={"datasets": ids, "query": query_obj},
                              headers=_signed_headers(key, message, timestamp, nonce), timeout=_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"cannot reach node at {url}: {exc}") from exc
    if response.status_code != 200:
        raise_api_error(response)
    out = response.json()
    result = out["result"]
    table = [" | ".join(result["columns"])] + [" | ".join(str(v) for v in row) for row in result["groups"]]
    emit(to_jsonable(out), as_json, f"joint job {out['job_id']} ({', '.join(out['participants'])}):\n" + "\n".join(table))
