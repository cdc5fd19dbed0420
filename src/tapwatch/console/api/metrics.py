"""GET /metrics: Prometheus text format for the console (mounted at the root by app.py).

Token-protected like the API (inventory:read): metrics reveal inventory size and alert
counts. Scrape with a reader's token, e.g. in prometheus.yml
`authorization: {type: Bearer, credentials_file: /etc/prometheus/tapwatch.token}`.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.integrations import metrics

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def prometheus_metrics(request: Request,
                             _: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    body = await run_in_threadpool(metrics.render_console, request.app.state.sessions)
    return Response(body, media_type=metrics.CONTENT_TYPE)
