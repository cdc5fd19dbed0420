"""Alembic environment: runs on the connection tapwatch hands over, or on the configured URL."""

from alembic import context
from sqlalchemy import create_engine

from tapwatch.store.schema import Base

config = context.config


def run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


conn = config.attributes.get("connection")
if conn is not None:
    run(conn)
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as c:
        run(c)
        c.commit()
