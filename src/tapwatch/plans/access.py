"""Who is acting, which role they hold on a subscription, and refusals that leave a trace.

A user's role on a subscription is their assignment there, else their console role; a
global admin holds that role on every subscription. A refusal is raised as `Refused` and
recorded in the audit log by `transaction()` after the refused change has rolled back, so
the trace survives while nothing of the change does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console import rbac
from tapwatch.store.console_models import User, audit
from tapwatch.store.plan_models import SubscriptionRole


class PlanError(ValueError):
    """A request the plan rules refuse; the message says what and why."""


class NotFound(PlanError):
    pass


class Refused(PlanError):
    """The actor's role on the subscription does not allow the action (audited)."""

    def __init__(self, actor: Actor, action: str, target_type: str, target_id: object,
                 message: str, **details: Any) -> None:
        super().__init__(message)
        self.actor, self.action, self.target_type = actor, action, target_type
        self.target_id, self.details = target_id, details


@dataclass(frozen=True)
class Actor:
    """Someone acting on plans: a console user, the local CLI administrator, or the system."""

    name: str  # as the audit log shows it
    role: str  # console-wide role, the default on every subscription
    user_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


# the local command line without --as: whoever can open the database administers it
CLI = Actor("cli", "global_admin")
SYSTEM = Actor("system", "global_admin")


def actor_for_user(session: Session, username: str, prefix: str = "") -> Actor:
    """The actor for a console user (CLI `--as USER`); disabled users cannot act."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no console user {username!r}")
    if user.disabled:
        raise PlanError(f"user {username!r} is disabled")
    return Actor(prefix + user.username, user.role, user.id)


def role_on(session: Session, actor: Actor, subscription_id: int) -> str:
    """The role `actor` holds on one subscription."""
    if actor.role == "global_admin" or actor.user_id is None:
        return actor.role
    assigned = session.scalar(select(SubscriptionRole.role).where(
        SubscriptionRole.user_id == actor.user_id, SubscriptionRole.subscription_id == subscription_id))
    return assigned or actor.role


def authorize(session: Session, actor: Actor, subscription_id: int, subscription_name: str,
              permission: str, action: str, target_type: str, target_id: object) -> str:
    """Return the actor's role on the subscription, or raise Refused naming role and permission."""
    role = role_on(session, actor, subscription_id)
    if not rbac.allowed(role, permission):
        allowed = ", ".join(rbac.ROLE_LABELS[r].lower() for r, perms in rbac.ROLE_PERMISSIONS.items()
                            if permission in perms)
        raise Refused(actor, action, target_type, target_id,
                      f"{actor.name} is {rbac.ROLE_LABELS.get(role, role).lower()} on subscription "
                      f"{subscription_name!r}; {action} needs one of: {allowed}",
                      role=role, permission=permission, subscription_id=subscription_id)
    return role


def record_refusal(sessions: sessionmaker[Session], exc: Refused) -> None:
    """Write the refusal to the audit log in a transaction of its own."""
    with sessions.begin() as s:
        audit(s, exc.actor.name, f"{exc.action}.refused", exc.target_type, exc.target_id,
              reason=str(exc), **exc.details)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction for a plan action; a refusal rolls it back and is then audited."""
    try:
        with sessions.begin() as s:
            yield s
    except Refused as exc:
        record_refusal(sessions, exc)
        raise
