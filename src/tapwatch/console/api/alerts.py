"""Alerts: list, get, change status (new / active / closed), audited.

The detection engine (issue 10) adds "learn", "mute" and the pcap download here, as routes
of their own declaring rbac.ALERTS_WRITE / rbac.ALERTS_READ; see ALERT_ACTIONS below.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tapwatch.console import queries, rbac
from tapwatch.console.api.plans import entitled
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, tx
from tapwatch.store.alert_models import SEVERITIES, STATUSES, Alert
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.inventory import iso

# every alert route needs a plan in force on the subscription asked for (tapwatch.plans)
router = APIRouter(tags=["alerts"], dependencies=[Depends(entitled("alerts"))])

# Actions beyond a status change, shown on the alert page when registered here:
# name -> (label, permission); the page posts to /alerts/{id}/{name}. The detection engineer
# registers "learn", "mute" and "pcap"
# together with their routes; until then the page shows none (no buttons that do nothing).
ALERT_ACTIONS: dict[str, tuple[str, str]] = {}


def alert_json(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id, "type": a.type, "title": a.title, "engine": a.engine, "severity": a.severity,
        "category": a.category, "mitre": a.mitre, "status": a.status, "protocol": a.protocol,
        "count": a.count, "first_detected": iso(a.first_detected), "last_detected": iso(a.last_detected),
        "source": {"device_id": a.src_device_id, "mac": a.src_mac, "ip": a.src_ip},
        "destination": {"device_id": a.dst_device_id, "mac": a.dst_mac, "ip": a.dst_ip},
        "sensor": a.sensor, "details": a.details, "evidence": a.evidence,
        "closed_at": iso(a.closed_at), "closed_reason": a.closed_reason,
    }


def alert_conditions(status: str | None, severity: str | None, type_: str | None,
                     device_id: int | None) -> list[Any]:
    conds: list[Any] = []
    if status == "open":
        conds.append(Alert.status != "closed")
    elif status:
        if status not in STATUSES:
            raise queries.QueryError(f"status must be one of open, {', '.join(STATUSES)}")
        conds.append(Alert.status == status)
    if severity:
        if severity not in SEVERITIES:
            raise queries.QueryError(f"severity must be one of {', '.join(SEVERITIES)}")
        conds.append(Alert.severity == severity)
    if type_:
        conds.append(Alert.type == type_)
    if device_id is not None:
        conds.append(or_(Alert.src_device_id == device_id, Alert.dst_device_id == device_id))
    return conds


def page_alerts(s: Session, conds: list[Any], page: int, page_size: int) -> tuple[int, list[Alert]]:
    total = s.scalar(select(func.count(Alert.id)).where(*conds)) or 0
    rows = s.scalars(select(Alert).where(*conds)
                     .order_by(Alert.last_detected.desc(), Alert.id.desc())
                     .offset((page - 1) * page_size).limit(page_size))
    return total, list(rows)


@router.get("/alerts")
def list_alerts(
    request: Request,
    status: str | None = Query(None, max_length=8, description="new, active, closed, or open"),
    severity: str | None = Query(None, max_length=8),
    type: str | None = Query(None, max_length=64),
    device_id: int | None = None,
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(100, ge=1, le=queries.MAX_PAGE_SIZE),
    _: Principal = Depends(require(rbac.ALERTS_READ)),
) -> dict[str, Any]:
    """Alerts, most recently detected first."""
    with tx(request) as s:
        total, rows = page_alerts(s, alert_conditions(status, severity, type, device_id), page, page_size)
        return {"total": total, "page": page, "page_size": page_size,
                "alerts": [alert_json(a) for a in rows]}


@router.get("/alerts/{alert_id}")
def get_alert(request: Request, alert_id: int,
              _: Principal = Depends(require(rbac.ALERTS_READ))) -> dict[str, Any]:
    with tx(request) as s:
        a = s.get(Alert, alert_id)
        if a is None:
            raise HTTPException(404, f"no alert with id {alert_id}")
        return alert_json(a)


class StatusChange(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000)
    status: Literal["new", "active", "closed"]


def change_status(s: Session, ids: list[int], status: str, who: str) -> list[int]:
    """Set the status of alerts (closing records when and why); audited per alert."""
    alerts = list(s.scalars(select(Alert).where(Alert.id.in_(sorted(set(ids))))))
    missing = sorted(set(ids) - {a.id for a in alerts})
    if missing:
        raise HTTPException(404, f"no alert with id {', '.join(map(str, missing[:20]))}")
    changed = []
    for a in alerts:
        if a.status == status:
            continue
        old, a.status = a.status, status
        if status == "closed":
            a.closed_at, a.closed_reason = utcnow(), "manual"
        else:
            a.closed_at, a.closed_reason = None, None
        audit(s, who, "alert.status", "alert", a.id, old=old, new=status, title=a.title)
        changed.append(a.id)
    return changed


@router.post("/alerts/status")
def set_status(request: Request, body: StatusChange,
               who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> dict[str, Any]:
    """Change the status of one or many alerts."""
    with tx(request) as s:
        changed = change_status(s, body.ids, body.status, actor(who))
    return {"changed": changed, "status": body.status}
