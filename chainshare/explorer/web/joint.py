"""The joint-job pages: ``/joint`` lists jobs, ``/joint/{id}`` shows one (datasets, participants,
query hash, commitments, confirmations, result hash, abort or expiry, each step's transaction).
Registered by ``pages.mount_pages`` with its page decorator, so errors render as on every page."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import HTMLResponse

if TYPE_CHECKING:
    from chainshare.explorer.web.pages import PageTools

PAGE = 25


def mount_joint_pages(kit: PageTools) -> None:
    """Add the joint-job pages through ``kit.page``, reading what the joint-job API serves."""
    ep = kit.endpoints

    @kit.page("/joint")
    def joint_jobs_page(request: Request) -> HTMLResponse:
        return kit.render(request, "joint_jobs.html", page=ep["get_joint_jobs"](before=kit.cursor(request), limit=PAGE))

    @kit.page("/joint/{job_id}")
    def joint_job_page(request: Request, job_id: str) -> HTMLResponse:
        if not re.fullmatch(r"[0-9]{1,15}", job_id):
            raise kit.page_error(400, "Not a joint job id", f"{job_id[:80]!r} is not a joint job id (a number).")
        job = ep["get_joint_job"](job_id=int(job_id))
        rows = [{"agency": agency, "dataset": d, "commitment": c, "confirmation": f}
                for agency, d, c, f in zip(job["participants"], job["datasets"], job["commitments"],
                                           job["confirmations"], strict=True)]
        return kit.render(request, "joint_job.html", job=job, rows=rows)
