"""Exports with stable, documented columns: inventory (for EDR and CMDB), alerts,
recommendations and vulnerabilities, as CSV or JSON.

Column lists are part of the contract: new columns are appended, none is renamed or
removed, so an EDR or CMDB import mapping set up once keeps working.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.store.alert_models import Alert
from tapwatch.store.integration_models import CmdbRecord
from tapwatch.store.inventory import device_addresses, device_json, iso, list_devices

# the inventory as an EDR or CMDB imports it; `seen_by` says which sides know the device
INVENTORY_COLUMNS = [
    "device_id", "name", "mac", "ip", "ips", "vendor", "type", "class", "model", "os", "firmware",
    "serial", "site", "zone", "location", "owner", "business_function", "purdue_level", "vlans",
    "protocols", "first_seen", "last_seen", "authorized", "importance", "sensor", "endpoint_agent",
    "edr_managed", "seen_by",
]
ALERT_COLUMNS = [
    "id", "type", "title", "engine", "severity", "category", "mitre", "status", "protocol",
    "src_mac", "src_ip", "src_device_id", "dst_mac", "dst_ip", "dst_device_id", "sensor",
    "first_detected", "last_detected", "count", "details",
]
RECOMMENDATION_COLUMNS = [
    "recommendation_id", "title", "severity", "status", "device_id", "ip", "mac", "name", "vendor",
    "model", "type", "reasons", "action",
]


def alert_record(a: Alert) -> dict[str, Any]:
    """An alert as one flat record (forwarding payloads and the alerts export)."""
    return {
        "id": a.id, "type": a.type, "title": a.title, "engine": a.engine, "severity": a.severity,
        "category": a.category, "mitre": a.mitre, "status": a.status, "protocol": a.protocol,
        "src_mac": a.src_mac, "src_ip": a.src_ip, "src_device_id": a.src_device_id,
        "dst_mac": a.dst_mac, "dst_ip": a.dst_ip, "dst_device_id": a.dst_device_id,
        "sensor": a.sensor, "first_detected": iso(a.first_detected),
        "last_detected": iso(a.last_detected), "count": a.count, "details": a.details or {},
        "evidence": a.evidence or [],
    }


def enrichment(session: Session) -> dict[int, CmdbRecord]:
    """The CMDB record of each device that has one (the most recently imported wins)."""
    out: dict[int, CmdbRecord] = {}
    q = select(CmdbRecord).where(CmdbRecord.device_id.is_not(None)).order_by(CmdbRecord.imported_at,
                                                                             CmdbRecord.id)
    for r in session.scalars(q):
        out[r.device_id] = r  # type: ignore[index]
    return out


def inventory_rows(session: Session) -> list[dict[str, Any]]:
    devices = list_devices(session)
    addresses = device_addresses(session, [d.id for d in devices])
    cmdb = enrichment(session)
    rows = []
    for d in devices:
        j = device_json(d, addresses.get(d.id, []))
        rec = cmdb.get(d.id)
        managed = bool(d.endpoint_agent)
        rows.append({
            "device_id": d.id, "name": j["name"], "mac": j["mac"], "ip": j["ip"], "ips": j["ips"],
            "vendor": j["vendor"], "type": j["type"], "class": j["class"], "model": j["model"],
            "os": j["os"], "firmware": j["firmware"], "serial": j["serial"], "site": j["site"],
            "zone": j["zone"], "location": j["location"] or (rec.location if rec else None),
            "owner": rec.owner if rec else None,
            "business_function": rec.business_function if rec else None,
            "purdue_level": j["purdue_level"], "vlans": j["vlans"], "protocols": j["protocols"],
            "first_seen": j["first_seen"], "last_seen": j["last_seen"], "authorized": j["authorized"],
            "importance": j["importance"], "sensor": j["sensor"], "endpoint_agent": d.endpoint_agent,
            "edr_managed": managed, "seen_by": "network+edr" if managed else "network",
        })
    return rows


def alert_rows(session: Session) -> list[dict[str, Any]]:
    return [alert_record(a) for a in session.scalars(select(Alert).order_by(Alert.id))]


def recommendation_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per recommendation and unhealthy device; a healthy recommendation is one row."""
    rows = []
    for r in results:
        base = {"recommendation_id": r["id"], "title": r["title"], "severity": r["severity"],
                "status": r["status"], "action": r["action"]}
        if not r["unhealthy"]:
            rows.append({**base, "device_id": None, "ip": None, "mac": None, "name": None,
                         "vendor": None, "model": None, "type": None, "reasons": []})
        for d in r["unhealthy"]:
            rows.append({**base, "device_id": d["device_id"], "ip": d["ip"], "mac": d["mac"],
                         "name": d["name"], "vendor": d["vendor"], "model": d["model"],
                         "type": d["type"], "reasons": d["reasons"]})
    return rows


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return " ".join(str(v) for v in value) if not any(isinstance(v, str) and " " in v for v in value) \
            else "; ".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV with a header row; lists as space-separated values ("; " when values hold spaces),
    objects as JSON, booleans as true/false, missing values empty."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(columns)
    for r in rows:
        out.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def to_json(rows: Any) -> str:
    return json.dumps(rows, indent=2, sort_keys=False, default=str) + "\n"
