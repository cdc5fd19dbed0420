"""Plans: add, edit, cancel, usage (committed vs billable, trend), the billing ledger, and the
entitlement check that security-service routes declare.

Plan routes declare rbac.INVENTORY_READ: anyone signed in may read plans, and whether they
may change one is decided by their role on that plan's subscription (security admin,
contributor, owner there, or global admin), which the route-level check cannot know. Those
refusals answer 403 and are audited.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.plans import features, ledger, subscriptions
from tapwatch.plans import plans as plan_rules
from tapwatch.plans.access import Actor, NotFound, PlanError, Refused, transaction
from tapwatch.store.console_models import utcnow

router = APIRouter(tags=["plans"])
T = TypeVar("T")


def actor_of(principal: Principal) -> Actor:
    return Actor(principal.username, principal.role, principal.user_id)


def run(request: Request, work: Callable[[Session], T], refresh: bool = True) -> T:
    """One plan transaction with the plan rules' errors as HTTP answers (refusals audited)."""
    maker = request.app.state.sessions
    try:
        if refresh:
            with transaction(maker) as s:
                ledger.refresh(s)
        with transaction(maker) as s:
            return work(s)
    except Refused as e:
        raise HTTPException(403, str(e)) from None
    except features.NotEntitled as e:
        raise HTTPException(403, str(e)) from None
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    except PlanError as e:
        raise HTTPException(400, str(e)) from None


def entitled(service: str) -> Callable[..., Awaitable[None]]:
    """A dependency answering 403 when the subscription asked for has no plan for `service`.

    Declare it after the route's `require(...)`, so authentication answers first; the
    subscription is `?subscription=ID`, else the console's default one. A console without
    subscriptions is not under plan management and is never refused.
    """
    if service not in features.SERVICES:
        raise ValueError(f"unknown service {service!r}")

    async def check_entitlement(request: Request, subscription: int | None = Query(
            None, ge=1, le=2**31 - 1, description="Subscription (default: the default one)")) -> None:
        if getattr(request.state, "principal", None) is None:
            from tapwatch.console import auth
            if await run_in_threadpool(auth.authenticate, request) is None:
                return  # the route's permission check answers 401

        def work() -> None:
            with request.app.state.sessions() as s:
                features.check(s, service, subscription)

        try:
            await run_in_threadpool(work)
        except features.NotEntitled as e:
            raise HTTPException(403, str(e)) from None
        except NotFound as e:
            raise HTTPException(404, str(e)) from None

    return check_entitlement


class PlanAdd(BaseModel):
    kind: Literal["trial", "monthly", "annual"]
    committed_devices: int | None = Field(None, ge=1, le=plan_rules.MAX_COMMITTED)
    coverage: Literal["both", "eiot", "ot"] = "both"
    start: datetime | None = Field(None, description="ISO 8601; default now; never in the past")


class PlanEdit(BaseModel):
    committed_devices: int | None = Field(None, ge=1, le=plan_rules.MAX_COMMITTED)
    coverage: Literal["both", "eiot", "ot"] | None = None
    effective: datetime | None = Field(None, description="when the change takes effect (default now)")


class PlanCancel(BaseModel):
    part: Literal["eiot", "ot"] | None = Field(None, description="cancel only this part")
    effective: datetime | None = None


def usage_json(s: Session, sub_id: int, days: int = 90) -> dict[str, Any]:
    sub = subscriptions.get(s, sub_id)
    return {**ledger.usage(s, sub).as_dict(), "trend": ledger.trend(s, sub.id, days)}


@router.post("/subscriptions/{subscription_id}/plans", status_code=201)
def add_plan(request: Request, subscription_id: int, body: PlanAdd,
             who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Add a plan (at most one per subscription; a trial runs 30 days with no device limit)."""
    def work(s: Session) -> dict[str, Any]:
        sub = subscriptions.get(s, subscription_id)
        plan = plan_rules.add(s, actor_of(who), sub, body.kind, body.committed_devices, body.coverage,
                              body.start)
        return plan_rules.plan_json(s, plan)
    return run(request, work)


@router.get("/plans/{plan_id}")
def get_plan(request: Request, plan_id: int,
             _: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    return run(request, lambda s: plan_rules.plan_json(s, plan_rules.get_plan(s, plan_id)))


@router.patch("/plans/{plan_id}")
def edit_plan(request: Request, plan_id: int, body: PlanEdit,
              who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Change committed devices or coverage from `effective` (recorded for pro-rata billing)."""
    def work(s: Session) -> dict[str, Any]:
        plan = plan_rules.edit(s, actor_of(who), plan_id, body.committed_devices, body.coverage,
                               body.effective)
        return plan_rules.plan_json(s, plan)
    return run(request, work)


@router.post("/plans/{plan_id}/cancel")
def cancel_plan(request: Request, plan_id: int, body: PlanCancel,
                who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Cancel the plan from `effective`, or only its Enterprise IoT or OT part."""
    def work(s: Session) -> dict[str, Any]:
        plan = plan_rules.cancel(s, actor_of(who), plan_id, body.part, body.effective)
        return plan_rules.plan_json(s, plan)
    return run(request, work)


@router.get("/subscriptions/{subscription_id}/usage")
def get_usage(request: Request, subscription_id: int, days: int = Query(90, ge=1, le=3660),
              _: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Billable devices against committed devices, a warning when over, and the daily trend."""
    return run(request, lambda s: usage_json(s, subscription_id, days))


@router.get("/subscriptions/{subscription_id}/ledger")
def get_ledger(request: Request, subscription_id: int,
               start: datetime | None = Query(None, alias="from", description="default: 1st of the month"),
               end: datetime | None = Query(None, alias="to", description="default: now"),
               _: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Billing periods of [from, to) with days and committed device-days (pro rata)."""
    def work(s: Session) -> dict[str, Any]:
        sub = subscriptions.get(s, subscription_id)
        now = utcnow()
        lo = plan_rules.naive_utc(start) or ledger.month_bounds(now.date())[0]
        hi = plan_rules.naive_utc(end) or now + timedelta(microseconds=1)
        if hi <= lo:
            raise PlanError("`to` must be after `from`")
        return ledger.prorate(s, sub.id, lo, hi)
    return run(request, work)


@router.get("/subscriptions/{subscription_id}/entitlements")
def get_entitlements(request: Request, subscription_id: int, at: datetime | None = None,
                     _: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Which services the subscription may use (now, or at `at`)."""
    def work(s: Session) -> dict[str, Any]:
        subscriptions.get(s, subscription_id)
        return features.entitlements(s, subscription_id, at).as_dict()
    return run(request, work)
