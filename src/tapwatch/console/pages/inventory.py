"""Dashboard, device inventory and the device page, with their edit, delete and merge forms."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, or_, select

from tapwatch.console import queries, rbac
from tapwatch.console.api.alerts import alert_conditions, page_alerts
from tapwatch.console.api.devices import FilterParams, device_detail, devices_csv_response, rows_json
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, render, tx, url_with
from tapwatch.identify import taxonomy
from tapwatch.store import device_admin
from tapwatch.store.alert_models import SEVERITIES
from tapwatch.store.console_models import AuditEntry
from tapwatch.store.models import Connection, Device, Event

router = APIRouter()
PAGE_SIZES = (25, 50, 100, 250, 500)


@router.get("/")
def dashboard(request: Request, who: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        total = s.scalar(select(func.count(Device.id))) or 0
        by_class = list(s.execute(select(Device.device_class, func.count(Device.id))
                                  .group_by(Device.device_class).order_by(func.count(Device.id).desc())))
        by_type = list(s.execute(select(Device.type, func.count(Device.id)).group_by(Device.type)
                                 .order_by(func.count(Device.id).desc())))
        by_level = list(s.execute(select(Device.purdue_level, func.count(Device.id))
                                  .group_by(Device.purdue_level).order_by(Device.purdue_level)))
        unauthorized = s.scalar(select(func.count(Device.id)).where(Device.authorized.is_(False))) or 0
        new = s.scalar(select(func.count(Device.id)).where(Device.is_new.is_(True))) or 0
        alerts = queries.open_alert_counts(s) if who.can(rbac.ALERTS_READ) else None
        recent = (list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(8)))
                  if who.can(rbac.AUDIT_READ) else [])
        last = s.scalar(select(func.max(Device.last_seen)))
    from tapwatch.console.pages.findings import dashboard_risk
    return render(request, "dashboard.html", nav="dashboard", total=total, by_class=by_class,
                  by_type=by_type, by_level=by_level, unauthorized=unauthorized, new=new,
                  alerts=alerts, severities=SEVERITIES, recent=recent, last_seen=last,
                  risk=dashboard_risk(request, who))


@router.get("/devices")
def devices_page(
    request: Request,
    filters: FilterParams = Depends(),
    sort: str = Query("last_seen", max_length=32),
    order: str = Query("desc", max_length=4),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(50, ge=1, le=queries.MAX_PAGE_SIZE),
    group: str | None = Query(None, max_length=32),
    msg: str | None = Query(None, max_length=200),
    error: str | None = Query(None, max_length=500),
    _: Principal = Depends(require(rbac.INVENTORY_READ)),
) -> Response:
    flt = filters.to_filter()
    with tx(request) as s:
        found = queries.page_devices(s, flt, sort, order, page, page_size, group=group or None)
        counts = queries.group_counts(s, flt, group) if group else []
        rows = rows_json(s, found.rows)
        choices = {
            "vendor": queries.distinct_values(s, Device.vendor),
            "site": queries.distinct_values(s, Device.site),
            "zone": queries.distinct_values(s, Device.zone),
            "type": queries.distinct_values(s, Device.type),
        }
    params = {**flt.as_params(), "sort": sort, "order": order, "page_size": page_size,
              **({"group": group} if group else {})}
    groups = [_group_link(group, value, n, params) for value, n in counts] if group else []
    return render(request, "devices.html", nav="devices", rows=rows, total=found.total,
                  total_exact=found.exact, page=page,
                  page_size=page_size, page_sizes=PAGE_SIZES, params=params, flt=flt, sort=sort,
                  order=order, group=group, groups=groups, group_keys=list(queries.GROUPS),
                  choices=choices, msg=msg, error=error,
                  types=sorted(taxonomy.TYPES.values(), key=lambda t: t.name))


def _group_link(group: str, value: Any, n: int, params: dict[str, Any]) -> tuple[str, int, str | None]:
    """A group chip: its label, count, and the inventory filtered to it (when a filter exists)."""
    label = "none" if value is None else str(value)
    if group == "purdue_level":
        return label, n, None
    if group == "authorized":
        value = "true" if value else "false"
    key = "class" if group == "class" else group
    return label, n, url_with("/devices", params, **{key: "none" if value is None else value, "page": None})


@router.get("/devices/export.csv")
def devices_csv(request: Request, filters: FilterParams = Depends(),
                sort: str = Query("last_seen", max_length=32), order: str = Query("desc", max_length=4),
                _: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        return devices_csv_response(s, filters.to_filter(), sort, order)


def _back(target: str, *, msg: str | None = None, error: str | None = None) -> RedirectResponse:
    sep = "&" if "?" in target else "?"
    if msg:
        target += f"{sep}msg={quote(msg)}"
    elif error:
        target += f"{sep}error={quote(error)}"
    return RedirectResponse(target, status_code=303)


def _return_to(value: str | None, default: str = "/devices") -> str:
    if value and value.startswith("/") and not value.startswith("//"):
        return value
    return default


@router.post("/devices/bulk")
def devices_bulk(request: Request, ids: list[int] = Form(default=[]),
                 type: str = Form("", max_length=64), device_class: str = Form("", max_length=8),
                 importance: str = Form("", max_length=8), authorized: str = Form("", max_length=5),
                 location: str = Form("", max_length=255), add_tag: str = Form("", max_length=64),
                 return_to: str = Form("/devices", max_length=2048),
                 who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> Response:
    """Bulk edit: the fields left empty stay as they are."""
    back = _return_to(return_to)
    if not ids:
        return _back(back, error="select at least one device")
    changes: dict[str, Any] = {}
    if type:
        changes["type"] = type
    if device_class:
        changes["class"] = device_class
    if importance:
        changes["importance"] = importance
    if authorized in ("true", "false"):
        changes["authorized"] = authorized == "true"
    if location:
        changes["location"] = location
    try:
        with tx(request) as s:
            if add_tag:
                for d in s.scalars(select(Device).where(Device.id.in_(ids))):
                    device_admin.edit_device(s, d.id, {**changes, "tags": [*d.tags, add_tag]}, actor(who))
            elif changes:
                device_admin.edit_devices(s, ids, changes, actor(who))
            else:
                return _back(back, error="choose something to change")
    except device_admin.AdminError as e:
        return _back(back, error=str(e))
    return _back(back, msg=f"edited {len(set(ids))} devices")


@router.post("/devices/bulk-authorize")
def devices_bulk_authorize(request: Request, ids: list[int] = Form(default=[]),
                           value: str = Form("true", max_length=5),
                           return_to: str = Form("/devices", max_length=2048),
                           who: Principal = Depends(require(rbac.DEVICES_AUTHORIZE))) -> Response:
    back = _return_to(return_to)
    if not ids:
        return _back(back, error="select at least one device")
    try:
        with tx(request) as s:
            n = device_admin.set_authorized(s, ids, value == "true", actor(who))
    except device_admin.AdminError as e:
        return _back(back, error=str(e))
    return _back(back, msg=f"{'authorized' if value == 'true' else 'unauthorized'} {n} devices")


@router.post("/devices/merge")
def devices_merge(request: Request, ids: list[int] = Form(default=[]),
                  return_to: str = Form("/devices", max_length=2048),
                  who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> Response:
    try:
        with tx(request) as s:
            keep = device_admin.merge_devices(s, ids, actor(who))
            keep_id = keep.id
    except device_admin.AdminError as e:
        return _back(_return_to(return_to), error=str(e))
    return _back(f"/devices/{keep_id}", msg=f"merged {len(set(ids)) - 1} devices into this one")


@router.get("/devices/{device_id}")
def device_page(request: Request, device_id: int, msg: str | None = Query(None, max_length=200),
                error: str | None = Query(None, max_length=500),
                who: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        row = device_detail(s, device_id)
        conns = list(s.scalars(select(Connection).where(or_(
            Connection.client_device_id == device_id, Connection.server_device_id == device_id))
            .order_by(Connection.last_seen.desc()).limit(200)))
        peers_ids = {c.client_device_id for c in conns} | {c.server_device_id for c in conns}
        peers = {d.id: d for d in s.scalars(select(Device).where(Device.id.in_(
            [i for i in peers_ids if i is not None])))}
        events = list(s.scalars(select(Event).where(or_(
            Event.src_device_id == device_id, Event.dst_device_id == device_id))
            .order_by(Event.ts.desc(), Event.id.desc()).limit(200)))
        alerts = (page_alerts(s, alert_conditions(None, None, None, device_id), 1, 100)[1]
                  if who.can(rbac.ALERTS_READ) else [])
    evidence: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in row["facts"]:
        evidence[f["attribute"]].append(f)
    from tapwatch.console.pages.findings import device_security
    return render(request, "device.html", nav="devices", d=row, conns=conns, peers=peers,
                  events=events, alerts=alerts, evidence=dict(evidence), msg=msg, error=error,
                  types=sorted(taxonomy.TYPES.values(), key=lambda t: t.name),
                  security=device_security(request, who, device_id))


def _opt(value: str) -> str | None:
    return value.strip() or None


@router.post("/devices/{device_id}/edit")
def device_edit(request: Request, device_id: int, name: str = Form("", max_length=255),
                type: str = Form("", max_length=64), device_class: str = Form("", max_length=8),
                purdue_level: str = Form("", max_length=2), importance: str = Form("normal", max_length=8),
                authorized: str = Form("false", max_length=5),
                programming_device: str = Form("false", max_length=5),
                description: str = Form("", max_length=1024), location: str = Form("", max_length=255),
                tags: str = Form("", max_length=2048),
                who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> Response:
    """The edit form sends every field; only what differs is changed (and audited)."""
    back = f"/devices/{device_id}"
    try:
        level = int(purdue_level) if purdue_level.strip() else None
    except ValueError:
        return _back(back, error="Purdue level must be a number from 0 to 5")
    wanted: dict[str, Any] = {
        "name": _opt(name), "type": _opt(type), "purdue_level": level, "class": _opt(device_class),
        "importance": importance, "authorized": authorized == "true",
        "programming_device": programming_device == "true", "description": _opt(description),
        "location": _opt(location),
        "tags": [t.strip() for t in tags.replace(";", ",").split(",") if t.strip()],
    }
    try:
        with tx(request) as s:
            current = device_detail(s, device_id)  # 404 when there is no such device
            overrides = current["overrides"]
            changes: dict[str, Any] = {}
            for field, value in wanted.items():
                if field in ("name", "type", "purdue_level"):
                    # empty means "let identification decide": reset only a person's value
                    if value is None and field in overrides:
                        changes[field] = None
                    elif value is not None and value != current[field]:
                        changes[field] = value
                elif value != current[field]:
                    changes[field] = value
            diff = device_admin.edit_device(s, device_id, changes, actor(who))
    except device_admin.AdminError as e:
        return _back(back, error=str(e))
    return _back(back, msg=f"saved ({', '.join(diff) or 'nothing changed'})")


@router.post("/devices/{device_id}/authorize")
def device_authorize(request: Request, device_id: int, value: str = Form("true", max_length=5),
                     who: Principal = Depends(require(rbac.DEVICES_AUTHORIZE))) -> Response:
    with tx(request) as s:
        device_admin.set_authorized(s, [device_id], value == "true", actor(who))
    return _back(f"/devices/{device_id}", msg="authorized" if value == "true" else "unauthorized")


@router.post("/devices/{device_id}/delete")
def device_delete(request: Request, device_id: int, reason: str = Form("", max_length=500),
                  confirm: str = Form("", max_length=8),
                  who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> Response:
    if confirm != "yes":
        return _back(f"/devices/{device_id}", error="tick the confirmation box to delete")
    try:
        with tx(request) as s:
            device_admin.delete_devices(s, [device_id], reason, actor(who))
    except device_admin.AdminError as e:
        return _back(f"/devices/{device_id}", error=str(e))
    return _back("/devices", msg=f"deleted device {device_id}")
