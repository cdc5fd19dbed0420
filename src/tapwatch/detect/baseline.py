"""The baseline: what was normal while learning (or was learned from an alert).

Entries are (kind, key) with first/last seen and a magnitude. Keys are plain text built
by the functions below, so a person can read them and `learn` can add them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.store.detect_models import BaselineEntry
from tapwatch.store.inventory import chunks, upsert_for

CONNECTION, PAIR, PROTOCOL, FUNCTION = "connection", "pair", "protocol", "function"
VOLUME, ARP, GAP, MALFORMED = "volume", "arp", "gap", "malformed"


def endpoint(mac: str | None, ip: str | None) -> str:
    return f"{mac or ''}/{ip or ''}"


def pair_key(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def connection_key(client: str, server: str, transport: str, port: int) -> str:
    return f"{client}>{server} {transport}/{port}"


def protocol_key(client: str, server: str, protocol: str) -> str:
    return f"{client}>{server} {protocol}"


def function_key(src: str, dst: str, protocol: str, code: int | str) -> str:
    return f"{src}>{dst} {protocol}:{code}"


@dataclass
class _Pending:
    first: datetime
    last: datetime
    count: int
    value: float
    source: str


class Baseline:
    """The whole baseline in memory for one run; additions are written by `flush`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.known: dict[tuple[str, str], float] = {
            (k, key): v for k, key, v in session.execute(
                select(BaselineEntry.kind, BaselineEntry.key, BaselineEntry.value))}
        self.pending: dict[tuple[str, str], _Pending] = {}

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self.known or item in self.pending

    def value(self, kind: str, key: str) -> float | None:
        p = self.pending.get((kind, key))
        if p is not None:
            return max(p.value, self.known.get((kind, key), p.value))
        return self.known.get((kind, key))

    def add(self, kind: str, key: str, ts: datetime, value: float = 0.0, count: int = 1,
            source: str = "learning") -> None:
        p = self.pending.get((kind, key))
        if p is None:
            self.pending[(kind, key)] = _Pending(ts, ts, count, value, source)
        else:
            p.first, p.last = min(p.first, ts), max(p.last, ts)
            p.count += count
            p.value = max(p.value, value)

    def flush(self) -> int:
        """Write pending entries; returns how many were new."""
        if not self.pending:
            return 0
        insert = upsert_for(self.session)
        rows = [{"kind": k, "key": key, "first_seen": p.first, "last_seen": p.last, "count": p.count,
                 "value": p.value, "source": p.source} for (k, key), p in self.pending.items()]
        new = sum(1 for item in self.pending if item not in self.known)
        # one statement run for many rows: a VALUES list of thousands of bound parameters
        # would be compiled anew each time, slower than the database work itself
        stmt = insert(BaselineEntry)
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "key"],
            set_={"last_seen": stmt.excluded.last_seen,
                  "count": BaselineEntry.count + stmt.excluded.count,
                  "value": _greatest(self.session, BaselineEntry.value, stmt.excluded.value)})
        for part in chunks(rows):
            self.session.execute(stmt, part)
        for item, p in self.pending.items():
            self.known[item] = max(p.value, self.known.get(item, p.value))
        self.pending.clear()
        return new


def _greatest(session: Session, a, b):  # type: ignore[no-untyped-def]
    from sqlalchemy import func

    name = session.get_bind().dialect.name
    return func.greatest(a, b) if name == "postgresql" else func.max(a, b)
