"""Sensor to console in one process: registration and activation, the sensor principal,
idempotent uploads, one device across sensors of a zone, the outbox limit, health states,
and several console processes' worth of concurrent uploads on PostgreSQL."""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from inventory_helpers import CAPTURES
from tapwatch.capture.reader import CaptureReader
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.sensor import health, wire
from tapwatch.sensor.engine import SensorPipeline
from tapwatch.sensor.ingest import add_sensor
from tapwatch.sensor.outbox import Outbox
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Connection, Device
from tapwatch.store.sensor_models import OutboxBatch, Sensor, SensorBatch

CAPTURE = CAPTURES / "iti-ics-tools__ModbusTCP.pcap"
OTHER = CAPTURES / "icsnpp-s7comm__s7ident.pcap"
HEALTH = {"at_ns": 1, "version": "0.1.0", "hostname": "h", "interface": "eth1", "link_up": True,
          "packets_per_s": 12.5, "bytes_per_s": 900.0, "drops": 3}


def build_outbox(db: Path, capture: Path, name: str = "s1", window: int = 1 << 16) -> list[OutboxBatch]:
    """Run a capture through the sensor pipeline, a flush every few chunks; the outbox rows."""
    engine = open_engine(str(db))
    pipe = SensorPipeline(engine, name, Outbox())
    with CaptureReader(capture, window=window) as reader:
        for i, chunk in enumerate(reader.chunks()):
            pipe.feed(chunk)
            if i % 3 == 2:
                pipe.flush(dict(HEALTH, at_ns=i + 1))
    pipe.flush(dict(HEALTH, at_ns=10**9))
    with sessions(engine)() as s:
        rows = list(s.scalars(select(OutboxBatch).order_by(OutboxBatch.seq)))
    engine.dispose()
    return rows


