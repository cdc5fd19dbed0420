"""Events: operations devices performed (program downloads, PLC stops, …)."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import or_

from tapwatch.console import queries, rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import tx
from tapwatch.store.evidence import event_json
from tapwatch.store.models import Event

router = APIRouter(tags=["events"])


def event_conditions(kind: str | None, device_id: int | None) -> list[Any]:
    conds: list[Any] = []
    if kind:
        conds.append(Event.kind == kind)
    if device_id is not None:
        conds.append(or_(Event.src_device_id == device_id, Event.dst_device_id == device_id))
    return conds


@router.get("/events")
def list_events(
    request: Request,
    type: str | None = Query(None, max_length=32),
    device_id: int | None = None,
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(100, ge=1, le=queries.MAX_PAGE_SIZE),
    _: Principal = Depends(require(rbac.INVENTORY_READ)),
) -> dict[str, Any]:
    """Events, newest first."""
    with tx(request) as s:
        total, rows = queries.page_rows(s, Event, event_conditions(type, device_id),
                                        [Event.ts.desc(), Event.id.desc()], page, page_size)
        return {"total": total, "page": page, "page_size": page_size,
                "events": [event_json(e) for e in rows]}
