"""The recommendations catalog (recommendations.yaml) evaluated over the inventory.

A check looks at one device's findings and says: not concerned (None), healthy ([]), or
unhealthy (the reasons). The catalog decides titles, severities and parameters, so a site
can tune or replace it (TAPWATCH_RECOMMENDATIONS) without code.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tapwatch import yamltext
from tapwatch.vulns.findings import SMB1_FACTS, DeviceFindings, brief
from tapwatch.vulns.products import vendor_key

Check = Callable[[DeviceFindings, dict[str, Any]], list[str] | None]
SEVERITIES = ("high", "medium", "low")


def insecure_protocol_reasons(f: DeviceFindings, params: dict[str, Any]) -> list[str]:
    """Cleartext administration services the device serves, and SNMP default communities."""
    reasons = []
    for proto, label in (params.get("protocols") or {}).items():
        ports = f.served.get(proto)
        if ports:
            reasons.append(f"serves {label} (port {', '.join(map(str, sorted(ports)))})")
    defaults = {str(c).lower() for c in params.get("default_snmp_communities") or []}
    communities = sorted(c for c in f.facts.get("snmp_community", ()) if c.lower() in defaults)
    agent = bool(f.served.get("snmp")) or bool(f.used.get("snmp-trap"))  # managers send them too
    if communities and agent:
        reasons.append(f"SNMP v1/v2c with default communit{'ies' if len(communities) > 1 else 'y'} "
                       + ", ".join(repr(c) for c in communities))
    return reasons


def _insecure_admin_protocols(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    return insecure_protocol_reasons(f, params)


def cleartext_credential_reasons(f: DeviceFindings, peers: dict[int, DeviceFindings]) -> list[str]:
    reasons = []
    if "true" in f.facts.get("mqtt_password_cleartext", ()):
        reasons.append("sent an MQTT password in clear text")
    if f.facts.get("mqtt_client_id") and not f.facts.get("mqtt_username_present"):
        reasons.append("logged in to MQTT without credentials")
    cleartext = sorted(peers[c].device.ip or str(c) for c in f.mqtt_clients
                       if c in peers and "true" in peers[c].facts.get("mqtt_password_cleartext", ()))
    if cleartext:
        reasons.append(f"MQTT broker accepting clear-text passwords from {', '.join(cleartext[:5])}")
    anonymous = sorted(peers[c].device.ip or str(c) for c in f.mqtt_clients
                       if c in peers and peers[c].facts.get("mqtt_client_id")
                       and not peers[c].facts.get("mqtt_username_present"))
    if anonymous:
        reasons.append(f"MQTT broker with clients logging in without credentials "
                       f"({', '.join(anonymous[:5])})")
    return reasons


def _plc_operating_mode(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    if not f.is_controller:
        return None
    mode = f.device.plc_mode
    if mode is None:
        return None  # a controller whose mode no protocol reported: nothing to judge
    secure = {str(m).lower() for m in params.get("secure_modes") or ["run"]}
    reasons = []
    if mode.lower() not in secure:
        reasons.append(f"operating mode is {mode!r}")
    if reasons:
        for kind, count in sorted(f.mode_events.items()):
            reasons.append(f"{kind.replace('_', ' ')} seen {count}×")
    return reasons


def _unauthorized(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    return [] if f.device.authorized else ["not authorized"]


def _vulnerable_devices(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    if not f.device.vendor:
        return None
    floor = float(params.get("min_cvss") or 0.0)
    bad = [v for v in f.vulns if v["kev"] or (v["cvss_score"] or 0.0) >= floor]
    if not bad:
        return []
    kev = [v["cve"] for v in bad if v["kev"]]
    worst = max((v["cvss_score"] or 0.0) for v in bad)
    reason = f"{len(bad)} CVE{'s' if len(bad) != 1 else ''} (highest CVSS {worst:.1f})"
    return [reason] + ([f"known exploited: {', '.join(kev[:5])}"] if kev else [])


def _internet_connectivity(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    classes = {str(c) for c in params.get("classes") or ["OT"]}
    if f.device.device_class not in classes:
        return None
    if not f.internet_peers:
        return []
    peers = sorted(f.internet_peers)
    return [f"exchanged traffic with {len(peers)} internet address{'es' if len(peers) > 1 else ''}: "
            + ", ".join(peers[:5]) + (" …" if len(peers) > 5 else "")]


def _smbv1(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    if not f.speaks_smb:
        return None
    if any(f.facts.get(a) for a in SMB1_FACTS):
        return ["used SMBv1 (SMB1 session setup seen)"]
    return []


def _opcua_security_mode(f: DeviceFindings, params: dict[str, Any]) -> list[str] | None:
    if not f.speaks_opcua:
        return None
    reasons = []
    if "None" in f.facts.get("opcua_security_mode", ()):
        reasons.append("OPC UA security mode None")
    if any(p.endswith("#None") for p in f.facts.get("opcua_security_policy", ())):
        reasons.append("OPC UA security policy None")
    return reasons


CHECKS: dict[str, Check] = {
    "insecure_admin_protocols": _insecure_admin_protocols,
    "cleartext_credentials": lambda f, p: None,  # needs every device: evaluated in evaluate()
    "plc_operating_mode": _plc_operating_mode,
    "unauthorized": _unauthorized,
    "vulnerable_devices": _vulnerable_devices,
    "internet_connectivity": _internet_connectivity,
    "smbv1": _smbv1,
    "opcua_security_mode": _opcua_security_mode,
}


@dataclass(frozen=True)
class Recommendation:
    id: str
    title: str
    severity: str
    check: str
    params: dict[str, Any]
    why: str
    action: str
    per: str | None = None


def load_catalog(path: str | Path | None = None) -> list[Recommendation]:
    """The catalog: `path`, else $TAPWATCH_RECOMMENDATIONS, else the built-in one."""
    path = path or os.environ.get("TAPWATCH_RECOMMENDATIONS")
    if path:
        where, text = str(path), Path(path).read_text(encoding="utf-8")
    else:
        where = "recommendations.yaml"
        text = resources.files("tapwatch.vulns").joinpath(where).read_text(encoding="utf-8")
    data = yamltext.load(text) or {}
    out = []
    for i, raw in enumerate(data.get("recommendations") or []):
        here = f"{where}: recommendations[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{here}: expected a mapping")
        missing = [k for k in ("id", "title", "check") if not raw.get(k)]
        if missing:
            raise ValueError(f"{here}: missing {', '.join(missing)}")
        if raw["check"] not in CHECKS:
            raise ValueError(f"{here}: unknown check {raw['check']!r} (known: {', '.join(sorted(CHECKS))})")
        severity = str(raw.get("severity", "medium"))
        if severity not in SEVERITIES:
            raise ValueError(f"{here}: severity must be one of {', '.join(SEVERITIES)}")
        out.append(Recommendation(str(raw["id"]), str(raw["title"]), severity, str(raw["check"]),
                                  dict(raw.get("params") or {}), str(raw.get("why", "")).strip(),
                                  str(raw.get("action", "")).strip(), raw.get("per")))
    return out


def _result(rec: Recommendation, rec_id: str, title: str,
            outcomes: list[tuple[DeviceFindings, list[str]]]) -> dict[str, Any]:
    unhealthy = [{**brief(f.device), "reasons": r} for f, r in outcomes if r]
    healthy = [brief(f.device) for f, r in outcomes if not r]
    return {"id": rec_id, "title": title, "severity": rec.severity, "why": rec.why,
            "action": rec.action, "status": "unhealthy" if unhealthy else "healthy",
            "unhealthy_count": len(unhealthy), "healthy_count": len(healthy),
            "unhealthy": unhealthy, "healthy": healthy}


def evaluate(findings: dict[int, DeviceFindings],
             catalog: list[Recommendation] | None = None) -> list[dict[str, Any]]:
    """Every recommendation with its healthy and unhealthy devices; unhealthy ones first."""
    out = []
    for rec in catalog if catalog is not None else load_catalog():
        outcomes: list[tuple[DeviceFindings, list[str]]] = []
        for f in findings.values():
            if rec.check == "cleartext_credentials":
                concerned = bool(f.facts.get("mqtt_client_id") or f.mqtt_clients
                                 or f.facts.get("mqtt_password_cleartext"))
                reasons = cleartext_credential_reasons(f, findings) if concerned else None
            else:
                reasons = CHECKS[rec.check](f, rec.params)
            if reasons is not None:
                outcomes.append((f, reasons))
        if rec.per == "vendor":
            by_vendor: dict[str, list[tuple[DeviceFindings, list[str]]]] = {}
            for f, r in outcomes:  # "Siemens" and "Siemens AG" are one vendor
                by_vendor.setdefault(vendor_key(f.device.vendor), []).append((f, r))
            for key, items in sorted(by_vendor.items()):
                if key and any(r for _, r in items):
                    names = Counter(f.device.vendor for f, _ in items)
                    vendor = sorted(names, key=lambda n: (-names[n], n or ""))[0] or key
                    out.append(_result(rec, f"{rec.id}:{key}", rec.title.replace("{vendor}", vendor),
                                       items))
        else:
            out.append(_result(rec, rec.id, rec.title, outcomes))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    out.sort(key=lambda r: (r["status"] != "unhealthy", rank[r["severity"]], -r["unhealthy_count"]))
    return out
