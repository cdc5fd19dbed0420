"""Billable devices: what a plan's committed number is measured against.

A billable device is a unique IP+MAC coupling active in the last 30 days (Enterprise IoT:
IT and IoT devices, and devices whose class is not known yet) or 60 days (OT), that is not
a public internet address, not broadcast or multicast, and not managed by an endpoint agent
(those are billed through the agent). Modules behind one controller's backplane count once:
couplings that report the same controller (vendor and serial) together with a module or
rack/slot are one unit, since that is one chassis reached through several interfaces.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.plans.subscriptions import device_scope
from tapwatch.store.console_models import utcnow
from tapwatch.store.models import Device

EIOT_DAYS = 30
OT_DAYS = 60
PARTS = ("eiot", "ot")
COVERAGE_PARTS = {"both": frozenset(PARTS), "eiot": frozenset({"eiot"}), "ot": frozenset({"ot"})}


def part_of(device_class: str | None) -> str:
    """Which plan part pays for a class: OT is OT; IT, IoT and unknown are Enterprise IoT."""
    return "ot" if device_class == "OT" else "eiot"


def address_exclusion(mac: str | None, ip: str | None) -> str | None:
    """Why an address is never billable ('public', 'broadcast_multicast'), or None."""
    if mac:
        first = int(mac.split(":")[0], 16) if ":" in mac else 0
        if mac.lower() == "ff:ff:ff:ff:ff:ff" or first & 1:
            return "broadcast_multicast"
    if ip:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr.is_multicast or (addr.version == 4 and int(addr) == 0xFFFFFFFF):
            return "broadcast_multicast"
        if addr.is_global:
            return "public"
    return None


@dataclass
class Count:
    """Billable units per part, why the other devices were left out, and which devices count."""

    at: datetime
    eiot: int = 0
    ot: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    device_ids: dict[str, list[int]] = field(default_factory=lambda: {"eiot": [], "ot": []})

    def billable(self, coverage: str | frozenset[str] = "both") -> int:
        parts = COVERAGE_PARTS[coverage] if isinstance(coverage, str) else coverage
        return (self.eiot if "eiot" in parts else 0) + (self.ot if "ot" in parts else 0)

    def as_dict(self) -> dict[str, object]:
        return {"at": self.at.isoformat() + "Z", "eiot": self.eiot, "ot": self.ot,
                "total": self.eiot + self.ot, "excluded": dict(sorted(self.excluded.items()))}


def _unit(d: Device) -> tuple[str, ...]:
    if d.serial and (d.module or d.rack_slot):
        return ("chassis", (d.vendor or "").lower(), d.serial.strip().lower())
    return ("coupling", (d.mac or "").lower(), d.ip or "")


def billable(session: Session, subscription_id: int | None = None, at: datetime | None = None) -> Count:
    """Count the billable devices of one subscription (the whole inventory when None) at `at`."""
    at = at or utcnow()
    count = Count(at=at)
    since = {"eiot": at - timedelta(days=EIOT_DAYS), "ot": at - timedelta(days=OT_DAYS)}
    units: dict[tuple[str, ...], tuple[str, int]] = {}
    q = select(Device).where(device_scope(session, subscription_id)).order_by(Device.id)
    for d in session.scalars(q):
        part = part_of(d.device_class)
        reason = ("endpoint_agent" if d.endpoint_agent else address_exclusion(d.mac, d.ip)
                  or (None if d.last_seen >= since[part] else "inactive"))
        if reason:
            count.excluded[reason] += 1
            continue
        key = _unit(d)
        seen = units.get(key)
        if seen is not None:
            count.excluded["same_unit"] += 1
        if seen is None or (seen[0] == "eiot" and part == "ot"):  # a chassis with an OT module is OT
            units[key] = (part, d.id)
    for part, device_id in units.values():
        count.device_ids[part].append(device_id)
    count.eiot, count.ot = len(count.device_ids["eiot"]), len(count.device_ids["ot"])
    return count
