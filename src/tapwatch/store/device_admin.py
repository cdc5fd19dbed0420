"""What people do to devices: edit, authorize, delete with a reason, merge; every act audited.

The CLI and the console's API both call these, so the rules live in one place. Identity
fields go through `Device.overrides` (identification never overwrites a person's value);
management fields are plain columns. Any edit clears "new": someone has looked at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from tapwatch.identify import taxonomy
from tapwatch.store.alert_models import Alert
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.identity import EDITABLE, apply_overrides, refresh_identity
from tapwatch.store.models import Address, Connection, Device, Event

IMPORTANCE = ("low", "normal", "high")
CLASSES = ("IT", "IoT", "OT")
# management fields: API name -> Device column
MANAGEMENT = {"authorized": "authorized", "importance": "importance",
              "programming_device": "programming_device", "description": "description",
              "location": "location", "tags": "tags", "class": "device_class"}
FIELDS = tuple(EDITABLE) + tuple(MANAGEMENT)
MERGE_MIN, MERGE_MAX = 2, 10


class AdminError(ValueError):
    """A request the rules refuse; the message says what and why (shown to the person)."""


class NotFound(AdminError):
    pass


def _text(field: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AdminError(f"{field} must be text")
    value = value.strip()
    if len(value) > limit:
        raise AdminError(f"{field} is longer than {limit} characters")
    return value or None


def validate(changes: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise a change set; unknown fields and bad values are refused by name."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise AdminError(f"not editable: {', '.join(unknown)} (editable: {', '.join(FIELDS)})")
    out: dict[str, Any] = {}
    for field, value in changes.items():
        if field in ("name", "vendor", "model", "os", "firmware", "location"):
            out[field] = _text(field, value, 255)
        elif field == "description":
            out[field] = _text(field, value, 1024)
        elif field == "type":
            if value is not None and taxonomy.get(value) is None:
                raise AdminError(f"unknown type {value!r}")
            out[field] = value
        elif field == "purdue_level":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= 5):
                raise AdminError("purdue_level must be an integer from 0 to 5")
            out[field] = value
        elif field in ("authorized", "programming_device"):
            if not isinstance(value, bool):
                raise AdminError(f"{field} must be true or false")
            out[field] = value
        elif field == "importance":
            if value not in IMPORTANCE:
                raise AdminError(f"importance must be one of {', '.join(IMPORTANCE)}")
            out[field] = value
        elif field == "class":
            if value is not None and value not in CLASSES:
                raise AdminError(f"class must be one of {', '.join(CLASSES)}")
            out[field] = value
        elif field == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise AdminError("tags must be a list of text")
            tags = sorted({t.strip() for t in value if t.strip()})
            if len(tags) > 32 or any(len(t) > 64 for t in tags):
                raise AdminError("at most 32 tags of at most 64 characters")
            out[field] = tags
    return out


def _current(device: Device, field: str) -> Any:
    if field in MANAGEMENT:
        value = getattr(device, MANAGEMENT[field])
        return list(value) if isinstance(value, list) else value
    return getattr(device, field)


def _get(session: Session, device_id: int) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device with id {device_id}")
    return device


def edit_device(session: Session, device_id: int, changes: dict[str, Any], actor: str) -> dict[str, Any]:
    """Apply a change set to one device; returns {field: [old, new]} of what really changed.

    An identity field set to None forgets the person's value, so identification decides again.
    """
    return edit_devices(session, [device_id], changes, actor)[device_id]


def edit_devices(session: Session, device_ids: Sequence[int], changes: dict[str, Any],
                 actor: str) -> dict[int, dict[str, Any]]:
    """The same change set on several devices (bulk edit); one audit entry per device."""
    values = validate(changes)
    devices = [_get(session, i) for i in dict.fromkeys(device_ids)]
    result: dict[int, dict[str, Any]] = {}
    reset: list[int] = []
    for device in devices:
        before = {f: _current(device, f) for f in values}
        overrides = dict(device.overrides or {})
        for field, value in values.items():
            if field in EDITABLE:
                if value is None:
                    overrides.pop(field, None)
                    reset.append(device.id)
                else:
                    overrides[field] = value
        device.overrides = overrides
        apply_overrides(device)
        for field, value in values.items():
            if field in MANAGEMENT:
                setattr(device, MANAGEMENT[field], value)
        device.is_new = False
        device.updated_at = utcnow()
        result[device.id] = before
    session.flush()
    if reset:
        refresh_identity(session, reset)
    for device in devices:
        before = result[device.id]
        diff = {f: [before[f], _current(device, f)] for f in values if before[f] != _current(device, f)}
        result[device.id] = diff
        audit(session, actor, "device.edit", "device", device.id, changes=diff,
              requested=values)
    return result


def set_authorized(session: Session, device_ids: Sequence[int], authorized: bool, actor: str) -> int:
    """Authorize (or un-authorize) devices: the one edit an analyst may make."""
    return len(edit_devices(session, device_ids, {"authorized": authorized}, actor))


def delete_devices(session: Session, device_ids: Iterable[int], reason: str, actor: str) -> int:
    """Delete devices, saying why; their addresses stay (unowned) so traffic history remains."""
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise AdminError("a reason (at least 3 characters) is required to delete a device")
    if len(reason) > 500:
        raise AdminError("the reason is longer than 500 characters")
    ids = list(dict.fromkeys(device_ids))
    devices = [_get(session, i) for i in ids]
    for d in devices:
        audit(session, actor, "device.delete", "device", d.id, reason=reason,
              device={"ip": d.ip, "mac": d.mac, "name": d.name, "type": d.type})
    _detach(session, ids)
    session.execute(delete(Device).where(Device.id.in_(ids)))
    return len(ids)


def _detach(session: Session, ids: list[int]) -> None:
    """Clear references to devices about to go (the database would too, where FKs are on)."""
    session.execute(update(Address).where(Address.device_id.in_(ids)).values(device_id=None))
    for model, cols in ((Connection, ("client_device_id", "server_device_id")),
                        (Event, ("src_device_id", "dst_device_id")),
                        (Alert, ("src_device_id", "dst_device_id"))):
        for col in cols:
            session.execute(update(model).where(getattr(model, col).in_(ids)).values({col: None}))


def merge_devices(session: Session, device_ids: Sequence[int], actor: str,
                  survivor_id: int | None = None) -> Device:
    """Merge 2–10 devices into one (the first, or `survivor_id`): it takes the others'
    addresses (and with them their facts), events, connections and alerts; the rest go."""
    ids = list(dict.fromkeys(device_ids))
    if not MERGE_MIN <= len(ids) <= MERGE_MAX:
        raise AdminError(f"merge takes {MERGE_MIN} to {MERGE_MAX} distinct devices, got {len(ids)}")
    keep_id = survivor_id if survivor_id is not None else ids[0]
    if keep_id not in ids:
        raise AdminError(f"the surviving device {keep_id} is not among the merged ones")
    devices = {i: _get(session, i) for i in ids}
    keep = devices[keep_id]
    gone = [i for i in ids if i != keep_id]
    session.execute(update(Address).where(Address.device_id.in_(gone)).values(device_id=keep_id))
    for model, cols in ((Connection, ("client_device_id", "server_device_id")),
                        (Event, ("src_device_id", "dst_device_id")),
                        (Alert, ("src_device_id", "dst_device_id"))):
        for col in cols:
            session.execute(update(model).where(getattr(model, col).in_(gone))
                            .values({col: keep_id}))
    for i in gone:
        d = devices[i]
        keep.first_seen = min(keep.first_seen, d.first_seen)
        keep.last_seen = max(keep.last_seen, d.last_seen)
        keep.packets_sent += d.packets_sent
        keep.packets_received += d.packets_received
        keep.bytes_sent += d.bytes_sent
        keep.bytes_received += d.bytes_received
        keep.vlans = sorted(set(keep.vlans) | set(d.vlans))
        keep.protocols = sorted(set(keep.protocols) | set(d.protocols))
        keep.tags = sorted(set(keep.tags or []) | set(d.tags or []))
        # a person's values on the survivor win; theirs on the others fill the gaps
        keep.overrides = {**(d.overrides or {}), **(keep.overrides or {})}
    keep.is_new = False
    keep.updated_at = utcnow()
    audit(session, actor, "device.merge", "device", keep_id, merged=gone,
          devices=[{"id": i, "ip": devices[i].ip, "mac": devices[i].mac} for i in ids])
    session.execute(delete(Device).where(Device.id.in_(gone)))
    session.flush()
    refresh_identity(session, [keep_id])
    return keep

