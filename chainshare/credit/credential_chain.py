"""Credential objects to and from the chain, over a node's public JSON-RPC only (the CLI and the explorer use
it alike): read an issuer's public objects for a verifier, publish an issuer's objects and status lists,
record issuances, and compute a subject's credential attributes from the credit records at a height."""

from __future__ import annotations

from typing import Any

from chainshare.client import NodeClient, RpcError, call_view, transact_checked
from chainshare.credit.credentials import IssuerState, PublicObjects
from chainshare.credit.events import CreditSource
from chainshare.credit.query import get_rule_at, get_subject_records
from chainshare.credit.scoring import compute_score
from chainshare.errors import ChainshareError, ExecutionReverted, InvalidInput, NotFound
from chainshare.execution.contracts.addresses import CREDENTIAL_REGISTRY
from chainshare.execution.contracts.credential_registry import CredentialRegistry
from chainshare.execution.contracts.credit_registry import NEGATIVE, WITHDRAWN, compute_subject_key
from chainshare.execution.runtime import encode_call

REGISTRY = CredentialRegistry()
BLACK_LIST_CATEGORY = "black_list"
PENALTY_CATEGORY = "administrative_penalty"
PENALTY_WINDOW_S = 1096 * 86400  # three years of block time (one leap day included)


# -- attributes from the credit records ----------------------------------------------------------------


def compute_credit_attributes(source: CreditSource, subject: str, at: int | None = None) -> dict[str, int]:
    """The credential attributes of ``subject`` from the records at height ``at`` (default: the finalized head),
    by that block's time: ``black_list_active`` (displayed records in the black-list category),
    ``penalties_3y`` (negative administrative-penalty records decided in the last three years and not
    withdrawn), ``score`` (under the rule in force then) and ``computed_height``."""
    height, records = get_subject_records(source, subject, at)
    now = source.block_timestamp_ms(height) // 1000
    black = sum(1 for r in records if r.category == BLACK_LIST_CATEGORY and r.is_displayed(now))
    penalties = sum(1 for r in records
                    if r.category == PENALTY_CATEGORY and r.status != WITHDRAWN
                    and r.current.fields["polarity"] == NEGATIVE
                    and now - PENALTY_WINDOW_S <= r.current.fields["decisionDate"] <= now)
    score = compute_score(subject, records, get_rule_at(source, height), now)["score"]
    if score < 0:
        raise InvalidInput(f"score {score} is negative: AnonCreds predicates prove non-negative integers only")
    return {"black_list_active": black, "penalties_3y": penalties, "score": score, "computed_height": height}


# -- reading ---------------------------------------------------------------------------------------


def call_registry_view(client: NodeClient, name: str, *args: Any) -> tuple[Any, ...]:
    """A CredentialRegistry view on the node's finalized state; NotFound for "no ..." reverts."""
    try:
        return call_view(client, REGISTRY, name, *args)
    except ExecutionReverted as exc:
        if "no " in exc.message and "on chain" in exc.message:
            raise NotFound(exc.message.split(": ", 1)[-1]) from exc
        raise


def read_public_objects(client: NodeClient, cred_def_id: str, rev_reg_id: str) -> PublicObjects:
    """The issuer's schema, credential definition, revocation registry and LATEST status list as final on
    chain; NotFound if any is missing or they do not belong together."""
    cred_def_json, agency, category, schema_id, _ = call_registry_view(client, "getCredentialDefinition", cred_def_id)
    schema_json = call_registry_view(client, "getSchema", schema_id)[0]
    rev_reg_json, rev_agency, _, rev_cred_def, _ = call_registry_view(client, "getRevocationRegistry", rev_reg_id)
    if rev_cred_def != cred_def_id or rev_agency != agency:
        raise NotFound(f"revocation registry {rev_reg_id!r} is not of credential definition {cred_def_id!r}")
    status_json, timestamp, _, height = call_registry_view(client, "getStatusList", rev_reg_id)
    return PublicObjects(agency, category, schema_id, schema_json, cred_def_id, cred_def_json, rev_reg_id,
                         rev_reg_json, status_json, timestamp, height)


# -- writing (as the issuer agency) ------------------------------------------------------------------


def _send(client: NodeClient, key: bytes, name: str, *args: Any) -> dict[str, Any]:
    try:
        receipt = transact_checked(client, key, CREDENTIAL_REGISTRY, encode_call(REGISTRY, name, *args),
                                   failure=f"CredentialRegistry.{name} reverted", no_reason="no reason", timeout=120)
    except (RpcError, ExecutionReverted) as exc:
        raise ChainshareError(f"CredentialRegistry.{name} refused: {exc.message}") from exc
    return {"method": name, "transaction": receipt["transactionHash"], "block": int(receipt["blockNumber"], 16)}


def _exists(client: NodeClient, view: str, object_id: str) -> bool:
    try:
        call_registry_view(client, view, object_id)
    except NotFound:
        return False
    return True


def publish_issuer_objects(client: NodeClient, key: bytes, state: IssuerState) -> list[dict[str, Any]]:
    """Publish what of ``state``'s schema, definition and registry (with its current status list) is not on
    chain yet; the receipts of what was sent."""
    sent = []
    if not _exists(client, "getSchema", state.schema_id):
        sent.append(_send(client, key, "publishSchema", state.category, state.schema_id, state.schema_json))
    if not _exists(client, "getCredentialDefinition", state.cred_def_id):
        sent.append(_send(client, key, "publishCredentialDefinition", state.cred_def_id, state.cred_def_json))
    if not _exists(client, "getRevocationRegistry", state.rev_reg_id):
        sent.append(_send(client, key, "publishRevocationRegistry", state.rev_reg_id, state.rev_reg_def_json,
                          state.status_timestamp, state.status_list_json))
    return sent


def publish_status_list(client: NodeClient, key: bytes, state: IssuerState, reason: str) -> dict[str, Any]:
    return _send(client, key, "publishStatusList", state.rev_reg_id, state.status_timestamp, state.status_list_json,
                 reason)


def record_issuance(client: NodeClient, key: bytes, state: IssuerState, index: int, subject: str,
                    computed_at: int) -> dict[str, Any]:
    return _send(client, key, "recordIssuance", state.rev_reg_id, index, compute_subject_key(subject), computed_at)


def get_chain_time(client: NodeClient) -> int:
    """The finalized head's block time in seconds (what status-list timestamps follow)."""
    return int(client.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
