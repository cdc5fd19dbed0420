"""Connections: who talks to whom, filtered by device or protocol."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import or_

from tapwatch.console import queries, rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import tx
from tapwatch.store.inventory import connection_json
from tapwatch.store.models import Connection

router = APIRouter(tags=["connections"])


def connection_query(device_id: int | None, protocol: str | None) -> Any:
    conds = []
    if device_id is not None:
        conds.append(or_(Connection.client_device_id == device_id,
                         Connection.server_device_id == device_id))
    if protocol:
        conds.append(Connection.protocol == protocol)
    return conds


@router.get("/connections")
def list_connections(
    request: Request,
    device_id: int | None = None,
    protocol: str | None = Query(None, max_length=32),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(100, ge=1, le=queries.MAX_PAGE_SIZE),
    _: Principal = Depends(require(rbac.INVENTORY_READ)),
) -> dict[str, Any]:
    """Connections, most recently active first."""
    with tx(request) as s:
        total, rows = queries.page_rows(s, Connection, connection_query(device_id, protocol),
                                        [Connection.last_seen.desc(), Connection.id], page, page_size)
        return {"total": total, "page": page, "page_size": page_size,
                "connections": [connection_json(c) for c in rows]}
