"""The console's REST API on a real SQLite inventory analyzed from real captures."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from inventory_helpers import CAPTURES, analyze
from tapwatch import clock
from tapwatch.cli import main
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.store.alert_models import Alert
from tapwatch.store.console_models import AuditEntry
from tapwatch.store.db import alembic_config, open_engine, sessions
from tapwatch.store.identity import refresh_identity
from tapwatch.store.models import Address, Connection, Device, Event

CAPS = ("icsnpp-s7comm__s7ident.pcap", "icsnpp-modbus__modbus_example.pcap",
        "iti-ics-tools__EIP-SoftwareUpload.pcap")
ROLES = ("security_reader", "security_analyst", "security_admin", "owner")


def add_alert(s, **kw) -> Alert:  # type: ignore[no-untyped-def]
    now = datetime(2024, 10, 4, 21, 30)
    a = Alert(key=kw.pop("key", "k"), type=kw.pop("type", "plc_stop"), title=kw.pop("title", "PLC stop"),
              engine="operational", severity=kw.pop("severity", "high"), category="operational",
              status=kw.pop("status", "new"), first_detected=now, last_detected=now, count=1,
              details={}, evidence=[], **kw)
    s.add(a)
    s.flush()
    return a


@pytest.fixture(scope="module")
def env(tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("console_api")
    db = tmp / "t.db"
    analyze(db, *(CAPTURES / c for c in CAPS))
    engine = open_engine(str(db))
    tokens = {}
    with sessions(engine).begin() as s:
        for role in ROLES:
            user = auth.add_user(s, role.replace("_", "-"), "correct horse battery", role, "test")
            tokens[role] = auth.issue_token(s, user, "test", "test")
        plc = s.scalar(select(Device).where(Device.ip == "172.17.0.2"))
        added = [add_alert(s, key="a1", dst_device_id=plc.id, dst_ip=plc.ip).id,
                 add_alert(s, key="a2", severity="low", title="New device").id]
    client = TestClient(create_app(engine))
    yield {"db": db, "engine": engine, "client": client, "tokens": tokens, "alerts": added}
    engine.dispose()


def h(env, role: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {env['tokens'][role]}"}


def device_id(env, ip: str) -> int:  # type: ignore[no-untyped-def]
    with sessions(env["engine"])() as s:
        return int(s.scalar(select(Device.id).where(Device.ip == ip)))


# -- reading -------------------------------------------------------------------------------


def test_list_filter_sort_page(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    everything = c.get("/api/v1/devices?page_size=500", headers=h(env, "security_reader")).json()
    assert everything["total"] == len(everything["devices"]) >= 8
    plcs = c.get("/api/v1/devices?type=plc", headers=h(env, "security_reader")).json()
    assert plcs["total"] == sum(1 for d in everything["devices"] if d["type"] == "plc") > 0
    assert all(d["type"] == "plc" for d in plcs["devices"])
    ot = c.get("/api/v1/devices", params={"class": "OT"}, headers=h(env, "security_reader")).json()
    assert {d["class"] for d in ot["devices"]} == {"OT"}
    found = c.get("/api/v1/devices?q=siemens", headers=h(env, "security_reader")).json()
    assert [d["vendor"] for d in found["devices"]] == ["Siemens"]
    recent = c.get("/api/v1/devices?seen_after=2020-01-01", headers=h(env, "security_reader")).json()
    assert recent["total"] == sum(1 for d in everything["devices"] if d["last_seen"] >= "2020-01-01")
    by_packets = c.get("/api/v1/devices?sort=packets&order=desc&page_size=3",
                       headers=h(env, "security_reader")).json()["devices"]
    totals = [d["packets_sent"] + d["packets_received"] for d in by_packets]
    assert totals == sorted(totals, reverse=True)
    assert totals[0] == max(d["packets_sent"] + d["packets_received"] for d in everything["devices"])
    page2 = c.get("/api/v1/devices?page=2&page_size=3&sort=id", headers=h(env, "security_reader")).json()
    ids = sorted(d["id"] for d in everything["devices"])
    assert [d["id"] for d in page2["devices"]] == ids[3:6]


def test_device_detail_has_evidence(env) -> None:  # type: ignore[no-untyped-def]
    plc = device_id(env, "172.17.0.2")
    row = env["client"].get(f"/api/v1/devices/{plc}", headers=h(env, "security_reader")).json()
    assert row["type"] == "plc" and row["vendor"] == "Siemens"
    assert any(f["attribute"] == "model" and "315" in f["value"] for f in row["facts"])


def test_connections_and_events(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    modbus = device_id(env, "127.0.0.1")
    conns = c.get(f"/api/v1/connections?device_id={modbus}", headers=h(env, "security_reader")).json()
    assert conns["total"] > 0
    assert all(modbus in (x["client_device_id"], x["server_device_id"]) for x in conns["connections"])
    events = c.get("/api/v1/events?type=register_write", headers=h(env, "security_reader")).json()
    assert events["total"] > 0 and {e["type"] for e in events["events"]} == {"register_write"}


def test_csv_export_is_the_filtered_view(env) -> None:  # type: ignore[no-untyped-def]
    r = env["client"].get("/api/v1/devices/export.csv?type=plc&sort=id",
                          headers=h(env, "security_reader"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    api = env["client"].get("/api/v1/devices?type=plc&sort=id", headers=h(env, "security_reader")).json()
    assert [int(x["id"]) for x in rows] == [d["id"] for d in api["devices"]]
    assert {x["type"] for x in rows} == {"plc"}
    assert r.headers["x-total-count"] == str(api["total"])


# -- editing -------------------------------------------------------------------------------


def test_edit_keeps_person_values_through_reidentification(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    dev = device_id(env, "192.168.1.6")
    with sessions(env["engine"]).begin() as s:
        s.get(Device, dev).is_new = True
    r = c.patch(f"/api/v1/devices/{dev}", headers=h(env, "security_admin"),
                json={"name": "Line 3 HMI", "type": "engineering_workstation", "importance": "high",
                      "tags": ["line3", "ews"], "location": "Hall B", "programming_device": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"]["name"] == [None, "Line 3 HMI"]
    d = body["device"]
    assert (d["name"], d["type"], d["class"], d["importance"]) == ("Line 3 HMI", "engineering_workstation",
                                                                  "OT", "high")
    assert d["new"] is False and d["tags"] == ["ews", "line3"] and d["programming_device"] is True
    with sessions(env["engine"]).begin() as s:  # identification runs again: the person's values stay
        refresh_identity(s, [dev])
    again = c.get(f"/api/v1/devices/{dev}", headers=h(env, "security_reader")).json()
    assert (again["name"], again["type"]) == ("Line 3 HMI", "engineering_workstation")
    # null gives the field back to identification
    c.patch(f"/api/v1/devices/{dev}", headers=h(env, "security_admin"), json={"type": None})
    back = c.get(f"/api/v1/devices/{dev}", headers=h(env, "security_reader")).json()
    assert back["type"] == "hmi" and "type" not in back["overrides"]
    audit = c.get(f"/api/v1/audit?action=device.edit&target_id={dev}", headers=h(env, "owner")).json()
    assert audit["entries"][0]["actor"] == "security-admin"
    assert audit["entries"][-1]["details"]["changes"]["importance"] == ["normal", "high"]


def test_analyst_may_authorize_but_not_edit(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    dev = device_id(env, "3.15.227.20")
    r = c.post("/api/v1/devices/authorize", headers=h(env, "security_analyst"),
               json={"ids": [dev], "authorized": False})
    assert r.status_code == 200
    assert c.get(f"/api/v1/devices/{dev}", headers=h(env, "security_reader")).json()["authorized"] is False
    r = c.patch(f"/api/v1/devices/{dev}", headers=h(env, "security_analyst"), json={"name": "x"})
    assert r.status_code == 403 and "devices:write" in r.json()["detail"]


def test_bad_edits_are_refused_by_name(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    dev = device_id(env, "192.168.10.105")
    cases = [({"type": "toaster"}, "unknown type"), ({"purdue_level": 9}, "purdue_level"),
             ({"serial": "x"}, "not editable: serial"), ({"importance": "urgent"}, "importance"),
             ({"authorized": "yes"}, "authorized"), ({"tags": "a,b"}, "tags")]
    for body, words in cases:
        r = c.patch(f"/api/v1/devices/{dev}", headers=h(env, "security_admin"), json=body)
        assert r.status_code == 400 and words in r.json()["detail"], (body, r.text)


def test_merge_moves_addresses_and_references(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    keep, gone = device_id(env, "192.168.10.22"), device_id(env, "192.168.10.131")
    with sessions(env["engine"])() as s:
        gone_addrs = set(s.scalars(select(Address.id).where(Address.device_id == gone)))
        before = {k: s.get(Device, k).packets_sent for k in (keep, gone)}
    r = c.post("/api/v1/devices/merge", headers=h(env, "security_admin"), json={"ids": [keep, gone]})
    assert r.status_code == 200, r.text
    assert r.json()["merged"] == [gone]
    with sessions(env["engine"])() as s:
        assert s.get(Device, gone) is None
        assert gone_addrs <= set(s.scalars(select(Address.id).where(Address.device_id == keep)))
        assert s.get(Device, keep).packets_sent == before[keep] + before[gone]
        assert not s.scalar(select(Connection.id).where(Connection.client_device_id == gone))
    assert c.get(f"/api/v1/devices/{gone}", headers=h(env, "security_reader")).status_code == 404
    detail = c.get(f"/api/v1/devices/{keep}", headers=h(env, "security_reader")).json()
    assert "192.168.10.131" in detail["ips"]
    entry = c.get("/api/v1/audit?action=device.merge", headers=h(env, "owner")).json()["entries"][0]
    assert entry["target_id"] == str(keep) and entry["details"]["merged"] == [gone]
    # one device or more than ten: refused
    assert c.post("/api/v1/devices/merge", headers=h(env, "security_admin"),
                  json={"ids": [keep]}).status_code == 422
    assert c.post("/api/v1/devices/merge", headers=h(env, "security_admin"),
                  json={"ids": list(range(1, 12))}).status_code == 422


def test_merge_carries_events(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    keep, gone = device_id(env, "192.168.10.120"), device_id(env, "127.0.0.1")
    with sessions(env["engine"])() as s:
        moved = set(s.scalars(select(Event.id).where(Event.src_device_id == gone)))
    assert moved, "the Modbus capture has register writes from this device"
    assert c.post("/api/v1/devices/merge", headers=h(env, "security_admin"),
                  json={"ids": [gone, keep], "survivor": keep}).status_code == 200
    with sessions(env["engine"])() as s:
        assert moved <= set(s.scalars(select(Event.id).where(Event.src_device_id == keep)))


def test_delete_needs_a_reason_and_is_audited(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    dev = device_id(env, "3.15.227.20")
    assert c.delete(f"/api/v1/devices/{dev}", headers=h(env, "security_admin")).status_code == 422
    r = c.delete(f"/api/v1/devices/{dev}", params={"reason": "decommissioned"},
                 headers=h(env, "security_admin"))
    assert r.status_code == 200
    assert c.get(f"/api/v1/devices/{dev}", headers=h(env, "security_reader")).status_code == 404
    entry = c.get("/api/v1/audit?action=device.delete", headers=h(env, "owner")).json()["entries"][0]
    assert entry["details"]["reason"] == "decommissioned"
    assert entry["details"]["device"]["ip"] == "3.15.227.20"
    assert c.delete(f"/api/v1/devices/{dev}", params={"reason": "again"},
                    headers=h(env, "security_admin")).status_code == 404


def test_alert_status_change(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    alerts = c.get("/api/v1/alerts?status=open", headers=h(env, "security_reader")).json()["alerts"]
    ids = env["alerts"]  # the analysis may raise alerts of its own; these two the test added
    assert set(ids) <= {a["id"] for a in alerts}
    assert c.post("/api/v1/alerts/status", headers=h(env, "security_reader"),
                  json={"ids": ids, "status": "closed"}).status_code == 403
    r = c.post("/api/v1/alerts/status", headers=h(env, "security_analyst"),
               json={"ids": ids, "status": "closed"})
    assert r.status_code == 200 and sorted(r.json()["changed"]) == sorted(ids)
    got = c.get(f"/api/v1/alerts/{ids[0]}", headers=h(env, "security_reader")).json()
    assert got["status"] == "closed" and got["closed_reason"] == "manual" and got["closed_at"]
    still_open = c.get("/api/v1/alerts?status=open", headers=h(env, "security_reader")).json()["alerts"]
    assert not set(ids) & {a["id"] for a in still_open}
    entries = c.get("/api/v1/audit?action=alert.status", headers=h(env, "owner")).json()["entries"]
    assert {e["target_id"] for e in entries} == {str(i) for i in ids}
    assert c.post("/api/v1/alerts/status", headers=h(env, "security_analyst"),
                  json={"ids": [999999], "status": "active"}).status_code == 404


# -- hostile requests ------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("get", "/api/v1/devices/abc", {}, 422),
    ("get", "/api/v1/devices/99999999", {}, 404),
    ("get", "/api/v1/devices/-1", {}, 404),
    ("get", "/api/v1/devices?page_size=100000", {}, 422),
    ("get", "/api/v1/devices?page=0", {}, 422),
    ("get", "/api/v1/devices?sort=id;drop table devices", {}, 400),
    ("get", "/api/v1/devices?order=sideways", {}, 400),
    ("get", "/api/v1/devices?authorized=maybe", {}, 400),
    ("get", "/api/v1/devices?seen_after=yesterday", {}, 400),
    ("get", "/api/v1/devices?class=SCADA", {}, 400),
    ("get", "/api/v1/alerts?severity=critical", {}, 400),
    ("patch", "/api/v1/devices/1",
     {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
    ("patch", "/api/v1/devices/1", {"json": ["a", "list"]}, 422),
    ("post", "/api/v1/devices/merge", {"json": {"ids": "1,2"}}, 422),
    ("post", "/api/v1/devices/merge", {"content": b"x" * (3 * 1024 * 1024)}, 413),
])
def test_hostile_requests_get_clear_4xx(env, method, path, kwargs,  # type: ignore[no-untyped-def]
                                        status) -> None:
    headers = {**h(env, "owner"), **kwargs.pop("headers", {})}
    r = getattr(env["client"], method)(path, headers=headers, **kwargs) if method != "get" else \
        env["client"].get(path, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_sql_looking_search_is_just_text(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    total = c.get("/api/v1/devices", headers=h(env, "owner")).json()["total"]
    for q in ("' OR 1=1 --", "%", "_", "\\"):
        r = c.get("/api/v1/devices", params={"q": q}, headers=h(env, "owner"))
        assert r.status_code == 200 and r.json()["total"] == 0, q
    assert c.get("/api/v1/devices", headers=h(env, "owner")).json()["total"] == total


# -- sessions, CSRF, users ---------------------------------------------------------------------


def test_cookie_session_needs_csrf_for_changes(env) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(env["client"].app)
    form = c.get("/login")
    token = form.cookies.get(auth.LOGIN_CSRF_COOKIE)
    assert c.post("/login", data={"username": "owner", "password": "correct horse battery",
                                  "csrf_token": "forged"}, follow_redirects=False).status_code == 403
    r = c.post("/login", data={"username": "owner", "password": "correct horse battery",
                               "csrf_token": token, "next": "/devices"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/devices"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert c.get("/api/v1/me").json()["role"] == "owner"
    dev = device_id(env, "172.17.0.2")
    assert c.patch(f"/api/v1/devices/{dev}", json={"location": "Cab 1"}).status_code == 403
    with sessions(env["engine"])() as s:
        from tapwatch.store.console_models import LoginSession
        csrf = s.scalars(select(LoginSession.csrf).order_by(LoginSession.id.desc())).first()
    r = c.patch(f"/api/v1/devices/{dev}", json={"location": "Cab 1"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["device"]["location"] == "Cab 1"
    bad = TestClient(env["client"].app).post("/login", data={
        "username": "owner", "password": "wrong password!", "csrf_token": "t"},
        cookies={auth.LOGIN_CSRF_COOKIE: "t"}, follow_redirects=False)
    assert bad.status_code == 303 and "error=1" in bad.headers["location"]
    assert "set-cookie" not in bad.headers or auth.SESSION_COOKIE not in bad.headers["set-cookie"]


def test_login_redirect_stays_on_site(env) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(env["client"].app)
    token = c.get("/login").cookies.get(auth.LOGIN_CSRF_COOKIE)
    r = c.post("/login", data={"username": "owner", "password": "correct horse battery",
                               "csrf_token": token, "next": "//evil.example/x"}, follow_redirects=False)
    assert r.headers["location"] == "/"


def test_users_and_tokens_api(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    r = c.post("/api/v1/users", headers=h(env, "owner"),
               json={"username": "sensor-north", "password": "long enough pw", "role": "security_analyst"})
    assert r.status_code == 201
    uid = r.json()["id"]
    assert c.post("/api/v1/users", headers=h(env, "owner"),
                  json={"username": "x", "password": "long enough pw",
                        "role": "global_admin"}).status_code == 403
    tok = c.post(f"/api/v1/users/{uid}/tokens", headers=h(env, "owner"),
                 json={"name": "north"}).json()["token"]
    me = c.get("/api/v1/me", headers={"Authorization": f"Bearer {tok}"}).json()
    assert me["username"] == "sensor-north"
    with sessions(env["engine"])() as s:
        from tapwatch.store.console_models import ApiToken
        stored = s.scalars(select(ApiToken.token_hash)).all()
    assert tok not in stored and auth.digest(tok) in stored
    tid = c.get(f"/api/v1/users/{uid}/tokens", headers=h(env, "owner")).json()["tokens"][0]["id"]
    assert c.delete(f"/api/v1/tokens/{tid}", headers=h(env, "owner")).status_code == 200
    assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    r = c.patch(f"/api/v1/users/{uid}", headers=h(env, "owner"), json={"role": "owner"})
    assert r.json()["role"] == "owner"


def test_openapi_document_lists_the_api(env) -> None:  # type: ignore[no-untyped-def]
    doc = env["client"].get("/api/v1/openapi.json").json()
    for path in ("/api/v1/devices", "/api/v1/devices/{device_id}", "/api/v1/devices/merge",
                 "/api/v1/devices/export.csv", "/api/v1/connections", "/api/v1/events", "/api/v1/alerts",
                 "/api/v1/audit"):
        assert path in doc["paths"], path
    assert not any(p.startswith("/devices") for p in doc["paths"])  # pages stay out of it


# -- CLI, retention, support bundle ---------------------------------------------------------------


def test_users_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = str(tmp_path / "u.db")
    run = CliRunner().invoke
    r = run(main, ["users", "add", "alice", "--db", db, "--role", "security_analyst"])
    assert r.exit_code == 0 and "password: " in r.output
    password = r.output.split("password: ")[1].strip()
    r = run(main, ["users", "set-role", "alice", "security_admin", "--db", db])
    assert r.exit_code == 0
    listed = json.loads(run(main, ["users", "list", "--db", db, "--format", "json"]).output)
    assert [(u["username"], u["role"]) for u in listed] == [("alice", "security_admin")]
    token = run(main, ["users", "token", "alice", "--db", db, "--name", "script"]).output.strip()
    engine = open_engine(db)
    client = TestClient(create_app(engine))
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["role"] == "security_admin"
    with sessions(engine)() as s:
        from tapwatch.store.console_models import User
        assert auth.verify_password(s.scalar(select(User.password_hash)), password)
    assert run(main, ["users", "set-role", "bob", "owner", "--db", db]).exit_code == 2
    engine.dispose()


def test_retention_purges_old_devices_and_closed_alerts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "r.db"
    analyze(db, CAPTURES / CAPS[0], CAPTURES / CAPS[1], CAPTURES / CAPS[2])
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        newest = max(s.scalars(select(Device.last_seen)))
        old = [d.id for d in s.scalars(select(Device)) if d.last_seen < newest - timedelta(days=90)]
        young = [d.id for d in s.scalars(select(Device)) if d.last_seen >= newest - timedelta(days=90)]
        closed = add_alert(s, key="c", status="closed", closed_at=datetime(2025, 1, 1))
        recent_closed = add_alert(s, key="d", status="closed", closed_at=datetime(2025, 6, 1))
        still_open = add_alert(s, key="e")
        ids = closed.id, recent_closed.id, still_open.id
        alerts_before = set(s.scalars(select(Alert.id)))  # the analysis may have raised some too
    assert old and young
    clock.set_clock(lambda: datetime(2025, 7, 1, tzinfo=UTC))
    try:
        r = CliRunner().invoke(main, ["retention", "run", "--db", str(db)])
    finally:
        clock.set_clock(None)
    assert r.exit_code == 0, r.output
    assert f"purged {len(old)} devices" in r.output and "1 closed alerts" in r.output
    with sessions(engine)() as s:
        assert sorted(s.scalars(select(Device.id))) == sorted(young)
        assert set(s.scalars(select(Alert.id))) == alerts_before - {ids[0]}
        assert not s.scalar(select(Address.id).where(Address.device_id.in_(old)))
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge")).one()
        assert entry.actor == "cli" and entry.details["devices"] == len(old)
    engine.dispose()


def test_retention_setting_via_api(env) -> None:  # type: ignore[no-untyped-def]
    c = env["client"]
    assert c.put("/api/v1/settings/retention_days", headers=h(env, "security_admin"),
                 json={"value": 30}).status_code == 403
    assert c.put("/api/v1/settings/retention_days", headers=h(env, "owner"),
                 json={"value": -5}).status_code == 422
    assert c.put("/api/v1/settings/nope", headers=h(env, "owner"), json={"value": 5}).status_code == 404
    r = c.put("/api/v1/settings/retention_days", headers=h(env, "owner"), json={"value": 0})
    assert r.status_code == 200 and r.json()["retention_days"] == 0
    assert c.post("/api/v1/retention/run", headers=h(env, "owner")).json()["devices"] == 0


def test_support_bundle(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "console.log"
    log.write_text("2025 INFO GET /api/v1/me Authorization tw_abcdefghSECRETSECRET\n")
    out = tmp_path / "bundle.zip"
    r = CliRunner().invoke(main, ["support", "bundle", "--db", str(env["db"]), "-o", str(out),
                                  "--log-file", str(log)])
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert {"versions.json", "settings.json", "database.json", "logs/console.log"} <= names
        stats = json.loads(z.read("database.json"))
        assert stats["tables"]["devices"] > 0 and stats["tables"]["console_users"] >= 4
        heads = ScriptDirectory.from_config(alembic_config(str(env["engine"].url))).get_heads()
        assert sorted(json.loads(z.read("versions.json"))["schema_heads"]) == sorted(heads)
        assert "SECRET" not in z.read("logs/console.log").decode()
        everything = b"".join(z.read(n) for n in names)
    for token in env["tokens"].values():
        assert token.encode() not in everything
