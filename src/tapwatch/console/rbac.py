"""Roles and permissions, and the one declarative way every route states what it needs.

Each route carries `Depends(require(PERMISSION))` (or `require(PUBLIC)`); the role matrix
test enumerates the application's routes and fails on any route without one. Plans
(issue 7) and sensors (issue 8) already have their permissions here so their routes can
declare them when they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from tapwatch.store.console_models import ROLES

PUBLIC = "public"  # reachable without logging in (login page, health)

INVENTORY_READ = "inventory:read"  # devices, connections, events, map, dashboard
ALERTS_READ = "alerts:read"
AUDIT_READ = "audit:read"
DEVICES_AUTHORIZE = "devices:authorize"  # authorize / un-authorize devices
DEVICES_WRITE = "devices:write"  # edit, delete, merge devices
ALERTS_WRITE = "alerts:write"  # change alert status (learn / mute join here)
SENSORS_WRITE = "sensors:write"
PLANS_WRITE = "plans:write"
SETTINGS_WRITE = "settings:write"  # retention and other console settings
USERS_MANAGE = "users:manage"  # users, roles, other people's tokens
ALL_SUBSCRIPTIONS = "subscriptions:all"

PERMISSIONS = (INVENTORY_READ, ALERTS_READ, AUDIT_READ, DEVICES_AUTHORIZE, DEVICES_WRITE,
               ALERTS_WRITE, SENSORS_WRITE, PLANS_WRITE, SETTINGS_WRITE, USERS_MANAGE,
               ALL_SUBSCRIPTIONS)

_READ = {INVENTORY_READ, ALERTS_READ, AUDIT_READ}
_ANALYST = _READ | {DEVICES_AUTHORIZE, ALERTS_WRITE}
_ADMIN = _ANALYST | {DEVICES_WRITE, SENSORS_WRITE, PLANS_WRITE}
_OWNER = _ADMIN | {SETTINGS_WRITE, USERS_MANAGE}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "security_reader": frozenset(_READ),
    "security_analyst": frozenset(_ANALYST),
    "security_admin": frozenset(_ADMIN),
    "contributor": frozenset(_READ | {PLANS_WRITE}),
    "owner": frozenset(_OWNER),
    "global_admin": frozenset(_OWNER | {ALL_SUBSCRIPTIONS}),
}
assert set(ROLE_PERMISSIONS) == set(ROLES)

ROLE_LABELS = {
    "security_reader": "Security reader", "security_analyst": "Security analyst",
    "security_admin": "Security admin", "contributor": "Contributor", "owner": "Owner",
    "global_admin": "Global admin",
}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def allowed(role: str, permission: str) -> bool:
    return permission == PUBLIC or permission in ROLE_PERMISSIONS.get(role, frozenset())


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through a browser session or an API token."""

    user_id: int
    username: str
    role: str
    via: str  # "session" or "token"
    csrf: str | None = None  # the session's CSRF token (sessions only)

    def can(self, permission: str) -> bool:
        return allowed(self.role, permission)


class Require:
    """A route dependency: authenticate, check CSRF for cookie sessions, check the permission.

    401 without (valid) credentials, 403 for a role without the permission or a missing
    CSRF token. Public routes get the principal if there is one, else None.
    """

    def __init__(self, permission: str) -> None:
        if permission != PUBLIC and permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")
        self.permission = permission

    def __repr__(self) -> str:
        return f"require({self.permission!r})"

    async def __call__(self, request: Request) -> Principal | None:
        from tapwatch.console import auth

        principal: Principal | None = await run_in_threadpool(auth.authenticate, request)
        request.state.principal = principal
        if self.permission == PUBLIC:
            return principal
        if principal is None:
            raise HTTPException(401, "authentication required",
                                headers={"WWW-Authenticate": "Bearer"})
        if principal.via == "session" and request.method not in SAFE_METHODS:
            await auth.check_csrf(request, principal)
        if not principal.can(self.permission):
            raise HTTPException(403, f"your role ({principal.role}) lacks the permission "
                                     f"{self.permission}")
        return principal


_cache: dict[str, Require] = {}


def require(permission: str) -> Require:
    """The dependency for `permission` (one instance per permission)."""
    if permission not in _cache:
        _cache[permission] = Require(permission)
    return _cache[permission]
