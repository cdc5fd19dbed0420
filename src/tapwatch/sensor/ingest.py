"""The console's side of uploads: registering sensors and applying their batches exactly once.

A batch is applied in one transaction that first claims its id in `sensor_batches`
(unique per sensor, INSERT … ON CONFLICT DO NOTHING): a batch seen before changes
nothing and is acknowledged again. The data goes through the same store functions as a
capture file (merge_run, merge_facts, store_events, refresh_identity), so a device seen
by several sensors is one device. On PostgreSQL, data batches take a transaction-level
advisory lock: merge_run reads, adds and writes counters, and two console processes
applying at once would otherwise lose updates. Conflicts and deadlocks are retried.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console.auth import digest
from tapwatch.sensor import health, wire
from tapwatch.store import evidence, inventory
from tapwatch.store.alert_models import Alert
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.identity import refresh_identity
from tapwatch.store.models import Address, Device
from tapwatch.store.sensor_models import Sensor, SensorBatch

SENSOR_TOKEN_PREFIX = "tws_"
APPLY_LOCK = 0x7461707761746368  # "tapwatch": one data batch at a time per database
ATTEMPTS = 8


class SensorError(ValueError):
    """A refused sensor-management request, with a message for the person."""


def add_sensor(session: Session, name: str, site: str | None, zone: str | None,
               actor: str) -> tuple[Sensor, str]:
    """Register a sensor; returns it and its activation token (shown once, stored hashed)."""
    name = (name or "").strip()
    if not name or len(name) > 128 or not all(c.isalnum() or c in "._-" for c in name):
        raise SensorError("sensor names are 1-128 letters, digits or . _ -")
    if session.scalar(select(Sensor.id).where(Sensor.name == name)) is not None:
        raise SensorError(f"sensor {name!r} already exists")
    token = SENSOR_TOKEN_PREFIX + secrets.token_urlsafe(32)
    sensor = Sensor(name=name, site=site or None, zone=zone or None, token_hash=digest(token),
                    prefix=token[:10], revoked=False, created_at=utcnow(), packets_per_s=0.0,
                    bytes_per_s=0.0, drops=0, outbox_batches=0, outbox_bytes=0, outbox_dropped=0,
                    health={})
    session.add(sensor)
    session.flush()
    audit(session, actor, "sensor.add", "sensor", sensor.id, name=name, site=site, zone=zone)
    return sensor, token


def sensor_for_token(session: Session, token: str) -> Sensor | None:
    """The sensor of a token, marking its contact (and its activation on the first one)."""
    sensor = session.scalar(select(Sensor).where(Sensor.token_hash == digest(token)))
    if sensor is None or sensor.revoked:
        return None
    now = utcnow()
    if sensor.activated_at is None:
        sensor.activated_at = now
        audit(session, f"sensor:{sensor.name}", "sensor.activate", "sensor", sensor.id)
    if sensor.last_connected is None or (now - sensor.last_connected).total_seconds() >= 1:
        sensor.last_connected = now
    return sensor


def sensor_state(sensor: Sensor, now: datetime | None = None) -> str:
    return health.state(revoked=sensor.revoked, activated_at=sensor.activated_at,
                        last_connected=sensor.last_connected, last_traffic=sensor.last_traffic,
                        now=now or utcnow())


def sensor_json(sensor: Sensor, now: datetime | None = None) -> dict[str, Any]:
    return {
        "id": sensor.id, "name": sensor.name, "site": sensor.site, "zone": sensor.zone,
        "state": sensor_state(sensor, now), "token_prefix": sensor.prefix,
        "created_at": inventory.iso(sensor.created_at), "activated_at": inventory.iso(sensor.activated_at),
        "last_connected": inventory.iso(sensor.last_connected), "version": sensor.version,
        "hostname": sensor.hostname, "interface": sensor.interface,
        "health_at": inventory.iso(sensor.health_at), "last_traffic": inventory.iso(sensor.last_traffic),
        "packets_per_s": sensor.packets_per_s, "bytes_per_s": sensor.bytes_per_s,
        "drops": sensor.drops, "outbox_batches": sensor.outbox_batches,
        "outbox_bytes": sensor.outbox_bytes, "outbox_dropped": sensor.outbox_dropped,
        "link_up": (sensor.health or {}).get("link_up"),
    }


def _retryable(e: DBAPIError) -> bool:
    code = getattr(e.orig, "sqlstate", None) or getattr(getattr(e.orig, "pgcode", None), "x", None)
    message = str(e.orig).lower()
    return (isinstance(e, IntegrityError) or code in ("40001", "40P01") or "locked" in message
            or "busy" in message)


def apply_batch(db: sessionmaker[Session], sensor_id: int, doc: dict[str, Any]) -> bool:
    """Apply one decoded batch; False when this batch was applied before (nothing changed)."""
    for attempt in range(ATTEMPTS):
        try:
            with db.begin() as s:
                return _apply(s, sensor_id, doc)
        except DBAPIError as e:
            if attempt == ATTEMPTS - 1 or not _retryable(e):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _claim(session: Session, sensor_id: int, doc: dict[str, Any], records: int) -> bool:
    insert = inventory.upsert_for(session)
    stmt = insert(SensorBatch.__table__).values(
        sensor_id=sensor_id, batch_id=doc["batch_id"], kind=doc["kind"], records=records,
        applied_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["sensor_id", "batch_id"]).returning(SensorBatch.__table__.c.id)
    return session.execute(stmt).first() is not None


def _apply(s: Session, sensor_id: int, doc: dict[str, Any]) -> bool:
    sensor = s.get(Sensor, sensor_id)
    assert sensor is not None
    kind, data = doc["kind"], doc["data"]
    if kind == "health":
        _apply_health(sensor, data)
        return True
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPLY_LOCK})
    if kind == "addresses":
        addresses = wire.addresses_of(data)
        if not _claim(s, sensor_id, doc, len(addresses)):
            return False
        stats = inventory.merge_run(s, addresses, [], sensor.name)
        _place(s, sensor, stats.device_ids)
        if stats.device_ids:
            refresh_identity(s, stats.device_ids)
    elif kind == "connections":
        connections = wire.connections_of(data)
        if not _claim(s, sensor_id, doc, len(connections)):
            return False
        inventory.merge_run(s, [], connections, sensor.name)
    elif kind == "evidence":
        results = wire.evidence_of(data)
        if not _claim(s, sensor_id, doc, len(results.facts) + len(results.events) + len(results.errors)):
            return False
        touched = evidence.merge_facts(s, results)
        evidence.store_events(s, results, None)
        s.flush()
        ids = evidence.device_ids_of(s, touched)
        if ids:
            refresh_identity(s, ids)
    elif kind == "alerts":
        alerts = data.get("alerts", [])
        if not _claim(s, sensor_id, doc, len(alerts)):
            return False
        _apply_alerts(s, sensor, alerts)
    return True


def _place(s: Session, sensor: Sensor, device_ids: set[int]) -> None:
    """Devices a sensor reports get its site and zone, unless a person set them already."""
    ids = sorted(device_ids)
    for part in inventory.chunks(ids):
        if sensor.site:
            s.execute(update(Device).where(Device.id.in_(part), Device.site.is_(None))
                      .values(site=sensor.site))
        if sensor.zone:
            s.execute(update(Device).where(Device.id.in_(part), Device.zone.is_(None))
                      .values(zone=sensor.zone))


def _apply_health(sensor: Sensor, data: dict[str, Any]) -> None:
    at = inventory.ns_to_dt(int(data.get("at_ns", 0)))
    if sensor.health_at is not None and at <= sensor.health_at:
        return  # an older report arriving late
    sensor.health_at = at
    sensor.version = str(data.get("version", ""))[:32] or None
    sensor.hostname = str(data.get("hostname", ""))[:255] or None
    sensor.interface = str(data.get("interface", ""))[:64] or None
    sensor.packets_per_s = float(data.get("packets_per_s", 0.0))
    sensor.bytes_per_s = float(data.get("bytes_per_s", 0.0))
    sensor.drops = int(data.get("drops", 0))
    sensor.outbox_batches = int(data.get("outbox_batches", 0))
    sensor.outbox_bytes = int(data.get("outbox_bytes", 0))
    sensor.outbox_dropped = int((data.get("outbox_dropped") or {}).get("batches", 0))
    if sensor.packets_per_s > 0:
        sensor.last_traffic = utcnow()
    sensor.health = {k: v for k, v in data.items()
                     if isinstance(v, (int, float, str, bool, dict, type(None)))}


def _owner(s: Session, mac: str | None, ip: str | None) -> int | None:
    if not mac and not ip:
        return None
    q = select(Address.device_id).where(Address.mac == (mac or ""), Address.ip == (ip or ""))
    return s.scalar(q)


def _apply_alerts(s: Session, sensor: Sensor, alerts: list[dict[str, Any]]) -> None:
    """Upsert alerts by (sensor, key, first detection): a re-export updates, never duplicates."""
    for a in alerts:
        first = inventory.ns_to_dt(int(a["first_detected_ns"]))
        last = inventory.ns_to_dt(int(a["last_detected_ns"]))
        row = s.scalar(select(Alert).where(Alert.sensor == sensor.name, Alert.key == str(a["key"])[:512],
                                           Alert.first_detected == first))
        if row is None:
            row = Alert(key=str(a["key"])[:512], sensor=sensor.name, first_detected=first,
                        evidence=[], status="new")
            s.add(row)
        for f in ("type", "title", "engine", "severity", "category", "mitre", "protocol", "src_mac",
                  "src_ip", "dst_mac", "dst_ip", "closed_reason"):
            setattr(row, f, a.get(f))
        row.status = a.get("status") or row.status or "new"
        row.count = int(a.get("count") or 1)
        row.details = a.get("details") or {}
        row.last_detected = last
        row.closed_at = inventory.ns_to_dt(int(a["closed_at_ns"])) if a.get("closed_at_ns") else None
        row.src_device_id = _owner(s, a.get("src_mac"), a.get("src_ip"))
        row.dst_device_id = _owner(s, a.get("dst_mac"), a.get("dst_ip"))
