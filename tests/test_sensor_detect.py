"""Detection on a live sensor: flushes are short runs, so what only shows over time (a wire
gone quiet, a PLC that stopped answering) is checked against the wall clock between them."""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detect_helpers import alerts, conversation, write
from tapwatch.capture import CaptureReader
from tapwatch.detect import learning
from tapwatch.sensor.engine import SensorPipeline
from tapwatch.store.db import open_engine, sessions

MODBUS_READ = struct.pack(">HHHB", 1, 0, 6, 1) + bytes([3, 0, 0, 0, 4])


@pytest.fixture
def quick_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("no_traffic: {thresholds: {gap: 2}}\n"
                       "device_disconnected: {thresholds: {silence: 2}}\n")
    monkeypatch.setenv("TAPWATCH_ALERT_CATALOG", str(catalog))


def _feed(pipeline: SensorPipeline, path: Path) -> None:
    with CaptureReader(path) as reader:
        for chunk in reader.chunks():
            pipeline.feed(chunk)


def test_quiet_wire_and_silent_plc_raise_once(tmp_path: Path, quick_catalog: None) -> None:
    db = tmp_path / "sensor.db"
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        learning.stop(s, datetime.now(UTC) - timedelta(minutes=1))
    pipeline = SensorPipeline(engine, "s1")
    # a Modbus client and server talked for 4 s, up to 4 s ago
    _feed(pipeline, write(tmp_path / "a.pcap", conversation(1, 2, 502, rounds=20, payload=MODBUS_READ),
                          start=time.time() - 8, step=0.1))
    first = pipeline.flush()
    assert first.detection is not None
    assert {a["type"] for a in alerts(db)} == {"new_device", "new_connection"}

    quiet = pipeline.flush()  # nothing arrived since
    assert quiet.detection is not None and quiet.detection.raised == 3
    by_type: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for a in alerts(db):
        by_type.setdefault(a["type"], []).append(a)
    assert len(by_type["no_traffic"]) == 1 and by_type["no_traffic"][0]["details"]["silent_seconds"] >= 3
    assert sorted(a["source"]["ip"] for a in by_type["device_disconnected"]) == ["10.1.0.1", "10.1.0.2"]
    assert all(a["source"]["device_id"] for a in by_type["device_disconnected"])

    again = pipeline.flush()  # still quiet: the same silence, no new alerts
    assert again.detection is not None and again.detection.raised == 0
    assert len([a for a in alerts(db) if a["type"] == "device_disconnected"]) == 2

    # traffic resumes: the silence that ended is the same alert, not a second one
    _feed(pipeline, write(tmp_path / "b.pcap", conversation(1, 2, 502, rounds=2, payload=MODBUS_READ),
                          start=time.time(), step=0.01))
    pipeline.flush()
    assert len([a for a in alerts(db) if a["type"] == "no_traffic"]) == 1
    engine.dispose()


def test_a_sensor_without_traffic_yet_raises_nothing(tmp_path: Path, quick_catalog: None) -> None:
    engine = open_engine(str(tmp_path / "sensor.db"))
    pipeline = SensorPipeline(engine, "s1")
    time.sleep(2.1)
    report = pipeline.flush()
    assert report.detection is None and alerts(tmp_path / "sensor.db") == []
    engine.dispose()
