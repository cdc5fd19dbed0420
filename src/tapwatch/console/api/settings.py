"""Console settings (retention period, …) and running the retention job on demand."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request

from tapwatch.console import rbac, retention
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, tx
from tapwatch.store.console_models import DEFAULT_SETTINGS, all_settings, set_setting

router = APIRouter(tags=["settings"])

# how each known setting is checked: (type, minimum, maximum)
LIMITS: dict[str, tuple[type[int], int, int]] = {
    "retention_days": (int, 0, 3650),  # 0 keeps everything
    "retention_interval_minutes": (int, 1, 10080),
}


@router.get("/settings")
def get_settings(request: Request, _: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    with tx(request) as s:
        return all_settings(s)


@router.put("/settings/{key}")
def put_setting(request: Request, key: str, value: Any = Body(..., embed=True),
                who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    """Change one setting: {"value": ...}."""
    if key not in DEFAULT_SETTINGS:
        raise HTTPException(404, f"no setting {key[:64]!r} (settings: {', '.join(DEFAULT_SETTINGS)})")
    kind, low, high = LIMITS[key]
    if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
        raise HTTPException(422, f"{key} must be an integer from {low} to {high}")
    with tx(request) as s:
        set_setting(s, key, value, actor(who))
        return all_settings(s)


@router.post("/retention/run")
def run_retention(request: Request,
                  who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    """Purge now what the retention period says is too old."""
    with tx(request) as s:
        return retention.run(s, actor(who)).as_dict()
