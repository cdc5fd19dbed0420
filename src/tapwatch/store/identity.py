"""Applying identification to stored devices: their facts and behaviour in, identity out.

Behaviour is what the inventory knows beyond single packets: which protocols a device
serves (it answers them), which industrial servers it polls, and which operations
(program downloads, PLC stops…) it performs. These become evidence like any fact:
a device that programs PLCs is an engineering workstation, one that only polls
controllers is an HMI, one that answers S7 is a controller.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from tapwatch.identify import FactView, Identity, identify, taxonomy
from tapwatch.store.evidence import facts_of_devices
from tapwatch.store.inventory import chunks
from tapwatch.store.models import Connection, Device, Event, Fact

GATEWAY_FACT = FactView("device_type", "router", "traffic", 0.4)
# protocols whose clients are HMIs or SCADA servers when they serve none of them (controllers
# also poll each other over PROFINET-CM and BACnet, so those do not count)
POLLED = frozenset({
    "modbus", "s7comm", "enip", "dnp3", "iec104", "opcua", "melsec", "fins", "omron-fins",
    "ads", "codesys", "ge-srtp", "hart-ip", "iccp", "synchrophasor", "emerson-roc", "bsap",
})
INDUSTRIAL = POLLED | {"cip-io", "bacnet", "profinet-cm", "foundation-fieldbus"}
PROGRAMMING = frozenset({"program_download", "program_upload", "plc_stop", "plc_start",
                         "mode_change", "firmware_update"})


def behaviour(session: Session, ids: list[int]) -> tuple[dict[int, set[str]], dict[int, list[FactView]]]:
    """Protocols each device serves, and facts its behaviour implies."""
    served: dict[int, set[str]] = defaultdict(set)
    facts: dict[int, list[FactView]] = defaultdict(list)
    for part in chunks(ids):
        q = (select(Connection.server_device_id, Connection.protocol).distinct()
             .where(Connection.server_device_id.in_(part)))
        for device_id, protocol in session.execute(q):
            if device_id is not None:
                served[device_id].add(protocol)
        q2 = (select(Connection.client_device_id, Connection.protocol,
                     func.count(func.distinct(Connection.server_ip)))
              .where(Connection.client_device_id.in_(part),
                     Connection.protocol.in_(sorted(POLLED)))
              .group_by(Connection.client_device_id, Connection.protocol))
        for device_id, protocol, servers in session.execute(q2):
            if device_id is None:
                continue
            facts[device_id].append(FactView(
                "role", f"{protocol}_client", "behaviour", 0.5, servers))
        q3 = (select(Event.src_device_id, Event.kind, func.count())
              .where(Event.src_device_id.in_(part), Event.kind.in_(sorted(PROGRAMMING)))
              .group_by(Event.src_device_id, Event.kind))
        for device_id, _kind, count in session.execute(q3):
            if device_id is None:
                continue
            facts[device_id].append(FactView(
                "device_type", "engineering_workstation", "behaviour", 0.7, count))
    for device_id in list(facts):
        roles = [f for f in facts[device_id] if f.attribute == "role"]
        if roles and not (served.get(device_id, set()) & INDUSTRIAL):
            # polls controllers and answers none of their protocols
            facts[device_id].append(FactView("device_type", "hmi", "behaviour", 0.45,
                                             sum(f.count for f in roles)))
    return served, facts


EDITABLE = ("name", "vendor", "type", "model", "os", "firmware", "purdue_level")


def apply_overrides(device: Device) -> None:
    """Put back what a person set on the device (identification only proposes)."""
    row = {name: getattr(device, name) for name in ("device_class", "purdue_level", *EDITABLE)}
    apply_overrides_to(row, device.overrides)
    for name, value in row.items():
        if getattr(device, name) != value:
            setattr(device, name, value)


def apply_overrides_to(row: dict[str, object], overrides: dict[str, object] | None) -> None:
    """Put back, in a device's identity values, what a person set (identification only
    proposes): the edited fields, and the class and level that follow from an edited type."""
    for field, value in (overrides or {}).items():
        if field in EDITABLE:
            row[field] = value
    if overrides and "type" in overrides:
        kind = row["type"] if isinstance(row["type"], str) else None
        row["device_class"] = taxonomy.class_of(kind)
        if "purdue_level" not in overrides:
            row["purdue_level"] = taxonomy.purdue_level(kind)


def _fingerprint_only(ident: Identity) -> bool:
    """A controller's OS guessed only from its TCP stack (p0f's signatures describe desktop
    and server systems) says more about p0f's database than about the device."""
    evidence = ident.evidence.get("os", [])
    return taxonomy.purdue_level(ident.type) == 1 and bool(evidence) and all(
        "p0f" in e.source for e in evidence)


