"""Vulnerabilities (device ↔ CVE matches, one CVE with its devices) and the risk scores.

The rows are the CLI's (`tapwatch vulns list --format json`, `tapwatch risk --format json`):
the same functions compute them, after the same refresh of the matches, so the console and
the command line never disagree. Risk sits here because most of a score is vulnerabilities
and its rows count CVEs: it needs the same plan service.

Permission: rbac.ALERTS_READ. Vulnerabilities, recommendations and risk are security findings
like alerts (which devices can be exploited), not inventory; every role that reads the
inventory also holds it, so security readers see them.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from tapwatch.console import queries, rbac
from tapwatch.console.api.plans import entitled
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import get_or_404, tx
from tapwatch.plans import features
from tapwatch.store.inventory import iso
from tapwatch.store.models import Device
from tapwatch.store.vuln_models import Vulnerability
from tapwatch.vulns import findings as findings_mod
from tapwatch.vulns import matcher, risk

router = APIRouter(tags=["vulnerabilities"], dependencies=[Depends(entitled("vulnerabilities"))])

SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")
SORTS = {
    "device": lambda r: (r["device_id"], not r["kev"], -(r["cvss_score"] or 0), r["cve"]),
    "cvss": lambda r: (r["cvss_score"] if r["cvss_score"] is not None else -1.0, r["kev"], r["cve"],
                       r["device_id"]),
    "cve": lambda r: (r["cve"], r["device_id"]),
    "kev": lambda r: (r["kev"], r["cvss_score"] or 0, r["cve"], r["device_id"]),
    "vendor": lambda r: ((r["vendor"] or "").lower(), r["device_id"], r["cve"]),
    "first_matched": lambda r: (r["first_matched"] or "", r["device_id"], r["cve"]),
}


def refresh_matches(request: Request) -> None:
    """Recompute the device ↔ CVE matches, as every CLI read does first.

    Two requests refreshing at once may collide on the same new rows; the one that loses
    reads what the other stored, which is the same answer.
    """
    try:
        with tx(request) as s:
            matcher.refresh(s)
    except (IntegrityError, OperationalError):
        pass


def current_findings(request: Request) -> dict[int, findings_mod.DeviceFindings]:
    """Every device's findings after a refresh of the matches (what the CLI's reads use)."""
    refresh_matches(request)
    with request.app.state.sessions() as s:  # read-only; loaded devices stay readable after
        found = findings_mod.gather(s)
        keep = covered_ids(s)
        return found if keep is None else {i: f for i, f in found.items() if i in keep}


def covered_ids(s: Session) -> set[int] | None:
    """The devices whose plan covers their class (a plan covering only OT: OT devices), or
    None when all are: findings of the others are not shown."""
    covered = features.covered_devices(s)
    return None if covered is None else set(s.scalars(select(Device.id).where(covered)))


def _covered_rows(s: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = covered_ids(s)
    return rows if keep is None else [r for r in rows if r["device_id"] in keep]


def load_weights() -> dict[str, Any]:
    try:
        return risk.load_weights()
    except (OSError, ValueError) as e:
        raise HTTPException(500, f"risk weights: {e}") from None


@dataclass
class VulnFilter:
    """The vulnerability list's filters, shared by the API and the page."""

    device_id: int | None = None
    severity: str | None = None
    cvss_min: float | None = None
    cvss_max: float | None = None
    kev: bool | None = None
    vendor: str | None = None  # the device's vendor, case-insensitive substring
    confidence: str | None = None  # firmware or model
    q: str | None = None  # CVE id, title or product, case-insensitive substring

    def __post_init__(self) -> None:
        if self.severity and self.severity not in SEVERITIES:
            raise queries.QueryError(f"severity must be one of {', '.join(SEVERITIES)}")
        if self.confidence and self.confidence not in ("firmware", "model"):
            raise queries.QueryError("confidence must be firmware or model")
        if self.cvss_min is not None and self.cvss_max is not None and self.cvss_min > self.cvss_max:
            raise queries.QueryError("cvss_min must not be above cvss_max")

    def keep(self, r: dict[str, Any]) -> bool:
        score = r["cvss_score"]
        if self.device_id is not None and r["device_id"] != self.device_id:
            return False
        if self.severity and r["severity"] != self.severity:
            return False
        if self.cvss_min is not None and (score is None or score < self.cvss_min):
            return False
        if self.cvss_max is not None and (score is None or score > self.cvss_max):
            return False
        if self.kev is not None and bool(r["kev"]) is not self.kev:
            return False
        if self.vendor and self.vendor.lower() not in (r["vendor"] or "").lower():
            return False
        if self.confidence and r["confidence"] != self.confidence:
            return False
        if self.q:
            text = " ".join(str(r[k] or "") for k in ("cve", "title", "product")).lower()
            if self.q.lower() not in text:
                return False
        return True

    def as_params(self) -> dict[str, str]:
        out = {k: v for k, v in {
            "device_id": self.device_id, "severity": self.severity, "cvss_min": self.cvss_min,
            "cvss_max": self.cvss_max, "vendor": self.vendor, "confidence": self.confidence,
            "q": self.q}.items() if v not in (None, "")}
        if self.kev is not None:
            out["kev"] = "true" if self.kev else "false"
        return {k: str(v) for k, v in out.items()}


