"""Alerts by e-mail through an SMTP relay (plain, STARTTLS or implicit TLS, optional login)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from tapwatch.integrations.syslog import tls_context


def compose(config: dict[str, Any], alerts: list[dict[str, Any]]) -> EmailMessage:
    """One message for one alert (or a digest of several): a readable text body."""
    msg = EmailMessage()
    first = alerts[0]
    if len(alerts) == 1:
        subject = f"[tapwatch] {str(first.get('severity', '')).upper()}: {first.get('title')}"
    else:
        subject = f"[tapwatch] {len(alerts)} alerts"
    msg["Subject"] = subject
    msg["From"] = str(config["sender"])
    msg["To"] = ", ".join(recipients(config))
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="tapwatch")
    lines = []
    for a in alerts:
        lines += [f"{a.get('title')}",
                  f"  severity: {a.get('severity')}   engine: {a.get('engine')}   type: {a.get('type')}",
                  f"  source: {a.get('src_ip') or a.get('src_mac') or '-'}   "
                  f"destination: {a.get('dst_ip') or a.get('dst_mac') or '-'}   "
                  f"protocol: {a.get('protocol') or '-'}",
                  f"  detected: {a.get('first_detected')} – {a.get('last_detected')} "
                  f"(count {a.get('count')})",
                  f"  alert id: {a.get('id')}   MITRE ATT&CK for ICS: {a.get('mitre') or '-'}", ""]
    msg.set_content("\n".join(lines))
    return msg


def recipients(config: dict[str, Any]) -> list[str]:
    to = config.get("to") or []
    return [str(x) for x in ([to] if isinstance(to, str) else to)]


def send(config: dict[str, Any], message: EmailMessage, timeout: float = 15.0) -> None:
    """Deliver through config host/port; `security` is none, starttls or tls. Raises on failure."""
    host, port = str(config["host"]), int(config.get("port", 25))
    security = config.get("security", "none")
    ctx: ssl.SSLContext | None = tls_context(config) if security in ("starttls", "tls") else None
    client: smtplib.SMTP
    if security == "tls":
        client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ctx)
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    with client:
        if security == "starttls":
            client.starttls(context=ctx)
        if config.get("username"):
            client.login(str(config["username"]), str(config.get("password", "")))
        refused = client.send_message(message, to_addrs=recipients(config))
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
