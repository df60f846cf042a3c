"""``chainshare access ...``: ask for access to a dataset, show and revoke grants.

``request`` sends ``AccessControl.request``: the dataset's Cedar policy (and every consortium-wide
policy) is evaluated inside the transaction, and the decision, with the ids of the policies that
determined it, is on chain whatever it is. A denied request exits 1. ``limits`` (the dataset's
owner) sets the privacy budget each grantee agency may spend on compute queries and the queries
each grant may run per hour (``AccessControl.setComputeLimits``).
"""

from __future__ import annotations

from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, parse_positive_id, resolve_actor
from chainshare.cli.signing import api_get
from chainshare.client import NodeClient, transact_checked
from chainshare.errors import InvalidInput
from chainshare.execution.abi import to_jsonable
from chainshare.execution.contracts import ACCESS_CONTROL, cedar
from chainshare.execution.contracts.access_control import EPSILON_UNIT, MAX_BUDGET_MICRO, MAX_QUERIES_PER_HOUR
from chainshare.execution.runtime import encode_call
from chainshare.sharing.records import ACCESS_CONTRACT, decode_receipt_events

group = click.Group("access", help="Request access to datasets; show and revoke grants.")


@group.command("request")
@click.argument("dataset_id")
@click.option("--action", required=True, type=click.Choice(list(cedar.ACTIONS)),
              help="read (personal columns pseudonymized), read_identified (raw) or compute (aggregates only).")
@click.option("--purpose", required=True, help="Why the data is needed (1..256 bytes; policies may test it).")
@click.option("--duration", type=click.IntRange(0, 365 * 86_400), default=0,
              help="Grant lifetime in seconds (0: 30 days; at most 365 days).")
@acting_options
@json_option
def request(dataset_id: str, action: str, purpose: str, duration: int, devnet_dir: object, as_agency: str | None,
            node_url: str | None, keystore: object, password_file: object, as_json: bool) -> None:
    """Ask for ACTION on DATASET_ID; prints the decision and, if allowed, the grant."""
    ident = parse_positive_id(dataset_id, "DATASET_ID")
    if not 1 <= len(purpose.encode()) <= 256:
        raise InvalidInput("--purpose must be 1..256 bytes")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    with NodeClient(url) as client:
        receipt = transact_checked(client, key, ACCESS_CONTROL, encode_call(ACCESS_CONTRACT, "request", ident, action,
                                                                             purpose, duration),
                                   failure="AccessControl.request reverted", no_reason="no reason")
    logs = decode_receipt_events(receipt["logs"])
    decided, granted = logs["AccessDecided"], logs.get("GrantIssued")
    result: dict[str, Any] = {
        "request_id": int(decided["requestId"]), "dataset_id": ident, "requester": decided["requester"],
        "action": action, "purpose": purpose, "allowed": bool(decided["allowed"]),
        "policy_ids": list(decided["policyIds"]), "errors": list(decided["errors"]),
        "grant_id": int(granted["grantId"]) if granted else None,
        "expires_at": int(granted["expiresAt"]) if granted else None,
        "transactionHash": receipt["transactionHash"], "blockNumber": int(receipt["blockNumber"], 16),
    }
    if result["allowed"]:
        human = (f"allowed by {', '.join(result['policy_ids'])}: grant {result['grant_id']} for {action} until "
                 f"{result['expires_at']} (request {result['request_id']})")
    else:
        reasons = result["errors"] or (["denied by " + ", ".join(result["policy_ids"])] if result["policy_ids"]
                                       else ["no policy permits it"])
        human = f"denied (request {result['request_id']}): {'; '.join(reasons)}"
    emit(to_jsonable(result), as_json, human)
    if not result["allowed"]:
        raise click.exceptions.Exit(1)


@group.command("limits")
@click.argument("dataset_id")
@click.option("--budget", "budget", required=True, type=click.FloatRange(0, MAX_BUDGET_MICRO / EPSILON_UNIT),
              help="Differential-privacy budget (epsilon) each grantee agency may spend on the dataset in total.")
@click.option("--queries-per-hour", required=True, type=click.IntRange(1, MAX_QUERIES_PER_HOUR),
              help="Compute queries (answered or refused) each grant may run per hour of block time.")
@acting_options
@json_option
def limits(dataset_id: str, budget: float, queries_per_hour: int, devnet_dir: object, as_agency: str | None,
           node_url: str | None, keystore: object, password_file: object, as_json: bool) -> None:
    """Set the compute limits of DATASET_ID (as its owner); they apply to the next query."""
    ident = parse_positive_id(dataset_id, "DATASET_ID")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    budget_micro = round(budget * EPSILON_UNIT)
    with NodeClient(url) as client:
        receipt = transact_checked(client, key, ACCESS_CONTROL, encode_call(ACCESS_CONTRACT, "setComputeLimits", ident,
                                                                             budget_micro, queries_per_hour),
                                   failure=f"setting the compute limits of dataset {ident} failed")
    result = {"dataset_id": ident, "budget": budget_micro / EPSILON_UNIT, "queries_per_hour": queries_per_hour,
              "transactionHash": receipt["transactionHash"], "blockNumber": int(receipt["blockNumber"], 16)}
    emit(result, as_json, f"dataset {ident}: each grantee may spend epsilon {result['budget']:g}, each grant "
                          f"{queries_per_hour} queries per hour (tx {result['transactionHash']})")


@group.command("revoke")
@click.argument("grant_id")
@acting_options
@json_option
def revoke(grant_id: str, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
           password_file: object, as_json: bool) -> None:
    """Revoke GRANT_ID (as its grantee or as the dataset's owner)."""
    ident = parse_positive_id(grant_id, "GRANT_ID")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    with NodeClient(url) as client:
        receipt = transact_checked(client, key, ACCESS_CONTROL, encode_call(ACCESS_CONTRACT, "revokeGrant", ident),
                                   failure=f"revoking grant {ident} failed")
    revoked = decode_receipt_events(receipt["logs"])["GrantRevoked"]
    result = {"grant_id": ident, "dataset_id": int(revoked["datasetId"]), "revoked_by": revoked["by"],
              "transactionHash": receipt["transactionHash"], "blockNumber": int(receipt["blockNumber"], 16)}
    emit(result, as_json, f"grant {ident} revoked by {result['revoked_by']} (tx {result['transactionHash']})")


@group.command("show")
@click.argument("grant_id")
@acting_options
@json_option
def show(grant_id: str, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
         password_file: object, as_json: bool) -> None:
    """Show GRANT_ID and whether it is valid now."""
    ident = parse_positive_id(grant_id, "GRANT_ID")
    url, _ = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file, need_key=False)
    emit(api_get(url, f"/grants/{ident}"), as_json)
