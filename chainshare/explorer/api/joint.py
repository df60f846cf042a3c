"""``/api/v1/joint/jobs``: joint secure-aggregation jobs as the indexer recorded them from
``JointCompute`` events (``db/joint_tables``): requester, datasets, participants, query hash, input
commitments, confirmations, result hash, abort or expiry, and each step's transaction."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import Engine, select

from chainshare.errors import NotFound
from chainshare.execution.contracts.joint import STATUS_ABORTED, STATUS_COMPLETED, STATUS_EXPIRED
from chainshare.explorer.api.app import Pager
from chainshare.explorer.api.views import hx
from chainshare.explorer.db.joint_tables import joint_job_events, joint_jobs

MAX_ID = 2**62
STATUSES = ("committing", "running", STATUS_COMPLETED, STATUS_ABORTED, STATUS_EXPIRED)
MAX_EVENTS = 200  # 16 participants x (commit + confirm) + create, deadline, close


def view_joint_job(r: Any) -> dict[str, Any]:
    participants = json.loads(r.participants)
    return {"job_id": r.id, "requester": r.requester, "datasets": json.loads(r.dataset_ids),
            "grants": json.loads(r.grant_ids), "participants": participants, "query_hash": hx(r.query_hash),
            "epsilon": r.epsilon_micro / 1_000_000, "status": r.status, "reason": r.reason,
            "commitments": json.loads(r.commitments), "confirmations": json.loads(r.confirmations),
            "outcome": r.outcome, "result_hash": hx(r.result_hash), "expires_at": r.expires_at,
            "created_height": r.created_height, "created_tx": hx(r.created_tx), "closed_height": r.closed_height}


def view_joint_event(r: Any) -> dict[str, Any]:
    return {"cursor": r.seq, "event": r.event, "agency": r.agency, "details": json.loads(r.details),
            "block_height": r.height, "timestamp_ms": r.timestamp_ms, "tx_hash": hx(r.tx_hash)}


def list_joint_jobs(engine: Engine, before: int | None = None, limit: int = 20, status: str | None = None,
                    agency: str | None = None) -> dict[str, Any]:
    """A keyset page of jobs, newest first; ``agency`` filters on the requester."""
    stmt = select(joint_jobs)
    if status is not None:
        stmt = stmt.where(joint_jobs.c.status == status)
    if agency is not None:
        stmt = stmt.where(joint_jobs.c.requester == agency)
    return Pager(engine).page(stmt, joint_jobs.c.id, before, limit, view_joint_job)


def read_joint_job(engine: Engine, job_id: int) -> dict[str, Any]:
    """One job with its events in chain order; NotFound if not indexed."""
    with engine.connect() as conn:
        r = conn.execute(select(joint_jobs).where(joint_jobs.c.id == job_id)).first()
        events = conn.execute(select(joint_job_events).where(joint_job_events.c.job_id == job_id)
                              .order_by(joint_job_events.c.seq).limit(MAX_EVENTS)).all()
    if r is None:
        raise NotFound(f"no joint job {job_id} indexed")
    return {**view_joint_job(r), "events": [view_joint_event(e) for e in events]}


def create_joint_router(engine: Engine) -> APIRouter:
    """The joint-job endpoints over ``engine``."""
    router = APIRouter(tags=["joint secure aggregation"])

    @router.get("/api/v1/joint/jobs", summary="Joint secure-aggregation jobs, newest first (keyset by id)")
    def get_joint_jobs(before: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                       status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
                       agency: Annotated[str | None, Query(max_length=128,
                                                           description="requester")] = None) -> dict[str, Any]:
        return list_joint_jobs(engine, before, limit, status, agency)

    @router.get("/api/v1/joint/jobs/{job_id}", summary="One joint job with every step and its transaction")
    def get_joint_job(job_id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> dict[str, Any]:
        return read_joint_job(engine, job_id)

    return router
