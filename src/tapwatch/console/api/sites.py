"""Sites and zones: device counts by class, new and unauthorized devices, and health as the
last activity seen there. Devices get their site and zone from the sensor that saw them or
from an edit; devices without one are counted under `site: null`.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import tx
from tapwatch.store.console_models import utcnow
from tapwatch.store.inventory import iso
from tapwatch.store.models import Device

router = APIRouter(tags=["sites"])

CLASSES = ("IT", "IoT", "OT", "unknown")
# health from the newest traffic seen at a site or zone, relative to now
HEALTH = ((timedelta(hours=1), "active"), (timedelta(days=1), "quiet"))


def health(last_seen: datetime | None, now: datetime) -> str:
    if last_seen is None:
        return "no traffic"
    for limit, label in HEALTH:
        if now - last_seen <= limit:
            return label
    return "silent"


def _empty(now: datetime) -> dict[str, Any]:
    return {"devices": 0, "classes": dict.fromkeys(CLASSES, 0), "new": 0, "unauthorized": 0,
            "first_seen": None, "last_seen": None}


def _add(into: dict[str, Any], cls: str | None, n: int, new: int, unauth: int,
         first: datetime | None, last: datetime | None) -> None:
    into["devices"] += n
    into["classes"][cls if cls in CLASSES else "unknown"] += n
    into["new"] += new
    into["unauthorized"] += unauth
    if first is not None and (into["first_seen"] is None or first < into["first_seen"]):
        into["first_seen"] = first
    if last is not None and (into["last_seen"] is None or last > into["last_seen"]):
        into["last_seen"] = last


def _finish(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    last = row["last_seen"]
    row["health"] = health(last, now)
    row["idle_seconds"] = None if last is None else max(0, int((now - last).total_seconds()))
    row["first_seen"], row["last_seen"] = iso(row["first_seen"]), iso(last)
    return row


def sites_json(s: Session) -> dict[str, Any]:
    """Every site with its zones, from one grouped query over the devices."""
    now = utcnow()
    q = (select(Device.site, Device.zone, Device.device_class, func.count(Device.id),
                func.sum(case((Device.is_new.is_(True), 1), else_=0)),
                func.sum(case((Device.authorized.is_(False), 1), else_=0)),
                func.min(Device.first_seen), func.max(Device.last_seen))
         .group_by(Device.site, Device.zone, Device.device_class))
    sites: dict[str | None, dict[str, Any]] = {}
    zones: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for site, zone, cls, n, new, unauth, first, last in s.execute(q):
        site_row = sites.setdefault(site, {"site": site, **_empty(now)})
        _add(site_row, cls, n, int(new or 0), int(unauth or 0), first, last)
        zone_row = zones.setdefault((site, zone), {"zone": zone, **_empty(now)})
        _add(zone_row, cls, n, int(new or 0), int(unauth or 0), first, last)
    out = []
    for site in sorted(sites, key=lambda x: (x is None, x or "")):
        row = _finish(sites[site], now)
        row["zones"] = [_finish(zones[k], now) for k in sorted(
            (k for k in zones if k[0] == site), key=lambda k: (k[1] is None, k[1] or ""))]
        out.append(row)
    return {"total": sum(r["devices"] for r in out), "at": iso(now), "sites": out}


@router.get("/sites")
def list_sites(request: Request, _: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Sites and their zones: device counts by class, new, unauthorized, and last activity
    (health: active within an hour, quiet within a day, else silent)."""
    with tx(request) as s:
        return sites_json(s)
