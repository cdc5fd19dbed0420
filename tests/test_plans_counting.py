"""Billable devices on the real captures' inventories, endpoint-agent lists, estimates,
subscription export/import, and the same counting on PostgreSQL.

Every expected count is derived here from the device JSON (`devices list --format json`),
independently of tapwatch.plans.counting, under the issue's rules.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from inventory_helpers import CAPTURES, analyze, devices
from tapwatch import clock, plans
from tapwatch.cli import main
from tapwatch.plans import counting, subscriptions
from tapwatch.plans import plans as rules
from tapwatch.plans.access import CLI
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.device_admin import edit_device
from tapwatch.store.models import Device

CAPS = ("iti-ics-tools__EIP-IPAddressChangeAttempt.pcap", "iti-ics-tools__Sample_File_MMS_and_GOOSE.pcap",
        "suricata-verify__smb2-ntlmssp-negotiateflags_input.pcap", "icsnpp-s7comm__s7ident.pcap",
        "iot-dataset__blink-cam-01.pcap")


def _t(iso: str) -> datetime:
    return datetime.fromisoformat(iso.removesuffix("Z"))


def _excluded_address(d: dict[str, Any]) -> bool:
    if d["mac"] and int(d["mac"][:2], 16) & 1:
        return True
    if d["ip"]:
        a = ipaddress.ip_address(d["ip"])
        return a.is_global or a.is_multicast or d["ip"] == "255.255.255.255"
    return False


def expected(devs: list[dict[str, Any]], at: datetime, managed_macs: set[str] = frozenset(),  # type: ignore[assignment]
             managed_ips: set[str] = frozenset()) -> dict[str, int]:  # type: ignore[assignment]
    """The issue's rules applied to the device JSON: unique couplings per part, chassis once."""
    units: dict[str, set[tuple[str, ...]]] = {"eiot": set(), "ot": set()}
    for d in devs:
        if d["mac"] in managed_macs or set(d["ips"]) & managed_ips or _excluded_address(d):
            continue
        part = "ot" if d["class"] == "OT" else "eiot"
        if _t(d["last_seen"]) < at - timedelta(days=60 if part == "ot" else 30):
            continue
        chassis = d["serial"] and (d["module"] or d["rack_slot"])
        units[part].add(("c", (d["vendor"] or "").lower(), d["serial"].lower()) if chassis
                        else ("a", d["mac"] or "", d["ip"] or ""))
    units["eiot"] -= units["ot"]
    return {"eiot": len(units["eiot"]), "ot": len(units["ot"])}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("plans_counting") / "t.db"
    analyze(db, *(CAPTURES / c for c in CAPS))
    return db


@pytest.fixture
def fresh(inventory, tmp_path):  # type: ignore[no-untyped-def]
    """A private copy of the analyzed inventory for tests that change it."""
    db = tmp_path / "t.db"
    engine = open_engine(str(inventory))
    with engine.connect() as c:
        c.exec_driver_sql(f"VACUUM INTO '{db}'")
    engine.dispose()
    return db


def _count(db: Path, at: datetime, subscription_id: int | None = None) -> counting.Count:
    engine = open_engine(str(db))
    try:
        with sessions(engine)() as s:
            return counting.billable(s, subscription_id, at)
    finally:
        engine.dispose()


def test_billable_count_follows_the_rules_on_real_captures(inventory) -> None:  # type: ignore[no-untyped-def]
    devs = devices(inventory)
    # at several moments: a day after each capture's newest traffic, and 45 days after it
    stamps = sorted({_t(d["last_seen"]) for d in devs})
    moments = sorted({t.replace(microsecond=0) + delta for t in stamps[::4] + stamps[-1:]
                      for delta in (timedelta(days=1), timedelta(days=45))})
    saw_window_split = saw_public = False
    for at in moments:
        want = expected(devs, at)
        got = _count(inventory, at)
        assert (got.eiot, got.ot) == (want["eiot"], want["ot"]), at
        saw_public |= got.excluded["public"] > 0
        # 30 days for Enterprise IoT, 60 for OT: 45 days after some traffic only OT remains of it
        only_ot = expected([d for d in devs if at - timedelta(days=46) < _t(d["last_seen"]) <= at], at)
        saw_window_split |= only_ot["ot"] > 0 and only_ot["eiot"] == 0
    assert saw_public and saw_window_split


