"""REST endpoints of the data plane, mounted under /api/v1 (documented in the node's OpenAPI).

Reads (anyone who can reach the API): ``GET /datasets``, ``/datasets/{id}``, ``/datasets/{id}/audit``
and ``/grants/{id}``, from this node's finalized state and log indexes.

Acting for this node's agency (EIP-191 ``personal_sign`` signatures by one of its accounts; see
``chainshare.sharing.protocol`` for the exact messages). Every signed message names its audience
(this node's name and the chain id), a time (``X-Chainshare-Timestamp``, unix seconds, within 300 s
of this node's clock) and a nonce (``X-Chainshare-Nonce``, 16..64 random bytes as hex); the node
serves each signed request once, ever: the record of what it served is on disk, checked and
written in one step before any work starts (403 for a replay, even after a restart).

- ``POST /vault?format=csv|jsonl[&min_group=N]`` streams the request body into the encrypted vault,
  never holding it in memory (the one path exempt from the API's 1 MiB body limit; the vault's own
  limit applies, 10 GiB by default). Headers: ``X-Chainshare-Content-Hash`` (Keccak-256
  of the bytes), ``X-Chainshare-Signature`` over ``compute_upload_message``, timestamp, nonce and
  optionally ``X-Chainshare-Schema`` (the schema JSON, base64url). The signature is checked BEFORE
  any byte is stored (it signs the declared hash), and after the stream the bytes must hash to the
  declared value, else the new vault entry is deleted; the rows are then checked against the schema
  (or one is inferred from the first rows, with no column personal). Answers 201 with the content
  hash, size and schema to register on chain with ``Datasets.register``.
- ``POST /datasets/{id}/fetch`` ``{"grant_id": n | null}`` fetches the dataset from its owner's node
  under a read grant of this agency (null: the newest valid one), verifies it, and streams it back
  (the node keeps no copy). Headers: signature over ``compute_fetch_message``, timestamp, nonce.
- ``POST /datasets/{id}/query`` ``{"grant_id": n | null, "query": {...}}`` runs an aggregate query
  on the owner's node under a compute grant; answers the result and its on-chain hashes.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from chainshare.api.errors import ErrorBody
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.sharing import protocol as wire
from chainshare.sharing.records import (
    MAX_ID,
    audit_dataset,
    count_datasets,
    dataset_json,
    grant_json,
    read_dataset,
    read_grant,
)
from chainshare.sharing.schema import Schema, canonical_json, validate_schema
from chainshare.sharing.service import (
    ConfiguredNode,
    SharingService,
    SharingUnavailable,
    get_sharing_service,
)

MAX_SCHEMA_HEADER = 48 * 1024
_ID = Annotated[int, Path(ge=1, le=MAX_ID)]
_HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
_SIGNATURE_PATTERN = r"^(0x)?[0-9a-fA-F]{130}$"
_NONCE_PATTERN = r"^(0x)?[0-9a-fA-F]{32,128}$"
# What a route that needs this node's data plane answers when the node has none (or it is not connected).
DATA_PLANE_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "this node's data plane is not configured, cannot start with its "
          "configuration, or is not connected (SharingUnavailable)"}}
# What a route that asks the dataset owner's node adds: that node failed in a way it did not name, or its
# delivery did not verify (the owner failed, not the request).
OWNER_NODE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **DATA_PLANE_RESPONSES,
    502: {"model": ErrorBody, "description": "the dataset owner's node failed or its delivery did not verify "
          "(DeliveryFailed); nothing of it was kept"}}


class FetchBody(BaseModel):
    grant_id: int | None = Field(None, ge=1, le=MAX_ID,
                                 description="the read grant to use (default: the newest valid one of this agency)")


class QueryBody(BaseModel):
    grant_id: int | None = Field(None, ge=1, le=MAX_ID,
                                 description="the compute grant to use (default: the newest valid one)")
    query: dict[str, Any] = Field(..., description='aggregate query: {"select": [...], "group_by": [...], '
                                                   '"where": [...]} (see chainshare.sharing.compute)')


def get_data_plane(node: ConfiguredNode) -> SharingService:
    """The node's data plane for a request that checked out; SharingUnavailable (503) if the node has
    none or its configuration cannot start one (the node is misconfigured, not the request)."""
    try:
        return get_sharing_service(node)
    except SharingUnavailable:
        raise
    except ChainshareError as exc:
        raise SharingUnavailable(f"this node's data plane cannot start: {exc.message}") from exc


def create_sharing_router(node: ConfiguredNode) -> APIRouter:
    router = APIRouter(tags=["data sharing"])

    def audience() -> tuple[str, int]:
        return node.cfg.node.name, node.chain_id

    # -- reads ---------------------------------------------------------------------------------

    @router.get("/datasets", summary="Registered datasets, by id (keyset pagination)")
    async def list_datasets(after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
        total = count_datasets(node)
        ids = range(after + 1, min(total, after + limit) + 1)
        items = [dataset_json(read_dataset(node, i)) for i in ids]
        return {"items": items, "count": total, "next_after": ids[-1] if ids and ids[-1] < total else None}

    @router.get("/datasets/{dataset_id}", summary="One dataset with its policy text and versions")
    async def show_dataset(dataset_id: _ID) -> dict[str, Any]:
        return dataset_json(read_dataset(node, dataset_id), detail=True, node=node)

    @router.get("/datasets/{dataset_id}/audit",
                summary="The dataset's audit trail: requests, decisions with reasons, grants, revocations, "
                        "deliveries and computations, in chain order")
    async def audit(dataset_id: _ID,
              after: Annotated[str | None, Query(max_length=64, description="cursor from 'next'")] = None,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        return audit_dataset(node, dataset_id, after=after, limit=limit)

    @router.get("/grants/{grant_id}", summary="One grant and whether it is valid now")
    async def show_grant(grant_id: _ID) -> dict[str, Any]:
        return grant_json(node, read_grant(node, grant_id))

    # -- the vault -----------------------------------------------------------------------------

    @router.post(
        "/vault", status_code=201, summary="Upload a dataset into this node's encrypted vault (streamed)",
        responses=DATA_PLANE_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def upload(
        request: Request,
        fmt: Annotated[str, Query(alias="format", pattern="^(csv|jsonl)$", description="dataset format")],
        content_hash: Annotated[str, Header(alias=wire.CONTENT_HASH_HEADER, pattern=_HASH_PATTERN,
                                            description="Keccak-256 of the uploaded bytes")],
        signature: Annotated[str, Header(alias=wire.SIGNATURE_HEADER, pattern=_SIGNATURE_PATTERN,
                                         description="personal_sign of compute_upload_message")],
        timestamp: Annotated[str, Header(alias=wire.TIMESTAMP_HEADER, max_length=12)],
        nonce: Annotated[str, Header(alias=wire.NONCE_HEADER, pattern=_NONCE_PATTERN)],
        schema_b64: Annotated[str | None, Header(alias=wire.SCHEMA_HEADER, max_length=MAX_SCHEMA_HEADER,
                                                 description="schema JSON, base64url")] = None,
        min_group: Annotated[int | None, Query(ge=2, le=1_000_000)] = None,
    ) -> JSONResponse:
        declared = bytes.fromhex(content_hash[2:])
        ts = wire.parse_timestamp_header(timestamp)
        message = wire.compute_upload_message(declared, *audience(), ts, wire.parse_nonce_header(nonce))
        schema = _parse_schema_header(schema_b64) if schema_b64 is not None else None
        sharing = get_data_plane(node)  # the request is well-formed: only now does this node's configuration matter
        sharing.admit_signed_request(message, wire.parse_signature_header(signature), ts)
        result = await sharing.receive_upload(request.stream(), fmt=fmt, declared_hash=declared, schema=schema,
                                              min_group=min_group)
        return JSONResponse(result.to_json(), status_code=201)

    # -- fetch and query -----------------------------------------------------------------------

    @router.post("/datasets/{dataset_id}/fetch",
                 summary="Fetch a dataset from its owner's node under a read grant of this agency",
                 response_class=StreamingResponse,
                 responses={200: {"content": {"application/octet-stream": {}},
                                  "description": "the verified dataset (headers X-Chainshare-*)"},
                            **OWNER_NODE_RESPONSES})
    async def fetch(
        dataset_id: _ID,
        body: Annotated[FetchBody, Body()],
        signature: Annotated[str, Header(alias=wire.SIGNATURE_HEADER, pattern=_SIGNATURE_PATTERN)],
        timestamp: Annotated[str, Header(alias=wire.TIMESTAMP_HEADER, max_length=12)],
        nonce: Annotated[str, Header(alias=wire.NONCE_HEADER, pattern=_NONCE_PATTERN)],
    ) -> StreamingResponse:
        ts = wire.parse_timestamp_header(timestamp)
        message = wire.compute_fetch_message(dataset_id, body.grant_id, *audience(), ts,
                                             wire.parse_nonce_header(nonce))
        sharing = get_data_plane(node)
        sharing.admit_signed_request(message, wire.parse_signature_header(signature), ts)
        result = await sharing.fetch(dataset_id, grant_id=body.grant_id)
        headers = {
            "X-Chainshare-Dataset": str(result.dataset_id), "X-Chainshare-Grant": str(result.grant_id),
            "X-Chainshare-Action": result.action, "X-Chainshare-Format": result.fmt,
            "X-Chainshare-Content-Hash": "0x" + result.content_hash.hex(),
            "X-Chainshare-Delivered-Hash": "0x" + result.delivered_hash.hex(),
            "X-Chainshare-Record-Tx": "0x" + result.record_tx.hex() if result.record_tx else "",
            "X-Chainshare-Recorded-Height": str(result.recorded_height),
            "Content-Length": str(result.size),
            "Content-Disposition": f'attachment; filename="dataset-{result.dataset_id}.{result.fmt}"',
        }
        # The node keeps no copy: the file is unlinked once open, so nothing stays behind even if the
        # client goes away mid-download.
        file = open(result.path, "rb")  # noqa: SIM115 (closed by the generator)
        os.unlink(result.path)
        return StreamingResponse(_stream(file), media_type="application/octet-stream", headers=headers)

    @router.post("/datasets/{dataset_id}/query",
                 summary="Run an aggregate query on the owner's node under a compute grant of this agency",
                 responses=OWNER_NODE_RESPONSES)
    async def query(
        dataset_id: _ID,
        body: Annotated[QueryBody, Body()],
        signature: Annotated[str, Header(alias=wire.SIGNATURE_HEADER, pattern=_SIGNATURE_PATTERN)],
        timestamp: Annotated[str, Header(alias=wire.TIMESTAMP_HEADER, max_length=12)],
        nonce: Annotated[str, Header(alias=wire.NONCE_HEADER, pattern=_NONCE_PATTERN)],
    ) -> dict[str, Any]:
        ts = wire.parse_timestamp_header(timestamp)
        digest = wire.compute_query_digest(canonical_json(body.query))
        message = wire.compute_query_message(dataset_id, body.grant_id, digest, *audience(), ts,
                                             wire.parse_nonce_header(nonce))
        sharing = get_data_plane(node)
        sharing.admit_signed_request(message, wire.parse_signature_header(signature), ts)
        outcome = await sharing.query(dataset_id, body.query, grant_id=body.grant_id)
        return outcome.to_json()

    return router


_METRICS = {
    "deliveries_served": "Deliveries this node (the owner) streamed and recorded",
    "bytes_served": "Plaintext bytes of the deliveries this node served",
    "queries_served": "Compute-to-data queries this node answered",
    "refusals": "Data-plane requests this node refused",
    "deliveries_received": "Deliveries this node received, matched to their record and kept",
    "bytes_received": "Bytes of the deliveries this node kept",
    "deliveries_failed": "Deliveries this node (the requester) aborted or refused",
    "deliveries_revoked": "Deliveries stopped mid-stream because the grant stopped being valid",
    "records_failed": "Security events: deliveries this node could not record on chain (key withheld)",
    "records_unmatched": "Security events: deliveries whose on-chain record was missing or did not match",
}


def collect_sharing_metrics(node: object) -> Iterator[Any]:
    """Prometheus counters ``chainshare_sharing_<name>_total`` of the node's data plane, if attached."""
    from prometheus_client.core import CounterMetricFamily

    try:
        stats = get_sharing_service(node, create=False).stats  # type: ignore[arg-type]
    except SharingUnavailable:
        return
    for name, what in _METRICS.items():
        yield CounterMetricFamily(f"chainshare_sharing_{name}", f"{what} since start", value=stats.get(name, 0))


def _parse_schema_header(value: str) -> Schema:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        obj = json.loads(text)
    except ValueError:
        raise InvalidInput(f"header {wire.SCHEMA_HEADER} must be the schema JSON in base64url") from None
    return validate_schema(obj)


def _stream(file: BinaryIO, block: int = 1 << 20) -> Iterator[bytes]:
    try:
        while data := file.read(block):
            yield data
    finally:
        file.close()


__all__ = ["DATA_PLANE_RESPONSES", "OWNER_NODE_RESPONSES", "FetchBody", "QueryBody", "collect_sharing_metrics",
           "create_sharing_router", "get_data_plane"]
