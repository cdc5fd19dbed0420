"""`tapwatch plans estimate`: how many devices to commit to, and the breakdown behind it.

The discovered inventory (billable devices, as counting.py defines them) is combined with
imported CSV exports of a CMDB or a Meraki client list: a listed device already in the
inventory counts once, one not seen on the wire (or not recently) is added, and the same
exclusions apply (public, broadcast/multicast, endpoint-managed). The suggestion is the
total of the covered parts rounded up to a multiple of 100.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.identify import taxonomy
from tapwatch.plans.counting import COVERAGE_PARTS, address_exclusion, billable, part_of
from tapwatch.records import normalize_ip, normalize_mac, read_table
from tapwatch.store.console_models import utcnow
from tapwatch.store.models import Device
from tapwatch.store.plan_models import EndpointAgent

STEP = 100
SOURCE_KINDS = ("cmdb", "meraki")
ALIASES: dict[str, tuple[str, ...]] = {
    "mac": ("mac address", "macaddress", "mac_address", "physical address", "hardware address"),
    "ip": ("ip address", "ipaddress", "ipv4", "ipv4 address", "ip_address", "primary ip"),
    "name": ("hostname", "host name", "description", "device name", "ci name", "asset name"),
    "class": ("device class", "category", "type", "device type", "ci class", "classification",
              "asset type", "os"),
}


def suggest(total: int) -> int:
    """`total` rounded up to a multiple of 100 (at least 100: plans are sold in hundreds)."""
    return max(STEP, math.ceil(total / STEP) * STEP)


def part_from_text(text: str) -> str:
    """Enterprise IoT or OT from a CMDB class/type cell ('OT', 'PLC', 'Workstation', …)."""
    value = (text or "").strip()
    if value.upper() in ("IT", "IOT", "OT"):
        return part_of("OT" if value.upper() == "OT" else "IT")
    return part_of(taxonomy.class_of(taxonomy.normalize_type(value)))


@dataclass
class Estimate:
    at: datetime
    coverage: str
    inventory: dict[str, int] = field(default_factory=lambda: {"eiot": 0, "ot": 0})
    added: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> part -> count
    overlap: Counter[str] = field(default_factory=Counter)  # source -> rows already counted
    excluded: Counter[str] = field(default_factory=Counter)  # reason -> devices or rows
    errors: list[str] = field(default_factory=list)

    def part_total(self, part: str) -> int:
        return self.inventory[part] + sum(v.get(part, 0) for v in self.added.values())

    @property
    def total(self) -> int:
        return sum(self.part_total(p) for p in COVERAGE_PARTS[self.coverage])

    @property
    def suggested(self) -> int:
        return suggest(self.total)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat() + "Z", "coverage": self.coverage, "inventory": self.inventory,
                "added_from_sources": self.added, "already_in_inventory": dict(self.overlap),
                "excluded": dict(sorted(self.excluded.items())),
                "totals": {p: self.part_total(p) for p in ("eiot", "ot")},
                "total": self.total, "suggested_committed_devices": self.suggested,
                "errors": self.errors}


def estimate(session: Session, sources: Sequence[tuple[str, str | Path]], coverage: str = "both",
             subscription_id: int | None = None, at: datetime | None = None) -> Estimate:
    """Combine the inventory with (kind, file) sources; bad rows are reported and skipped."""
    at = at or utcnow()
    result = Estimate(at=at, coverage=coverage)
    count = billable(session, subscription_id, at)
    result.inventory = {"eiot": count.eiot, "ot": count.ot}
    result.excluded.update({f"inventory_{k}": v for k, v in count.excluded.items()})
    billable_ids = set(count.device_ids["eiot"]) | set(count.device_ids["ot"])
    # every inventory device by MAC and IP, with whether it is counted or left out for good
    status: dict[str, str] = {}
    for d in session.scalars(select(Device)):
        why = ("counted" if d.id in billable_ids else "endpoint_agent" if d.endpoint_agent
               else address_exclusion(d.mac, d.ip) or "inactive")
        for key in (f"mac:{d.mac}" if d.mac else None, f"ip:{d.ip}" if d.ip else None):
            if key and status.get(key) != "counted":
                status[key] = why
    agents = {f"mac:{e.mac}" if e.mac else f"ip:{e.ip}" for e in session.scalars(select(EndpointAgent))}
    seen: set[str] = set()
    for kind, path in sources:
        if kind not in SOURCE_KINDS:
            raise ValueError(f"source kind must be one of {', '.join(SOURCE_KINDS)}")
        table = read_table(path, ALIASES)
        label = f"{kind}:{Path(path).name}"
        added = result.added.setdefault(label, {"eiot": 0, "ot": 0})
        for row in table.rows:
            try:
                mac = normalize_mac(row.values["mac"]) if row.values["mac"] else ""
                ip = normalize_ip(row.values["ip"]) if row.values["ip"] else ""
            except ValueError as e:
                table.error(row.line, str(e))
                continue
            if not mac and not ip:
                table.error(row.line, "neither a MAC nor an IP address")
                continue
            keys = [k for k in (f"mac:{mac}" if mac else "", f"ip:{ip}" if ip and not mac else "") if k]
            if mac and ip and f"mac:{mac}" not in status:
                keys.append(f"ip:{ip}")  # a MAC the inventory lacks may still be a known IP
            if any(k in seen for k in keys):
                result.overlap[label] += 1
                continue
            seen.update(keys)
            reason = address_exclusion(mac, ip) or ("endpoint_agent" if any(k in agents for k in keys)
                                                    else None)
            known = next((status[k] for k in keys if k in status), None)
            if known == "counted":
                result.overlap[label] += 1
                continue
            if reason or known in ("endpoint_agent", "public", "broadcast_multicast"):
                result.excluded[f"source_{reason or known}"] += 1
                continue
            added[part_from_text(row.values["class"]) if kind == "cmdb" or row.values["class"]
                  else "eiot"] += 1
        result.errors += table.errors
    return result
