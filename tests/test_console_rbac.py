"""Every route × every role: the declared permission is enforced, and every route declares one.

Routes come from the application itself, so a route added later joins the matrix on its own,
and a route without a `require(...)` dependency fails `test_every_route_declares_a_permission`.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from inventory_helpers import CAPTURES, analyze
from tapwatch.console import auth, rbac
from tapwatch.console.app import create_app, iter_routes
from tapwatch.console.rbac import Require
from tapwatch.store.console_models import ROLES, set_setting
from tapwatch.store.db import open_engine, sessions

NOT_API_ROUTES = {"/api/v1/openapi.json", "/static"}  # the OpenAPI document and static files
MISSING = "999999"  # ids that do not exist: allowed calls answer 404/422 and change nothing


def _requirements(dependant) -> list[Require]:  # type: ignore[no-untyped-def]
    found = []
    for dep in dependant.dependencies:
        if isinstance(dep.call, Require):
            found.append(dep.call)
        found += _requirements(dep)
    return found


def _routes(app) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for path, route in iter_routes(app.routes):
        if isinstance(route, APIRoute):
            (req,) = _requirements(route.dependant)
            for method in sorted(route.methods - {"HEAD"}):
                out.append((method, path, req.permission))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("rbac") / "t.db"
    analyze(db, CAPTURES / "icsnpp-s7comm__s7ident.pcap")
    engine = open_engine(str(db))
    tokens = {}
    with sessions(engine).begin() as s:
        set_setting(s, "retention_days", 0, "test")  # retention routes may run: keep the data
        for role in ROLES:
            user = auth.add_user(s, role.replace("_", "-"), "a long password", role, "test")
            tokens[role] = auth.issue_token(s, user, "matrix", "test")
    app = create_app(engine)
    yield app, TestClient(app), tokens
    engine.dispose()


def test_every_route_declares_a_permission(world) -> None:  # type: ignore[no-untyped-def]
    app = world[0]
    undeclared = []
    for path, route in iter_routes(app.routes):
        if isinstance(route, APIRoute):
            if len(_requirements(route.dependant)) != 1:
                undeclared.append(path)
        else:
            assert isinstance(route, (Route, Mount)) and path in NOT_API_ROUTES, f"unexpected route {path}"
    assert undeclared == []
    # and the matrix below is not empty: the API and the pages are all in it
    paths = {p for _, p, _ in _routes(app)}
    assert {"/api/v1/devices", "/api/v1/devices/{device_id}", "/devices", "/users", "/audit"} <= paths
    assert len(paths) > 30


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", MISSING, path)


def test_role_matrix(world) -> None:  # type: ignore[no-untyped-def]
    app, client, tokens = world
    checked = refused = 0
    for method, path, permission in _routes(app):
        url = _url(path)
        # without credentials: 401 on the API, a redirect to the login page on pages
        anon = client.request(method, url, follow_redirects=False)
        if permission == rbac.PUBLIC:
            assert anon.status_code not in (401, 403), (method, path)
        elif path.startswith("/api/"):
            assert anon.status_code == 401, (method, path, anon.status_code)
        else:
            assert anon.status_code == 303 and anon.headers["location"].startswith("/login"), (method, path)
        bad = client.request(method, url, headers={"Authorization": "Bearer tw_not-a-token"},
                             follow_redirects=False)
        assert bad.status_code in ((401, 303) if permission != rbac.PUBLIC else (bad.status_code,))
        for role in ROLES:
            r = client.request(method, url, headers={"Authorization": f"Bearer {tokens[role]}"},
                               follow_redirects=False)
            if rbac.allowed(role, permission):
                assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text[:200])
            else:
                assert r.status_code == 403, (role, method, path, r.status_code)
                refused += 1
            checked += 1
    assert refused > 0 and checked > refused


@pytest.mark.parametrize("role,permission,expected", [
    ("security_reader", rbac.INVENTORY_READ, True),
    ("security_reader", rbac.DEVICES_AUTHORIZE, False),
    ("security_analyst", rbac.DEVICES_AUTHORIZE, True),
    ("security_analyst", rbac.ALERTS_WRITE, True),
    ("security_analyst", rbac.DEVICES_WRITE, False),
    ("security_admin", rbac.DEVICES_WRITE, True),
    ("security_admin", rbac.PLANS_WRITE, True),
    ("security_admin", rbac.USERS_MANAGE, False),
    ("contributor", rbac.PLANS_WRITE, True),
    ("contributor", rbac.DEVICES_WRITE, False),
    ("owner", rbac.USERS_MANAGE, True),
    ("owner", rbac.ALL_SUBSCRIPTIONS, False),
    ("global_admin", rbac.ALL_SUBSCRIPTIONS, True),
])
def test_roles_as_the_issue_describes_them(role, permission,  # type: ignore[no-untyped-def]
                                           expected) -> None:
    assert rbac.allowed(role, permission) is expected


def test_cli_role_choices_are_the_console_roles() -> None:
    from tapwatch.console.commands import ROLE_CHOICE

    assert tuple(ROLE_CHOICE.choices) == ROLES
