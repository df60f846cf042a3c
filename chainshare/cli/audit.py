"""``chainshare audit --dataset ID``: everything that happened to a dataset, in chain order.

Registration and policy changes, every access request with its decision (allowed or not, the ids of
the policies that decided, Cedar's errors), grants, revocations, deliveries (content hash and bytes)
and computations (query and result hashes), each with its block, transaction and log position.
"""

from __future__ import annotations

from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, resolve_actor
from chainshare.cli.signing import api_get

PAGE = 1000


def _describe(item: dict[str, Any]) -> str:
    a = item["args"]
    name = item["event"]
    details = {
        "DatasetRegistered": lambda: f"owner={a['owner']} title={a['title']!r} hash={a['contentHash']}",
        "DatasetVersionAdded": lambda: f"version={a['version']} hash={a['contentHash']} bytes={a['sizeBytes']}",
        "DatasetPolicySet": lambda: f"policy={a['policyId']}",
        "DatasetRetired": lambda: f"by={a['owner']}",
        "AccessRequested": lambda: f"request={a['requestId']} by={a['requester']} action={a['action']} "
                                   f"purpose={a['purpose']!r}",
        "AccessDecided": lambda: f"request={a['requestId']} {'ALLOWED' if a['allowed'] else 'DENIED'} "
                                 f"policies={','.join(a['policyIds']) or '-'}"
                                 + (f" errors={'; '.join(a['errors'])}" if a["errors"] else ""),
        "GrantIssued": lambda: f"grant={a['grantId']} to={a['grantee']} action={a['action']} "
                               f"expires={a['expiresAt']}",
        "GrantRevoked": lambda: f"grant={a['grantId']} by={a['by']}",
        "DeliveryRecorded": lambda: f"grant={a['grantId']} to={a['grantee']} version={a['contentHash']} "
                                    f"delivered={a['deliveredHash']} bytes={a['bytesDelivered']}",
        "ComputationRecorded": lambda: f"grant={a['grantId']} by={a['grantee']} query={a['queryHash']} "
                                       f"result={a['resultHash']} epsilon={a['epsilonMicro'] / 1e6:g} "
                                       f"spent={a['spentMicro'] / 1e6:g}",
        "ComputationRefused": lambda: f"grant={a['grantId']} by={a['grantee']} query={a['queryHash']} "
                                      f"REFUSED {a['reason']} epsilon={a['epsilonMicro'] / 1e6:g} "
                                      f"spent={a['spentMicro'] / 1e6:g}",
        "ComputeLimitsSet": lambda: f"budget={a['budgetMicro'] / 1e6:g} queries/hour={a['queriesPerHour']} "
                                    f"by={a['by']}",
    }.get(name, lambda: str(a))()
    return f"{item['time']}  block {item['block']:>7} tx {item['tx_index']:>4} log {item['log_index']:>3}  " \
           f"{name:<20} {details}"


@click.command("audit")
@click.option("--dataset", "dataset_id", required=True, type=click.IntRange(1, 2**64 - 1),
              help="The dataset to audit.")
@acting_options
@json_option
def group(dataset_id: int, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
          password_file: object, as_json: bool) -> None:
    """The audit trail of a dataset: requests, decisions with reasons, grants, deliveries and
    computations, in chain order."""
    url, _ = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file, need_key=False)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if cursor:
            params["after"] = cursor
        page = api_get(url, f"/datasets/{dataset_id}/audit", params)
        items.extend(page["items"])
        cursor = page["next"]
        if not cursor:
            break
    result = {"dataset": page["dataset"], "head": page["head"], "items": items}
    emit(result, as_json, "\n".join(_describe(item) for item in items) or "no events")
