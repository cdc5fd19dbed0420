"""The console's tables: users, API tokens, login sessions, the audit log and settings.

`audit()` and `get_setting()`/`set_setting()` live here, beside their tables, so any
module (detection, plans, sensors) can record an audit entry or read a setting without
importing the web application.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tapwatch import clock
from tapwatch.store.models import Base

# role ids, from least to most powerful (see tapwatch.console.rbac for what each may do)
ROLES = ("security_reader", "security_analyst", "security_admin", "contributor", "owner",
         "global_admin")


def utcnow() -> datetime:
    """Naive UTC wall time from the injectable clock, as every stored time is."""
    return clock.now().astimezone(UTC).replace(tzinfo=None)


class User(Base):
    """A local console user; the password is stored only as an argon2 hash."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    last_login: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for scripts and sensors; only its SHA-256 is kept (tokens are random)."""

    __tablename__ = "console_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("console_users.id", ondelete="CASCADE"),
                                         index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists so people can tell tokens apart
    created_at: Mapped[datetime]
    last_used: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginSession(Base):
    """A browser login, stored so several console processes can serve one database."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("console_users.id", ondelete="CASCADE"),
                                         index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditEntry(Base):
    """Who did what to which object, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))  # user name, or "system" / "cli:<user>"
    action: Mapped[str] = mapped_column(String(64), index=True)  # e.g. device.edit, alert.status
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[Any] = mapped_column(default=dict)


class Setting(Base):
    """One console setting (retention period, …) as a JSON value."""

    __tablename__ = "console_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str | None] = mapped_column(String(64))


def audit(session: Session, actor: str, action: str, target_type: str,
          target_id: object = None, **details: Any) -> AuditEntry:
    """Record an audit entry in the caller's transaction (it commits with the change)."""
    entry = AuditEntry(ts=utcnow(), actor=actor, action=action, target_type=target_type,
                       target_id=None if target_id is None else str(target_id), details=details)
    session.add(entry)
    return entry


# settings every console has, with their defaults; secrets among them are redacted in bundles
DEFAULT_SETTINGS: dict[str, Any] = {
    "retention_days": 90,  # devices inactive and alerts closed longer than this are purged
    "retention_interval_minutes": 60,  # how often `tapwatch serve` runs the retention job
}


def get_setting(session: Session, key: str) -> Any:
    row = session.get(Setting, key)
    return row.value if row is not None else DEFAULT_SETTINGS.get(key)


def all_settings(session: Session) -> dict[str, Any]:
    out = dict(DEFAULT_SETTINGS)
    out.update({s.key: s.value for s in session.scalars(select(Setting))})
    return out


def set_setting(session: Session, key: str, value: Any, actor: str) -> None:
    """Store a setting and audit the change."""
    row = session.get(Setting, key)
    old = row.value if row is not None else DEFAULT_SETTINGS.get(key)
    if row is None:
        session.add(Setting(key=key, value=value, updated_at=utcnow(), updated_by=actor))
    else:
        row.value, row.updated_at, row.updated_by = value, utcnow(), actor
    audit(session, actor, "setting.change", "setting", key, old=old, new=value)
