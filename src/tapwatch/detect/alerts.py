"""Storing what the engines find, and the alert lifecycle.

An engine reports a Finding; the sink turns it into an alert unless the type is switched
off or an exclusion rule matches. The same traffic on an open alert (same type, source,
destination and discriminator) raises that alert's count and last detection; once the
alert is closed, it raises a new one. `learn` closes an alert and adds its traffic to the
baseline, `mute` closes it without learning, and alerts with no new detection for 90 days
(of capture time) close themselves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tapwatch.detect.baseline import Baseline
from tapwatch.detect.catalog import AlertType, catalog
from tapwatch.store.alert_models import STATUSES, Alert
from tapwatch.store.detect_models import Exclusion
from tapwatch.store.inventory import chunks, iso
from tapwatch.store.models import Address, Device

EXPIRE_AFTER = timedelta(days=90)
MAX_EVIDENCE = 20  # packets kept per alert for the pcap excerpt

Endpoint = tuple[str | None, str | None]  # (mac, ip)


@dataclass
class Finding:
    """What an engine saw: enough to raise or update one alert."""

    type: str
    ts: datetime  # capture time of the (first) triggering traffic
    src: Endpoint
    dst: Endpoint | None = None
    protocol: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    discriminator: str = ""  # what else makes it "the same traffic" (a port, a code)
    packets: list[int] = field(default_factory=list)  # packet numbers in the analyzed file
    count: int = 1
    last_ts: datetime | None = None
    # baseline entries that make it normal: (kind, key) or (kind, key, learned magnitude)
    learn: list[tuple[Any, ...]] = field(default_factory=list)


class DeviceIndex:
    """(mac, ip) -> device id through the addresses table: the run's endpoints loaded at once,
    others when asked for."""

    def __init__(self, session: Session, endpoints: set[Endpoint]) -> None:
        self.session = session
        self.exact: dict[tuple[str, str], int] = {}
        self.by_mac: dict[str, int] = {}
        self.loaded: set[Endpoint] = set()
        self._load(endpoints)

    def _load(self, endpoints: set[Endpoint]) -> None:
        self.loaded |= endpoints
        macs = sorted({m for m, _ in endpoints if m})
        ips = sorted({i for _, i in endpoints if i})
        rows: list[Address] = []
        for part in chunks(macs):
            rows += self.session.scalars(select(Address).where(Address.mac.in_(part)))
        for part in chunks(ips):
            rows += self.session.scalars(select(Address).where(Address.mac == "", Address.ip.in_(part)))
        self.exact.update({(a.mac, a.ip): a.device_id for a in rows if a.device_id})
        for a in rows:
            if a.device_id and a.mac and a.role == "device":
                self.by_mac.setdefault(a.mac, a.device_id)

    def __call__(self, ep: Endpoint | None) -> int | None:
        if ep is None:
            return None
        if ep not in self.loaded:  # an endpoint the run did not name (a device gone quiet, say)
            self._load({ep})
        mac, ip = ep[0] or "", ep[1] or ""
        found = self.exact.get((mac, ip)) or self.exact.get((mac, ""))
        if found is None and not ip:
            found = self.by_mac.get(mac)
        if found is None and not mac:
            found = self.exact.get(("", ip))
        return found


def _in(address: str, value: str | None) -> bool:
    if not value:
        return False
    if value.lower() == address.lower():
        return True
    if "/" in address:
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(address, strict=False)
        except ValueError:
            return False
    return False


def excluded_by(rule: Exclusion, f: Finding, sensor: str | None) -> bool:
    """An exclusion matches when every condition it sets holds for the finding."""
    if rule.alert_type and rule.alert_type != f.type:
        return False
    if rule.sensor and rule.sensor != sensor:
        return False
    if rule.starts_at and f.ts < rule.starts_at:
        return False
    if rule.ends_at and f.ts > rule.ends_at:
        return False
    if rule.address:
        sides = [f.src] + ([f.dst] if f.dst else [])
        if not any(_in(rule.address, v) for side in sides for v in side):
            return False
    return True


class AlertSink:
    """Raises and updates alerts for one analysis, inside its transaction."""

    def __init__(self, session: Session, sensor: str | None, file_id: int | None,
                 devices: DeviceIndex) -> None:
        self.session = session
        self.sensor = sensor
        self.file_id = file_id
        self.devices = devices
        self.types: dict[str, AlertType] = catalog()
        self.exclusions = list(session.scalars(select(Exclusion).where(Exclusion.enabled.is_(True))))
        self.raised = 0
        self.updated = 0
        self.excluded = 0

    def enabled(self, type_id: str) -> bool:
        return self.types[type_id].enabled

    def threshold(self, type_id: str, name: str) -> Any:
        return self.types[type_id].threshold(name)

    def report(self, f: Finding) -> Alert | None:
        kind = self.types[f.type]
        if not kind.enabled:
            return None
        if any(excluded_by(rule, f, self.sensor) for rule in self.exclusions):
            self.excluded += 1
            return None
        dst = f.dst or (None, None)
        key = f"{f.type}|{f.src[0] or ''}/{f.src[1] or ''}|{dst[0] or ''}/{dst[1] or ''}|{f.discriminator}"
        evidence = [{"file_id": self.file_id, "packet": p} for p in f.packets[:MAX_EVIDENCE]]
        last = f.last_ts or f.ts
        alert = self.session.scalar(select(Alert).where(Alert.key == key[:512], Alert.status != "closed"))
        if alert is not None:
            alert.count += f.count
            alert.first_detected = min(alert.first_detected, f.ts)
            alert.last_detected = max(alert.last_detected, last)
            alert.evidence = (list(alert.evidence) + evidence)[:MAX_EVIDENCE]
            learn = {tuple(x) for x in alert.details.get("learn", [])} | set(f.learn)
            alert.details = {**alert.details, **f.details, "learn": sorted(learn)}
            self.updated += 1
            return alert
        alert = Alert(
            key=key[:512], type=f.type, title=kind.title, engine=kind.engine, severity=kind.severity,
            category=kind.category, mitre=kind.mitre, status="new", protocol=f.protocol,
            src_mac=f.src[0], src_ip=f.src[1], dst_mac=dst[0], dst_ip=dst[1],
            src_device_id=self.devices(f.src), dst_device_id=self.devices(f.dst),
            sensor=self.sensor, first_detected=f.ts, last_detected=last, count=f.count,
            details={**f.details, "learn": sorted(set(f.learn))}, evidence=evidence,
        )
        self.session.add(alert)
        self.session.flush()
        self.raised += 1
        return alert


# ---------------------------------------------------------------- lifecycle

class LifecycleError(ValueError):
    pass


def set_status(alert: Alert, status: str, reason: str = "manual", at: datetime | None = None) -> None:
    if status not in STATUSES:
        raise LifecycleError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    alert.status = status
    if status == "closed":
        alert.closed_at = at or alert.last_detected
        alert.closed_reason = reason
    else:
        alert.closed_at = None
        alert.closed_reason = None


def learn(session: Session, alert: Alert) -> int:
    """Close the alert and make its traffic normal; returns the baseline entries added."""
    base = Baseline(session)
    for kind, key, *value in alert.details.get("learn", []):
        base.add(kind, key, alert.last_detected, value=float(value[0]) if value else 0.0,
                 source="alert")
    added = base.flush()
    if alert.type == "new_device":
        for device_id in (alert.src_device_id,):
            device = session.get(Device, device_id) if device_id else None
            if device is not None:
                device.authorized, device.is_new = True, False
    if alert.type == "unauthorized_programming" and alert.src_device_id:
        device = session.get(Device, alert.src_device_id)
        if device is not None:
            device.programming_device = True
    set_status(alert, "closed", "learn")
    return added


def mute(alert: Alert) -> None:
    set_status(alert, "closed", "mute")


def expire(session: Session, now: datetime) -> int:
    """Close open alerts with no new detection for 90 days before `now` (capture time)."""
    stale = list(session.scalars(select(Alert).where(
        Alert.status != "closed", Alert.last_detected < now - EXPIRE_AFTER)))
    for alert in stale:
        set_status(alert, "closed", "expired", at=now)
    return len(stale)


def alert_json(a: Alert) -> dict[str, Any]:
    """The stable JSON contract of an alert."""
    return {
        "id": a.id, "type": a.type, "title": a.title, "engine": a.engine, "severity": a.severity,
        "category": a.category, "mitre": a.mitre, "status": a.status, "count": a.count,
        "first_detected": iso(a.first_detected), "last_detected": iso(a.last_detected),
        "source": {"device_id": a.src_device_id, "mac": a.src_mac, "ip": a.src_ip},
        "destination": ({"device_id": a.dst_device_id, "mac": a.dst_mac, "ip": a.dst_ip}
                        if (a.dst_mac or a.dst_ip) else None),
        "protocol": a.protocol, "sensor": a.sensor,
        "details": {k: v for k, v in (a.details or {}).items() if k != "learn"},
        "evidence": list(a.evidence or []),
        "closed_at": iso(a.closed_at), "closed_reason": a.closed_reason,
    }


def list_alerts(session: Session, status: str | None = None, severity: str | None = None,
                type_: str | None = None) -> list[Alert]:
    q = select(Alert).order_by(Alert.first_detected, Alert.id)
    if status:
        q = q.where(Alert.status == status) if status != "open" else q.where(Alert.status != "closed")
    if severity:
        q = q.where(Alert.severity == severity)
    if type_:
        q = q.where(or_(Alert.type == type_))
    return list(session.scalars(q))
