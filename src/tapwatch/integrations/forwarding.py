"""Forwarding rules and the forwarding stage: new alerts to syslog, webhooks and e-mail.

Forwarding runs after detection (end of `tapwatch analyze`, periodically in `tapwatch serve`,
or `tapwatch forwarding run`) and reads what detection wrote. Each rule has a cursor, the
highest alert id it has dealt with; a new rule starts at the newest alert, so it applies
only to alerts raised after it exists. Alerts are handled in id order and the cursor moves
past an alert only when it was delivered or did not match, so a failed delivery is
retried on the next run and nothing is skipped (delivery is at least once).
"""

from __future__ import annotations

import secrets
import smtplib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tapwatch import clock
from tapwatch.integrations import mail, syslog, webhook
from tapwatch.integrations.exports import alert_record
from tapwatch.store.alert_models import SEVERITIES, Alert
from tapwatch.store.console_models import audit
from tapwatch.store.integration_models import ACTIONS, ForwardingRule

RANK = {"low": 0, "medium": 1, "high": 2}
BATCH = 500  # alerts read per rule per pass
SECRET_KEYS = ("secret", "password")
REDACTED = "********"


class RuleError(ValueError):
    """A rule that cannot work as given (the message says which setting and why)."""


def _utcnow() -> datetime:
    return clock.now().astimezone(UTC).replace(tzinfo=None)


def _list(value: Any, what: str) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{what} must be a list of names")
    return sorted({v.strip().lower() for v in value if v.strip()})


def check_config(action: str, config: dict[str, Any]) -> dict[str, Any]:
    """The action's settings, checked and completed with defaults."""
    if action not in ACTIONS:
        raise RuleError(f"action must be one of {', '.join(ACTIONS)}")
    cfg = {k: v for k, v in config.items() if v not in (None, "")}
    if action == "syslog":
        cfg.setdefault("transport", "udp")
        cfg.setdefault("format", "cef")
        if cfg["transport"] not in syslog.TRANSPORTS:
            raise RuleError(f"syslog transport must be one of {', '.join(syslog.TRANSPORTS)}")
        if cfg["format"] not in syslog.FORMATS:
            raise RuleError(f"syslog format must be one of {', '.join(syslog.FORMATS)}")
        cfg.setdefault("port", 6514 if cfg["transport"] == "tls" else 514)
        if not cfg.get("host"):
            raise RuleError("syslog needs a host")
    elif action == "webhook":
        url = str(cfg.get("url", ""))
        if not url.startswith(("http://", "https://")):
            raise RuleError("webhook needs a url starting with http:// or https://")
        cfg.setdefault("secret", secrets.token_hex(32))
        cfg.setdefault("retries", 3)
        cfg.setdefault("backoff", 1.0)
    else:
        if not cfg.get("host"):
            raise RuleError("email needs an SMTP host")
        if not cfg.get("sender"):
            raise RuleError("email needs a sender address")
        cfg["to"] = mail.recipients(cfg) if not isinstance(cfg.get("to"), str) else [
            t.strip() for t in cfg["to"].split(",") if t.strip()]
        if not cfg["to"]:
            raise RuleError("email needs at least one recipient")
        cfg.setdefault("security", "none")
        if cfg["security"] not in ("none", "starttls", "tls"):
            raise RuleError("email security must be none, starttls or tls")
        cfg.setdefault("port", 465 if cfg["security"] == "tls" else 25)
    for key in ("port", "retries"):
        if key in cfg:
            try:
                cfg[key] = int(cfg[key])
            except (TypeError, ValueError):
                raise RuleError(f"{key} must be a number") from None
    if "port" in cfg and not 0 < cfg["port"] < 65536:
        raise RuleError("port must be 1-65535")
    return cfg


