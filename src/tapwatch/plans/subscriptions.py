"""Subscriptions: creating them, the sensors whose devices they hold, and per-subscription roles.

A device belongs to the subscription its sensor is assigned to; devices of sensors assigned
to none belong to the default subscription (the first one created, until another is made
the default), so a console with one subscription needs no assignment at all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, false, func, or_, select, true
from sqlalchemy.orm import Session

from tapwatch.console import rbac
from tapwatch.plans.access import Actor, NotFound, PlanError, Refused, authorize
from tapwatch.store.console_models import ROLES, User, audit, utcnow
from tapwatch.store.models import Device
from tapwatch.store.plan_models import Subscription, SubscriptionRole, SubscriptionSensor

NAME_MAX = 128
# roles a subscription can give; global admin is console-wide by definition
SUBSCRIPTION_ROLES = tuple(r for r in ROLES if r != "global_admin")


def get(session: Session, ref: int | str) -> Subscription:
    """A subscription by id or by name."""
    sub: Subscription | None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        sub = session.get(Subscription, int(ref))
        if sub is None and isinstance(ref, str):
            sub = session.scalar(select(Subscription).where(Subscription.name == ref))
    else:
        sub = session.scalar(select(Subscription).where(Subscription.name == ref))
    if sub is None:
        raise NotFound(f"no subscription {ref!r}")
    return sub


def default(session: Session) -> Subscription | None:
    return session.scalar(select(Subscription).where(Subscription.is_default.is_(True)))


def all_subscriptions(session: Session) -> list[Subscription]:
    return list(session.scalars(select(Subscription).order_by(Subscription.id)))


def any_exist(session: Session) -> bool:
    return (session.scalar(select(func.count(Subscription.id))) or 0) > 0


def create(session: Session, actor: Actor, name: str, description: str | None = None) -> Subscription:
    """Add a subscription (owners and global admins); the first one becomes the default."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or name.isdigit():
        raise PlanError(f"a subscription name is 1-{NAME_MAX} characters and not only digits")
    if not rbac.allowed(actor.role, rbac.USERS_MANAGE):
        raise Refused(actor, "subscription.create", "subscription", name,
                      f"{actor.name} is {rbac.ROLE_LABELS.get(actor.role, actor.role).lower()}; "
                      "creating a subscription needs owner or global admin", role=actor.role)
    if session.scalar(select(Subscription.id).where(Subscription.name == name)) is not None:
        raise PlanError(f"a subscription named {name!r} exists already")
    first = not any_exist(session)
    sub = Subscription(name=name, description=(description or "").strip() or None, is_default=first,
                       created_at=utcnow(), created_by=actor.name)
    session.add(sub)
    session.flush()
    audit(session, actor.name, "subscription.create", "subscription", sub.id, name=name, default=first)
    return sub


def _manage(session: Session, actor: Actor, sub: Subscription, action: str) -> None:
    authorize(session, actor, sub.id, sub.name, rbac.USERS_MANAGE, action, "subscription", sub.id)


def set_default(session: Session, actor: Actor, sub: Subscription) -> None:
    """Make `sub` the home of devices whose sensor is assigned to no subscription."""
    _manage(session, actor, sub, "subscription.set_default")
    for other in all_subscriptions(session):
        other.is_default = other.id == sub.id
    audit(session, actor.name, "subscription.set_default", "subscription", sub.id, name=sub.name)


def sensors(session: Session, subscription_id: int) -> list[str]:
    q = select(SubscriptionSensor.sensor).where(SubscriptionSensor.subscription_id == subscription_id)
    return sorted(session.scalars(q))


def add_sensor(session: Session, actor: Actor, sub: Subscription, sensor: str) -> None:
    """Assign a sensor's devices to `sub`; a sensor assigned elsewhere must be removed there first."""
    _manage(session, actor, sub, "subscription.sensor_add")
    sensor = (sensor or "").strip()
    if not sensor or len(sensor) > 255:
        raise PlanError("a sensor name is 1-255 characters")
    row = session.scalar(select(SubscriptionSensor).where(SubscriptionSensor.sensor == sensor))
    if row is not None:
        if row.subscription_id == sub.id:
            return
        other = session.get(Subscription, row.subscription_id)
        raise PlanError(f"sensor {sensor!r} belongs to subscription {other.name if other else '?'!r}; "
                        "remove it there first")
    session.add(SubscriptionSensor(subscription_id=sub.id, sensor=sensor))
    audit(session, actor.name, "subscription.sensor_add", "subscription", sub.id, sensor=sensor)