def _managed(devs: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """Every other device that counts at `at`: what an EDR would list."""
    counted = [d for d in devs if d["mac"] and d["ip"] and not _excluded_address(d)
               and _t(d["last_seen"]) >= at - timedelta(days=30 if d["class"] != "OT" else 60)]
    return counted[::2]


def test_endpoint_lists_exclude_their_devices(fresh, tmp_path) -> None:  # type: ignore[no-untyped-def]
    devs = devices(fresh)
    site = [_t(d["last_seen"]) for d in devs if d["ip"] and d["ip"].startswith("192.168.10.")]
    at = max(site) + timedelta(days=2)
    clock.set_clock(lambda: at.replace(tzinfo=UTC))
    try:
        managed = _managed(devs, at)
        assert len(managed) >= 3
        before = _count(fresh, at)
        assert (before.eiot, before.ot) == tuple(expected(devs, at).values())
        # a CSV as an EDR console exports it, with a bad MAC, a row without agent id, an unknown host
        path = tmp_path / "edr.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Hostname", "Local IP", "MAC Address", "Agent ID"])
            for n, d in enumerate(managed[:-1]):
                w.writerow([f"host{n}", d["ip"] or "", d["mac"].upper().replace(":", "-"), f"aid-{n}"])
            w.writerow(["broken", "10.0.0.1", "zz:zz:zz:zz:zz:zz", "aid-x"])  # line len(managed)+1
            w.writerow(["noagent", "10.0.0.2", "02:00:00:00:00:02", ""])
            w.writerow(["elsewhere", "10.9.9.9", "02:00:00:00:00:09", "aid-y"])
        runner = CliRunner()
        out = runner.invoke(main, ["endpoints", "import", str(path), "--db", str(fresh)])
        assert out.exit_code == 0, out.output
        assert f"{path}:{len(managed) + 1}: malformed MAC address" in out.output
        assert f"{path}:{len(managed) + 2}: no agent id" in out.output
        macs = {d["mac"] for d in managed[:-1]}
        got = _count(fresh, at)
        assert (got.eiot, got.ot) == tuple(expected(devs, at, macs).values())
        assert got.excluded["endpoint_agent"] == sum(1 for d in devs if d["mac"] in macs)
        flagged = {d["mac"] for d in devices(fresh) if d["endpoint_agent"]}
        assert flagged == macs
        # JSON (wrapped, as EDR APIs answer) adds the last one, matched by IP alone
        last = managed[-1]
        assert last["ip"]
        doc = {"meta": {"total": 2}, "resources": [
            {"device_name": "last", "local_ip": last["ip"], "aid": "aid-last"},
            {"device_name": "bad", "local_ip": "300.1.1.1", "aid": "aid-bad"}]}
        jpath = tmp_path / "edr.json"
        jtext = json.dumps(doc, indent=2)
        jpath.write_text(jtext)
        bad_line = jtext.count("\n", 0, jtext[:jtext.index('"bad"')].rfind("{")) + 1
        out = runner.invoke(main, ["endpoints", "import", str(jpath), "--db", str(fresh)])
        assert out.exit_code == 0, out.output
        assert f"{jpath}:{bad_line}: malformed IP address" in out.output  # where the bad record starts
        got = _count(fresh, at)
        assert (got.eiot, got.ot) == tuple(expected(devs, at, macs, {last["ip"]}).values())
        # --replace makes the file the whole list: the CSV's hosts are no longer managed
        flagged_before = {d["id"] for d in devices(fresh) if d["endpoint_agent"]}
        out = runner.invoke(main, ["endpoints", "import", str(jpath), "--replace", "--db", str(fresh)])
        flagged_after = {d["id"] for d in devices(fresh) if d["endpoint_agent"]}
        assert flagged_after == {d["id"] for d in devs if last["ip"] in d["ips"]}
        cleared = len(flagged_before - flagged_after)
        assert cleared >= len(macs) - 1
        assert out.exit_code == 0 and f"{cleared} cleared" in out.output, out.output
        got = _count(fresh, at)
        assert (got.eiot, got.ot) == tuple(expected(devs, at, set(), {last["ip"]}).values())
    finally:
        clock.set_clock(None)


