"""Exports (inventory for EDR/CMDB, NetBox, STIX 2.1; alerts, recommendations, vulnerabilities)
and the CMDB / Meraki import that enriches them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import stix2
from click.testing import CliRunner
from sqlalchemy import select

from tapwatch.cli import main
from tapwatch.integrations import cmdb, exports, netbox, stix
from tapwatch.store.alert_models import Alert
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Device

DATA = Path(__file__).parent / "data" / "zeek"
STIX_ID = re.compile(r"^[a-z0-9-]+--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STIX_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An inventory built from the hand-made Zeek logs (seven devices with MACs and IPs)."""
    db = tmp_path / "t.db"
    r = CliRunner().invoke(main, ["analyze", "--zeek-logs", str(DATA / "tsv"), "--db", str(db),
                                  "--sensor", "n"])
    assert r.exit_code == 0, r.output
    return db


def _cli(*args: str) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def _device_id(db: Path, ip: str) -> int:
    engine = open_engine(str(db))
    with sessions(engine)() as s:
        found = s.scalar(select(Device.id).where(Device.ip == ip))
    engine.dispose()
    assert found is not None
    return found


def test_cmdb_import_enriches_and_reports_malformed_rows(site: Path, tmp_path: Path) -> None:
    src = tmp_path / "cmdb.csv"
    src.write_text(
        "Hostname,MAC Address,IP Address,Owner,Location,Business Function,Asset Tag\n"
        "PLC-LINE1,00-0E-8C-01-02-50,10.10.1.50,OT team,Hall 2 / cabinet 4,Packaging line,A-1001\n"
        "printer,3C52.8277.7777,,Facilities,Office 2F,Printing,A-2001\n"
        "broken,zz:zz:zz:zz:zz:zz,10.10.1.9,x,y,z,A-3\n"
        "too,few,fields\n"
        "spare-hmi,,10.10.1.200,OT team,Store room,Spare,A-4001\n"
        ",,,nobody,nowhere,nothing,A-5\n")
    out = CliRunner().invoke(main, ["cmdb", "import", str(src), "--db", str(site)])
    assert out.exit_code == 0, out.output
    assert f"{src}:4: not a MAC address" in out.output
    assert f"{src}:5: 3 fields where the header has 7" in out.output
    assert f"{src}:7: neither a MAC nor an IP address" in out.output
    assert ("3 records imported, 2 matched to devices, 2 device locations set, 3 malformed rows skipped"
            in out.output)
    engine = open_engine(str(site))
    with sessions(engine)() as s:
        records = cmdb.records(s)
        plc = s.scalar(select(Device).where(Device.ip == "10.10.1.50"))
        assert plc is not None and plc.location == "Hall 2 / cabinet 4"
    engine.dispose()
    by_ip = {r["ip"] or r["mac"]: r for r in records}
    assert by_ip["10.10.1.50"]["owner"] == "OT team" and by_ip["10.10.1.50"]["device_id"] == plc.id
    assert by_ip["3c:52:82:77:77:77"]["business_function"] == "Printing"
    assert by_ip["10.10.1.200"]["device_id"] is None  # known to the CMDB, not (yet) on the wire
    assert by_ip["10.10.1.50"]["extra"] == {"Asset Tag": "A-1001"}
    # a location someone set is never overwritten; re-import updates the record, not a copy
    src.write_text("mac,ip,owner,location\n00:0e:8c:01:02:50,10.10.1.50,Plant IT,Elsewhere\n")
    _cli("cmdb", "import", str(src), "--db", str(site))
    engine = open_engine(str(site))
    with sessions(engine)() as s:
        again = [r for r in cmdb.records(s) if r["ip"] == "10.10.1.50"]
        plc = s.scalar(select(Device).where(Device.ip == "10.10.1.50"))
        assert plc is not None and plc.location == "Hall 2 / cabinet 4"
    engine.dispose()
    assert len(again) == 1 and again[0]["owner"] == "Plant IT"
    # the inventory export carries the enrichment
    rows = {r["ip"]: r for r in csv.DictReader(io.StringIO(_cli("export", "inventory", "--db", str(site))))}
    assert rows["10.10.1.50"]["owner"] == "Plant IT"
    assert rows["10.10.1.50"]["location"] == "Hall 2 / cabinet 4"


