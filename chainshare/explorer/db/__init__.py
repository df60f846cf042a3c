"""The explorer database: schema (SQLAlchemy Core), engines for SQLite and PostgreSQL, migrations."""
