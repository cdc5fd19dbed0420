"""Keeping PostgreSQL's statistics of the inventory tables current while sensors fill them.

Uploads grow devices, addresses and connections by millions of rows. Until a table is
analyzed the planner guesses its size, and a guess of a few thousand rows turns the
identity queries (`… WHERE device_id IN (…)`) into full scans. Autovacuum analyzes in
time on a default server, but not when it is switched off or lagging behind a bulk
upload, so the console analyzes a table itself once a fifth of it changed since the last
time (autovacuum's own rule is a tenth; this is a fallback, not a replacement).
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

TABLES = ("devices", "addresses", "connections")
SHARE = 0.2  # of a table changed since its last analysis
FLOOR = 2000  # rows changed, however small the table
EVERY = 5.0  # seconds between checks, per process

_last_check = 0.0


def refresh(engine: Engine) -> list[str]:
    """Analyze the inventory tables that changed enough; the ones analyzed (PostgreSQL only).

    Runs outside the batch transactions: ANALYZE of one table waits for another's.
    """
    global _last_check
    now = time.monotonic()
    if engine.dialect.name != "postgresql" or now - _last_check < EVERY:
        return []
    _last_check = now
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.relname, s.n_mod_since_analyze, greatest(c.reltuples, 0) FROM pg_stat_user_tables s "
            "JOIN pg_class c ON c.oid = s.relid WHERE s.relid = ANY(CAST(:names AS regclass[]))"),
            {"names": list(TABLES)}).all()
        stale = [name for name, changed, size in rows if changed > max(FLOOR, SHARE * size)]
        for name in stale:
            conn.execute(text(f"ANALYZE {name}"))
        conn.commit()
    return stale
