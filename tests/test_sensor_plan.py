"""New data from sensors needs a plan: after a trial ends unconverted the console refuses a
sensor's data batches (403, with the reason) but still takes its health reports; the real
uploader keeps the refused batches in its outbox, says why once, and delivers every one of
them, applied exactly once, as soon as a plan is added.

The console runs in this process under uvicorn so the plan clock can be moved."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from clock_helpers import T0, Clock
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.plans import plans as rules
from tapwatch.plans import subscriptions
from tapwatch.plans.access import CLI
from tapwatch.sensor import wire
from tapwatch.sensor.engine import SensorPipeline
from tapwatch.sensor.ingest import add_sensor
from tapwatch.sensor.outbox import Outbox
from tapwatch.sensor.uploader import UPLOAD_PATH, Uploader
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.sensor_models import OutboxBatch
from test_sensor_console import CAPTURE, HEALTH, build_outbox
from test_sensor_netns import free_port, inventory_totals, wait_for


@pytest.fixture
def console(tmp_path: Path, now: Clock) -> Iterator[dict[str, Any]]:
    """A console whose subscription started a trial at T0, served on a free port."""
    db = tmp_path / "console.db"
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        admin = auth.add_user(s, "admin", "a long password", "security_admin", "test")
        admin_token = auth.issue_token(s, admin, "t", "test")
        _sensor, token = add_sensor(s, "s1", "plant-a", "cell-1", "test")
        sub = subscriptions.create(s, CLI, "plant")
        rules.add(s, CLI, sub, "trial")
        sub_id = sub.id
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the console")
    try:
        yield {"db": db, "engine": engine, "url": f"http://127.0.0.1:{port}", "token": token,
               "admin": {"Authorization": f"Bearer {admin_token}"}, "subscription": sub_id}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def _post(console: dict[str, Any], body: bytes) -> httpx.Response:
    return httpx.post(console["url"] + UPLOAD_PATH, content=body, headers={
        "Authorization": f"Bearer {console['token']}", "Content-Encoding": "gzip"})


def test_data_waits_in_the_outbox_while_no_plan_is_in_force(  # type: ignore[no-untyped-def]
        console, now: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sensor_db = tmp_path / "sensor.db"
    build_outbox(sensor_db, CAPTURE, "s1")
    engine = open_engine(str(sensor_db))
    up = Uploader(engine, console["url"], console["token"], max_backoff=0.2)
    backlog = up.pending()
    assert backlog >= 4
    # during the trial the data is taken
    now.at = T0 + timedelta(days=29)
    _id, body = wire.encode("health", dict(HEALTH, at_ns=time.time_ns()))
    assert _post(console, body).status_code == 200

    now.at = T0 + timedelta(days=31)  # the trial ended unconverted
    caplog.set_level(logging.WARNING, logger="tapwatch.sensor")
    assert up.send_one() is True  # the newest health report still goes
    for _ in range(3):
        assert up.send_one() is None  # the data does not, and is kept
    assert up.pending() == backlog and inventory_totals(str(console["db"])) == ({}, {})
    assert "trial ended unconverted" in (up.status.held or "")
    said = [r.getMessage() for r in caplog.records if "holds back new data" in r.getMessage()]
    assert len(said) == 1 and f"{backlog} batches wait in the outbox" in said[0]
    with sessions(engine)() as s:
        data = s.scalars(select(OutboxBatch).where(OutboxBatch.kind != "health")).first()
    assert data is not None
    refused = _post(console, data.body)
    assert refused.status_code == 403 and refused.headers["X-Tapwatch-Refusal"] == "no-active-plan"
    assert "'plant' has no active plan" in refused.json()["detail"]

    # the sensor's next health report says its data is held; the console shows it
    SensorPipeline(engine, "s1", Outbox()).flush(dict(HEALTH, at_ns=time.time_ns(),
                                                      uploader={"held": up.status.held}))
    assert up.send_one() is True
    listed = httpx.get(console["url"] + "/api/v1/sensors", headers=console["admin"]).json()["sensors"]
    assert "trial ended unconverted" in listed[0]["held"]
    assert "held: no active plan" in httpx.get(console["url"] + "/sensors", headers=console["admin"]).text

    # converting: a monthly plan from now on; everything held is delivered, once
    with sessions(console["engine"]).begin() as s:
        rules.add(s, CLI, subscriptions.get(s, console["subscription"]), "monthly", committed=100)
    up.start()
    wait_for(lambda: up.pending() == 0, 60, "the held batches to go")
    up.stop()
    assert up.status.held is None and up.status.rejected == 0
    assert inventory_totals(str(console["db"])) == inventory_totals(str(sensor_db))
    assert any("sending the" in r.getMessage() for r in caplog.records)
    engine.dispose()

