"""Alerts as CEF or LEEF payloads in RFC 5424 syslog messages, sent over UDP, TCP or TLS.

TCP and TLS use octet-counting framing (RFC 6587 / RFC 5425: "LEN SP MSG"), so a message
may contain newlines and receivers never have to guess where it ends.
"""

from __future__ import annotations

import json
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from tapwatch import __version__, clock

VENDOR = "tapwatch"
PRODUCT = "tapwatch"
FORMATS = ("cef", "leef", "json")
TRANSPORTS = ("udp", "tcp", "tls")
# syslog severities (RFC 5424 §6.2.1) and CEF/LEEF 0-10 scores per alert severity
SYSLOG_SEVERITY = {"high": 2, "medium": 4, "low": 5}
SCORE = {"high": 8, "medium": 5, "low": 3}
FACILITY_LOCAL0 = 16
MAX_UDP = 65000  # one datagram; larger messages are cut (TCP/TLS carry any size)


def _ms(value: str | None) -> int | None:
    """Epoch milliseconds of an ISO time (the alert's detection time)."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _cef_header(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_ext(value: Any) -> str:
    return (str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r")
            .replace("\n", "\\n"))


def cef(alert: dict[str, Any]) -> str:
    """ArcSight Common Event Format: header fields, then key=value extensions."""
    ext: list[tuple[str, Any]] = [
        ("rt", _ms(alert.get("last_detected"))), ("start", _ms(alert.get("first_detected"))),
        ("externalId", alert.get("id")), ("cat", alert.get("category")),
        ("src", alert.get("src_ip")), ("smac", alert.get("src_mac")),
        ("dst", alert.get("dst_ip")), ("dmac", alert.get("dst_mac")),
        ("app", alert.get("protocol")), ("cnt", alert.get("count")),
        ("dvchost", alert.get("sensor")),
        ("cs1Label", "engine"), ("cs1", alert.get("engine")),
        ("cs2Label", "mitreTechnique"), ("cs2", alert.get("mitre")),
        ("cs3Label", "status"), ("cs3", alert.get("status")),
        ("cn1Label", "srcDeviceId"), ("cn1", alert.get("src_device_id")),
        ("cn2Label", "dstDeviceId"), ("cn2", alert.get("dst_device_id")),
        ("msg", alert.get("title")),
    ]
    # a label without its value would mislead: drop both
    values = dict(ext)
    pairs = [(k, v) for k, v in ext if v not in (None, "")
             and not (k.endswith("Label") and values.get(k[:-5]) in (None, ""))]
    header = "|".join(_cef_header(x) for x in (
        "CEF:0", VENDOR, PRODUCT, __version__, alert.get("type") or "alert",
        alert.get("title") or "", SCORE.get(str(alert.get("severity")), 5)))
    return header + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in pairs)


def _leef_value(value: Any) -> str:
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def leef(alert: dict[str, Any]) -> str:
    """IBM QRadar LEEF 2.0 with a tab delimiter (declared as x09 in the header)."""
    fields: list[tuple[str, Any]] = [
        ("devTime", _ms(alert.get("last_detected"))),  # epoch milliseconds
        ("cat", alert.get("category")), ("sev", SCORE.get(str(alert.get("severity")), 5)),
        ("src", alert.get("src_ip")), ("srcMAC", alert.get("src_mac")),
        ("dst", alert.get("dst_ip")), ("dstMAC", alert.get("dst_mac")),
        ("proto", alert.get("protocol")), ("name", alert.get("title")),
        ("externalId", alert.get("id")), ("engine", alert.get("engine")),
        ("mitre", alert.get("mitre")), ("status", alert.get("status")),
        ("count", alert.get("count")), ("sensor", alert.get("sensor")),
    ]
    header = "|".join(_cef_header(x) for x in (
        "LEEF:2.0", VENDOR, PRODUCT, __version__, alert.get("type") or "alert", "x09"))
    body = "\t".join(f"{k}={_leef_value(v)}" for k, v in fields if v not in (None, ""))
    return header + "|" + body


def payload(alert: dict[str, Any], fmt: str) -> str:
    if fmt == "cef":
        return cef(alert)
    if fmt == "leef":
        return leef(alert)
    if fmt == "json":
        return json.dumps(alert, sort_keys=True, separators=(",", ":"))
    raise ValueError(f"unknown syslog payload format {fmt!r} (known: {', '.join(FORMATS)})")


def rfc5424(message: str, severity: str, *, facility: int = FACILITY_LOCAL0,
            hostname: str | None = None, app: str = "tapwatch", msgid: str = "alert",
            when: datetime | None = None) -> bytes:
    """One RFC 5424 message: <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG (MSG in UTF-8 with BOM)."""
    pri = facility * 8 + SYSLOG_SEVERITY.get(severity, 5)
    ts = (when or clock.now()).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = _token(hostname or socket.gethostname(), 255)
    head = f"<{pri}>1 {ts} {host} {_token(app, 48)} - {_token(msgid, 32)} - "
    return head.encode("ascii") + b"\xef\xbb\xbf" + message.encode("utf-8")


def _token(value: str, limit: int) -> str:
    """A header field: printable ASCII without spaces, or the nil value."""
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def frame(message: bytes) -> bytes:
    """Octet-counting framing for stream transports."""
    return str(len(message)).encode("ascii") + b" " + message


def tls_context(config: dict[str, Any]) -> ssl.SSLContext:
    """Verify the receiver against `ca_file` (or the system store) unless `verify` is false."""
    ctx = ssl.create_default_context(cafile=config.get("ca_file") or None)
    if config.get("verify", True) is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def send(config: dict[str, Any], messages: list[bytes], timeout: float = 10.0) -> None:
    """Send messages to the receiver in `config` (host, port, transport); raises OSError on failure."""
    host, port = str(config["host"]), int(config["port"])
    transport = config.get("transport", "udp")
    if transport == "udp":
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            for m in messages:
                sock.sendto(m[:MAX_UDP], (host, port))
        return
    if transport not in ("tcp", "tls"):
        raise ValueError(f"unknown syslog transport {transport!r} (known: {', '.join(TRANSPORTS)})")
    with socket.create_connection((host, port), timeout=timeout) as raw:
        if transport == "tls":
            with tls_context(config).wrap_socket(raw, server_hostname=config.get("server_name") or host) as s:
                s.sendall(b"".join(frame(m) for m in messages))
        else:
            raw.sendall(b"".join(frame(m) for m in messages))
