"""Users, roles and API tokens (owners and global admins), and who am I (everyone)."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from tapwatch.console import auth, rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, get_or_404, tx
from tapwatch.store.console_models import ROLES, ApiToken, User, audit
from tapwatch.store.inventory import iso

router = APIRouter(tags=["users"])


def user_json(u: User) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "role": u.role, "disabled": u.disabled,
            "created_at": iso(u.created_at), "last_login": iso(u.last_login)}


def token_json(t: ApiToken) -> dict[str, Any]:
    return {"id": t.id, "user_id": t.user_id, "name": t.name, "prefix": t.prefix,
            "created_at": iso(t.created_at), "last_used": iso(t.last_used), "revoked": t.revoked}


@router.get("/me")
def me(who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """The caller, their role and what it permits."""
    return {"username": who.username, "role": who.role, "via": who.via,
            "permissions": sorted(rbac.ROLE_PERMISSIONS[who.role])}


@router.get("/users")
def list_users(request: Request, _: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    with tx(request) as s:
        return {"users": [user_json(u) for u in s.scalars(select(User).order_by(User.username))],
                "roles": list(ROLES)}


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=10, max_length=1024)
    role: str


@router.post("/users", status_code=201)
def add_user(request: Request, body: NewUser,
             who: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    _no_escalation(who, body.role)
    with tx(request) as s:
        return user_json(auth.add_user(s, body.username, body.password, body.role, actor(who)))


def _no_escalation(who: Principal, role: str) -> None:
    """Only a global admin may make global admins."""
    if role == "global_admin" and who.role != "global_admin":
        raise HTTPException(403, "only a global admin may grant the global admin role")


class UserChange(BaseModel):
    role: str | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=10, max_length=1024)


def managed_user(s: Any, user_id: int, who: Principal, doing: str) -> User:
    """The user `who` means to `doing` ("change", "issue tokens for"); 404 or 403 otherwise.

    Only a global admin may act on a global admin, whether through the API or the users page.
    """
    user = get_or_404(s, User, user_id, "user")
    if user.role == "global_admin" and who.role != "global_admin":
        raise HTTPException(403, f"only a global admin may {doing} a global admin")
    return user


def revoke_token_by_id(s: Any, token_id: int, who: Principal) -> ApiToken:
    """Revoke one API token and audit it (404 if there is none): the API and the users page share it."""
    tok = get_or_404(s, ApiToken, token_id, "token")
    tok.revoked = True
    audit(s, actor(who), "token.revoke", "token", tok.id, name=tok.name)
    return tok


@router.patch("/users/{user_id}")
def change_user(request: Request, user_id: int, body: UserChange,
                who: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    with tx(request) as s:
        user = managed_user(s, user_id, who, "change")
        if body.role is not None:
            _no_escalation(who, body.role)
            auth.set_role(s, user, body.role, actor(who))
        if body.disabled is not None:
            auth.set_disabled(s, user, body.disabled, actor(who))
        if body.password is not None:
            auth.set_password(s, user, body.password, actor(who))
        return user_json(user)


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=128)


@router.get("/users/{user_id}/tokens")
def list_tokens(request: Request, user_id: int,
                _: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    with tx(request) as s:
        get_or_404(s, User, user_id, "user")
        rows = s.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id))
        return {"tokens": [token_json(t) for t in rows]}


@router.post("/users/{user_id}/tokens", status_code=201)
def issue_token(request: Request, user_id: int, body: NewToken,
                who: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    """A new API token; its clear text is in this answer only."""
    with tx(request) as s:
        user = managed_user(s, user_id, who, "issue tokens for")
        token = auth.issue_token(s, user, body.name, actor(who))
        return {"token": token, "user": user.username, "name": body.name}


@router.delete("/tokens/{token_id}")
def revoke_token(request: Request, token_id: int,
                 who: Principal = Depends(require(rbac.USERS_MANAGE))) -> dict[str, Any]:
    with tx(request) as s:
        return token_json(revoke_token_by_id(s, token_id, who))