def _best(facts: list[Fact], attribute: str) -> str | None:
    found = [f for f in facts if f.attribute == attribute]
    return max(found, key=lambda f: (f.confidence, f.count)).value if found else None


def _latest(facts: list[Fact], attribute: str) -> str | None:
    """The most recent value: a PLC's mode is what it reported last."""
    found = [f for f in facts if f.attribute == attribute]
    return max(found, key=lambda f: f.last_seen).value if found else None


DEVICES: Table = Device.__table__  # type: ignore[assignment]
# what identification decides about a device (the rest of its row is traffic and people's)
IDENTITY_COLUMNS = ("name", "vendor", "type", "device_class", "model", "os", "firmware",
                    "purdue_level", "serial", "module", "rack_slot", "plc_mode")


def refresh_identity(session: Session, device_ids: Iterable[int]) -> None:
    """Recompute the shown identity of these devices from all their facts and behaviour.

    Devices are read and written as plain rows, one UPDATE statement for all that changed
    (an ORM object per device and an UPDATE per device cost more than identifying them);
    Device objects the session already holds are expired so that they read the new values.
    """
    ids = sorted(set(device_ids))
    session.flush()
    by_device = facts_of_devices(session, ids)
    served, implied = behaviour(session, ids)
    columns = [DEVICES.c[name] for name in IDENTITY_COLUMNS]
    changed: list[dict[str, object]] = []
    for part in chunks(ids):
        q = select(DEVICES.c.id, DEVICES.c.mac, DEVICES.c.protocols, DEVICES.c.is_gateway,
                   DEVICES.c.overrides, *columns).where(DEVICES.c.id.in_(part))
        for device_id, mac, protocols, is_gateway, overrides, *current in session.execute(q):
            facts = by_device.get(device_id, [])
            views = [FactView(f.attribute, f.value, f.source, f.confidence, f.count)
                     for f in facts] + implied.get(device_id, [])
            if is_gateway:  # it routes for addresses behind it
                views.append(GATEWAY_FACT)
            ident = identify(mac, views, protocols or [], served=sorted(served.get(device_id, ())))
            row: dict[str, object] = {
                "name": ident.name, "vendor": ident.vendor, "type": ident.type,
                "device_class": ident.device_class, "model": ident.model,
                "os": None if _fingerprint_only(ident) else ident.os, "firmware": ident.firmware,
                "purdue_level": taxonomy.purdue_level(ident.type),
                "serial": _best(facts, "serial"),
                "module": _best(facts, "module") or _best(facts, "order_number"),
                "rack_slot": _best(facts, "rack_slot"), "plc_mode": _latest(facts, "plc_mode"),
            }
            apply_overrides_to(row, overrides)
            if [row[name] for name in IDENTITY_COLUMNS] != current:
                row["b_id"] = device_id
                changed.append(row)
    if changed:
        session.execute(update(DEVICES).where(DEVICES.c.id == bindparam("b_id")), changed)
        updated = {row["b_id"] for row in changed}
        for obj in list(session.identity_map.values()):
            if isinstance(obj, Device) and obj.id in updated:
                session.expire(obj, list(IDENTITY_COLUMNS))
