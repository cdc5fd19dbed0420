"""Prometheus metrics: the console's /metrics (token-protected), the sensor endpoint, `tapwatch metrics`."""

from __future__ import annotations

import datetime as dt
import urllib.request
from pathlib import Path

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tapwatch.cli import main
from tapwatch.integrations import metrics
from tapwatch.store.alert_models import Alert
from tapwatch.store.db import open_engine, sessions

DATA = Path(__file__).parent / "data" / "zeek"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _site(tmp_path: Path) -> Path:
    db = tmp_path / "t.db"
    r = CliRunner().invoke(main, ["analyze", "--zeek-logs", str(DATA / "tsv"), "--db", str(db)])
    assert r.exit_code == 0, r.output
    engine = open_engine(str(db))
    when = dt.datetime(2024, 3, 11)
    with sessions(engine).begin() as s:
        for i, (sev, status) in enumerate([("high", "new"), ("high", "new"), ("low", "closed")]):
            s.add(Alert(key=f"k{i}", type="t", title="t", engine="policy", severity=sev, category="c",
                        status=status, first_detected=when, last_detected=when, details={}, evidence=[]))
    engine.dispose()
    return db


def test_console_metrics_endpoint(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tapwatch.console import auth
    from tapwatch.console.app import create_app

    db = _site(tmp_path)
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        user = auth.add_user(s, "prom", "a long password", "security_reader", "test")
        token = auth.issue_token(s, user, "scrape", "test")
    client = TestClient(create_app(engine))
    anonymous = client.get("/metrics", follow_redirects=False)
    assert anonymous.status_code == 303  # like every page: log in first
    h = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/devices/1", headers=h).status_code == 200
    assert client.get("/api/v1/devices/2", headers=h).status_code == 200
    r = client.get("/metrics", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = _samples(r.text)
    assert sum(got[("tapwatch_devices", (("class", c),))] for c in ("IT", "IoT", "OT", "unknown")) == 7
    assert got[("tapwatch_alerts", (("severity", "high"), ("status", "new")))] == 2
    assert got[("tapwatch_alerts", (("severity", "low"), ("status", "closed")))] == 1
    # both device requests share one series, labelled by the route template
    key = ("tapwatch_console_request_duration_seconds_count",
           (("method", "GET"), ("route", "/api/v1/devices/{device_id}"), ("status", "200")))
    assert got[key] >= 2
    engine.dispose()


def test_sensor_metrics_server_and_cli_dump(tmp_path: Path) -> None:
    db = _site(tmp_path)
    served = metrics.start_metrics_server(0, sessions=sessions(open_engine(str(db))))
    try:
        served.observe({"packets": 1000, "drops": 1, "packets_per_s": 100.0, "outbox_batches": 5})
        served.observe({"packets": 1500, "drops": 3, "packets_per_s": 250.5, "outbox_batches": 2})
        port = served.server.server_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        served.stop()
    got = _samples(text)
    assert got[("tapwatch_sensor_packets_total", ())] == 1500  # counters follow the cumulative figures
    assert got[("tapwatch_sensor_drops_total", ())] == 3
    assert got[("tapwatch_sensor_packets_per_second", ())] == 250.5
    assert got[("tapwatch_sensor_outbox_backlog", ())] == 2
    assert got[("tapwatch_alerts", (("severity", "high"), ("status", "new")))] == 2  # the store's gauges
    r = CliRunner().invoke(main, ["metrics", "--db", str(db)])
    assert r.exit_code == 0
    dumped = _samples(r.output)
    assert dumped[("tapwatch_alerts", (("severity", "high"), ("status", "new")))] == 2
    assert dumped[("tapwatch_ingested_files", ())] == 7  # the seven Zeek logs, remembered by hash
