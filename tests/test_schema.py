"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from tapwatch.store.db import open_engine
from tapwatch.store.schema import Base


def _differences(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        return compare_metadata(ctx, Base.metadata)


def test_sqlite_migrations_match_models(tmp_path) -> None:
    engine = open_engine(str(tmp_path / "t.db"))
    assert _differences(engine) == []


def test_upgrade_twice_is_a_no_op(tmp_path) -> None:
    path = str(tmp_path / "t.db")
    open_engine(path).dispose()
    engine = open_engine(path)
    with engine.connect() as conn:
        versions = conn.execute(text("select version_num from alembic_version")).scalars().all()
    assert versions  # one row per head


def test_postgresql_migrations_match_models(pg_url) -> None:
    engine = open_engine(pg_url)
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()
