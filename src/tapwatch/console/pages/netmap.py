"""The network map page."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from tapwatch.console import netmap, rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import render, tx

router = APIRouter()


@router.get("/map")
def map_page(request: Request, layout: str = Query("purdue", pattern="^(purdue|connections)$"),
             _: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        data = netmap.load(s)
    svg = netmap.purdue_svg(data) if layout == "purdue" else netmap.connection_svg(data)
    return render(request, "map.html", nav="map", svg=svg, layout=layout, shown=len(data.devices),
                  total=data.total, colors=netmap.CLASS_COLORS)
