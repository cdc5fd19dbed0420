"""The sensor's outbox: batches bound for the console, kept on disk until acknowledged.

Batches are rows of `sensor_outbox` in the sensor's own database, written in the same
transaction as the local inventory merge they come from (SQLite with synchronous=FULL,
so a committed flush is on disk). A batch leaves only when the console acknowledged it.
When the outbox passes its size limit, the lowest-value batches go first (health, then
connections, addresses, evidence; alerts last), oldest first, and the loss is counted
so the sensor can report it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tapwatch.sensor import wire
from tapwatch.store.console_models import utcnow
from tapwatch.store.sensor_models import OutboxBatch, SensorState

DROPPED = "outbox_dropped"


def get_state(session: Session, key: str, default: Any = None) -> Any:
    row = session.get(SensorState, key)
    return default if row is None else row.value


def set_state(session: Session, key: str, value: Any) -> None:
    row = session.get(SensorState, key)
    if row is None:
        session.add(SensorState(key=key, value=value))
    else:
        row.value = value


class Outbox:
    """Puts batches in (inside the caller's transaction), hands them out, forgets acked ones."""

    def __init__(self, limit_bytes: int = 512 << 20) -> None:
        self.limit_bytes = limit_bytes

    def put(self, session: Session, kind: str, data: dict[str, Any], records: int) -> str:
        batch_id, body = wire.encode(kind, data)
        if kind == "health":  # only the newest health matters
            session.execute(delete(OutboxBatch).where(OutboxBatch.kind == "health"))
        session.add(OutboxBatch(batch_id=batch_id, kind=kind, priority=wire.PRIORITY[kind],
                                records=records, size=len(body), created_at=utcnow(), body=body))
        session.flush()
        self._enforce_limit(session)
        return batch_id

    def _enforce_limit(self, session: Session) -> None:
        total = session.scalar(select(func.coalesce(func.sum(OutboxBatch.size), 0))) or 0
        if total <= self.limit_bytes:
            return
        victims = session.execute(
            select(OutboxBatch.seq, OutboxBatch.kind, OutboxBatch.size, OutboxBatch.records)
            .order_by(OutboxBatch.priority, OutboxBatch.seq)).all()
        dropped = dict(get_state(session, DROPPED, {}) or {})
        gone = []
        for seq, kind, size, records in victims:
            if total <= self.limit_bytes:
                break
            gone.append(seq)
            total -= size
            if kind != "health":
                dropped["batches"] = dropped.get("batches", 0) + 1
                dropped["bytes"] = dropped.get("bytes", 0) + size
                dropped["records"] = dropped.get("records", 0) + records
                by_kind = dict(dropped.get("by_kind", {}))
                by_kind[kind] = by_kind.get(kind, 0) + records
                dropped["by_kind"] = by_kind
        for i in range(0, len(gone), 500):
            session.execute(delete(OutboxBatch).where(OutboxBatch.seq.in_(gone[i:i + 500])))
        set_state(session, DROPPED, dropped)

    @staticmethod
    def next_batch(session: Session) -> OutboxBatch | None:
        """The newest health report first (it is what the console shows now), then FIFO."""
        health = session.scalar(select(OutboxBatch).where(OutboxBatch.kind == "health")
                                .order_by(OutboxBatch.seq.desc()).limit(1))
        if health is not None:
            return health
        return session.scalar(select(OutboxBatch).order_by(OutboxBatch.seq).limit(1))

    @staticmethod
    def ack(session: Session, batch_id: str) -> None:
        session.execute(delete(OutboxBatch).where(OutboxBatch.batch_id == batch_id))

    @staticmethod
    def backlog(session: Session) -> tuple[int, int]:
        """(batches, bytes) waiting, health not counted."""
        row = session.execute(select(func.count(OutboxBatch.seq),
                                     func.coalesce(func.sum(OutboxBatch.size), 0))
                              .where(OutboxBatch.kind != "health")).one()
        return int(row[0]), int(row[1])

    @staticmethod
    def dropped(session: Session) -> dict[str, Any]:
        return dict(get_state(session, DROPPED, {}) or {})