def test_a_chassis_with_backplane_modules_counts_once(fresh) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(str(fresh))
    maker = sessions(engine)
    with maker.begin() as s:
        plc = s.scalar(select(Device).where(Device.serial.is_not(None), Device.rack_slot.is_not(None)))
        assert plc is not None
        at = plc.last_seen + timedelta(days=1)
        before = counting.billable(s, None, at)
        # a second interface of the same chassis (another module in the rack) …
        twin = Device(**{c.key: getattr(plc, c.key) for c in Device.__table__.columns if c.key != "id"})
        twin.key_mac = twin.mac = "00:1b:1b:aa:bb:01"
        twin.key_ip = twin.ip = "10.77.0.2"
        twin.rack_slot = "0/3"
        # … and an unrelated controller
        other = Device(**{c.key: getattr(plc, c.key) for c in Device.__table__.columns if c.key != "id"})
        other.key_mac = other.mac = "00:1b:1b:aa:bb:02"
        other.key_ip = other.ip = "10.77.0.3"
        other.serial = "S C-OTHER"
        s.add_all([twin, other])
        s.flush()
        after = counting.billable(s, None, at)
        assert after.ot == before.ot + 1 and after.eiot == before.eiot
        assert after.excluded["same_unit"] == before.excluded["same_unit"] + 1
    engine.dispose()


def test_estimate_combines_inventory_cmdb_and_meraki(fresh, tmp_path) -> None:  # type: ignore[no-untyped-def]
    devs = devices(fresh)
    at = max(_t(d["last_seen"]) for d in devs) + timedelta(days=1)
    clock.set_clock(lambda: at.replace(tzinfo=UTC))
    try:
        inv = expected(devs, at)
        known = next(d for d in devs if d["mac"] and not _excluded_address(d)
                     and _t(d["last_seen"]) >= at - timedelta(days=30))
        cmdb = tmp_path / "cmdb.csv"
        cmdb.write_text("Name;MAC Address;IP Address;Device Type\n"
                        f"known;{known['mac']};{known['ip'] or ''};Workstation\n"
                        "line-3-plc;00:80:f4:00:00:01;10.50.0.10;PLC\n"
                        "hr-laptop;00:80:f4:00:00:02;10.50.1.20;Laptop\n"
                        "web;00:80:f4:00:00:03;8.8.8.8;Server\n"
                        "garbage;not-a-mac;10.50.1.99;Server\n")
        meraki = tmp_path / "meraki.csv"
        meraki.write_text('"Description","MAC address","IPv4 address","Manufacturer"\n'
                          '"camera","00:80:f4:00:00:04","10.60.0.4","Axis"\n'
                          '"dup","00:80:F4:00:00:02","10.50.1.20","Dell"\n')
        out = CliRunner().invoke(main, ["plans", "estimate", "--cmdb", str(cmdb), "--meraki", str(meraki),
                                        "--db", str(fresh), "--format", "json"])
        assert out.exit_code == 0, out.output
        data = json.loads(out.stdout[out.stdout.index("{"):])
        assert data["inventory"] == inv
        assert data["added_from_sources"] == {"cmdb:cmdb.csv": {"eiot": 1, "ot": 1},
                                              "meraki:meraki.csv": {"eiot": 1, "ot": 0}}
        assert data["excluded"]["source_public"] == 1
        assert data["already_in_inventory"] == {"cmdb:cmdb.csv": 1, "meraki:meraki.csv": 1}
        total = inv["eiot"] + inv["ot"] + 3
        assert data["total"] == total
        assert data["suggested_committed_devices"] == max(100, math.ceil(total / 100) * 100)
        assert data["suggested_committed_devices"] % 100 == 0
        assert any(e.startswith(f"{cmdb}:6: malformed MAC") for e in data["errors"])
        ot_only = CliRunner().invoke(main, ["plans", "estimate", "--cmdb", str(cmdb), "--coverage", "ot",
                                            "--db", str(fresh), "--format", "json"])
        assert json.loads(ot_only.stdout[ot_only.stdout.index("{"):])["total"] == inv["ot"] + 1
    finally:
        clock.set_clock(None)


