"""REST for joint secure aggregation: ``POST /joint/query`` (signed by an account of this node's
agency, like every data-plane request) runs a joint job over several owners' datasets and returns
the released result; ``GET /joint/jobs/{id}`` reads a job's on-chain record."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path
from pydantic import BaseModel, Field

from chainshare.api.sharing import DATA_PLANE_RESPONSES, get_data_plane
from chainshare.logs import log_event
from chainshare.privacy.service import (
    compute_joint_opening_message,
    compute_joint_query_message,
    get_joint_service,
    read_joint_job,
)
from chainshare.sharing import protocol as wire
from chainshare.sharing.records import MAX_ID
from chainshare.sharing.schema import canonical_json

log = logging.getLogger("chainshare.api.joint")


class JointQueryBody(BaseModel):
    datasets: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(..., min_length=2, max_length=16)
    query: dict[str, Any] = Field(..., description="joint query: a compute query plus 'domain' for group_by columns")


def create_joint_router(node: Any) -> APIRouter:
    router = APIRouter(tags=["joint secure aggregation"])

    def admit(message_of: Callable[[str, int, int, bytes], str], signature: str, timestamp: str, nonce: str) -> bytes:
        """The signer of a request signed over ``message_of(node, chain id, time, nonce)`` (an account
        of this node's agency, fresh, never replayed)."""
        ts = wire.parse_timestamp_header(timestamp)
        message = message_of(node.cfg.node.name, node.chain_id, ts, wire.parse_nonce_header(nonce))
        signed = wire.parse_signature_header(signature)
        # the request is well-formed: only now does this node's data plane (503 when not configured) matter
        return bytes(get_data_plane(node).admit_signed_request(message, signed, ts))

    @router.post("/joint/query", summary="Run a joint query over several owners' datasets (secure aggregation)",
                 responses=DATA_PLANE_RESPONSES)
    async def joint_query(
        body: Annotated[JointQueryBody, Body()],
        signature: Annotated[str, Header(alias=wire.SIGNATURE_HEADER, max_length=140)],
        timestamp: Annotated[str, Header(alias=wire.TIMESTAMP_HEADER, max_length=12)],
        nonce: Annotated[str, Header(alias=wire.NONCE_HEADER, max_length=66)],
    ) -> dict[str, Any]:
        digest = wire.compute_query_digest(canonical_json(body.query))
        admit(functools.partial(compute_joint_query_message, body.datasets, digest), signature, timestamp, nonce)
        return await get_joint_service(get_data_plane(node)).run_joint_query(body.datasets, body.query)

    @router.get("/joint/jobs/{job_id}", summary="A joint job's on-chain record")
    async def show_job(job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
        job = read_joint_job(node, job_id)  # on chain: readable on a node without a data plane
        return {"job_id": job_id, "requester": job.requester, "datasets": list(job.dataset_ids),
                "grants": list(job.grant_ids), "participants": list(job.participants),
                "query_hash": "0x" + job.query_hash.hex(), "epsilon": job.epsilon_micro / 1_000_000,
                "status": job.status, "reason": job.reason, "outcome": job.outcome,
                "result_hash": "0x" + job.result_hash.hex(),
                "commitments": ["0x" + c.hex() for c in job.commitments], "expires_at": job.expires_at}

    @router.get("/joint/jobs/{job_id}/opening", responses=DATA_PLANE_RESPONSES,
                summary="This owner's binding commitment opening (no rows, no "
                "subtotals): checks its on-chain commitment against the registered dataset version")
    async def show_binding_opening(job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
        service = get_joint_service(get_data_plane(node))
        return service.read_commitment_opening(job_id, full=False).to_json()

    @router.post("/joint/jobs/{job_id}/opening", responses=DATA_PLANE_RESPONSES,
                 summary="This owner's FULL commitment opening (its exact local "
                 "vector and salt), for an auditor: signed by an account of this node's agency")
    async def reveal_full_opening(
        job_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        signature: Annotated[str, Header(alias=wire.SIGNATURE_HEADER, max_length=140)],
        timestamp: Annotated[str, Header(alias=wire.TIMESTAMP_HEADER, max_length=12)],
        nonce: Annotated[str, Header(alias=wire.NONCE_HEADER, max_length=66)],
    ) -> dict[str, Any]:
        signer = admit(functools.partial(compute_joint_opening_message, job_id), signature, timestamp, nonce)
        opening = get_joint_service(get_data_plane(node)).read_commitment_opening(job_id, full=True)
        log_event(log, logging.WARNING, "joint commitment opening revealed", job=job_id, dataset=opening.dataset_id,
                  signer="0x" + signer.hex())
        return opening.to_json()

    return router
