"""The joint-job pages: ``/joint`` lists jobs, ``/joint/{id}`` shows one (datasets, participants,
query hash, commitments, confirmations, result hash, abort or expiry, each step's transaction).
Registered by ``pages.mount_pages`` with its page decorator, so errors render as on every page."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from chainshare.explorer.api.joint import list_joint_jobs, read_joint_job

PAGE = 25


def mount_joint_pages(page: Callable[[str], Callable[..., Any]], render: Callable[..., HTMLResponse],
                      cursor: Callable[[Request], int | None], reader: Engine,
                      page_error: Callable[[int, str, str], Exception]) -> None:
    """Add the joint-job pages through ``page`` (the pages' decorator), reading what the API serves."""

    @page("/joint")
    def joint_jobs_page(request: Request) -> HTMLResponse:
        return render(request, "joint_jobs.html", page=list_joint_jobs(reader, cursor(request), PAGE))

    @page("/joint/{job_id}")
    def joint_job_page(request: Request, job_id: str) -> HTMLResponse:
        if not re.fullmatch(r"[0-9]{1,15}", job_id):
            raise page_error(400, "Not a joint job id", f"{job_id[:80]!r} is not a joint job id (a number).")
        job = read_joint_job(reader, int(job_id))
        rows = [{"agency": agency, "dataset": d, "commitment": c, "confirmation": f}
                for agency, d, c, f in zip(job["participants"], job["datasets"], job["commitments"],
                                           job["confirmations"], strict=True)]
        return render(request, "joint_job.html", job=job, rows=rows)
