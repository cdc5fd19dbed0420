"""The plans page: subscriptions, their plan, committed vs billable devices, trend and ledger.

Forms post back here and redirect with a message; whether someone may change a plan is
their role on that subscription (see tapwatch.console.api.plans), so the page declares
rbac.INVENTORY_READ and shows the forms only to those who may use them.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from tapwatch.console import rbac
from tapwatch.console.api.plans import actor_of, run
from tapwatch.console.api.subscriptions import subscription_json
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import render
from tapwatch.plans import ledger, subscriptions
from tapwatch.plans import plans as plan_rules
from tapwatch.store.console_models import utcnow

router = APIRouter()


def _back(subscription_id: int | None, msg: str | None = None, error: str | None = None) -> Response:
    params = [f"subscription={subscription_id}"] if subscription_id else []
    params += [f"msg={quote(msg)}"] if msg else []
    params += [f"error={quote(error)}"] if error else []
    return RedirectResponse("/plans" + ("?" + "&".join(params) if params else ""), status_code=303)


def _when(value: str | None) -> datetime | None:
    """A datetime-local field (taken as UTC); empty means now."""
    if not value or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise HTTPException(422, f"not a date and time: {value[:40]!r}") from None


def _trend_points(trend: list[dict[str, Any]], width: int = 600, height: int = 120) -> dict[str, Any]:
    """Polyline points of billable and committed per day, scaled into the chart box."""
    if not trend:
        return {"billable": "", "committed": "", "max": 0}
    top = max([t["billable"] for t in trend] + [t["committed"] or 0 for t in trend] + [1])
    step = width / max(len(trend) - 1, 1)

    def y(v: int) -> float:
        return round(height - v / top * (height - 10), 1)

    billable = " ".join(f"{round(i * step, 1)},{y(t['billable'])}" for i, t in enumerate(trend))
    committed = " ".join(f"{round(i * step, 1)},{y(t['committed'])}" for i, t in enumerate(trend)
                         if t["committed"] is not None)
    return {"billable": billable, "committed": committed, "max": top}


@router.get("/plans")
def plans_page(request: Request, subscription: int | None = Query(None, ge=1, le=2**31 - 1),
               msg: str | None = Query(None, max_length=300), error: str | None = Query(None, max_length=600),
               who: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    def work(s: Session) -> dict[str, Any]:
        subs = subscriptions.all_subscriptions(s)
        chosen = None
        if subscription is not None:
            chosen = subscriptions.get(s, subscription)
        elif subs:
            chosen = subscriptions.default(s) or subs[0]
        detail = subscription_json(s, chosen, who, full=True) if chosen else None
        month = None
        if chosen:
            first, _next = ledger.month_bounds(utcnow().date())
            month = ledger.prorate(s, chosen.id, first, utcnow())
        return {"subs": [{"id": x.id, "name": x.name, "default": x.is_default} for x in subs],
                "sub": detail, "month": month}

    data = run(request, work)
    trend = data["sub"]["usage"]["trend"] if data["sub"] else []
    return render(request, "plans.html", nav="plans", msg=msg, error=error, chart=_trend_points(trend),
                  may_create=who.can(rbac.USERS_MANAGE), **data)


def _form_action(request: Request, subscription_id: int | None, what: str, work: Any) -> Response:
    try:
        run(request, work, refresh=False)
    except HTTPException as e:
        if e.status_code in (400, 403):  # refused or against the rules: say so on the page
            return _back(subscription_id, error=str(e.detail))
        raise
    return _back(subscription_id, msg=what)


@router.post("/plans/subscriptions")
def create_subscription(request: Request, name: str = Form(..., max_length=128),
                        description: str = Form("", max_length=1024),
                        who: Principal = Depends(require(rbac.USERS_MANAGE))) -> Response:
    try:
        new_id = run(request, lambda s: subscriptions.create(s, actor_of(who), name, description).id,
                     refresh=False)
    except HTTPException as e:
        if e.status_code in (400, 403):
            return _back(None, error=str(e.detail))
        raise
    return _back(new_id, msg=f"created subscription {name}")


@router.post("/plans/subscriptions/{subscription_id}/add")
def add_plan(request: Request, subscription_id: int, kind: str = Form(..., max_length=16),
             committed_devices: int | None = Form(None, ge=1, le=plan_rules.MAX_COMMITTED),
             coverage: str = Form("both", max_length=8), start: str | None = Form(None, max_length=32),
             who: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    when = _when(start)

    def work(s: Session) -> None:
        sub = subscriptions.get(s, subscription_id)
        plan_rules.add(s, actor_of(who), sub, kind, committed_devices if kind != "trial" else None,
                       coverage, when)

    return _form_action(request, subscription_id, f"added a {kind} plan", work)


def _plan_subscription(request: Request, plan_id: int) -> int:
    return run(request, lambda s: plan_rules.get_plan(s, plan_id).subscription_id, refresh=False)


@router.post("/plans/{plan_id}/edit")
def edit_plan(request: Request, plan_id: int,
              committed_devices: int | None = Form(None, ge=1, le=plan_rules.MAX_COMMITTED),
              coverage: str | None = Form(None, max_length=8),
              effective: str | None = Form(None, max_length=32),
              who: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    sub_id = _plan_subscription(request, plan_id)
    when = _when(effective)
    return _form_action(request, sub_id, f"plan {plan_id} changed", lambda s: plan_rules.edit(
        s, actor_of(who), plan_id, committed_devices, coverage or None, when))


@router.post("/plans/{plan_id}/cancel")
def cancel_plan(request: Request, plan_id: int, part: str | None = Form(None, max_length=8),
                effective: str | None = Form(None, max_length=32),
                who: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    sub_id = _plan_subscription(request, plan_id)
    when = _when(effective)
    return _form_action(request, sub_id, f"plan {plan_id} cancelled" + (f" ({part} part)" if part else ""),
                        lambda s: plan_rules.cancel(s, actor_of(who), plan_id, part or None, when))
