"""inventory search: the console's free-text search through a trigram index on PostgreSQL

Revision ID: 0012x
Revises: 0011x
Create Date: 2026-11-28 11:00:00.000000

The inventory's `q=` is a substring match (`lower(col) LIKE lower('%text%')`) over name, IP,
MAC, vendor, model and OS. A B-tree cannot serve a match in the middle of a value, so on
100,000 devices every search read the whole table, twice (page and count). A GIN index of
pg_trgm trigrams over the same lower() expressions answers those LIKEs directly, and the
database keeps it current on every insert and update: nothing in the writers has to know.

pg_trgm is an extension. It is created (in `public`, so that dropping a tenant's schema
never drops it for the others) when the role may; if it may not, or the server lacks it,
the migration leaves the index out, says so, and search stays correct, only slower. SQLite
has no index for a substring match; its search stays a scan.
"""

import logging

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

revision = '0012x'
down_revision = '0011x'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

INDEX = "ix_devices_search"
# what tapwatch.console.queries searches today (models.SEARCH_COLUMNS), frozen as of this revision
COLUMNS = ("name", "ip", "mac", "vendor", "model", "os")


def _trigram_schema(conn: Connection) -> str | None:
    return conn.execute(text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'")).scalar()


def _ensure_trigrams(conn: Connection) -> str | None:
    """The schema pg_trgm lives in, creating the extension if needed; None when it cannot be."""
    found = _trigram_schema(conn)
    if found:
        return found
    # `public` first; a role that may not create there may still own its current schema
    for statement in ("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
                      "CREATE EXTENSION IF NOT EXISTS pg_trgm"):
        try:
            with conn.begin_nested():  # a refusal must not abort the migration's transaction
                conn.execute(text(statement))
        except DBAPIError as e:
            # also what a concurrent migration creating it first looks like: look again
            log.info("%s: %s", statement, str(e.orig).strip().splitlines()[0])
        found = _trigram_schema(conn)
        if found:
            return found
    return None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    schema = _ensure_trigrams(conn)
    if schema is not None:
        ops = conn.dialect.identifier_preparer.quote_schema(schema) + ".gin_trgm_ops"
        keys = ", ".join(f"lower({c}) {ops}" for c in COLUMNS)
        try:
            with conn.begin_nested():  # e.g. the extension's schema is not usable by this role
                conn.execute(text(f"CREATE INDEX {INDEX} ON devices USING gin ({keys})"))
            return
        except DBAPIError as e:
            log.info("CREATE INDEX %s: %s", INDEX, str(e.orig).strip().splitlines()[0])
    log.warning("pg_trgm is not usable by this role, so the inventory search has no index and scans "
                "the devices (correct, only slower). A role that may can add it later: CREATE EXTENSION "
                "pg_trgm; CREATE INDEX %s ON devices USING gin (%s)", INDEX,
                ", ".join(f"lower({c}) gin_trgm_ops" for c in COLUMNS))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # the extension stays: other schemas of the database may use it
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
