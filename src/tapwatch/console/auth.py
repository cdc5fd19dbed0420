"""Passwords (argon2), API tokens (only their SHA-256 kept), login sessions and CSRF."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tapwatch.console.rbac import Principal
from tapwatch.store.console_models import ROLES, ApiToken, LoginSession, User, audit, utcnow

SESSION_COOKIE = "tw_session"
LOGIN_CSRF_COOKIE = "tw_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_HOURS = 12
TOKEN_PREFIX = "tw_"
USERNAME_MAX = 64

_hasher = PasswordHasher()


class AuthError(ValueError):
    """A refused user-management request, with a message for the person."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def digest(token: str) -> str:
    """Tokens are 256-bit random, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _check_username(username: str) -> str:
    username = (username or "").strip()
    if not username or len(username) > USERNAME_MAX or not all(
            c.isalnum() or c in "._-@" for c in username):
        raise AuthError("user names are 1-64 letters, digits or . _ - @")
    return username


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return role


def check_password(password: str) -> str:
    if len(password or "") < 10:
        raise AuthError("passwords need at least 10 characters")
    if len(password) > 1024:
        raise AuthError("passwords are at most 1024 characters")
    return password


def add_user(session: Session, username: str, password: str, role: str, actor: str) -> User:
    username = _check_username(username)
    check_role(role)
    check_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AuthError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role,
                disabled=False, created_at=utcnow())
    session.add(user)
    session.flush()
    audit(session, actor, "user.add", "user", user.id, username=username, role=role)
    return user


def find_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AuthError(f"no user {username!r}")
    return user


def _owners_left(session: Session, excluding: int) -> int:
    q = select(func.count(User.id)).where(User.role.in_(("owner", "global_admin")),
                                          User.disabled.is_(False), User.id != excluding)
    return session.scalar(q) or 0


def set_role(session: Session, user: User, role: str, actor: str) -> None:
    check_role(role)
    if role not in ("owner", "global_admin") and user.role in ("owner", "global_admin") \
            and _owners_left(session, user.id) == 0:
        raise AuthError("the last owner cannot lose the owner role")
    old, user.role = user.role, role
    audit(session, actor, "user.set_role", "user", user.id, username=user.username, old=old, new=role)


def set_disabled(session: Session, user: User, disabled: bool, actor: str) -> None:
    if disabled and user.role in ("owner", "global_admin") and _owners_left(session, user.id) == 0:
        raise AuthError("the last owner cannot be disabled")
    user.disabled = disabled
    if disabled:  # end their sessions now
        session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    audit(session, actor, "user.disable" if disabled else "user.enable", "user", user.id,
          username=user.username)


def set_password(session: Session, user: User, password: str, actor: str) -> None:
    user.password_hash = hash_password(check_password(password))
    session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    audit(session, actor, "user.password", "user", user.id, username=user.username)


def issue_token(session: Session, user: User, name: str, actor: str) -> str:
    """A new API token for `user`; the clear text is returned once and never stored."""
    name = (name or "").strip()[:128] or "token"
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=digest(token), prefix=token[:10],
                   created_at=utcnow(), revoked=False)
    session.add(row)
    session.flush()
    audit(session, actor, "token.issue", "token", row.id, username=user.username, name=name)
    return token


def ensure_owner(session: Session) -> tuple[str, str] | None:
    """On the first start (no users at all): an owner with a generated password, returned once."""
    if session.scalar(select(func.count(User.id))):
        return None
    password = generate_password()
    add_user(session, "owner", password, "owner", actor="system")
    return "owner", password


# -- requests ------------------------------------------------------------------------------


def authenticate(request: Request) -> Principal | None:
    """The caller from a bearer token or the session cookie; None when neither is valid."""
    db = request.app.state.sessions
    header = request.headers.get("authorization", "")
    with db.begin() as s:
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            if token.startswith("tws_"):  # a sensor's token: its own principal, upload only
                from tapwatch.console.api.sensors import sensor_principal
                return sensor_principal(s, token)
            row = s.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                            .where(ApiToken.token_hash == digest(token))).first()
            if row is None or row[0].revoked or row[1].disabled:
                return None
            tok, user = row
            now = utcnow()
            if tok.last_used is None or now - tok.last_used > timedelta(minutes=1):
                tok.last_used = now  # not on every call: keeps reads from writing
            return Principal(user.id, user.username, user.role, "token")
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        found = s.execute(select(LoginSession, User).join(User, User.id == LoginSession.user_id)
                          .where(LoginSession.token_hash == digest(cookie))).first()
        if found is None:
            return None
        sess, user = found
        if user.disabled or sess.expires_at < utcnow():
            return None
        return Principal(user.id, user.username, user.role, "session", sess.csrf)


async def check_csrf(request: Request, principal: Principal) -> None:
    """State-changing calls made with a cookie session must echo the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # cached by Starlette, the route reads it again
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not principal.csrf or not hmac.compare_digest(sent, principal.csrf):
        raise HTTPException(403, "missing or wrong CSRF token")


def login(session: Session, username: str, password: str) -> tuple[str, User] | None:
    """Check a password; on success a new session cookie value (stored only hashed)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        hash_password(password or "x")  # same work either way: no user-name probing by timing
        return None
    if user.disabled or not verify_password(user.password_hash, password):
        audit(session, username[:64], "user.login_failed", "user", user.id)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    now = utcnow()
    cookie = secrets.token_urlsafe(32)
    session.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    session.add(LoginSession(token_hash=digest(cookie), user_id=user.id,
                             csrf=secrets.token_urlsafe(24), created_at=now,
                             expires_at=now + timedelta(hours=SESSION_HOURS)))
    user.last_login = now
    audit(session, user.username, "user.login", "user", user.id)
    return cookie, user


def logout(session: Session, cookie: str | None) -> None:
    if cookie:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == digest(cookie)))
