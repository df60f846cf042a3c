"""Alembic environment: runs on the engine the explorer hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from chainshare.explorer.db.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    context.run_migrations()
