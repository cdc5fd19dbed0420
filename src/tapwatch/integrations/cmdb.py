"""Importing a CMDB CSV or a Meraki client-list export to enrich devices.

Rows are matched to inventory devices by MAC (then by IP). Owner, location and business
function are kept in `cmdb_records` (also for assets not yet seen on the wire, which plan
estimates count); the device's own `location` is filled where it is empty. A malformed row
is reported with file and line and the rest is imported.

Columns are found by header name, case and punctuation ignored:
- cmdb-csv: mac|mac_address, ip|ip_address|ipv4, name|hostname|asset_name, owner|managed_by|
  assigned_to, location|site|room, business_function|function|business_service|department
- meraki-csv (Network-wide > Clients > Download as CSV): MAC address, IPv4 address,
  Description (name), User (owner), Recent device name / Location (location),
  Notes (business function); Manufacturer, OS, VLAN, SSID and the rest are kept as extras.
"""

from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch import clock
from tapwatch.records import canonical_mac, norm_key
from tapwatch.store.console_models import audit
from tapwatch.store.integration_models import CmdbRecord
from tapwatch.store.models import Device

FORMATS = ("cmdb-csv", "meraki-csv")
FIELDS = ("mac", "ip", "name", "owner", "location", "business_function")
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "cmdb-csv": {
        "mac": ("mac", "macaddress", "mac_address", "hwaddress"),
        "ip": ("ip", "ipaddress", "ipv4", "ipv4address", "address"),
        "name": ("name", "hostname", "assetname", "devicename", "ci", "ciname"),
        "owner": ("owner", "managedby", "assignedto", "ownedby", "contact"),
        "location": ("location", "site", "room", "building"),
        "business_function": ("businessfunction", "function", "businessservice", "department",
                              "purpose", "service"),
    },
    "meraki-csv": {
        "mac": ("macaddress", "mac"),
        "ip": ("ipv4address", "ip", "ipaddress"),
        "name": ("description", "name", "hostname"),
        "owner": ("user", "owner"),
        "location": ("location", "recentdevicename", "connectedto"),
        "business_function": ("notes", "businessfunction"),
    },
}


def normalize_mac(text: str) -> str:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff', 'aabbccddeeff' → 'aa:bb:cc:dd:ee:ff'."""
    mac = canonical_mac(text)
    if mac is None:
        raise ValueError(f"not a MAC address: {text[:40]!r}")
    return mac


@dataclass
class ImportResult:
    path: str
    rows: int = 0
    imported: int = 0
    matched: int = 0  # records linked to an inventory device
    locations_set: int = 0
    problems: list[str] = field(default_factory=list)
    error: str | None = None


def _utcnow() -> datetime:
    return clock.now().astimezone(UTC).replace(tzinfo=None)


def parse(path: str | Path, fmt: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The well-formed rows (with `line`) and one problem per malformed row ("file:line: why")."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    where = str(path)
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    lines = text.splitlines()
    # Meraki exports may start with a title line before the header: skip to the header
    start = 0
    for i, line in enumerate(lines[:5]):
        if "mac" in line.lower():
            start = i
            break
    reader = csv.reader(lines[start:])
    try:
        header = next(reader)
    except StopIteration:
        return [], [f"{where}: empty file"]
    names = [norm_key(h) for h in header]
    aliases = ALIASES[fmt]
    column: dict[str, int] = {}
    for fld in FIELDS:
        for alias in aliases[fld]:
            if alias in names:
                column[fld] = names.index(alias)
                break
    if "mac" not in column and "ip" not in column:
        return [], [f"{where}:{start + 1}: no MAC or IP column in the header "
                    f"(expected one of: {', '.join(aliases['mac'] + aliases['ip'])})"]
    used = set(column.values())
    rows, problems = [], []
    for values in reader:
        lineno = start + reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"{where}:{lineno}: {len(values)} fields where the header has {len(header)}")
            continue
        raw = {fld: values[i].strip() for fld, i in column.items()}
        try:
            mac = normalize_mac(raw["mac"]) if raw.get("mac") else ""
            ip = str(ipaddress.ip_address(raw["ip"].split("/")[0])) if raw.get("ip") else ""
        except ValueError as e:
            problems.append(f"{where}:{lineno}: {e}")
            continue
        if not mac and not ip:
            problems.append(f"{where}:{lineno}: neither a MAC nor an IP address")
            continue
        extra = {header[i]: v.strip() for i, v in enumerate(values) if i not in used and v.strip()}
        rows.append({"mac": mac, "ip": ip, "line": lineno, "extra": extra,
                     **{f: (raw.get(f) or None) for f in ("name", "owner", "location",
                                                          "business_function")}})
    return rows, problems


