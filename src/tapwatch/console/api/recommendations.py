"""Recommendations: the catalog evaluated over the inventory, each with its healthy and
unhealthy devices (and why), as `tapwatch recommendations list --format json` prints them.

Permission: rbac.ALERTS_READ, like vulnerabilities (see console/api/vulnerabilities.py).
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from tapwatch.console import queries, rbac
from tapwatch.console.api.plans import entitled
from tapwatch.console.api.vulnerabilities import current_findings
from tapwatch.console.rbac import Principal, require
from tapwatch.vulns import recommendations

router = APIRouter(tags=["recommendations"], dependencies=[Depends(entitled("recommendations"))])


def evaluated(request: Request) -> list[dict[str, Any]]:
    """Every recommendation, unhealthy ones first (the CLI's order)."""
    try:
        catalog = recommendations.load_catalog()
    except (OSError, ValueError) as e:
        raise HTTPException(500, f"recommendations catalog: {e}") from None
    return recommendations.evaluate(current_findings(request), catalog)


def filtered(rows: list[dict[str, Any]], status: str | None, severity: str | None,
             device_id: int | None) -> list[dict[str, Any]]:
    if status and status not in ("healthy", "unhealthy"):
        raise queries.QueryError("status must be healthy or unhealthy")
    if severity and severity not in recommendations.SEVERITIES:
        raise queries.QueryError(f"severity must be one of {', '.join(recommendations.SEVERITIES)}")
    return [r for r in rows
            if (not status or r["status"] == status) and (not severity or r["severity"] == severity)
            and (device_id is None or any(d["device_id"] == device_id for d in r["unhealthy"]))]


@router.get("/recommendations")
def list_recommendations(
    request: Request,
    status: str | None = Query(None, max_length=9, description="healthy or unhealthy"),
    severity: str | None = Query(None, max_length=6, description="high, medium or low"),
    device_id: int | None = Query(None, ge=1, le=2**62, description="only those this device fails"),
    _: Principal = Depends(require(rbac.ALERTS_READ)),
) -> dict[str, Any]:
    """Recommendations with healthy/unhealthy device counts and lists, unhealthy first."""
    rows = filtered(evaluated(request), status or None, severity or None, device_id)
    return {"total": len(rows), "unhealthy": sum(1 for r in rows if r["status"] == "unhealthy"),
            "recommendations": rows}


@router.get("/recommendations/{recommendation_id}")
def get_recommendation(request: Request, recommendation_id: str,
                       _: Principal = Depends(require(rbac.ALERTS_READ))) -> dict[str, Any]:
    """One recommendation (per-vendor ones have ids like `secure-vulnerable-devices:siemens`)."""
    for r in evaluated(request):
        if r["id"] == recommendation_id:
            return r
    raise HTTPException(404, f"no recommendation {recommendation_id[:100]!r}")
