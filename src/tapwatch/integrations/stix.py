"""STIX 2.1 bundles: the inventory as infrastructure objects, alerts as indicators and sightings.

Ids are UUIDv5 from the device's MAC/IP (and the indicator's pattern), so exporting again
yields the same ids and a threat-intelligence platform updates objects instead of adding
copies. Cyber-observable ids follow the spec's deterministic UUIDv5 rule.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from tapwatch import clock

TAPWATCH_NS = uuid.UUID("6d1f3f0a-8a3c-5b43-9a55-3a8f0f6c2b11")  # ours: SDO/SRO ids
SCO_NS = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")  # the spec's, for cyber observables
OT_CLASS = "OT"
ROUTER_TYPES = {"router", "switch", "firewall", "gateway", "access_point", "wireless_controller"}
# alert detail keys that name an indicator, by what they name
IP_KEYS = ("malicious_ip", "ioc_ip", "indicator_ip", "bad_ip", "c2_ip")
DOMAIN_KEYS = ("malicious_domain", "ioc_domain", "domain", "indicator_domain", "c2_domain", "query")
URL_KEYS = ("malicious_url", "ioc_url", "url")
HASH_KEYS = {"sha256": "SHA-256", "sha1": "SHA-1", "md5": "MD5"}
GENERIC_KEYS = ("indicator", "ioc", "ioc_value")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.I)
_HEX = {32: "MD5", 40: "SHA-1", 64: "SHA-256"}


def _ts(value: str | datetime | None) -> str:
    """A STIX timestamp: UTC, millisecond precision, 'Z'."""
    if value is None:
        dt = clock.now()
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        dt = value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _sdo_id(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(TAPWATCH_NS, f'{kind}:{key}')}"


def _sco(kind: str, value: str) -> dict[str, Any]:
    contributing = json.dumps({"value": value}, sort_keys=True, separators=(",", ":"))
    return {"type": kind, "spec_version": "2.1", "id": f"{kind}--{uuid.uuid5(SCO_NS, contributing)}",
            "value": value}


def _ip_kind(ip: str) -> str:
    return "ipv6-addr" if ipaddress.ip_address(ip).version == 6 else "ipv4-addr"


def identity(sensor: str | None = None) -> dict[str, Any]:
    """Who produced the objects: tapwatch (one identity per sensor name)."""
    name = f"tapwatch sensor {sensor}" if sensor else "tapwatch"
    stamp = "2020-01-01T00:00:00.000Z"  # constant, so the identity never changes between exports
    return {"type": "identity", "spec_version": "2.1", "id": _sdo_id("identity", name),
            "created": stamp, "modified": stamp, "name": name, "identity_class": "system"}


def _infrastructure_type(row: dict[str, Any]) -> str:
    if row.get("type") in ROUTER_TYPES:
        return "routers-switches"
    if row.get("class") == OT_CLASS:
        return "control-system"
    if row.get("type") in ("workstation", "laptop", "engineering_workstation"):
        return "workstation"
    return "undefined"


def inventory_bundle(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each device as an infrastructure object that consists of its IP and MAC observables."""
    author = identity()
    objects: list[dict[str, Any]] = [author]
    seen_sco: set[str] = set()
    for r in rows:
        key = f"{r.get('mac') or ''}|{r.get('ip') or ''}|{r['device_id']}"
        created, modified = _ts(r.get("first_seen")), _ts(r.get("last_seen"))
        modified = max(created, modified)
        label = r.get("name") or " ".join(x for x in (r.get("vendor"), r.get("model")) if x)
        infra: dict[str, Any] = {
            "type": "infrastructure", "spec_version": "2.1", "id": _sdo_id("infrastructure", key),
            "created": created, "modified": modified, "created_by_ref": author["id"],
            "name": label or r.get("ip") or r.get("mac") or f"device {r['device_id']}",
            "infrastructure_types": [_infrastructure_type(r)],
            "first_seen": created, "last_seen": modified,
            "description": "; ".join(f"{k}: {r[k]}" for k in ("type", "vendor", "model", "os", "firmware",
                                                             "serial", "location") if r.get(k)) or None,
            "external_references": [{"source_name": "tapwatch", "external_id": str(r["device_id"])}],
        }
        objects.append({k: v for k, v in infra.items() if v is not None})
        observables = [_sco(_ip_kind(ip), ip) for ip in (r.get("ips") or ([r["ip"]] if r.get("ip") else []))]
        if r.get("mac"):
            observables.append(_sco("mac-addr", r["mac"]))
        for sco in observables:
            if sco["id"] not in seen_sco:
                seen_sco.add(sco["id"])
                objects.append(sco)
            objects.append({"type": "relationship", "spec_version": "2.1",
                            "id": _sdo_id("relationship", f"{infra['id']}>{sco['id']}"),
                            "created": created, "modified": modified, "created_by_ref": author["id"],
                            "relationship_type": "consists-of", "source_ref": infra["id"],
                            "target_ref": sco["id"]})
    return bundle(objects)


