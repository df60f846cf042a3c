"""Engines for the explorer database and the migrations that bring a database to this code's schema.

``--db`` takes a SQLAlchemy URL: ``sqlite:///path.db`` (the embedded default) or
``postgresql+psycopg://user@host/db``. A bare path is taken as a SQLite file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from chainshare.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_db_url(url: str) -> str:
    """A SQLAlchemy URL for ``url``; a path without a scheme is a SQLite file."""
    if "://" not in url:
        return "sqlite:///" + str(Path(url).resolve())
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def get_db_kind(url: str) -> str:
    return "postgresql" if normalize_db_url(url).startswith("postgresql") else "sqlite"


def redact_db_url(url: str) -> str:
    """The URL without its password (for logs, status and explorer.json)."""
    try:
        return make_url(normalize_db_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def create_db_engine(url: str, *, readonly: bool = False, pool_size: int = 5) -> Engine:
    """An engine for ``url``; SQLite in WAL mode (readers never block the one writer)."""
    norm = normalize_db_url(url)
    try:
        parsed = make_url(norm)
    except ArgumentError as exc:
        raise ConfigError(f"--db {redact_db_url(url)!r} is not a database URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError("--db must name a SQLite file (an in-memory database is not shared across processes)")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(norm, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite would commit before every DDL statement; take transactions over (below) so a
            # migration killed half-way leaves nothing behind (SQLAlchemy's documented recipe)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
            cur.execute("PRAGMA busy_timeout=30000")
            if readonly:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"--db: unsupported database {parsed.get_backend_name()!r} (use sqlite or postgresql)")
    return create_engine(norm, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                         connect_args={"connect_timeout": 10})


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def apply_migrations(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the indexer does this at start; idempotent)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def apply_downgrade(engine: Engine, revision: str) -> None:
    """Roll the schema back to ``revision`` (undoing an expand step when a release is rolled back)."""
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


# Alembic's own bookkeeping table (one row: the revision the schema is at; this project has one branch).
_ALEMBIC_VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))


def read_schema_revision(conn: Connection) -> str | None:
    """The revision the database's schema is at, None before its first migration: a table check and one
    read of Alembic's one-row table (the status endpoint asks it on every call; Alembic's MigrationContext
    cost ~2.5x as much on PostgreSQL)."""
    if not inspect(conn).has_table(_ALEMBIC_VERSION.name):
        return None
    rows = conn.execute(select(_ALEMBIC_VERSION.c.version_num)).scalars().all()
    if len(rows) > 1:
        raise ConfigError(f"the explorer database is at several Alembic heads {sorted(rows)}: merge them first")
    return rows[0] if rows else None


def get_schema_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return read_schema_revision(conn)


def get_head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()  # type: ignore[arg-type]
    assert head is not None
    return head


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("progress")