def _find_device(session: Session, mac: str, ip: str) -> Device | None:
    if mac:
        candidates = list(session.scalars(select(Device).where(Device.mac == mac).order_by(Device.id)))
        if candidates:
            exact = [d for d in candidates if ip and d.ip == ip]
            return (exact or candidates)[0]
    if ip:
        candidates = list(session.scalars(select(Device).where(Device.ip == ip).order_by(Device.id)))
        if len(candidates) == 1:
            return candidates[0]
    return None


def import_file(session: Session, path: str | Path, fmt: str = "cmdb-csv",
                actor: str = "cli") -> ImportResult:
    """Import one file in the caller's transaction."""
    result = ImportResult(str(path))
    try:
        rows, result.problems = parse(path, fmt)
    except (OSError, ValueError) as e:
        result.error = f"{path}: {e}"
        return result
    result.rows = len(rows) + len(result.problems)
    now = _utcnow()
    for r in rows:
        rec = session.scalar(select(CmdbRecord).where(CmdbRecord.mac == r["mac"], CmdbRecord.ip == r["ip"]))
        if rec is None:
            rec = CmdbRecord(mac=r["mac"], ip=r["ip"])
            session.add(rec)
        rec.name, rec.owner, rec.location = r["name"], r["owner"], r["location"]
        rec.business_function, rec.extra = r["business_function"], r["extra"]
        rec.source, rec.source_file, rec.source_line, rec.imported_at = fmt, str(path), r["line"], now
        device = _find_device(session, r["mac"], r["ip"])
        rec.device_id = device.id if device is not None else None
        result.imported += 1
        if device is not None:
            result.matched += 1
            if r["location"] and not device.location:
                device.location = r["location"][:255]
                device.updated_at = now
                result.locations_set += 1
    session.flush()
    audit(session, actor, "cmdb.import", "cmdb", None, file=str(path), format=fmt,
          imported=result.imported, matched=result.matched, malformed=len(result.problems))
    return result


def relink(session: Session) -> int:
    """Link records to devices seen since their import; returns how many were linked."""
    linked = 0
    for rec in session.scalars(select(CmdbRecord).where(CmdbRecord.device_id.is_(None))):
        device = _find_device(session, rec.mac, rec.ip)
        if device is not None:
            rec.device_id = device.id
            linked += 1
            if rec.location and not device.location:
                device.location = rec.location
    return linked


def records(session: Session) -> list[dict[str, Any]]:
    """Every imported record, for plan estimates: assets known to the CMDB, seen on the wire
    (device_id set) or not yet."""
    out = []
    for r in session.scalars(select(CmdbRecord).order_by(CmdbRecord.id)):
        out.append({"id": r.id, "mac": r.mac or None, "ip": r.ip or None, "device_id": r.device_id,
                    "name": r.name, "owner": r.owner, "location": r.location,
                    "business_function": r.business_function, "source": r.source,
                    "source_file": r.source_file, "source_line": r.source_line,
                    "imported_at": r.imported_at.isoformat() + "Z", "extra": r.extra or {}})
    return out
