"""Login and logout, the audit log, users and tokens, settings and retention."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from tapwatch.console import auth, rbac, retention
from tapwatch.console.api.audit import audit_conditions, page_audit
from tapwatch.console.api.settings import LIMITS
from tapwatch.console.api.users import _no_escalation, managed_user, revoke_token_by_id
from tapwatch.console.rbac import PUBLIC, Principal, require
from tapwatch.console.web import actor, render, tx
from tapwatch.store.console_models import ROLES, ApiToken, User, all_settings, set_setting

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce anyone to another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _secure(request: Request) -> bool:
    configured = request.app.state.secure_cookies
    return bool(configured) if configured is not None else request.url.scheme == "https"


@router.get("/login")
def login_page(request: Request, next: str | None = Query(None, max_length=2048),
               error: str | None = None, _: Any = Depends(require(PUBLIC))) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", next=_safe_next(next), login_csrf=token,
                      error="Wrong user name or password." if error else None)
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=_secure(request), path="/login")
    return response


@router.post("/login")
def login_submit(request: Request, username: str = Form(..., max_length=64),
                 password: str = Form(..., max_length=1024), csrf_token: str = Form(""),
                 next: str = Form("/"), _: Any = Depends(require(PUBLIC))) -> Response:
    cookie_token = request.cookies.get(auth.LOGIN_CSRF_COOKIE)
    if not cookie_token or not secrets.compare_digest(cookie_token, csrf_token):
        raise HTTPException(403, "the login form expired; reload the page and try again")
    with tx(request) as s:
        found = auth.login(s, username, password)
    if found is None:
        return RedirectResponse(f"/login?error=1&next={_safe_next(next)}", status_code=303)
    cookie, _user = found
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                        secure=_secure(request), max_age=auth.SESSION_HOURS * 3600, path="/")
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, _: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        auth.logout(s, request.cookies.get(auth.SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


@router.get("/audit")
def audit_page(request: Request, actor: str | None = Query(None, max_length=64),
               action: str | None = Query(None, max_length=64),
               target_type: str | None = Query(None, max_length=32),
               target_id: str | None = Query(None, max_length=64),
               page: int = Query(1, ge=1, le=1_000_000),
               _: Principal = Depends(require(rbac.AUDIT_READ))) -> Response:
    params = {k: v for k, v in {"actor": actor, "action": action, "target_type": target_type,
                                "target_id": target_id}.items() if v}
    with tx(request) as s:
        total, rows = page_audit(s, audit_conditions(actor, action, target_type, target_id), page, 100)
    return render(request, "audit.html", nav="audit", entries=rows, total=total, page=page,
                  page_size=100, params=params)


@router.get("/users")
def users_page(request: Request, token: str | None = None,
               _: Principal = Depends(require(rbac.USERS_MANAGE))) -> Response:
    with tx(request) as s:
        users = list(s.scalars(select(User).order_by(User.username)))
        tokens = list(s.scalars(select(ApiToken).where(ApiToken.revoked.is_(False))
                                .order_by(ApiToken.id)))
    names = {u.id: u.username for u in users}
    return render(request, "users.html", nav="users", users=users, tokens=tokens, names=names,
                  roles=ROLES, error=request.query_params.get("error"))


def _back(path: str, error: str | None = None) -> RedirectResponse:
    from urllib.parse import quote
    return RedirectResponse(path + (f"?error={quote(error)}" if error else ""), status_code=303)


@router.post("/users")
def users_add(request: Request, username: str = Form(..., max_length=64),
              password: str = Form(..., max_length=1024), role: str = Form(..., max_length=32),
              who: Principal = Depends(require(rbac.USERS_MANAGE))) -> Response:
    _no_escalation(who, role)
    try:
        with tx(request) as s:
            auth.add_user(s, username, password, role, actor(who))
    except auth.AuthError as e:
        return _back("/users", str(e))
    return _back("/users")


@router.post("/users/{user_id}")
def users_change(request: Request, user_id: int, role: str | None = Form(None, max_length=32),
                 disabled: str | None = Form(None, max_length=5),
                 who: Principal = Depends(require(rbac.USERS_MANAGE))) -> Response:
    try:
        with tx(request) as s:
            user = managed_user(s, user_id, who, "change")
            if role and role != user.role:
                _no_escalation(who, role)
                auth.set_role(s, user, role, actor(who))
            if disabled in ("true", "false"):
                auth.set_disabled(s, user, disabled == "true", actor(who))
    except auth.AuthError as e:
        return _back("/users", str(e))
    return _back("/users")


@router.post("/users/{user_id}/token")
def users_token(request: Request, user_id: int, name: str = Form(..., max_length=128),
                who: Principal = Depends(require(rbac.USERS_MANAGE))) -> Response:
    with tx(request) as s:
        user = managed_user(s, user_id, who, "issue tokens for")
        token = auth.issue_token(s, user, name, actor(who))
        username = user.username
    # shown once, on this answer only (never in a URL or a log)
    return render(request, "token.html", nav="users", token=token, username=username, name=name)


@router.post("/tokens/{token_id}/revoke")
def tokens_revoke(request: Request, token_id: int,
                  who: Principal = Depends(require(rbac.USERS_MANAGE))) -> Response:
    with tx(request) as s:
        revoke_token_by_id(s, token_id, who)
    return _back("/users")


@router.get("/settings")
def settings_page(request: Request, done: str | None = None,
                  _: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> Response:
    with tx(request) as s:
        values = all_settings(s)
    return render(request, "settings.html", nav="settings", settings=values, limits=LIMITS,
                  done=done, error=request.query_params.get("error"))


@router.post("/settings")
def settings_save(request: Request, retention_days: int = Form(..., ge=0, le=3650),
                  retention_interval_minutes: int = Form(..., ge=1, le=10080),
                  who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> Response:
    with tx(request) as s:
        current = all_settings(s)
        for key, value in (("retention_days", retention_days),
                           ("retention_interval_minutes", retention_interval_minutes)):
            if current.get(key) != value:
                set_setting(s, key, value, actor(who))
    return RedirectResponse("/settings?done=saved", status_code=303)


@router.post("/settings/retention-run")
def retention_run(request: Request, who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> Response:
    with tx(request) as s:
        r = retention.run(s, actor(who))
    return RedirectResponse(f"/settings?done=purged+{r.devices}+devices+and+{r.alerts}+alerts",
                            status_code=303)
