"""Vulnerabilities, one CVE, recommendations and sites pages, and the risk and CVE data the
dashboard and the device page show. Everything is read through the API modules, so a page
and its API answer never differ; permissions and plan gates are the API's.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from tapwatch.console import queries, rbac
from tapwatch.console.api import vulnerabilities as vulns_api
from tapwatch.console.api.plans import entitled
from tapwatch.console.api.recommendations import evaluated, filtered
from tapwatch.console.api.sites import sites_json
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import render, tx
from tapwatch.plans import features
from tapwatch.plans.access import PlanError
from tapwatch.vulns import recommendations, risk

router = APIRouter()
PAGE_SIZE = 100


@router.get("/vulnerabilities", dependencies=[Depends(entitled("vulnerabilities"))])
def vulnerabilities_page(
    request: Request,
    flt: vulns_api.VulnFilter = Depends(vulns_api.vuln_filter),
    sort: str = Query("cvss", max_length=16),
    order: str = Query("desc", max_length=4),
    page: int = Query(1, ge=1, le=1_000_000),
    _: Principal = Depends(require(rbac.ALERTS_READ)),
) -> Response:
    everything = vulns_api.matches(request)
    rows = vulns_api.sorted_rows([r for r in everything if flt.keep(r)], sort, order)
    start = (page - 1) * PAGE_SIZE
    params = {**flt.as_params(), "sort": sort, "order": order}
    vendors = sorted({r["vendor"] for r in everything if r["vendor"]}, key=str.lower)
    return render(request, "vulnerabilities.html", nav="vulnerabilities", rows=rows[start:start + PAGE_SIZE],
                  total=len(rows), summary=vulns_api.summary(rows), page=page, page_size=PAGE_SIZE,
                  params=params, flt=flt, sort=sort, order=order, vendors=vendors,
                  severities=vulns_api.SEVERITIES, any_matches=bool(everything))


@router.get("/vulnerabilities/{cve_id}", dependencies=[Depends(entitled("vulnerabilities"))])
def vulnerability_page(request: Request, cve_id: str,
                       _: Principal = Depends(require(rbac.ALERTS_READ))) -> Response:
    if len(cve_id) > 64:
        raise HTTPException(404, "no such vulnerability")
    v = vulns_api.one_vulnerability(request, cve_id)
    return render(request, "vulnerability.html", nav="vulnerabilities", v=v)


@router.get("/recommendations", dependencies=[Depends(entitled("recommendations"))])
def recommendations_page(
    request: Request,
    status: str | None = Query(None, max_length=9),
    severity: str | None = Query(None, max_length=6),
    _: Principal = Depends(require(rbac.ALERTS_READ)),
) -> Response:
    rows = filtered(evaluated(request), status or None, severity or None, None)
    return render(request, "recommendations.html", nav="recommendations", recs=rows, status=status,
                  severity=severity, severities=recommendations.SEVERITIES)


@router.get("/sites")
def sites_page(request: Request, _: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        data = sites_json(s)
    return render(request, "sites.html", nav="sites", data=data, classes=("IT", "IoT", "OT", "unknown"))


# -- what the dashboard and the device page add ---------------------------------------------


def _refusal(request: Request, service: str) -> str | None:
    """The plan's refusal message when `service` is off for the default subscription."""
    try:
        with request.app.state.sessions() as s:
            features.check(s, service)
    except PlanError as e:  # NotEntitled, or no default subscription
        return str(e)
    return None


def dashboard_risk(request: Request, who: Principal) -> dict[str, Any] | None:
    """The risk card: each site's score and band, and the devices per band (None: not shown)."""
    if not who.can(rbac.ALERTS_READ):
        return None
    refused = _refusal(request, "vulnerabilities")
    if refused:
        return {"refused": refused}
    try:
        data = vulns_api.risk_json(request)
    except (HTTPException, queries.QueryError) as e:  # broken weights: say so on the card
        return {"refused": getattr(e, "detail", str(e))}
    return {"sites": data["sites"], "distribution": data["distribution"], "bands": data["bands"],
            "devices": len(data["devices"])}


def device_security(request: Request, who: Principal, device_id: int) -> dict[str, Any] | None:
    """The device page's vulnerabilities and score (None: not shown to this role)."""
    if not who.can(rbac.ALERTS_READ):
        return None
    refused = _refusal(request, "vulnerabilities")
    if refused:
        return {"refused": refused}
    found = vulns_api.current_findings(request)
    mine = found.get(device_id)
    if mine is None:
        return {"vulns": [], "risk": None}
    try:
        weights = vulns_api.load_weights()
    except HTTPException:
        return {"vulns": mine.vulns, "risk": None}
    score = next(r for r in risk.device_risks(found, weights) if r["device_id"] == device_id)
    return {"vulns": mine.vulns, "risk": score}