def test_meraki_client_list(site: Path, tmp_path: Path) -> None:
    src = tmp_path / "meraki.csv"
    src.write_text(
        "Clients in Plant network\n"
        "Status,Description,Last seen,Usage,MAC address,IPv4 address,User,Manufacturer,OS,"
        "Recent device name,Notes\n"
        "Online,Line 1 HMI,2024-03-11,12 MB,00:1b:1b:aa:10:20,10.10.1.20,operator1,Siemens,Windows,"
        "MS225-Hall2,"
        "Line 1 operations\n"
        "Online,Laptop,2024-03-11,1 GB,00:11:22:33:44:55,10.10.1.300,guest,Dell,Windows,MR46-Office,\n")
    engine = open_engine(str(site))
    with sessions(engine).begin() as s:
        result = cmdb.import_file(s, src, "meraki-csv")
    engine.dispose()
    assert result.imported == 1 and result.matched == 1
    assert result.problems == [f"{src}:4: '10.10.1.300' does not appear to be an IPv4 or IPv6 address"]
    engine = open_engine(str(site))
    with sessions(engine)() as s:
        (rec,) = cmdb.records(s)
    engine.dispose()
    assert (rec["name"], rec["owner"], rec["location"], rec["business_function"]) == (
        "Line 1 HMI", "operator1", "MS225-Hall2", "Line 1 operations")
    assert rec["extra"]["Manufacturer"] == "Siemens" and rec["source_line"] == 3


def test_inventory_csv_json_marks_edr_managed(site: Path) -> None:
    engine = open_engine(str(site))
    with sessions(engine).begin() as s:
        hmi = s.scalar(select(Device).where(Device.ip == "10.10.1.20"))
        assert hmi is not None
        hmi.endpoint_agent = "crowdstrike:7f3a"
    engine.dispose()
    text = _cli("export", "inventory", "--db", str(site), "--format", "csv")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == exports.INVENTORY_COLUMNS
    rows = {r["ip"]: r for r in reader}
    assert rows["10.10.1.20"]["seen_by"] == "network+edr" and rows["10.10.1.20"]["edr_managed"] == "true"
    assert rows["10.10.1.20"]["endpoint_agent"] == "crowdstrike:7f3a"
    assert rows["10.10.1.60"]["seen_by"] == "network" and rows["10.10.1.60"]["type"] == "plc"
    assert rows["10.10.1.50"]["protocols"] == "modbus"
    js = json.loads(_cli("export", "inventory", "--db", str(site), "--format", "json"))
    assert len(js) == len(rows) == 7 and list(js[0]) == exports.INVENTORY_COLUMNS
    assert {r["ip"] for r in js if r["edr_managed"]} == {"10.10.1.20"}