def test_moving_a_subscription_carries_manual_edits(fresh, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    db, target = str(fresh), str(tmp_path / "target.db")
    for args in (["subscriptions", "create", "old", "--db", db],
                 ["subscriptions", "create", "new", "--db", target]):
        assert runner.invoke(main, args).exit_code == 0
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        plc = s.scalar(select(Device).where(Device.device_class == "OT").order_by(Device.id))
        assert plc is not None
        edit_device(s, plc.id, {"name": "Line 3 PLC", "purdue_level": 1, "tags": ["line3"],
                                "authorized": False, "location": "hall B"}, "test")
        key = (plc.key_mac, plc.key_ip)
    engine.dispose()
    export = tmp_path / "old.json"
    out = runner.invoke(main, ["subscriptions", "export", "old", "-o", str(export), "--db", db])
    assert out.exit_code == 0, out.output
    n = len(devices(fresh))
    assert f"exported {n} devices" in out.output
    out = runner.invoke(main, ["subscriptions", "import", "new", str(export), "--db", target,
                               "--sensor", "north"])
    assert out.exit_code == 0 and f"{n} devices created" in out.output, out.output
    moved = {(d["mac"], d["ip"]): d for d in devices(target)}
    assert len(moved) == n and {d["sensor"] for d in moved.values()} == {"north"}
    carried = next(d for d in moved.values() if (d["mac"], d["ip"] or "") == (key[0], key[1]))
    assert (carried["name"], carried["purdue_level"], carried["tags"], carried["authorized"],
            carried["location"]) == ("Line 3 PLC", 1, ["line3"], False, "hall B")
    original = {(d["mac"], d["ip"]): d["ips"] for d in devices(fresh)}
    assert {k: d["ips"] for k, d in moved.items()} == original  # addresses travel with their devices
    # importing into an inventory that already has the devices applies the edits only
    second = tmp_path / "second.db"
    analyze(second, *(CAPTURES / c for c in CAPS))
    runner.invoke(main, ["subscriptions", "create", "again", "--db", str(second)])
    out = runner.invoke(main, ["subscriptions", "import", "again", str(export), "--db", str(second)])
    assert out.exit_code == 0 and f"0 devices created, {n} updated" in out.output, out.output
    again = next(d for d in devices(second) if (d["mac"], d["ip"] or "") == key)
    assert (again["name"], again["tags"]) == ("Line 3 PLC", ["line3"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "tapwatch-subscription-inventory", "version": 1,
                               "devices": [{"key_mac": "x", "key_ip": "", "last_seen": "yesterday"}]}))
    out = runner.invoke(main, ["subscriptions", "import", "new", str(bad), "--db", target])
    assert out.exit_code == 2 and "$.devices[0].last_seen" in out.output


def test_counting_and_trial_expiry_on_postgresql(pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    analyze(pg_url, CAPTURES / "iti-ics-tools__EIP-IPAddressChangeAttempt.pcap")
    devs = devices(pg_url)
    at = max(_t(d["last_seen"]) for d in devs) + timedelta(days=1)
    managed = _managed(devs, at)
    edr = tmp_path / "edr.jsonl"
    edr.write_text("".join(json.dumps({"mac": d["mac"], "ip": d["ip"], "agentId": f"a{n}"}) + "\n"
                           for n, d in enumerate(managed)))
    clock.set_clock(lambda: at.replace(tzinfo=UTC))
    engine = open_engine(pg_url)
    try:
        maker = sessions(engine)
        with maker.begin() as s:
            sub = subscriptions.create(s, CLI, "pg")
            subscriptions.add_sensor(s, CLI, sub, "test")
            rules.add(s, CLI, sub, "trial")
            sub_id = sub.id
        out = CliRunner().invoke(main, ["endpoints", "import", str(edr), "--db", pg_url])
        assert out.exit_code == 0, out.output
        with maker() as s:
            got = counting.billable(s, sub_id)
            want = expected(devs, at, {d["mac"] for d in managed})
            assert (got.eiot, got.ot) == (want["eiot"], want["ot"])
            assert plans.entitlements(s, sub_id).active
        clock.set_clock(lambda: (at + timedelta(days=30)).replace(tzinfo=UTC))
        out = CliRunner().invoke(main, ["plans", "show", "pg", "--db", pg_url, "--format", "json"])
        assert out.exit_code == 0, out.output
        shown = json.loads(out.output)
        assert shown["entitlements"]["active"] is False and shown["plans"][0]["state"] == "trial_expired"
        assert shown["plans"][0]["end_reason"] == "trial_expired"
    finally:
        clock.set_clock(None)
        engine.dispose()
