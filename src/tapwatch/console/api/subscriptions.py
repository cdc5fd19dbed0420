"""Subscriptions: list, create, the sensors they hold and per-subscription roles.

Creating needs rbac.USERS_MANAGE (owner, global admin). Sensors and roles of one
subscription are managed by whoever is owner there (or global admin); those routes declare
rbac.INVENTORY_READ and the subscription role decides, with refusals audited.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from tapwatch.console import rbac
from tapwatch.console.api.plans import actor_of, run, usage_json
from tapwatch.console.rbac import Principal, require
from tapwatch.plans import features, subscriptions
from tapwatch.plans import plans as plan_rules
from tapwatch.plans.access import role_on
from tapwatch.store.inventory import iso
from tapwatch.store.plan_models import Subscription

router = APIRouter(tags=["subscriptions"])


def _roles(s: Session, subscription_id: int) -> list[dict[str, Any]]:
    return [{**r, "assigned_at": iso(r["assigned_at"])} for r in subscriptions.roles(s, subscription_id)]


def _change_then_list(request: Request, subscription_id: int,
                      change: Callable[[Session, Subscription], object], field: str,
                      listing: Callable[[Session, int], Any]) -> dict[str, Any]:
    """Apply `change` to one subscription and answer with its `field` as it is afterwards.

    Adding or removing a sensor or a role answers with the whole new list, so a client never
    has to guess what the subscription holds now.
    """
    def work(s: Session) -> dict[str, Any]:
        sub = subscriptions.get(s, subscription_id)
        change(s, sub)
        return {"subscription_id": sub.id, field: listing(s, sub.id)}
    return run(request, work, refresh=False)


def subscription_json(s: Session, sub: Subscription, principal: Principal | None = None,
                      full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": sub.id, "name": sub.name, "description": sub.description, "default": sub.is_default,
        "created_at": iso(sub.created_at), "created_by": sub.created_by,
        "sensors": subscriptions.sensors(s, sub.id),
        "entitlements": features.entitlements(s, sub.id).as_dict(),
    }
    if principal is not None:
        role = role_on(s, actor_of(principal), sub.id)
        out["your_role"] = role
        out["you_may_change_plans"] = rbac.allowed(role, rbac.PLANS_WRITE)
    if full:
        out["roles"] = _roles(s, sub.id)
        out["plans"] = [plan_rules.plan_json(s, p) for p in plan_rules.plans_of(s, sub.id)]
        out["usage"] = usage_json(s, sub.id)
    return out


@router.get("/subscriptions")
def list_subscriptions(request: Request,
                       who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    def work(s: Session) -> dict[str, Any]:
        return {"subscriptions": [subscription_json(s, sub, who)
                                  for sub in subscriptions.all_subscriptions(s)]}
    return run(request, work)


class SubscriptionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=subscriptions.NAME_MAX)
    description: str | None = Field(None, max_length=1024)


@router.post("/subscriptions", status_code=201)
def create_subscription(request: Request, body: SubscriptionCreate,
                        who: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    """Add a subscription; the first one is the default (it holds unassigned sensors' devices)."""
    def work(s: Session) -> dict[str, Any]:
        return subscription_json(s, subscriptions.create(s, actor_of(who), body.name, body.description), who)
    return run(request, work, refresh=False)


@router.get("/subscriptions/{subscription_id}")
def get_subscription(request: Request, subscription_id: int,
                     who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """A subscription with its plans, roles, entitlements and usage."""
    return run(request, lambda s: subscription_json(s, subscriptions.get(s, subscription_id), who, full=True))


class SensorBody(BaseModel):
    sensor: str = Field(min_length=1, max_length=255)


@router.post("/subscriptions/{subscription_id}/sensors")
def add_sensor(request: Request, subscription_id: int, body: SensorBody,
               who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Assign a sensor's devices to the subscription (owner of it, or global admin)."""
    return _change_then_list(
        request, subscription_id,
        lambda s, sub: subscriptions.add_sensor(s, actor_of(who), sub, body.sensor),
        "sensors", subscriptions.sensors)


@router.delete("/subscriptions/{subscription_id}/sensors/{sensor}")
def remove_sensor(request: Request, subscription_id: int, sensor: str,
                  who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    return _change_then_list(
        request, subscription_id,
        lambda s, sub: subscriptions.remove_sensor(s, actor_of(who), sub, sensor),
        "sensors", subscriptions.sensors)


class RoleBody(BaseModel):
    role: str = Field(min_length=1, max_length=32)


@router.put("/subscriptions/{subscription_id}/roles/{username}")
def set_role(request: Request, subscription_id: int, username: str, body: RoleBody,
             who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Give a user a role on this subscription (it replaces their console role there)."""
    return _change_then_list(
        request, subscription_id,
        lambda s, sub: subscriptions.set_role(s, actor_of(who), sub, username, body.role),
        "roles", _roles)


@router.delete("/subscriptions/{subscription_id}/roles/{username}")
def remove_role(request: Request, subscription_id: int, username: str,
                who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    return _change_then_list(
        request, subscription_id,
        lambda s, sub: subscriptions.set_role(s, actor_of(who), sub, username, None),
        "roles", _roles)
