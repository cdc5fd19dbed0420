"""Alerts list with filters and bulk status change, and the alert page."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from tapwatch.console import rbac
from tapwatch.console.api.alerts import (
    ALERT_ACTIONS,
    alert_conditions,
    change_status,
    learn_alert,
    mute_alert,
    page_alerts,
    pcap_of,
)
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, get_or_404, render, tx
from tapwatch.store.alert_models import SEVERITIES, STATUSES, Alert
from tapwatch.store.console_models import AuditEntry
from tapwatch.store.models import Device

router = APIRouter()


@router.get("/alerts")
def alerts_page(request: Request, status: str | None = Query("open", max_length=8),
                severity: str | None = Query(None, max_length=8),
                type: str | None = Query(None, max_length=64),
                page: int = Query(1, ge=1, le=1_000_000), msg: str | None = Query(None, max_length=200),
                _: Principal = Depends(require(rbac.ALERTS_READ))) -> Response:
    status = status or None
    with tx(request) as s:
        conds = alert_conditions(status, severity or None, type or None, None)
        total, rows = page_alerts(s, conds, page, 100)
    params = {k: v for k, v in {"status": status or "", "severity": severity, "type": type}.items()
              if v is not None}
    return render(request, "alerts.html", nav="alerts", alerts=rows, total=total, page=page,
                  page_size=100, params=params, status=status, severity=severity,
                  statuses=STATUSES, severities=SEVERITIES, msg=msg)


@router.post("/alerts/status")
def alerts_status(request: Request, ids: list[int] = Form(default=[]),
                  status: str = Form(..., max_length=8), return_to: str = Form("/alerts", max_length=2048),
                  who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> Response:
    if status not in STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
    back = return_to if return_to.startswith("/") and not return_to.startswith("//") else "/alerts"
    if not ids:
        return RedirectResponse(back, status_code=303)
    with tx(request) as s:
        changed = change_status(s, ids, status, actor(who))
    sep = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{sep}msg={quote(f'{len(changed)} alerts set to {status}')}",
                            status_code=303)


@router.get("/alerts/{alert_id}")
def alert_page(request: Request, alert_id: int, msg: str | None = Query(None, max_length=200),
               who: Principal = Depends(require(rbac.ALERTS_READ))) -> Response:
    with tx(request) as s:
        a = get_or_404(s, Alert, alert_id, "alert")
        ids = [i for i in (a.src_device_id, a.dst_device_id) if i is not None]
        devices = {d.id: d for d in s.scalars(select(Device).where(Device.id.in_(ids)))}
        history = list(s.scalars(select(AuditEntry).where(
            AuditEntry.target_type == "alert", AuditEntry.target_id == str(alert_id))
            .order_by(AuditEntry.id.desc()))) if who.can(rbac.AUDIT_READ) else []
    actions = {k: v for k, v in ALERT_ACTIONS.items() if who.can(v[1])}
    return render(request, "alert.html", nav="alerts", a=a, devices=devices, history=history,
                  statuses=STATUSES, actions=actions, msg=msg)


@router.post("/alerts/{alert_id}/learn")
def learn_page(request: Request, alert_id: int,
               who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> Response:
    with tx(request) as s:
        done = learn_alert(s, alert_id, actor(who))
    text = f"learned: closed, {done['baseline_added']} baseline entries added"
    return RedirectResponse(f"/alerts/{alert_id}?msg={quote(text)}", status_code=303)


@router.post("/alerts/{alert_id}/mute")
def mute_page(request: Request, alert_id: int,
              who: Principal = Depends(require(rbac.ALERTS_WRITE))) -> Response:
    with tx(request) as s:
        mute_alert(s, alert_id, actor(who))
    return RedirectResponse(f"/alerts/{alert_id}?msg={quote('muted: closed')}", status_code=303)


@router.post("/alerts/{alert_id}/pcap")
def pcap_page(request: Request, alert_id: int,
              _: Principal = Depends(require(rbac.ALERTS_READ))) -> Response:
    with tx(request) as s:
        return pcap_of(s, alert_id)