def totals(engine: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
    with sessions(engine)() as s:
        devices = {(d.key_mac, d.key_ip): (d.packets_sent, d.packets_received, d.bytes_sent, d.bytes_received)
                   for d in s.scalars(select(Device))}
        conns = {(c.client_mac, c.client_ip, c.server_mac, c.server_ip, c.transport, c.server_port):
                 (c.packets_c2s, c.packets_s2c, c.bytes_c2s, c.bytes_s2c)
                 for c in s.scalars(select(Connection))}
    return devices, conns


@pytest.fixture
def console(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = open_engine(str(tmp_path / "console.db"))
    with sessions(engine).begin() as s:
        admin = auth.add_user(s, "admin", "a long password", "security_admin", "test")
        admin_token = auth.issue_token(s, admin, "t", "test")
        _sensor, token = add_sensor(s, "s1", "plant-a", "cell-1", "test")
        _sensor2, token2 = add_sensor(s, "s2", "plant-a", "cell-1", "test")
    app = create_app(engine)
    yield TestClient(app), engine, {"admin": admin_token, "s1": token, "s2": token2}
    engine.dispose()


def post(client: TestClient, token: str, body: bytes) -> Any:
    return client.post("/api/v1/sensors/upload", content=body, headers={
        "Authorization": f"Bearer {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"})


def test_registration_activation_and_the_sensor_principal(console) -> None:  # type: ignore[no-untyped-def]
    client, engine, tok = console
    admin = {"Authorization": f"Bearer {tok['admin']}"}
    listed = {s["name"]: s for s in client.get("/api/v1/sensors", headers=admin).json()["sensors"]}
    assert listed["s1"]["state"] == "pending activation" and listed["s1"]["site"] == "plant-a"
    _bid, body = wire.encode("health", dict(HEALTH, at_ns=time.time_ns()))
    r = post(client, tok["s1"], body)
    assert r.status_code == 200 and r.json()["applied"] is True
    s1 = client.get("/api/v1/sensors", headers=admin).json()["sensors"][0]
    assert s1["state"] == "healthy" and s1["packets_per_s"] == 12.5 and s1["drops"] == 3
    assert s1["version"] == "0.1.0" and s1["activated_at"] and s1["last_connected"]
    # a sensor token uploads and does nothing else
    sensor = {"Authorization": f"Bearer {tok['s1']}"}
    assert client.get("/api/v1/devices", headers=sensor).status_code == 403
    assert client.get("/api/v1/sensors", headers=sensor).status_code == 403
    assert client.post("/api/v1/sensors", json={"name": "x"}, headers=sensor).status_code == 403
    # a person's token cannot upload in a sensor's name
    assert post(client, tok["admin"], body).status_code == 400
    # a new sensor over the API, its token shown once; revoking refuses it
    made = client.post("/api/v1/sensors", json={"name": "s3", "zone": "z"}, headers=admin)
    assert made.status_code == 201 and made.json()["token"].startswith("tws_")
    assert client.post(f"/api/v1/sensors/{made.json()['id']}/revoke", headers=admin).status_code == 200
    assert post(client, made.json()["token"], body).status_code == 401
    assert post(client, "tws_not-a-token", body).status_code == 401
    # garbage is refused with a reason, not a 500
    bad = post(client, tok["s1"], b"\x1f\x8bnot gzip")
    assert bad.status_code == 400 and "gzip" in bad.json()["detail"]
    page = client.get("/sensors", headers=admin)
    assert page.status_code == 200 and "pending activation" in page.text and "healthy" in page.text


def test_uploads_equal_the_sensor_inventory_and_resending_changes_nothing(  # type: ignore[no-untyped-def]
        console, tmp_path: Path) -> None:
    client, engine, tok = console
    sensor_db = tmp_path / "sensor.db"
    rows = build_outbox(sensor_db, CAPTURE)
    data = [r for r in rows if r.kind != "health"]
    assert {r.kind for r in data} >= {"connections", "addresses"} and len(data) >= 4
    for r in rows:
        assert post(client, tok["s1"], r.body).json() == {"batch_id": r.batch_id, "applied": True}
    first = totals(engine)
    for r in rows:  # every acknowledgement lost: the sensor sends everything again
        assert post(client, tok["s1"], r.body).json()["applied"] is (r.kind == "health")
    local = open_engine(str(sensor_db))
    assert totals(engine) == first == totals(local)
    local.dispose()
    with sessions(engine)() as s:
        assert s.scalar(select(func.count(SensorBatch.id))) == len(data)
        devices = list(s.scalars(select(Device)))
        assert devices and all(d.site == "plant-a" and d.zone == "cell-1" and d.sensor == "s1"
                               for d in devices)


def test_one_device_across_sensors_of_a_zone(console, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, engine, tok = console
    a = build_outbox(tmp_path / "a.db", CAPTURE, "s1")
    b = build_outbox(tmp_path / "b.db", CAPTURE, "s2")
    for r in a:
        post(client, tok["s1"], r.body)
    once = totals(engine)
    for r in b:
        post(client, tok["s2"], r.body)
    twice = totals(engine)
    assert set(twice[0]) == set(once[0])  # same IP+MAC in the zone: the same devices
    assert all(twice[0][k] == tuple(2 * x for x in once[0][k]) for k in once[0])


def test_outbox_limit_drops_oldest_low_value_first(tmp_path: Path) -> None:
    engine = open_engine(str(tmp_path / "s.db"))
    box = Outbox(limit_bytes=6000)
    junk = [[i, secrets.token_hex(20)] for i in range(60)]  # ~1.3 KB once compressed
    with sessions(engine).begin() as s:
        for kind in ("alerts", "connections", "addresses", "evidence", "connections", "addresses"):
            box.put(s, kind, {"rows": junk, "kind": kind}, 60)
        box.put(s, "health", {"at_ns": 1}, 1)
    with sessions(engine).begin() as s:
        for _ in range(4):
            box.put(s, "evidence", {"rows": junk, "salt": _}, 60)
    with sessions(engine)() as s:
        left = [r.kind for r in s.scalars(select(OutboxBatch).order_by(OutboxBatch.seq))]
        dropped = Outbox.dropped(s)
        size = s.scalar(select(func.sum(OutboxBatch.size)))
    assert size is not None and size <= 6000
    assert "alerts" in left and "connections" not in left  # alerts kept, connections went first
    assert dropped["batches"] >= 2 and dropped["by_kind"]["connections"] == 120
    assert "alerts" not in dropped["by_kind"]
    engine.dispose()


def test_health_states() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0)
    base = {"revoked": False, "activated_at": now - timedelta(days=1), "now": now}
    assert health.state(**{**base, "activated_at": None}, last_connected=None, last_traffic=None) == \
        "pending activation"
    assert health.state(**base, last_connected=now - timedelta(seconds=5),
                        last_traffic=now - timedelta(seconds=10)) == "healthy"
    assert health.state(**base, last_connected=now - timedelta(seconds=5),
                        last_traffic=now - timedelta(minutes=30)) == "no traffic"
    assert health.state(**base, last_connected=now - timedelta(minutes=10),
                        last_traffic=now) == "disconnected"
    assert health.state(**{**base, "revoked": True}, last_connected=now, last_traffic=now) == "revoked"


def test_concurrent_consoles_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Two console processes' worth of apps on one PostgreSQL database; four sensors upload at
    once, each batch sent to both apps: every count equals the sensors' own, exactly once."""
    engine_a, engine_b = open_engine(pg_url), open_engine(pg_url)
    tokens = {}
    with sessions(engine_a).begin() as s:
        for i in range(4):
            tokens[f"p{i}"] = add_sensor(s, f"p{i}", "plant", "zone-1" if i < 2 else "zone-2", "test")[1]
    apps = [TestClient(create_app(engine_a)), TestClient(create_app(engine_b))]
    outboxes = {name: build_outbox(tmp_path / f"{name}.db", CAPTURE if i % 2 == 0 else OTHER, name)
                for i, name in enumerate(tokens)}
    errors: list[str] = []

    def upload(name: str, offset: int) -> None:
        for r in outboxes[name]:
            for k in (offset, offset + 1):
                resp = post(apps[k % 2], tokens[name], r.body)
                if resp.status_code != 200:
                    errors.append(f"{name}: {resp.status_code} {resp.text[:200]}")

    threads = [threading.Thread(target=upload, args=(n, i)) for i, n in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = totals(engine_a)
    expect_dev: dict[Any, list[int]] = {}
    expect_conn: dict[Any, list[int]] = {}
    for name in tokens:
        local = open_engine(str(tmp_path / f"{name}.db"))
        dev, conn = totals(local)
        local.dispose()
        for k, v in dev.items():
            expect_dev[k] = [x + y for x, y in zip(expect_dev.get(k, [0, 0, 0, 0]), v, strict=True)]
        for k, v in conn.items():
            expect_conn[k] = [x + y for x, y in zip(expect_conn.get(k, [0, 0, 0, 0]), v, strict=True)]
    assert {k: list(v) for k, v in got[0].items()} == expect_dev
    assert {k: list(v) for k, v in got[1].items()} == expect_conn
    with sessions(engine_a)() as s:
        assert s.scalar(select(func.count(SensorBatch.id))) == sum(
            1 for rows in outboxes.values() for r in rows if r.kind != "health")
        assert {x.name for x in s.scalars(select(Sensor)) if x.activated_at} == set(tokens)
    engine_a.dispose()
    engine_b.dispose()
