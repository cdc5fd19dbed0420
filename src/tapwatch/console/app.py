"""The console application: API and pages on one FastAPI app, with errors people can read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tapwatch import __version__
from tapwatch.console import api, auth, pages, retention
from tapwatch.console.api import metrics as metrics_route
from tapwatch.console.queries import QueryError
from tapwatch.console.web import HERE, render
from tapwatch.integrations.forwarding import forwarding_loop
from tapwatch.integrations.metrics import LatencyMiddleware
from tapwatch.store.db import sessions
from tapwatch.store.device_admin import AdminError, NotFound

log = logging.getLogger("tapwatch.console")
MAX_BODY = 2 * 1024 * 1024  # no form or API call needs more; bigger bodies are refused (413)

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class Guard:
    """Refuse oversized bodies before they are read, and add security headers to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await JSONResponse({"detail": f"request body larger than {MAX_BODY} bytes"},
                               status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, f"request body larger than {MAX_BODY} bytes")
            return message

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"same-origin"),
                            (b"content-security-policy", CSP.encode())]
                message["headers"] = headers
            await send(message)

        await self.app(scope, limited, with_headers)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    message = detail if isinstance(detail, str) else "; ".join(
        f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg')}" for e in detail)
    return render(request, "error.html", http_status=status, status_code=status, message=message)


def create_app(engine: Engine, *, background: bool = False, secure_cookies: bool | None = None) -> FastAPI:
    """The console over `engine` (already migrated). `background` runs the retention job and
    forwards new alerts to the SIEM rules every minute."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_retention_loop(app)),
                 asyncio.create_task(forwarding_loop(app.state.sessions, 60))] if background else []
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="tapwatch console", version=__version__, lifespan=lifespan,
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
                  description="REST API of the tapwatch console. Authenticate with "
                              "`Authorization: Bearer <token>` (tapwatch users token).")
    app.state.engine = engine
    app.state.sessions = sessions(engine)
    app.state.secure_cookies = secure_cookies
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(metrics_route.router)  # /metrics (Prometheus)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, exc.detail, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return _error(request, 422, errors)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(AdminError)
    async def refused(request: Request, exc: AdminError) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(auth.AuthError)
    async def auth_refused(request: Request, exc: auth.AuthError) -> Response:
        return _error(request, 400, str(exc))

    app.add_middleware(LatencyMiddleware)  # type: ignore[arg-type]
    app.add_middleware(Guard)  # type: ignore[arg-type]
    return app


def iter_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full path, route) of every route, through included routers.

    FastAPI used to copy included routes flat into `app.routes`; newer releases keep each
    included router as one entry. The role-matrix test walks both shapes through this.
    """
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = route.include_context
            yield from iter_routes(included.routes, prefix + context.prefix)
        else:
            yield prefix + getattr(route, "path", ""), route


async def _retention_loop(app: FastAPI) -> None:
    from tapwatch.store.console_models import get_setting

    def interval() -> int:
        with app.state.sessions() as s:
            return int(get_setting(s, "retention_interval_minutes") or 60)

    def job() -> None:
        with app.state.sessions.begin() as s:
            retention.run(s)

    # the first run waits one interval: starting the console to look at an inventory
    # never deletes anything on the spot
    while True:
        try:
            await asyncio.sleep(await run_in_threadpool(interval) * 60)
            await run_in_threadpool(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed run is logged; the next one tries again
            log.exception("retention job failed")
            await asyncio.sleep(60)