def vuln_filter(device_id: int | None = Query(None, ge=1, le=2**62),
                severity: str | None = Query(None, max_length=8, description=", ".join(SEVERITIES)),
                cvss_min: float | None = Query(None, ge=0, le=10),
                cvss_max: float | None = Query(None, ge=0, le=10),
                kev: str | None = Query(None, max_length=5, description="true: on CISA's KEV list"),
                vendor: str | None = Query(None, max_length=255, description="device vendor contains"),
                confidence: str | None = Query(None, max_length=8, description="firmware or model"),
                q: str | None = Query(None, max_length=255, description="CVE id, title or product contains"),
                ) -> VulnFilter:
    return VulnFilter(device_id, severity or None, cvss_min, cvss_max, queries.parse_bool("kev", kev),
                      vendor or None, confidence or None, q or None)


def sorted_rows(rows: list[dict[str, Any]], sort: str, order: str) -> list[dict[str, Any]]:
    if sort not in SORTS:
        raise queries.QueryError(f"unknown sort {sort[:40]!r} (one of {', '.join(SORTS)})")
    if order not in ("asc", "desc"):
        raise queries.QueryError("order must be asc or desc")
    return sorted(rows, key=SORTS[sort], reverse=order == "desc")


def matches(request: Request, device_id: int | None = None) -> list[dict[str, Any]]:
    """The CLI's `vulns list` rows (after a refresh)."""
    refresh_matches(request)
    with tx(request) as s:
        return _covered_rows(s, matcher.list_matches(s, device_id))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_severity = {sev: 0 for sev in SEVERITIES}
    for r in rows:
        by_severity[r["severity"]] += 1
    return {"matches": len(rows), "cves": len({r["cve"] for r in rows}),
            "devices": len({r["device_id"] for r in rows}), "kev": sum(1 for r in rows if r["kev"]),
            "by_severity": by_severity}


def list_vulns(request: Request, flt: VulnFilter, sort: str, order: str, page: int,
               page_size: int) -> dict[str, Any]:
    rows = sorted_rows([r for r in matches(request) if flt.keep(r)], sort, order)
    start = (page - 1) * page_size
    return {"total": len(rows), "page": page, "page_size": page_size, "summary": summary(rows),
            "vulnerabilities": rows[start:start + page_size]}