def create_rule(session: Session, *, name: str, action: str, config: dict[str, Any],
                min_severity: str = "low", engines: Any = None, protocols: Any = None,
                enabled: bool = True, actor: str = "cli") -> ForwardingRule:
    """A new rule, starting after the newest alert stored now."""
    name = name.strip()
    if not name or len(name) > 128:
        raise RuleError("name must be 1-128 characters")
    if session.scalar(select(ForwardingRule.id).where(ForwardingRule.name == name)) is not None:
        raise RuleError(f"a rule named {name!r} exists already")
    if min_severity not in SEVERITIES:
        raise RuleError(f"min_severity must be one of {', '.join(SEVERITIES)}")
    rule = ForwardingRule(
        name=name, enabled=enabled, min_severity=min_severity, engines=_list(engines, "engines"),
        protocols=_list(protocols, "protocols"), action=action, config=check_config(action, config),
        cursor=session.scalar(select(func.max(Alert.id))) or 0, delivered=0,
        created_at=_utcnow(), created_by=actor,
    )
    session.add(rule)
    session.flush()
    audit(session, actor, "forwarding.add", "forwarding_rule", rule.id, name=name, kind=action)
    return rule


def remove_rule(session: Session, rule_id: int, actor: str = "cli") -> bool:
    rule = session.get(ForwardingRule, rule_id)
    if rule is None:
        return False
    audit(session, actor, "forwarding.remove", "forwarding_rule", rule_id, name=rule.name)
    session.delete(rule)
    return True


def list_rules(session: Session) -> list[ForwardingRule]:
    return list(session.scalars(select(ForwardingRule).order_by(ForwardingRule.id)))


def rule_json(rule: ForwardingRule, backlog: int | None = None) -> dict[str, Any]:
    """A rule as listed: secrets are never shown again after creation."""
    config = {k: (REDACTED if k in SECRET_KEYS and v else v) for k, v in (rule.config or {}).items()}
    out = {"id": rule.id, "name": rule.name, "enabled": rule.enabled,
           "min_severity": rule.min_severity, "engines": list(rule.engines or []),
           "protocols": list(rule.protocols or []), "action": rule.action, "config": config,
           "cursor": rule.cursor, "delivered": rule.delivered, "last_error": rule.last_error,
           "last_attempt_at": _iso(rule.last_attempt_at), "last_success_at": _iso(rule.last_success_at),
           "created_at": _iso(rule.created_at), "created_by": rule.created_by}
    if backlog is not None:
        out["backlog"] = backlog
    return out


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat() + "Z"


def matches(rule: ForwardingRule, alert: Alert) -> bool:
    if RANK.get(alert.severity, 0) < RANK.get(rule.min_severity, 0):
        return False
    if rule.engines and (alert.engine or "").lower() not in rule.engines:
        return False
    if rule.protocols and (alert.protocol or "").lower() not in rule.protocols:
        return False
    return alert.status != "closed"  # closed as it was raised (learning, muted): nothing to tell


def deliver(rule: ForwardingRule, records: list[dict[str, Any]]) -> None:
    """Send alert records through the rule's action; raises on failure."""
    cfg = rule.config or {}
    if rule.action == "syslog":
        messages = [syslog.rfc5424(syslog.payload(r, cfg.get("format", "cef")), str(r.get("severity")),
                                   hostname=cfg.get("hostname"), msgid=str(r.get("type") or "alert"))
                    for r in records]
        syslog.send(cfg, messages)
    elif rule.action == "webhook":
        for r in records:
            webhook.post(cfg, {"event": "alert", "rule": rule.name, "alert": r})
    elif rule.action == "email":
        for r in records:
            mail.send(cfg, mail.compose(cfg, [r]))
    else:
        raise RuleError(f"unknown action {rule.action!r}")


@dataclass
class RuleReport:
    rule_id: int
    name: str
    delivered: int = 0
    skipped: int = 0  # did not match the conditions
    pending: int = 0  # left for the next run (after a failure)
    error: str | None = None


@dataclass
class ForwardReport:
    rules: list[RuleReport] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.rules)

    @property
    def failed(self) -> list[RuleReport]:
        return [r for r in self.rules if r.error]

    def summary(self) -> str:
        if not self.rules:
            return "forwarding: no enabled rules"
        parts = [f"{r.name}: {r.delivered} sent" + (f", failed ({r.error}); {r.pending} waiting"
                                                    if r.error else "") for r in self.rules]
        return "forwarding: " + "; ".join(parts)