def bundle(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def indicators_of(details: dict[str, Any]) -> list[tuple[str, str]]:
    """(STIX pattern, the indicator as text) for each indicator an alert's details name."""
    found: list[tuple[str, str]] = []

    def add(value: Any, kinds: str) -> None:
        if not isinstance(value, str) or not value.strip():
            return
        v = value.strip()
        try:
            ip = ipaddress.ip_address(v)
            found.append((f"[{_ip_kind(v)}:value = '{ip}']", str(ip)))
            return
        except ValueError:
            pass
        if kinds in ("url", "any") and re.match(r"^[a-z][a-z0-9+.-]*://", v, re.I):
            found.append((f"[url:value = '{_quote(v)}']", v))
        elif kinds in ("domain", "any") and _DOMAIN.match(v.rstrip(".")):
            found.append((f"[domain-name:value = '{_quote(v.rstrip('.').lower())}']", v.rstrip(".").lower()))
        elif kinds == "any" and re.fullmatch(r"[0-9a-fA-F]+", v) and len(v) in _HEX:
            found.append((f"[file:hashes.'{_HEX[len(v)]}' = '{v.lower()}']", v.lower()))

    for key in IP_KEYS + GENERIC_KEYS:
        add(details.get(key), "any")
    for key in DOMAIN_KEYS:
        add(details.get(key), "domain")
    for key in URL_KEYS:
        add(details.get(key), "url")
    for key, algo in HASH_KEYS.items():
        v = details.get(key)
        if isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]+", v) and len(v) in _HEX:
            found.append((f"[file:hashes.'{algo}' = '{v.lower()}']", v.lower()))
    out: list[tuple[str, str]] = []
    for item in found:
        if item not in out:
            out.append(item)
    return out


def alerts_bundle(alerts: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """Indicators (one per distinct pattern) and one sighting per alert that carries one;
    returns the bundle and how many alerts carried no indicator (left out)."""
    author = identity()
    objects: list[dict[str, Any]] = [author]
    indicators: dict[str, dict[str, Any]] = {}
    sensors: dict[str, dict[str, Any]] = {}
    without = 0
    for a in alerts:
        found = indicators_of(a.get("details") or {})
        if not found:
            without += 1
            continue
        first, last = _ts(a.get("first_detected")), _ts(a.get("last_detected"))
        last = max(first, last)
        where = sensors.setdefault(a.get("sensor") or "", identity(a.get("sensor") or None))
        for pattern, text in found:
            ind = indicators.get(pattern)
            if ind is None:
                ind = {"type": "indicator", "spec_version": "2.1", "id": _sdo_id("indicator", pattern),
                       "created": first, "modified": first, "created_by_ref": author["id"],
                       "name": text, "description": a.get("title"),
                       "indicator_types": ["malicious-activity"], "pattern": pattern,
                       "pattern_type": "stix", "valid_from": first}
                indicators[pattern] = ind
            elif first < ind["valid_from"]:
                ind["valid_from"] = ind["created"] = ind["modified"] = first
            sighting = {"type": "sighting", "spec_version": "2.1",
                        "id": _sdo_id("sighting", f"{a['id']}|{pattern}"),
                        "created": first, "modified": last, "created_by_ref": author["id"],
                        "sighting_of_ref": ind["id"], "where_sighted_refs": [where["id"]],
                        "first_seen": first, "last_seen": last,
                        "count": max(1, min(int(a.get("count") or 1), 999_999_999)),
                        "description": f"tapwatch alert {a['id']}: {a.get('title')}",
                        "external_references": [{"source_name": "tapwatch", "external_id": str(a["id"])}]}
            objects.append(sighting)
    objects[1:1] = list(sensors.values()) + list(indicators.values())
    unique: dict[str, dict[str, Any]] = {}
    for o in objects:
        unique.setdefault(o["id"], o)
    return bundle(list(unique.values())), without
