"""Carrying a subscription's inventory to another one: `tapwatch subscriptions export/import`.

Moving to another subscription is cancelling the plan on the old one and adding one on the
new one; data does not follow on its own. Devices re-sync from sensors anyway, but what
people set on them (names, types, Purdue levels, authorization, importance, notes, tags,
sites and zones) exists only in the database, so the export carries every device of the
subscription with its addresses and those edits, and the import puts them back: new devices
are created, devices already there get the exported edits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, select
from sqlalchemy.orm import Session

from tapwatch import __version__
from tapwatch.console import rbac
from tapwatch.plans.access import Actor, PlanError, authorize
from tapwatch.plans.subscriptions import device_scope
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.identity import EDITABLE, apply_overrides
from tapwatch.store.inventory import iso
from tapwatch.store.models import Address, Device
from tapwatch.store.plan_models import Subscription

FORMAT = "tapwatch-subscription-inventory"
VERSION = 1
# what a person decides about a device (copied onto devices that already exist)
MANUAL = ("authorized", "importance", "programming_device", "description", "location", "tags",
          "site", "zone")
_SKIP = {"id", "device_id"}


def _row(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in obj.__table__.columns:
        if col.key in _SKIP:
            continue
        value = getattr(obj, col.key)
        out[col.key] = iso(value) if isinstance(value, datetime) else value
    return out


def export_inventory(session: Session, actor: Actor, sub: Subscription) -> dict[str, Any]:
    """The subscription's devices, their addresses and manual edits, as one JSON document."""
    authorize(session, actor, sub.id, sub.name, rbac.INVENTORY_READ, "subscription.export",
              "subscription", sub.id)
    devices = list(session.scalars(select(Device).where(device_scope(session, sub.id)).order_by(Device.id)))
    addresses: dict[int, list[Address]] = {}
    ids = [d.id for d in devices]
    for i in range(0, len(ids), 500):
        for a in session.scalars(select(Address).where(Address.device_id.in_(ids[i:i + 500]))):
            addresses.setdefault(a.device_id or 0, []).append(a)
    audit(session, actor.name, "subscription.export", "subscription", sub.id, devices=len(devices))
    return {"format": FORMAT, "version": VERSION, "tapwatch": __version__, "exported_at": iso(utcnow()),
            "subscription": {"id": sub.id, "name": sub.name, "description": sub.description},
            "devices": [{**_row(d), "addresses": [_row(a) for a in addresses.get(d.id, [])]}
                        for d in devices]}


def _convert(model: type[Any], data: dict[str, Any], where: str) -> dict[str, Any]:
    """Check one exported row against the model's columns; times back to datetimes."""
    out: dict[str, Any] = {}
    for col in model.__table__.columns:
        if col.key in _SKIP or col.key not in data:
            continue
        value = data[col.key]
        if value is not None and isinstance(col.type, DateTime):
            if not isinstance(value, str):
                raise PlanError(f"{where}.{col.key}: expected an ISO 8601 time")
            try:
                value = datetime.fromisoformat(value.removesuffix("Z"))
            except ValueError:
                raise PlanError(f"{where}.{col.key}: not an ISO 8601 time: {value[:40]!r}") from None
        elif value is not None and col.type.python_type in (str, int, bool) and \
                not isinstance(value, col.type.python_type):
            raise PlanError(f"{where}.{col.key}: expected {col.type.python_type.__name__}")
        if value is None and not col.nullable and col.default is None:
            raise PlanError(f"{where}.{col.key}: missing")
        out[col.key] = value
    return out


def import_inventory(session: Session, actor: Actor, sub: Subscription, document: Any,
                     sensor: str | None = None) -> dict[str, int]:
    """Put an export into the inventory of `sub` (new devices get `sensor`, else their own)."""
    authorize(session, actor, sub.id, sub.name, rbac.DEVICES_WRITE, "subscription.import",
              "subscription", sub.id)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PlanError(f"not a tapwatch subscription export ($.format is not {FORMAT!r})")
    if document.get("version") != VERSION:
        raise PlanError(f"$.version {document.get('version')!r} is not supported (expected {VERSION})")
    items = document.get("devices")
    if not isinstance(items, list):
        raise PlanError("$.devices must be a list")
    stats = {"created": 0, "updated": 0, "addresses": 0}
    now = utcnow()
    for n, item in enumerate(items):
        where = f"$.devices[{n}]"
        if not isinstance(item, dict):
            raise PlanError(f"{where}: a device is a JSON object")
        values = _convert(Device, item, where)
        for key in ("key_mac", "key_ip", "first_seen", "last_seen"):
            if values.get(key) is None:
                raise PlanError(f"{where}.{key}: missing")
        device = session.scalar(select(Device).where(Device.key_mac == values["key_mac"],
                                                     Device.key_ip == values["key_ip"]))
        if device is None:
            values.setdefault("created_at", now)
            values["updated_at"] = now
            if sensor:
                values["sensor"] = sensor
            values.setdefault("sensor", "import")
            device = Device(**values)
            session.add(device)
            session.flush()
            stats["created"] += 1
        else:
            overrides = dict(device.overrides or {})
            overrides.update({k: v for k, v in (values.get("overrides") or {}).items() if k in EDITABLE})
            device.overrides = overrides
            for key in MANUAL:
                if key in values:
                    setattr(device, key, values[key])
            apply_overrides(device)
            device.updated_at = now
            stats["updated"] += 1
        for m, raw in enumerate(item.get("addresses") or []):
            if not isinstance(raw, dict):
                raise PlanError(f"{where}.addresses[{m}]: an address is a JSON object")
            a = _convert(Address, raw, f"{where}.addresses[{m}]")
            row = session.scalar(select(Address).where(Address.mac == a.get("mac", ""),
                                                       Address.ip == a.get("ip", "")))
            if row is None:
                session.add(Address(**a, device_id=device.id))
                stats["addresses"] += 1
            elif row.device_id is None:
                row.device_id = device.id
    audit(session, actor.name, "subscription.import", "subscription", sub.id,
          source=(document.get("subscription") or {}).get("name"), **stats)
    return stats
