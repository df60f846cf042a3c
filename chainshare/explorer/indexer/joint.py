"""Folds ``JointCompute`` events into the explorer's joint-job tables (``db/joint_tables``).

Pure bookkeeping over decoded events, in chain order: ``JointJobCreated`` makes the row,
``JointJobDeadline`` sets its deadline, each ``JointInputCommitted`` / ``JointResultConfirmed`` fills
the participant's slot, and ``JointResultRecorded`` / ``JointJobAborted`` / ``JointJobExpired``
close it. Every event is also kept as a history row linked to its transaction."""

from __future__ import annotations

import json
from typing import Any, Protocol

from chainshare.explorer.db.joint_tables import joint_job_events, joint_jobs
from chainshare.explorer.indexer.decode import dumps


class Entities(Protocol):
    def get(self, table: Any, key: Any) -> dict[str, Any] | None: ...
    def put(self, table: Any, key: Any, row: dict[str, Any]) -> None: ...
    def touch(self, table: Any, key: Any) -> None: ...


CONTRACT = "JointCompute"
TABLES = (joint_jobs,)  # keyed tables the writer flushes


def _unhex(v: str) -> bytes:
    return bytes.fromhex(v[2:])


def _slot(job: dict[str, Any], column: str, agency: str, value: Any) -> None:
    participants = json.loads(job["participants"])
    if agency in participants:
        values = json.loads(job[column])
        values[participants.index(agency)] = value
        job[column] = dumps(values)


def apply_joint_event(ents: Entities, inserts: dict[str, list[dict[str, Any]]], ev: Any, height: int,
                      timestamp_ms: int) -> None:
    """Apply one decoded JointCompute event ``ev`` (with ``ev.args``) of block ``height``."""
    a, job_id = ev.args, int(ev.args["jobId"])
    agency = a.get("participant") or a.get("by") or a.get("requester")
    inserts[joint_job_events.name].append({
        "seq": ev.seq, "job_id": job_id, "event": ev.event, "agency": agency, "details": dumps(a),
        "height": height, "timestamp_ms": timestamp_ms, "tx_hash": ev.tx_hash})
    if ev.event == "JointJobCreated":
        n = len(a["participants"])
        ents.put(joint_jobs, job_id, {
            "id": job_id, "requester": a["requester"], "dataset_ids": dumps(a["datasetIds"]),
            "grant_ids": dumps(a["grantIds"]), "participants": dumps(a["participants"]),
            "query_hash": _unhex(a["queryHash"]), "epsilon_micro": int(a["epsilonMicro"]), "status": "committing",
            "reason": None, "commitments": dumps([None] * n), "confirmations": dumps([None] * n), "outcome": None,
            "result_hash": None, "expires_at": None, "created_height": height, "created_tx": ev.tx_hash,
            "closed_height": None})
        return
    job = ents.get(joint_jobs, job_id)
    if job is None:  # indexed from a database created after the job: keep the history row only
        return
    if ev.event == "JointJobDeadline":
        job["expires_at"] = int(a["expiresAt"])
    elif ev.event == "JointInputCommitted":
        _slot(job, "commitments", a["participant"], a["commitment"])
        if None not in json.loads(job["commitments"]):
            job["status"] = "running"
    elif ev.event == "JointResultConfirmed":
        _slot(job, "confirmations", a["participant"], {"outcome": a["outcome"], "result_hash": a["resultHash"]})
    elif ev.event == "JointResultRecorded":
        job.update(status="completed", outcome=a["outcome"], result_hash=_unhex(a["resultHash"]),
                   closed_height=height)
    elif ev.event == "JointJobAborted":
        job.update(status="aborted", reason=a["reason"], closed_height=height)
    elif ev.event == "JointJobExpired":
        job.update(status="expired", reason=f"expired at block time {a['expiresAt']}", closed_height=height)
    ents.touch(joint_jobs, job_id)
