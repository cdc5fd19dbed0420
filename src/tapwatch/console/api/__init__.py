"""The REST API under /api/v1: one module per resource, each route declaring its permission."""

from __future__ import annotations

from fastapi import APIRouter

from tapwatch.console.api import alerts, audit, connections, devices, events, forwarding, settings, users

router = APIRouter(prefix="/api/v1")
for module in (devices, connections, events, alerts, audit, users, settings):
    router.include_router(module.router)
router.include_router(forwarding.router)

from tapwatch.console.api import sensors  # noqa: E402

router.include_router(sensors.router)

from tapwatch.console.api import plans, subscriptions  # noqa: E402

router.include_router(subscriptions.router)
router.include_router(plans.router)

from tapwatch.console.api import recommendations, sites, vulnerabilities  # noqa: E402

router.include_router(vulnerabilities.router)
router.include_router(recommendations.router)
router.include_router(sites.router)
