"""Queries the pages need that the JSON API does not serve (everything else goes through the API's endpoints)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from chainshare.explorer.api import views as v
from chainshare.explorer.db import schema as s


def get_recent_signers(engine: Engine, blocks: int = 100) -> tuple[int, dict[int, int]]:
    """(blocks looked at, {validator index: QCs signed}) over the newest ``blocks`` blocks."""
    with engine.connect() as conn:
        rows = conn.execute(select(s.blocks.c.qc_signers).order_by(s.blocks.c.height.desc()).limit(blocks)).all()
    counts: dict[int, int] = {}
    for (signers,) in rows:
        for i in json.loads(signers) if signers else []:
            counts[i] = counts.get(i, 0) + 1
    return len(rows), counts


def get_agency_history(engine: Engine, agency: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest access-history rows (requests, decisions, grants...) where ``agency`` is the party."""
    dh = s.dataset_history
    with engine.connect() as conn:
        rows = conn.execute(select(dh).where(dh.c.agency == agency).order_by(dh.c.seq.desc()).limit(limit)).all()
    return [v.view_history(r) for r in rows]
