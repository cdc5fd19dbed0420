"""A 0–100 security score per device and per site (100: nothing found), with its reasons.

The weights live in risk.yaml (documented there) and can be overridden by a file of one's
own: a score must be explainable, so every point lost is listed with why.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from tapwatch import yamltext
from tapwatch.vulns.findings import DeviceFindings, brief
from tapwatch.vulns.recommendations import (
    cleartext_credential_reasons,
    insecure_protocol_reasons,
    load_catalog,
)

UNASSIGNED_SITE = "(no site)"


def _merge(base: dict[str, Any], over: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise ValueError(f"{where}: unknown setting {key!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key} must be a mapping")
            out[key] = _merge(base[key], value, f"{where}: {key}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: {key} must be a number, found {value!r}")
            out[key] = value
    return out


def load_weights(path: str | Path | None = None) -> dict[str, Any]:
    """The built-in weights, overridden by `path` or $TAPWATCH_RISK_WEIGHTS if given."""
    text = resources.files("tapwatch.vulns").joinpath("risk.yaml").read_text(encoding="utf-8")
    weights: dict[str, Any] = yamltext.load(text)
    path = path or os.environ.get("TAPWATCH_RISK_WEIGHTS")
    if path:
        over = yamltext.load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(over, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        weights = _merge(weights, over, str(path))
    return weights


def band(score: int, weights: dict[str, Any]) -> str:
    if score >= weights["bands"]["secure"]:
        return "secure"
    if score >= weights["bands"]["needs_improvement"]:
        return "needs improvement"
    return "vulnerable"


def _insecure_params() -> dict[str, Any]:
    for rec in load_catalog():
        if rec.check == "insecure_admin_protocols":
            return rec.params
    return {}


def device_risk(f: DeviceFindings, everyone: dict[int, DeviceFindings], weights: dict[str, Any],
                insecure_params: dict[str, Any]) -> dict[str, Any]:
    """One device's score, its band, the points lost per category and why."""
    reasons: list[str] = []
    w = weights["vulnerabilities"]
    remaining = 1.0
    for v in f.vulns:
        cvss = v["cvss_score"] if v["cvss_score"] is not None else w["unknown_cvss"]
        share = w["per_cve"] * cvss / 10.0
        share *= w["kev_multiplier"] if v["kev"] else 1.0
        share *= w["model_only_factor"] if v["confidence"] == "model" else 1.0
        remaining *= 1.0 - min(1.0, share)
    vuln_points = w["max"] * (1.0 - remaining)
    if f.vulns:
        kev = sum(1 for v in f.vulns if v["kev"])
        worst = max(v["cvss_score"] or 0.0 for v in f.vulns)
        reasons.append(f"{len(f.vulns)} CVE{'s' if len(f.vulns) != 1 else ''} (highest CVSS {worst:.1f}"
                       + (f", {kev} known exploited" if kev else "") + ")")

    e = weights["exposure"]
    exposure = 0.0
    if f.internet_peers:
        exposure += e["internet"] * (1.0 if f.device.device_class == "OT" else 0.5)
        reasons.append(f"talks to {len(f.internet_peers)} internet address(es)")
    insecure = insecure_protocol_reasons(f, insecure_params)
    exposure += e["insecure_protocol"] * len(insecure)
    reasons += insecure
    cleartext = cleartext_credential_reasons(f, everyone)
    if cleartext:
        exposure += e["cleartext_credentials"]
        reasons += cleartext
    if f.facts.get("smb_os") or f.facts.get("smb_native_lanman"):
        exposure += e["smbv1"]
        reasons.append("uses SMBv1")
    if "None" in f.facts.get("opcua_security_mode", ()) or any(
            p.endswith("#None") for p in f.facts.get("opcua_security_policy", ())):
        exposure += e["opcua_security_none"]
        reasons.append("OPC UA without security")
    exposure = min(exposure, e["max"])

    a = weights["alerts"]
    alert_points = min(a["max"], sum(a.get(sev, 0) * n for sev, n in f.alerts.items()))
    if f.alerts:
        reasons.append("open alerts: " + ", ".join(f"{n} {sev}" for sev, n in sorted(f.alerts.items())))

    factor = weights["importance"].get(f.device.importance or "normal", 1.0)
    lost = (vuln_points + exposure + alert_points) * factor
    score = max(0, min(100, round(100 - lost)))
    return {**brief(f.device), "importance": f.device.importance, "score": score,
            "band": band(score, weights),
            "points_lost": {"vulnerabilities": round(vuln_points, 1), "exposure": round(exposure, 1),
                            "alerts": round(alert_points, 1)},
            "importance_factor": factor, "cves": len(f.vulns),
            "kev_cves": sum(1 for v in f.vulns if v["kev"]),
            "max_cvss": max((v["cvss_score"] or 0.0 for v in f.vulns), default=None),
            "open_alerts": sum(f.alerts.values()), "reasons": reasons}


def device_risks(findings: dict[int, DeviceFindings], weights: dict[str, Any] | None = None
                 ) -> list[dict[str, Any]]:
    """Every device's risk, lowest score first."""
    weights = weights or load_weights()
    params = _insecure_params()
    rows = [device_risk(f, findings, weights, params) for f in findings.values()]
    rows.sort(key=lambda r: (r["score"], r["device_id"]))
    return rows


def site_risks(devices: list[dict[str, Any]], weights: dict[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    """Per site: the importance-weighted mean of device scores, band counts, the worst devices."""
    weights = weights or load_weights()
    site_w = weights["site"]["weights"]
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in devices:
        by_site[d["site"] or UNASSIGNED_SITE].append(d)
    out = []
    for site, rows in sorted(by_site.items()):
        total = sum(site_w.get(r["importance"] or "normal", 1) for r in rows)
        mean = sum(r["score"] * site_w.get(r["importance"] or "normal", 1) for r in rows) / total
        score = round(mean)
        bands: dict[str, int] = {"secure": 0, "needs improvement": 0, "vulnerable": 0}
        for r in rows:
            bands[r["band"]] += 1
        worst = sorted(rows, key=lambda r: (r["score"], r["device_id"]))[:5]
        out.append({"site": site, "score": score, "band": band(score, weights), "devices": len(rows),
                    "bands": bands, "cves": sum(r["cves"] for r in rows),
                    "kev_cves": sum(r["kev_cves"] for r in rows),
                    "worst": [{"device_id": r["device_id"], "ip": r["ip"], "name": r["name"],
                               "score": r["score"]} for r in worst]})
    out.sort(key=lambda s: (s["score"], s["site"]))
    return out
