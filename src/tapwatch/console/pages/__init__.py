"""Server-rendered pages; each route declares its permission like the API's."""

from __future__ import annotations

from fastapi import APIRouter

from tapwatch.console.pages import admin, alerts, forwarding, inventory, netmap

router = APIRouter(include_in_schema=False)
for module in (admin, inventory, alerts, netmap):
    router.include_router(module.router)
router.include_router(forwarding.router)

from tapwatch.console.pages import sensors  # noqa: E402

router.include_router(sensors.router)

from tapwatch.console.pages import plans  # noqa: E402

router.include_router(plans.router)

from tapwatch.console.pages import findings  # noqa: E402

router.include_router(findings.router)
