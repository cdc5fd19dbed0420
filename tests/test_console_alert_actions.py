"""Learn, mute and pcap download of alerts through the console API, on alerts the engines
raised from a real capture: learning makes the traffic normal for the next analysis."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from detect_helpers import of_type, run, shifted
from inventory_helpers import CAPTURES
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.store.db import open_engine, sessions

CAPTURE = CAPTURES / "iti-ics-tools__s7comm_downloading_block_db1.pcap"


@pytest.fixture
def env(tmp_path):  # type: ignore[no-untyped-def]
    db = tmp_path / "t.db"
    run(db, CAPTURE, no_learn=True)
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        tokens = {role: auth.issue_token(s, auth.add_user(s, role, "correct horse battery", role, "t"),
                                         "t", "t")
                  for role in ("security_reader", "security_analyst")}
    yield {"db": db, "client": TestClient(create_app(engine)), "tokens": tokens, "tmp": tmp_path}
    engine.dispose()


def h(env, role: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {env['tokens'][role]}"}


def test_learn_makes_the_programming_station_normal(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    (alert,) = of_type(env["db"], "unauthorized_programming")
    assert c.post(f"/api/v1/alerts/{alert['id']}/learn", headers=h(env, "security_reader")).status_code == 403
    r = c.post(f"/api/v1/alerts/{alert['id']}/learn", headers=h(env, "security_analyst"))
    assert r.status_code == 200 and r.json()["closed_reason"] == "learn"
    run(env["db"], shifted(CAPTURE, env["tmp"] / "later.pcap", timedelta(days=30)))
    assert [a["status"] for a in of_type(env["db"], "unauthorized_programming")] == ["closed"]


def test_mute_closes_and_the_same_traffic_raises_a_new_alert(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    (alert,) = of_type(env["db"], "unauthorized_programming")
    r = c.post(f"/api/v1/alerts/{alert['id']}/mute", headers=h(env, "security_analyst"))
    assert r.status_code == 200 and r.json()["closed_reason"] == "mute"
    run(env["db"], shifted(CAPTURE, env["tmp"] / "later.pcap", timedelta(days=30)))
    assert [a["status"] for a in of_type(env["db"], "unauthorized_programming")] == ["closed", "new"]


def test_pcap_download_opens_in_tshark(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    (alert,) = of_type(env["db"], "unauthorized_programming")
    r = c.get(f"/api/v1/alerts/{alert['id']}/pcap", headers=h(env, "security_reader"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.tcpdump.pcap"
    path = env["tmp"] / "a.pcap"
    path.write_bytes(r.content)
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "s7comm.param.func == 0x1a",
                          "-T", "fields", "-e", "ip.src"], capture_output=True, text=True, check=True)
    assert alert["source"]["ip"] in out.stdout.split()
    assert c.get("/api/v1/alerts/99999/pcap", headers=h(env, "security_reader")).status_code == 404


def test_pcap_of_a_capture_that_was_moved_away_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "moved.pcap"
    copy.write_bytes(CAPTURE.read_bytes())
    db = tmp_path / "t.db"
    run(db, copy, no_learn=True)
    copy.unlink()
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        token = auth.issue_token(s, auth.add_user(s, "r", "correct horse battery", "security_reader", "t"),
                                 "t", "t")
    (alert,) = of_type(db, "unauthorized_programming")
    r = TestClient(create_app(engine)).get(f"/api/v1/alerts/{alert['id']}/pcap",
                                           headers={"Authorization": f"Bearer {token}"})
    engine.dispose()
    assert r.status_code == 409 and "moved.pcap is no longer there" in r.json()["detail"]