def remove_sensor(session: Session, actor: Actor, sub: Subscription, sensor: str) -> None:
    _manage(session, actor, sub, "subscription.sensor_remove")
    row = session.scalar(select(SubscriptionSensor).where(
        SubscriptionSensor.sensor == sensor, SubscriptionSensor.subscription_id == sub.id))
    if row is None:
        raise NotFound(f"sensor {sensor!r} is not assigned to subscription {sub.name!r}")
    session.delete(row)
    audit(session, actor.name, "subscription.sensor_remove", "subscription", sub.id, sensor=sensor)


def subscription_of_sensor(session: Session, sensor: str | None) -> Subscription | None:
    """The subscription a sensor's data belongs to (the default one when unassigned)."""
    if sensor:
        sub_id = session.scalar(select(SubscriptionSensor.subscription_id)
                                .where(SubscriptionSensor.sensor == sensor))
        if sub_id is not None:
            return session.get(Subscription, sub_id)
    return default(session)


def device_scope(session: Session, subscription_id: int | None) -> ColumnElement[bool]:
    """SQL condition selecting the devices of one subscription (all devices when None)."""
    if subscription_id is None:
        return true()
    sub = session.get(Subscription, subscription_id)
    if sub is None:
        return false()
    own = select(SubscriptionSensor.sensor).where(SubscriptionSensor.subscription_id == sub.id)
    if not sub.is_default:
        return Device.sensor.in_(own)
    assigned = select(SubscriptionSensor.sensor)
    return or_(Device.sensor.in_(own), Device.sensor.not_in(assigned))


def roles(session: Session, subscription_id: int) -> list[dict[str, Any]]:
    q = (select(SubscriptionRole, User.username).join(User, User.id == SubscriptionRole.user_id)
         .where(SubscriptionRole.subscription_id == subscription_id).order_by(User.username))
    return [{"user": name, "user_id": r.user_id, "role": r.role, "assigned_at": r.assigned_at,
             "assigned_by": r.assigned_by} for r, name in session.execute(q)]


def set_role(session: Session, actor: Actor, sub: Subscription, username: str, role: str | None) -> None:
    """Give `username` a role on `sub` (None removes it: their console role applies again).

    Needs owner rights on the subscription, and nobody grants more than they hold there.
    """
    held = authorize(session, actor, sub.id, sub.name, rbac.USERS_MANAGE, "subscription.role",
                     "subscription", sub.id)
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no console user {username!r}")
    if user.role == "global_admin":
        raise PlanError(f"{username} is a global admin, who holds that role on every subscription")
    row = session.scalar(select(SubscriptionRole).where(
        SubscriptionRole.user_id == user.id, SubscriptionRole.subscription_id == sub.id))
    if role is None:
        if row is None:
            raise NotFound(f"{username} has no role of their own on subscription {sub.name!r}")
        session.delete(row)
        audit(session, actor.name, "subscription.role_remove", "subscription", sub.id, user=username,
              old=row.role)
        return
    if role not in SUBSCRIPTION_ROLES:
        raise PlanError(f"unknown subscription role {role!r} (roles: {', '.join(SUBSCRIPTION_ROLES)})")
    if not rbac.ROLE_PERMISSIONS[role] <= rbac.ROLE_PERMISSIONS[held]:
        raise Refused(actor, "subscription.role", "subscription", sub.id,
                      f"{actor.name} cannot grant {role} on {sub.name!r}: it is more than "
                      f"their own role there ({held})", role=held, granted=role)
    old = row.role if row is not None else None
    if row is None:
        session.add(SubscriptionRole(user_id=user.id, subscription_id=sub.id, role=role,
                                     assigned_at=utcnow(), assigned_by=actor.name))
    else:
        row.role, row.assigned_at, row.assigned_by = role, utcnow(), actor.name
    audit(session, actor.name, "subscription.role", "subscription", sub.id, user=username, old=old, new=role)