def vulnerability_json(v: Vulnerability) -> dict[str, Any]:
    return {"cve": v.cve_id, "title": v.title, "description": v.description,
            "cvss_score": v.cvss_score, "cvss_vector": v.cvss_vector, "cvss_version": v.cvss_version,
            "severity": matcher.severity(v.cvss_score), "score_source": v.score_source, "cwe": v.cwe,
            "published": iso(v.published), "modified": iso(v.modified), "kev": v.kev,
            "kev_added": v.kev_added, "kev_due": v.kev_due, "kev_action": v.kev_action,
            "kev_ransomware": v.kev_ransomware, "references": list(v.references or [])}


def one_vulnerability(request: Request, cve_id: str) -> dict[str, Any]:
    """The CVE as imported, with the devices it affects (404 when no feed has it)."""
    refresh_matches(request)
    with tx(request) as s:
        v = s.scalar(select(Vulnerability).where(func.upper(Vulnerability.cve_id) == cve_id.upper()))
        if v is None:
            raise HTTPException(404, f"no vulnerability {cve_id[:64]!r} in the imported feeds")
        out = vulnerability_json(v)
        out["devices"] = _covered_rows(s, [r for r in matcher.list_matches(s) if r["cve"] == v.cve_id])
    return out


def risk_json(request: Request, site: str | None = None, band: str | None = None) -> dict[str, Any]:
    """Per-site and per-device scores as `tapwatch risk` computes them, with the weights."""
    weights = load_weights()
    devices = risk.device_risks(current_findings(request), weights)
    sites = risk.site_risks(devices, weights)
    if site:
        devices = [d for d in devices if (d["site"] or risk.UNASSIGNED_SITE) == site]
        sites = [x for x in sites if x["site"] == site]
    if band:
        devices = [d for d in devices if d["band"] == band]
    distribution = {"secure": 0, "needs improvement": 0, "vulnerable": 0}
    for d in devices:
        distribution[d["band"]] += 1
    return {"bands": weights["bands"], "weights": weights, "distribution": distribution,
            "sites": sites, "devices": devices}


@router.get("/vulnerabilities")
def get_vulnerabilities(
    request: Request,
    flt: VulnFilter = Depends(vuln_filter),
    sort: str = Query("device", max_length=16, description=", ".join(SORTS)),
    order: str = Query("asc", max_length=4),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(100, ge=1, le=queries.MAX_PAGE_SIZE),
    _: Principal = Depends(require(rbac.ALERTS_READ)),
) -> dict[str, Any]:
    """Device vulnerabilities (one row per device and CVE, as `tapwatch vulns list` prints them)."""
    return list_vulns(request, flt, sort, order, page, page_size)


@router.get("/vulnerabilities/{cve_id}")
def get_vulnerability(request: Request, cve_id: str,
                      _: Principal = Depends(require(rbac.ALERTS_READ))) -> dict[str, Any]:
    """One CVE: score, vector, KEV, references, and every device it affects."""
    if len(cve_id) > 64:
        raise HTTPException(404, "no such vulnerability")
    return one_vulnerability(request, cve_id)


@router.get("/devices/{device_id}/vulnerabilities")
def get_device_vulnerabilities(request: Request, device_id: int,
                               _: Principal = Depends(require(rbac.ALERTS_READ))) -> dict[str, Any]:
    """One device's CVEs (as `tapwatch vulns list --device ID`)."""
    with tx(request) as s:
        get_or_404(s, Device, device_id, "device")
    rows = matches(request, device_id)
    return {"device_id": device_id, "total": len(rows), "summary": summary(rows), "vulnerabilities": rows}


@router.get("/risk", tags=["risk"])
def get_risk(request: Request,
             site: str | None = Query(None, max_length=255, description="only this site"),
             band: str | None = Query(None, max_length=20,
                                      description="secure, needs improvement or vulnerable"),
             _: Principal = Depends(require(rbac.ALERTS_READ))) -> dict[str, Any]:
    """Security scores 0–100 per site and per device (lowest first), their bands and the weights."""
    if band and band not in ("secure", "needs improvement", "vulnerable"):
        raise queries.QueryError("band must be secure, needs improvement or vulnerable")
    return risk_json(request, site or None, band or None)
