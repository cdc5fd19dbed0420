"""`tapwatch analyze --zeek-logs DIR`: Zeek TSV and JSON logs into the same inventory."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from inventory_helpers import CAPTURES, analyze, connections, devices
from tapwatch.cli import main
from tapwatch.integrations import zeek

DATA = Path(__file__).parent / "data" / "zeek"


def _run(db: Path, directory: Path) -> str:
    r = CliRunner().invoke(main, ["analyze", "--zeek-logs", str(directory), "--db", str(db), "--sensor", "z"])
    assert r.exit_code == 0, r.output
    return r.output


def _by_ip(rows: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["ip"]: r for r in rows}


def test_tsv_logs_make_devices_connections_and_facts(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    out = _run(db, DATA / "tsv")
    # the two damaged conn.log lines are named with file and line, the rest is read
    assert "conn.log:15: 5 fields where #fields names 23" in out
    assert "conn.log:16: '10.10.1.999' does not appear to be an IPv4 or IPv6 address" in out
    rows = _by_ip(devices(db, with_facts=True))
    plc = rows["10.10.1.60"]
    assert plc["mac"] == "00:1d:9c:ab:60:60"  # from conn.log's l2 addresses
    facts = {(f["attribute"], f["value"], f["source"]) for f in plc["facts"]}
    assert ("vendor", "Rockwell Automation/Allen-Bradley", "zeek:cip_identity") in facts
    assert ("cip_product_name", "1756-L73/B LOGIX5573", "zeek:cip_identity") in facts
    assert ("firmware", "20.11", "zeek:cip_identity") in facts
    assert plc["type"] == "plc" and plc["firmware"] == "20.11"
    printer = rows["10.10.1.77"]
    assert printer["mac"] == "3c:52:82:77:77:77" and printer["name"] == "hp-printer-2f"
    assert ("dhcp_vendor_class", "Hewlett-Packard JetDirect", "zeek:dhcp") in {
        (f["attribute"], f["value"], f["source"]) for f in printer["facts"]}
    named = rows["10.10.1.50"]
    assert ("dns_name", "plc-line1.plant.example", "zeek:dns") in {
        (f["attribute"], f["value"], f["source"]) for f in named["facts"]}
    assert "modbus" in named["protocols"]
    hmi = rows["10.10.1.20"]
    hmi_facts = {(f["attribute"], f["source"]) for f in hmi["facts"]}
    assert ("http_user_agent", "zeek:http") in hmi_facts and ("os", "zeek:software") in hmi_facts
    assert "255.255.255.255" not in rows  # broadcast is never a device
    # a public address in a DNS answer is not named after the query (only local ones are)
    assert not [f for f in rows["93.184.216.34"]["facts"] if f["attribute"] == "dns_name"]
    conns = {(c["client_ip"], c["server_ip"], c["server_port"]): c for c in connections(db)}
    modbus = conns[("10.10.1.20", "10.10.1.50", 502)]
    assert modbus["protocol"] == "modbus" and modbus["transport"] == "tcp"
    assert modbus["packets_client_to_server"] == 200 and modbus["packets_server_to_client"] == 184
    assert conns[("10.10.1.31", "10.10.1.60", 44818)]["protocol"] == "enip"
    # the same logs again add nothing
    again = _run(db, DATA / "tsv")
    assert "imported before" in again
    again_conns = {(c["client_ip"], c["server_ip"], c["server_port"]): c for c in connections(db)}
    assert again_conns.keys() == conns.keys()
    assert again_conns[("10.10.1.20", "10.10.1.50", 502)]["packets"] == modbus["packets"]
    assert _by_ip(devices(db))["10.10.1.20"]["packets_sent"] == hmi["packets_sent"]


def test_json_logs_and_icsnpp_bacnet(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    out = _run(db, DATA / "json")
    assert "conn.log:2: not JSON" in out
    rows = _by_ip(devices(db, with_facts=True))
    bacnet = rows["192.168.5.40"]
    assert bacnet["mac"] == "00:01:f0:05:00:40"
    facts = {(f["attribute"], f["value"]) for f in bacnet["facts"]}
    assert ("bacnet_device_instance", "405040") in facts
    assert ("bacnet_object_name", "AHU-3 controller") in facts
    broker = rows["192.168.5.41"]
    assert broker["mac"] == "b8:27:eb:05:00:41" and broker["name"] == "mqtt-broker"  # MAC from dhcp.log
    assert "mqtt" in broker["protocols"]
    # the nested-"id" JSON record with an ISO time made the MQTT connection
    (mqtt,) = [c for c in connections(db) if c["server_port"] == 1883]
    assert mqtt["first_seen"] == "2024-03-12T08:00:10Z" and mqtt["client_ip"] == "192.168.5.10"


def test_zeek_joins_devices_a_capture_found(tmp_path: Path) -> None:
    """An IP the capture coupled with a MAC gets that MAC, so it stays one device."""
    db = tmp_path / "t.db"
    analyze(db, CAPTURES / "icsnpp-s7comm__s7ident.pcap")
    before = devices(db)
    target = next(d for d in before if d["ip"] and d["mac"] and not d["is_gateway"])
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dns.log").write_text(json.dumps({
        "ts": 1710144030.25, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 5353,
        "id.resp_h": "10.0.0.2", "id.resp_p": 53, "proto": "udp", "query": "s7-plc.site.example",
        "qtype_name": "A", "answers": [target["ip"]]}) + "\n")
    _run(db, logs)
    after = _by_ip(devices(db, with_facts=True))
    assert len([d for d in after.values() if d["ip"] == target["ip"]]) == 1
    joined = after[target["ip"]]
    assert joined["id"] == target["id"] and joined["mac"] == target["mac"]
    assert ("dns_name", "s7-plc.site.example") in {(f["attribute"], f["value"]) for f in joined["facts"]}


def test_not_a_zeek_log_and_missing_inputs(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "conn.log").write_text("hello\nworld\n")
    kind_problem = None
    try:
        zeek.read_log(junk / "conn.log")
    except zeek.ZeekError as e:
        kind_problem = str(e)
    assert kind_problem and "not a Zeek log" in kind_problem
    r = CliRunner().invoke(main, ["analyze", "--zeek-logs", str(junk), "--db", str(tmp_path / "t.db")])
    assert r.exit_code == 2 and "no Zeek logs tapwatch reads" in r.output
    r = CliRunner().invoke(main, ["analyze", "--db", str(tmp_path / "t.db")])
    assert r.exit_code == 2 and "nothing to analyze" in r.output
