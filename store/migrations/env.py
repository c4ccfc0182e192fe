"""Alembic environment: runs on the connection `store.db.upgrade_schema` hands over."""

from __future__ import annotations

from alembic import context

from store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - `alembic` command line without the app
    raise SystemExit("run migrations with `triage db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
