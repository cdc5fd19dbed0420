"""Entitlements: which security services a subscription may use at a given time.

Alerts, recommendations, vulnerabilities and new data from sensors need a plan in force
(for the parts it covers); the inventory stays readable without one. A console that has no
subscription at all is not under plan management (a self-hosted install before anyone
set billing up), so nothing is switched off there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import Session

from tapwatch.plans import subscriptions
from tapwatch.plans.access import NotFound, PlanError
from tapwatch.plans.counting import COVERAGE_PARTS, part_of
from tapwatch.plans.plans import naive_utc, state, term_at
from tapwatch.store.console_models import utcnow
from tapwatch.store.inventory import iso
from tapwatch.store.models import Device
from tapwatch.store.plan_models import Plan, Subscription

SERVICES = ("alerts", "recommendations", "vulnerabilities", "sensor_data")
SERVICE_LABELS = {"alerts": "alerts", "recommendations": "recommendations",
                  "vulnerabilities": "vulnerabilities", "sensor_data": "new data from sensors",
                  "inventory": "the inventory"}


class NotEntitled(PlanError):
    """A security service was asked of a subscription without an active plan."""


@dataclass(frozen=True)
class Entitlements:
    """What one subscription may use at `at`."""

    subscription_id: int | None
    subscription_name: str | None
    at: datetime
    managed: bool  # False: the console has no subscriptions, nothing is switched off
    plan_id: int | None = None
    kind: str | None = None
    coverage: frozenset[str] = frozenset()  # "eiot", "ot"
    committed_devices: int | None = None
    reason: str = ""  # why nothing is active, for the people who are refused

    @property
    def active(self) -> bool:
        return not self.managed or bool(self.coverage)

    def allows(self, service: str) -> bool:
        if service == "inventory":
            return True
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        return self.active

    def covers(self, device_class: str | None) -> bool:
        """Whether the plan covers devices of this class (security services run for them)."""
        return not self.managed or part_of(device_class) in self.coverage

    @property
    def services(self) -> dict[str, bool]:
        return {"inventory": True, **{s: self.allows(s) for s in SERVICES}}

    def refusal(self, service: str) -> str:
        label = SERVICE_LABELS.get(service, service)
        return (f"subscription {self.subscription_name!r} has no active plan: {label} are off "
                f"({self.reason}); the inventory stays readable")

    def as_dict(self) -> dict[str, Any]:
        return {"subscription_id": self.subscription_id, "subscription": self.subscription_name,
                "at": iso(self.at), "managed": self.managed, "active": self.active,
                "plan_id": self.plan_id, "kind": self.kind, "coverage": sorted(self.coverage),
                "committed_devices": self.committed_devices, "services": self.services,
                "reason": self.reason or None}


def _why_not(session: Session, sub: Subscription, at: datetime) -> str:
    q = select(Plan).where(Plan.subscription_id == sub.id).order_by(Plan.start.desc(), Plan.id.desc())
    plans = list(session.scalars(q))
    if not plans:
        return "it never had one"
    upcoming = [p for p in plans if p.start > at and (p.end is None or p.end > p.start)]
    if upcoming:
        return f"plan {upcoming[-1].id} starts at {iso(upcoming[-1].start)}"
    last = plans[0]
    how = state(last, at)
    if how == "trial_expired":
        return f"its trial ended unconverted at {iso(last.end)}"
    return f"plan {last.id} ({last.kind}) was cancelled from {iso(last.end)}"


def entitlements(session: Session, subscription_id: int | None = None,
                 at: datetime | None = None) -> Entitlements:
    """What `subscription_id` (default: the console's default subscription) may use at `at`."""
    at = naive_utc(at) or utcnow()
    if subscription_id is None:
        sub = subscriptions.default(session)
        if sub is None:
            if subscriptions.any_exist(session):  # cannot happen through tapwatch.plans
                raise NotFound("the console has subscriptions but no default one")
            return Entitlements(None, None, at, managed=False)
    else:
        sub = session.get(Subscription, subscription_id)
        if sub is None:
            raise NotFound(f"no subscription with id {subscription_id}")
    found = term_at(session, sub.id, at)
    if found is None:
        return Entitlements(sub.id, sub.name, at, managed=True, reason=_why_not(session, sub, at))
    plan, term = found
    return Entitlements(sub.id, sub.name, at, managed=True, plan_id=plan.id, kind=plan.kind,
                        coverage=COVERAGE_PARTS[term.coverage], committed_devices=term.committed_devices)


def for_sensor(session: Session, sensor: str | None, at: datetime | None = None) -> Entitlements:
    """Entitlements of the subscription a sensor's data belongs to (for sensor ingestion)."""
    sub = subscriptions.subscription_of_sensor(session, sensor)
    return entitlements(session, sub.id if sub else None, at)


def check(session: Session, service: str, subscription_id: int | None = None,
          at: datetime | None = None) -> Entitlements:
    """Raise NotEntitled, with a message for people, unless `service` is on."""
    ent = entitlements(session, subscription_id, at)
    if not ent.allows(service):
        raise NotEntitled(ent.refusal(service))
    return ent


def covered_devices(session: Session, at: datetime | None = None) -> ColumnElement[bool] | None:
    """SQL condition on Device selecting the devices whose subscription's plan covers their
    class (an OT-only plan: OT devices); None when every device is covered. Security
    findings (alerts, vulnerabilities, recommendations, risk) are shown for these only."""
    if not subscriptions.any_exist(session):
        return None
    parts: list[ColumnElement[bool]] = []
    partial = False
    for sub in subscriptions.all_subscriptions(session):
        coverage = entitlements(session, sub.id, at).coverage
        if coverage == frozenset(COVERAGE_PARTS["both"]):
            parts.append(subscriptions.device_scope(session, sub.id))
            continue
        partial = True
        if coverage:
            ot = Device.device_class == "OT"
            by_class = ot if coverage == {"ot"} else or_(Device.device_class.is_(None), ~ot)
            parts.append(and_(subscriptions.device_scope(session, sub.id), by_class))
    if not partial:
        return None
    return or_(*parts) if parts else false()
