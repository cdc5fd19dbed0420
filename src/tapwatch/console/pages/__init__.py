"""Server-rendered pages; each route declares its permission like the API's."""

from __future__ import annotations

from fastapi import APIRouter

from tapwatch.console.pages import admin, alerts, inventory, netmap

router = APIRouter(include_in_schema=False)
for module in (admin, inventory, alerts, netmap):
    router.include_router(module.router)
