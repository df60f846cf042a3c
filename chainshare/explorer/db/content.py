"""A digest of the index content: equal digests mean two databases hold the same index."""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine, select

from chainshare.explorer.db.schema import CONTENT_TABLES


def compute_content_hash(engine: Engine) -> dict[str, str]:
    """{table: sha256 of its rows in primary-key order} for every content table (not ``sources``)."""
    out = {}
    with engine.connect() as conn:
        for t in CONTENT_TABLES:
            h = hashlib.sha256()
            stmt = select(*t.columns).order_by(*t.primary_key.columns)
            for row in conn.execute(stmt):
                h.update(repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)).encode())
            out[t.name] = h.hexdigest()
    return out
