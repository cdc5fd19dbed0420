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

from sqlalchemy import func, select
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
    for field, value in (device.overrides or {}).items():
        if field in EDITABLE:
            setattr(device, field, value)
    if "type" in (device.overrides or {}):
        device.device_class = taxonomy.class_of(device.type)
        if "purdue_level" not in device.overrides:
            device.purdue_level = taxonomy.purdue_level(device.type)


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


def refresh_identity(session: Session, device_ids: Iterable[int]) -> None:
    """Recompute the shown identity of these devices from all their facts and behaviour."""
    ids = sorted(set(device_ids))
    by_device = facts_of_devices(session, ids)
    served, implied = behaviour(session, ids)
    for part in chunks(ids):
        for device in session.scalars(select(Device).where(Device.id.in_(part))):
            views = [FactView(f.attribute, f.value, f.source, f.confidence, f.count)
                     for f in by_device.get(device.id, [])] + implied.get(device.id, [])
            if device.is_gateway:  # it routes for addresses behind it
                views.append(GATEWAY_FACT)
            ident = identify(device.mac, views, device.protocols,
                             served=sorted(served.get(device.id, ())))
            device.name = ident.name
            device.vendor = ident.vendor
            device.type = ident.type
            device.device_class = ident.device_class
            device.model = ident.model
            device.os = None if _fingerprint_only(ident) else ident.os
            device.firmware = ident.firmware
            device.purdue_level = taxonomy.purdue_level(ident.type)
            facts = by_device.get(device.id, [])
            device.serial = _best(facts, "serial")
            device.module = _best(facts, "module") or _best(facts, "order_number")
            device.rack_slot = _best(facts, "rack_slot")
            device.plc_mode = _latest(facts, "plc_mode")
            apply_overrides(device)