def test_netbox_import_csv(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "netbox.csv"
    _cli("export", "inventory", "--db", str(site), "--format", "netbox", "-o", str(out), "--site", "plant-1")
    rows = list(csv.DictReader(out.open()))
    assert rows and set(netbox.COLUMNS) <= set(rows[0])
    for r in rows:  # what NetBox's device import requires
        assert all(r[k] for k in ("name", "device_role", "manufacturer", "device_type", "site", "status"))
        assert r["status"] in ("active", "offline", "planned", "staged", "failed", "inventory")
    names = [(r["site"], r["name"]) for r in rows]
    assert len(set(names)) == len(names)
    plc = next(r for r in rows if r["primary_ip4"] == "10.10.1.60/32")
    assert plc["device_role"] == "PLC" and plc["serial"] == "0x00c0ffee" and plc["site"] == "plant-1"
    objs = netbox.objects(rows)
    assert {"name": "PLC", "slug": "plc"} in objs["device_roles"]


def _check_stix_object(o: dict[str, Any]) -> None:
    """The spec's common required properties, checked by hand as well as by stix2."""
    assert STIX_ID.match(o["id"]) and o["id"].startswith(o["type"] + "--"), o["id"]
    assert o["spec_version"] == "2.1"
    if o["type"] in ("infrastructure", "indicator", "sighting", "relationship", "identity"):
        assert STIX_TS.match(o["created"]) and STIX_TS.match(o["modified"]) and o["modified"] >= o["created"]


def test_inventory_as_stix_infrastructure(site: Path) -> None:
    text = _cli("export", "inventory", "--db", str(site), "--format", "stix")
    doc = json.loads(text)
    assert doc["type"] == "bundle" and STIX_ID.match(doc["id"])
    for o in doc["objects"]:
        _check_stix_object(o)
    parsed = stix2.parse(text, allow_custom=False)  # the library's own validation
    infra = [o for o in parsed.objects if o.type == "infrastructure"]
    assert len(infra) == 7
    plc = next(o for o in infra if "plc" in o.get("description", ""))
    assert plc.infrastructure_types == ["control-system"]
    rels = [o for o in parsed.objects if o.type == "relationship" and o.source_ref == plc.id]
    targets = {next(x for x in parsed.objects if x.id == r.target_ref).value for r in rels}
    assert targets == {"10.10.1.60", "00:1d:9c:ab:60:60"}
    # exporting again keeps the ids, so a TIP updates instead of duplicating
    again = json.loads(_cli("export", "inventory", "--db", str(site), "--format", "stix"))
    assert {o["id"] for o in again["objects"]} == {o["id"] for o in doc["objects"]}


def test_alerts_csv_json_and_stix_sightings(site: Path, tmp_path: Path) -> None:
    engine = open_engine(str(site))
    when = dt.datetime(2024, 3, 11, 8, 0, 40)
    with sessions(engine).begin() as s:
        for i, details in enumerate([{"malicious_ip": "93.184.216.34", "feed": "abuse"},
                                     {"domain": "evil-c2.example.net"},
                                     {"register": 40001}]):
            s.add(Alert(key=f"k{i}", type="ioc_match" if i < 2 else "modbus_write", title=f"alert {i}",
                        engine="malware" if i < 2 else "policy", severity="high", category="malware",
                        status="new", protocol="http", src_ip="10.10.1.20", dst_ip="93.184.216.34",
                        sensor="n", first_detected=when, last_detected=when + dt.timedelta(minutes=i),
                        count=3, details=details, evidence=[]))
    engine.dispose()
    rows = list(csv.DictReader(io.StringIO(_cli("export", "alerts", "--db", str(site)))))
    assert [r["title"] for r in rows] == ["alert 0", "alert 1", "alert 2"]
    assert json.loads(rows[0]["details"]) == {"feed": "abuse", "malicious_ip": "93.184.216.34"}
    assert json.loads(_cli("export", "alerts", "--db", str(site), "--format", "json"))[1]["details"] == {
        "domain": "evil-c2.example.net"}
    r = CliRunner().invoke(main, ["export", "alerts", "--db", str(site), "--format", "stix", "-o",
                                  str(tmp_path / "a.json")])
    assert r.exit_code == 0 and "1 alerts name no indicator" in r.output
    text = (tmp_path / "a.json").read_text()
    for o in json.loads(text)["objects"]:
        _check_stix_object(o)
    parsed = stix2.parse(text, allow_custom=False)
    indicators = {o.pattern: o for o in parsed.objects if o.type == "indicator"}
    assert set(indicators) == {"[ipv4-addr:value = '93.184.216.34']",
                               "[domain-name:value = 'evil-c2.example.net']"}
    sightings = [o for o in parsed.objects if o.type == "sighting"]
    assert len(sightings) == 2 and all(s.count == 3 for s in sightings)
    assert {s.sighting_of_ref for s in sightings} == {i.id for i in indicators.values()}
    where = {ref for s in sightings for ref in s.where_sighted_refs}
    assert all(next(o for o in parsed.objects if o.id == w).type == "identity" for w in where)


def test_indicator_detection_from_details() -> None:
    assert stix.indicators_of({"ioc": "d41d8cd98f00b204e9800998ecf8427e"}) == [
        ("[file:hashes.'MD5' = 'd41d8cd98f00b204e9800998ecf8427e']", "d41d8cd98f00b204e9800998ecf8427e")]
    assert stix.indicators_of({"url": "http://bad.example/x'y"}) == [
        ("[url:value = 'http://bad.example/x\\'y']", "http://bad.example/x'y")]
    assert stix.indicators_of({"register": 40001, "domain": "not a domain"}) == []


def test_recommendations_and_vulnerabilities_exports(site: Path) -> None:
    recs = json.loads(_cli("export", "recommendations", "--db", str(site), "--format", "json"))
    internet = next(r for r in recs if r["id"] == "restrict-internet-connectivity-ot")
    assert internet["status"] == "unhealthy"
    rows = list(csv.DictReader(io.StringIO(_cli("export", "recommendations", "--db", str(site)))))
    assert rows and list(rows[0]) == exports.RECOMMENDATION_COLUMNS
    flagged = [r for r in rows if r["recommendation_id"] == "restrict-internet-connectivity-ot"]
    assert {r["ip"] for r in flagged} == {d["ip"] for d in internet["unhealthy"]}
    assert "93.184.216.34" in flagged[0]["reasons"]
    vulns = _cli("export", "vulnerabilities", "--db", str(site))
    assert vulns.splitlines()[0].startswith("device_id,device_ip,")
    assert json.loads(_cli("export", "vulnerabilities", "--db", str(site), "--format", "json")) == []