FAILURES = (OSError, smtplib.SMTPException, ValueError)


def forward_new_alerts(session: Session, rule_ids: list[int] | None = None) -> ForwardReport:
    """Forward every alert raised since each enabled rule's cursor; updates the cursors in the
    caller's transaction (commit it). Delivery failures are reported, never raised."""
    report = ForwardReport()
    q = select(ForwardingRule).where(ForwardingRule.enabled.is_(True)).order_by(ForwardingRule.id)
    if rule_ids is not None:
        q = q.where(ForwardingRule.id.in_(rule_ids))
    for rule in session.scalars(q):
        report.rules.append(_forward_rule(session, rule))
    return report


def _forward_rule(session: Session, rule: ForwardingRule) -> RuleReport:
    rep = RuleReport(rule.id, rule.name)
    while True:
        alerts = list(session.scalars(select(Alert).where(Alert.id > rule.cursor)
                                      .order_by(Alert.id).limit(BATCH)))
        if not alerts:
            break
        for alert in alerts:
            if not matches(rule, alert):
                rule.cursor = alert.id
                rep.skipped += 1
                continue
            rule.last_attempt_at = _utcnow()
            try:
                deliver(rule, [alert_record(alert)])
            except FAILURES as e:
                rep.error = rule.last_error = f"{type(e).__name__}: {e}"[:1024]
                rep.pending = session.scalar(select(func.count(Alert.id))
                                             .where(Alert.id > rule.cursor)) or 0
                session.flush()
                return rep
            rule.cursor = alert.id
            rule.delivered += 1
            rule.last_success_at = rule.last_attempt_at
            rule.last_error = None
            rep.delivered += 1
        session.flush()
        if len(alerts) < BATCH:
            break
    return rep


def backlog(session: Session, rule: ForwardingRule) -> int:
    """Alerts after the rule's cursor (not all will match its conditions)."""
    return session.scalar(select(func.count(Alert.id)).where(Alert.id > rule.cursor)) or 0


def sample_record(rule: ForwardingRule) -> dict[str, Any]:
    """A synthetic alert that says it is a test; it never touches the alerts table."""
    now = _utcnow().isoformat() + "Z"
    severity = rule.min_severity if rule.min_severity in SEVERITIES else "low"
    return {"id": 0, "type": "forwarding_test", "title": f"tapwatch test message for rule {rule.name}",
            "engine": "forwarding", "severity": severity, "category": "test", "mitre": None,
            "status": "new", "protocol": None, "src_mac": None, "src_ip": None, "src_device_id": None,
            "dst_mac": None, "dst_ip": None, "dst_device_id": None, "sensor": None,
            "first_detected": now, "last_detected": now, "count": 1, "details": {"test": True},
            "evidence": []}


def send_test(session: Session, rule: ForwardingRule, actor: str = "cli") -> str | None:
    """Send a test message through the rule; None when it was delivered, else the error."""
    rule.last_attempt_at = _utcnow()
    try:
        deliver(rule, [sample_record(rule)])
    except FAILURES as e:
        error = f"{type(e).__name__}: {e}"[:1024]
        audit(session, actor, "forwarding.test", "forwarding_rule", rule.id, ok=False, error=error)
        return error
    audit(session, actor, "forwarding.test", "forwarding_rule", rule.id, ok=True)
    return None


async def forwarding_loop(sessionmaker: Any, interval_seconds: float = 60.0) -> None:
    """For `tapwatch serve`: forward new alerts every interval; a failed pass is retried later."""
    import asyncio
    import logging

    from starlette.concurrency import run_in_threadpool

    def job() -> None:
        with sessionmaker.begin() as s:
            forward_new_alerts(s)

    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await run_in_threadpool(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; the cursors were not moved, the next pass tries again
            logging.getLogger("tapwatch.forwarding").exception("forwarding pass failed")
