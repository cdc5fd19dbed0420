"""Opening the inventory database: URL resolution, SQLite tuning, schema migration."""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DB = "tapwatch.db"
MIGRATIONS = Path(__file__).with_name("migrations")


def database_url(db: str | None = None) -> str:
    """`--db` value, else $TAPWATCH_DB, else ./tapwatch.db; a value with '://' is a URL."""
    value = db or os.environ.get("TAPWATCH_DB") or DEFAULT_DB
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # every engine open_engine made


def dispose_all() -> None:
    """Close the pooled connections of every engine still around (a program about to exit:
    SQLite folds its write-ahead log back into the database file when the last one closes)."""
    for engine in list(_engines):
        engine.dispose()


def open_engine(db: str | None = None, *, migrate: bool = True) -> Engine:
    """Engine for the inventory, with the schema upgraded to the latest migration."""
    url = database_url(db)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    _engines.add(engine)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        upgrade(engine)
    return engine


def upgrade(engine: Engine) -> None:
    """Bring the schema to every head (cheap when it is already there).

    Capabilities add their tables on branches of their own, so there may be several heads.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config(str(engine.url))
    with engine.begin() as conn:
        if inspect(conn).has_table("alembic_version"):
            heads = set(ScriptDirectory.from_config(cfg).get_heads())
            if set(MigrationContext.configure(conn).get_current_heads()) == heads:
                return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
