"""The schema check every command makes before it touches the database."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from store.db import MIGRATIONS_DIR, SCHEMA_REVISION, current_revisions, make_engine, upgrade_schema


def test_the_revision_the_check_expects_is_alembics_head() -> None:
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_heads() == [SCHEMA_REVISION]


def test_a_new_database_is_migrated_and_an_upgraded_one_is_left_alone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert current_revisions(engine) == set()
    upgrade_schema(engine)
    assert current_revisions(engine) == {SCHEMA_REVISION}
    assert "enquiries" in sa.inspect(engine).get_table_names()
    upgrade_schema(engine)  # a second call finds the head and does nothing
    assert current_revisions(engine) == {SCHEMA_REVISION}
    engine.dispose()


def test_the_migrations_build_exactly_the_tables_the_code_declares(engine: sa.Engine) -> None:
    """store/tables.py and the Alembic migrations describe one schema (on SQLite and PostgreSQL)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from store.tables import Base

    with engine.connect() as connection:
        # SQLite reflects FLOAT as DOUBLE and so on: types are compared on PostgreSQL, the rest on both.
        compare_type = engine.dialect.name == "postgresql"
        context = MigrationContext.configure(connection, opts={"compare_type": compare_type})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
