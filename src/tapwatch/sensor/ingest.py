"""The console's side of uploads: registering sensors and applying their batches exactly once.

A batch is applied in one transaction that first claims its id in `sensor_batches`
(unique per sensor, INSERT … ON CONFLICT DO NOTHING): a batch seen before changes
nothing and is acknowledged again. Addresses and connections go through the set-based
merge of sensor.merge, evidence through the same store functions as a capture file
(merge_facts, store_events), so a device seen by several sensors is one device. Devices
a batch touches wait in a queue; the last batch of a sensor's flush (or any batch of a
sensor that does not mark its flushes) recomputes their identity once, from everything.

On PostgreSQL several console processes share the database under a transaction-level
advisory lock: connection batches take it shared (their upserts add counters in SQL and
run side by side), every other data batch takes it exclusive (address batches re-plan
devices from what they read, evidence merges facts the same way). Batches are parsed
before the transaction, so nobody waits on that. Conflicts and deadlocks are retried.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console.auth import digest
from tapwatch.sensor import health, merge, planner_stats, wire
from tapwatch.store import evidence, inventory
from tapwatch.store.alert_models import Alert
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.identity import refresh_identity
from tapwatch.store.models import Address
from tapwatch.store.sensor_models import Sensor, SensorBatch

log = logging.getLogger("tapwatch.sensor")
SENSOR_TOKEN_PREFIX = "tws_"
APPLY_LOCK = 0x7461707761746368  # "tapwatch": shared by connection batches, else exclusive
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
        "held": ((sensor.health or {}).get("uploader") or {}).get("held"),  # e.g. no plan in force
    }


def _retryable(e: DBAPIError) -> bool:
    code = getattr(e.orig, "sqlstate", None) or getattr(getattr(e.orig, "pgcode", None), "x", None)
    message = str(e.orig).lower()
    return (isinstance(e, IntegrityError) or code in ("40001", "40P01") or "locked" in message
            or "busy" in message)


def apply_batch(db: sessionmaker[Session], sensor_id: int, doc: dict[str, Any]) -> bool:
    """Apply one decoded batch; False when this batch was applied before (nothing changed)."""
    if doc["kind"] != "health" and _applied_before(db, sensor_id, doc["batch_id"]):
        return False  # re-sent after a lost acknowledgement: not even parsed (the claim decides)
    records, rows = _prepare(doc)  # before any transaction: no lock waits on Python work
    for attempt in range(ATTEMPTS):
        try:
            with db.begin() as s:
                applied = _apply(s, sensor_id, doc, records, rows)
            break
        except DBAPIError as e:
            if attempt == ATTEMPTS - 1 or not _retryable(e):
                raise
            time.sleep(0.05 * (attempt + 1))
    bind = s.get_bind()
    if applied and isinstance(bind, Engine):
        try:
            planner_stats.refresh(bind)
        except SQLAlchemyError:  # the batch is in; statistics are only an aid
            log.exception("analyzing the inventory tables failed")
    return applied


def _applied_before(db: sessionmaker[Session], sensor_id: int, batch_id: str) -> bool:
    with db() as s:
        return s.scalar(select(SensorBatch.id).where(SensorBatch.sensor_id == sensor_id,
                                                     SensorBatch.batch_id == batch_id)) is not None


def _prepare(doc: dict[str, Any]) -> tuple[int, Any]:
    """(record count, the batch's rows in the form its merge takes) of a data batch."""
    kind, data = doc["kind"], doc["data"]
    if kind == "addresses":
        addresses = wire.addresses_of(data)
        return len(addresses), addresses
    if kind == "connections":
        connections = wire.connections_of(data)
        return len(connections), merge.connection_rows(connections)
    if kind == "evidence":
        results = wire.evidence_of(data)
        return len(results.facts) + len(results.events) + len(results.errors), results
    if kind == "alerts":
        alerts = data.get("alerts", [])
        return len(alerts), alerts
    return 1, data


def _claim(session: Session, sensor_id: int, doc: dict[str, Any], records: int) -> bool:
    insert = inventory.upsert_for(session)
    stmt = insert(SensorBatch.__table__).values(
        sensor_id=sensor_id, batch_id=doc["batch_id"], kind=doc["kind"], records=records,
        applied_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["sensor_id", "batch_id"]).returning(SensorBatch.__table__.c.id)
    return session.execute(stmt).first() is not None


def _apply(s: Session, sensor_id: int, doc: dict[str, Any], records: int, rows: Any) -> bool:
    sensor = s.get(Sensor, sensor_id)
    assert sensor is not None
    kind = doc["kind"]
    if kind == "health":
        _apply_health(sensor, rows)
        return True
    if s.get_bind().dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock_shared" if kind == "connections" else "pg_advisory_xact_lock"
        s.execute(text(f"SELECT {lock}(:k)"), {"k": APPLY_LOCK})
    applied = _claim(s, sensor_id, doc, records)
    if applied:
        if kind == "addresses":
            merge.merge_addresses(s, rows, sensor.id, sensor.name, sensor.site, sensor.zone)
        elif kind == "connections":
            merge.merge_connections(s, rows, sensor.id)
        elif kind == "evidence":
            touched = evidence.merge_facts(s, rows)
            evidence.store_events(s, rows, None)
            s.flush()
            merge.queue_identity(s, sensor.id, evidence.device_ids_of(s, touched))
        elif kind == "alerts":
            _apply_alerts(s, sensor, rows)
    if not wire.more_follow(doc["data"]):  # the flush is in (or the sensor does not say)
        _identify_pending(s, sensor_id)
    return applied


def _identify_pending(s: Session, sensor_id: int) -> None:
    """Recompute the identity of the devices this sensor's batches touched since its last flush."""
    ids = merge.take_identity_queue(s, sensor_id)
    if ids:
        refresh_identity(s, ids)


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
