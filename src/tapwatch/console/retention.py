"""Retention: purge devices inactive longer than the period, and alerts closed longer ago.

A device's inactivity is measured against the newest traffic in the inventory when that is
older than now: an inventory built from old capture files, or one whose sensors are all
down, is not wiped just because the wall clock moved on. Closed alerts age by wall time.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, tuple_
from sqlalchemy.orm import Session

from tapwatch.store.alert_models import Alert
from tapwatch.store.console_models import audit, get_setting, utcnow
from tapwatch.store.device_admin import _detach
from tapwatch.store.inventory import chunks, iso
from tapwatch.store.models import Address, Connection, Device, Fact, ProtocolError

log = logging.getLogger("tapwatch.console")


@dataclass
class RetentionResult:
    days: int
    device_cutoff: datetime | None
    alert_cutoff: datetime | None
    devices: int = 0
    connections: int = 0
    alerts: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["device_cutoff"] = iso(self.device_cutoff)
        out["alert_cutoff"] = iso(self.alert_cutoff)
        return out


def run(session: Session, actor: str = "system") -> RetentionResult:
    """Purge what is older than the retention setting (0 days keeps everything); audited."""
    days = int(get_setting(session, "retention_days") or 0)
    if days <= 0:
        return RetentionResult(days, None, None)
    now = utcnow()
    newest = session.scalar(select(func.max(Device.last_seen)))
    reference = min(now, newest) if newest is not None else now
    result = RetentionResult(days, reference - timedelta(days=days), now - timedelta(days=days))
    ids = list(session.scalars(select(Device.id).where(Device.last_seen < result.device_cutoff)))
    for part in chunks(ids):
        keys = list(session.execute(select(Address.mac, Address.ip).where(Address.device_id.in_(part))))
        result.connections += session.execute(delete(Connection).where(or_(
            Connection.client_device_id.in_(part), Connection.server_device_id.in_(part)),
            Connection.last_seen < result.device_cutoff)).rowcount or 0  # type: ignore[attr-defined]
        for kpart in chunks(keys):
            pairs = [tuple(k) for k in kpart]
            session.execute(delete(Fact).where(tuple_(Fact.mac, Fact.ip).in_(pairs)))
            session.execute(delete(ProtocolError).where(
                tuple_(ProtocolError.mac, ProtocolError.ip).in_(pairs)))
        session.execute(delete(Address).where(Address.device_id.in_(part)))
        _detach(session, list(part))
        gone = session.execute(delete(Device).where(Device.id.in_(part)))
        result.devices += gone.rowcount or 0  # type: ignore[attr-defined]
    purged = session.execute(delete(Alert).where(
        Alert.status == "closed", Alert.closed_at.is_not(None), Alert.closed_at < result.alert_cutoff))
    result.alerts = purged.rowcount or 0  # type: ignore[attr-defined]
    if result.devices or result.alerts:
        audit(session, actor, "retention.purge", "inventory", None, **result.as_dict())
        log.info("retention purged %d devices, %d connections, %d closed alerts",
                 result.devices, result.connections, result.alerts)
    return result
