"""Alerts: list, get, change status (new / active / closed), learn, mute, and download the
triggering packets as pcap; every change audited."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

import io
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from tapwatch.console import queries, rbac
from tapwatch.console.api.plans import entitled
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, get_or_404, tx
from tapwatch.detect import alerts as lifecycle
from tapwatch.detect.pcap import ExcerptError, write_excerpt
from tapwatch.plans import features
from tapwatch.store.alert_models import SEVERITIES, STATUSES, Alert
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.models import Device

# every alert route needs a plan in force on the subscription asked for (tapwatch.plans)
router = APIRouter(tags=["alerts"], dependencies=[Depends(entitled("alerts"))])

# Actions beyond a status change, shown on the alert page: name -> (label, permission);
# the page posts to /alerts/{id}/{name}.
ALERT_ACTIONS: dict[str, tuple[str, str]] = {
    "learn": ("Learn (make this traffic normal)", rbac.ALERTS_WRITE),
    "mute": ("Mute", rbac.ALERTS_WRITE),
    "pcap": ("Download pcap", rbac.ALERTS_READ),
}


def alert_json(a: Alert) -> dict[str, Any]:
    """The CLI's JSON contract, with a destination object even when there is none."""
    row = lifecycle.alert_json(a)
    row["destination"] = row["destination"] or {"device_id": None, "mac": None, "ip": None}
    return row


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
    """A page of alerts, of the devices the plans cover (and those naming no device)."""
    covered = features.covered_devices(s)
    if covered is not None:
        ids = select(Device.id).where(covered)
        conds = [*conds, or_(and_(Alert.src_device_id.is_(None), Alert.dst_device_id.is_(None)),
                             Alert.src_device_id.in_(ids), Alert.dst_device_id.in_(ids))]
    return queries.page_rows(s, Alert, conds, [Alert.last_detected.desc(), Alert.id.desc()], page,
                             page_size)


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
        return alert_json(get_or_404(s, Alert, alert_id, "alert"))


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


def learn_alert(s: Session, alert_id: int, who: str) -> dict[str, Any]:
    a = get_or_404(s, Alert, alert_id, "alert")
    old = a.status
    added = lifecycle.learn(s, a)
    audit(s, who, "alert.learn", "alert", a.id, old=old, new="closed", title=a.title, baseline_added=added)
    return {"id": a.id, "status": a.status, "closed_reason": a.closed_reason, "baseline_added": added}


def mute_alert(s: Session, alert_id: int, who: str) -> dict[str, Any]:
    a = get_or_404(s, Alert, alert_id, "alert")
    old = a.status
    lifecycle.mute(a)
    audit(s, who, "alert.mute", "alert", a.id, old=old, new="closed", title=a.title)
    return {"id": a.id, "status": a.status, "closed_reason": a.closed_reason}


def pcap_of(s: Session, alert_id: int) -> Response:
    """The triggering packets as a pcap download (409 when the capture is gone)."""
    a = get_or_404(s, Alert, alert_id, "alert")
    out = io.BytesIO()
    try:
        write_excerpt(s, a, out)
    except ExcerptError as e:
        raise HTTPException(409, str(e)) from None
    return Response(out.getvalue(), media_type="application/vnd.tcpdump.pcap",
                    headers={"Content-Disposition": f'attachment; filename="alert-{a.id}.pcap"'})


@router.post("/alerts/{alert_id}/learn")
def learn(request: Request, alert_id: int,
          who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> dict[str, Any]:
    """Close the alert and add its traffic to the baseline."""
    with tx(request) as s:
        return learn_alert(s, alert_id, actor(who))


@router.post("/alerts/{alert_id}/mute")
def mute(request: Request, alert_id: int,
         who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> dict[str, Any]:
    """Close the alert without learning."""
    with tx(request) as s:
        return mute_alert(s, alert_id, actor(who))


@router.get("/alerts/{alert_id}/pcap")
def pcap(request: Request, alert_id: int,
         _: Principal = Depends(require(rbac.ALERTS_READ))) -> Response:
    """The packets behind the alert (pcap)."""
    with tx(request) as s:
        return pcap_of(s, alert_id)


@router.post("/alerts/status")
def set_status(request: Request, body: StatusChange,
               who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> dict[str, Any]:
    """Change the status of one or many alerts."""
    with tx(request) as s:
        changed = change_status(s, body.ids, body.status, actor(who))
    return {"changed": changed, "status": body.status}
