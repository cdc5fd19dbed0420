"""Detection on real captures (ground truth from tshark) and on crafted traffic: each engine
fires on what it should, the learning period suppresses policy alerts, and a quiet capture
replayed after learning on itself raises nothing."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import pytest
from click.testing import CliRunner

from detect_helpers import (
    alerts,
    arp_reply,
    conversation,
    ip,
    mac,
    of_type,
    run,
    shifted,
    tcp_pkt,
    udp_pkt,
    write,
)
from inventory_helpers import CAPTURES
from tapwatch.cli import main
from tapwatch.detect.engines.anomaly import densest

MONTH = timedelta(days=30)


def tshark(path, display_filter: str, *fields: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", display_filter, "-T", "fields",
                          *(x for f in fields for x in ("-e", f))],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


# ---------------------------------------------------------------- real captures


def test_arp_scan_in_nmap_capture_counts_the_targets_tshark_sees(tmp_path) -> None:
    cap = CAPTURES / "zeek__nmap-vsn.pcap"
    run(tmp_path / "t.db", cap)
    requests = tshark(cap, "arp.opcode == 1", "eth.src", "arp.dst.proto_ipv4")
    (scan,) = of_type(tmp_path / "t.db", "arp_scan")
    assert scan["source"]["mac"] == requests[0][0]
    assert scan["count"] == len({t for _, t in requests}) == 245
    assert scan["severity"] == "medium" and scan["mitre"] == "T0846" and scan["engine"] == "anomaly"


def test_program_download_by_a_device_that_is_not_a_programming_device(tmp_path) -> None:
    cap = CAPTURES / "iti-ics-tools__s7comm_downloading_block_db1.pcap"
    db = tmp_path / "t.db"
    run(db, cap, no_learn=True)
    (alert,) = of_type(db, "unauthorized_programming")
    # tshark: the Request Download job (function 0x1a) goes from the engineering station to the PLC
    (src, dst), *_ = tshark(cap, "s7comm.param.func == 0x1a && s7comm.header.rosctr == 1",
                            "ip.src", "ip.dst")
    assert (alert["source"]["ip"], alert["destination"]["ip"]) == (src, dst)
    assert alert["severity"] == "high" and alert["mitre"] == "T0843"
    assert alert["evidence"] and alert["source"]["device_id"] and alert["destination"]["device_id"]
    # learning the alert makes that station a programming device: the same again is fine
    r = CliRunner().invoke(main, ["alerts", "update", str(alert["id"]), "--learn", "--db", str(db)])
    assert r.exit_code == 0, r.output
    run(db, shifted(cap, tmp_path / "later.pcap", MONTH))
    assert [a["status"] for a in of_type(db, "unauthorized_programming")] == ["closed"]
    devices = json.loads(CliRunner().invoke(main, ["devices", "list", "--db", str(db), "--format",
                                                   "json"]).output)
    assert [d["ip"] for d in devices if d["programming_device"]] == [src]


def test_dnp3_stop_and_restarts_are_operational_alerts(tmp_path) -> None:
    cap = CAPTURES / "iti-ics-tools__dnp3_test_data_part1.pcap"
    run(tmp_path / "t.db", cap)  # operational alerts do not wait for learning to end
    # requests only (the outstation's responses carry function 0x81)
    stops = tshark(cap, "dnp3.al.func == 0x12", "frame.number", "ip.src", "ip.dst")
    restarts = tshark(cap, "dnp3.al.func == 0x0d || dnp3.al.func == 0x0e", "frame.number")
    found = of_type(tmp_path / "t.db", "plc_stop")  # one alert per master that stopped the outstation
    assert sum(a["count"] for a in found) == len(stops) == 4
    assert {(a["source"]["ip"], a["destination"]["ip"]) for a in found} == {(s, d) for _, s, d in stops}
    assert all(a["protocol"] == "dnp3" and a["severity"] == "high" for a in found)
    assert {e["packet"] for a in found for e in a["evidence"]} <= {int(f[0]) for f in stops}
    assert sum(a["count"] for a in of_type(tmp_path / "t.db", "device_restart")) == len(restarts)


def test_indicator_domains_of_a_real_apt_capture(tmp_path) -> None:
    cap = CAPTURES / "suricata-verify__public-ex1_section8_Sofacy.pcap"
    db = tmp_path / "t.db"
    iocs = tmp_path / "sofacy.txt"
    iocs.write_text("# APT28 infrastructure\nsoftupdates.info\ndrivres-update[.]info\nnot an indicator!\n")
    r = CliRunner().invoke(main, ["indicators", "import", str(iocs), "--db", str(db)])
    assert r.exit_code == 1 and "sofacy.txt:4" in r.output and "2 indicators" in r.output
    run(db, cap)
    queries = tshark(cap, "dns.flags.response == 0", "ip.src", "dns.qry.name")
    found = {(a["source"]["ip"], a["details"]["name"]) for a in of_type(db, "malicious_domain")}
    assert found == {(src, name) for src, name in queries}


def test_quiet_captures_replayed_after_learning_raise_nothing(tmp_path) -> None:
    for name in ("iti-ics-tools__mb2.pcap", "icsnpp-s7comm__s7ident.pcap",
                 "iot-dataset__blink-cam-01.pcap", "iti-ics-tools__bacnet_test.pcap",
                 "iti-ics-tools__wincc_s400_production.pcapng", "iot-dataset__lockly-hub-01.pcap",
                 "icsnpp-enip__multiple_service_packet_cip.pcapng", "zeek__dhcp.pcap"):
        db = tmp_path / f"{name}.db"
        run(db, CAPTURES / name, learn_for=timedelta(days=3650))  # learn on all of it
        assert CliRunner().invoke(main, ["learning", "stop", "--db", str(db)]).exit_code == 0
        before = {a["id"]: a["count"] for a in alerts(db)}
        (replay,) = run(db, shifted(CAPTURES / name, tmp_path / f"later-{name}", MONTH))
        assert replay.detection and not replay.detection.learning
        after = {a["id"]: a["count"] for a in alerts(db)}
        assert after == before, (name, [a for a in alerts(db) if a["id"] not in before])


# ---------------------------------------------------------------- crafted traffic


def test_learning_ends_inside_one_capture(tmp_path) -> None:
    """Time is capture time: what appears after the learning period is new."""
    packets = conversation(1, 2, 502) + conversation(3, 2, 502)
    cap = write(tmp_path / "c.pcap", packets, step=60.0)  # one packet a minute
    db = tmp_path / "t.db"
    run(db, cap, learn_for=timedelta(minutes=5))
    new = of_type(db, "new_device")
    assert [a["source"]["ip"] for a in new] == [ip(3)]
    assert [(a["source"]["ip"], a["destination"]["ip"]) for a in of_type(db, "new_connection")] \
        == [(ip(3), ip(2))]
    devices = json.loads(CliRunner().invoke(main, ["devices", "list", "--db", str(db), "--format",
                                                   "json"]).output)
    flags = {d["ip"]: (d["authorized"], d["new"]) for d in devices}
    assert flags[ip(1)] == (True, False) and flags[ip(3)] == (False, True)
    status = CliRunner().invoke(main, ["learning", "status", "--db", str(db)]).output
    assert "monitoring since" in status and "ended by date" in status


def test_port_address_and_plc_scans(tmp_path) -> None:
    scanner = 9
    ports = [tcp_pkt(scanner, 1, 33000, p) for p in range(20, 50)]  # 30 ports on one host
    hosts = [tcp_pkt(scanner, h, 33001, 502) for h in range(100, 160)]  # 60 hosts on Modbus
    cap = write(tmp_path / "scan.pcap", ports + hosts, step=0.5)
    db = tmp_path / "t.db"
    run(db, cap)
    (port_scan,) = of_type(db, "port_scan")
    assert port_scan["count"] == 30 and port_scan["destination"]["ip"] == ip(1)
    (address_scan,) = of_type(db, "address_scan")
    assert address_scan["count"] == 61 and address_scan["source"]["ip"] == ip(scanner)
    (plc_scan,) = of_type(db, "plc_scan")
    assert plc_scan["count"] == 60 and plc_scan["severity"] == "high"


def test_slow_probing_is_not_a_scan(tmp_path) -> None:
    ports = [tcp_pkt(9, 1, 33000, p) for p in range(20, 50)]
    cap = write(tmp_path / "slow.pcap", ports, step=10.0)  # 30 ports over 5 minutes: 12 per 2 minutes
    run(tmp_path / "t.db", cap)
    assert of_type(tmp_path / "t.db", "port_scan") == []


def test_arp_spoofing_one_ip_claimed_by_two_macs(tmp_path) -> None:
    gateway_ip = ip(1)
    normal = [arp_reply(mac(1), gateway_ip, 5) for _ in range(3)]
    attack = [arp_reply("02:66:66:66:66:66", gateway_ip, 5)]
    db = tmp_path / "t.db"
    run(db, write(tmp_path / "a.pcap", normal), learn_for=timedelta(minutes=1))
    assert of_type(db, "arp_spoofing") == []
    run(db, write(tmp_path / "b.pcap", attack, start=1_700_100_000))
    (spoof,) = of_type(db, "arp_spoofing")
    assert spoof["source"]["mac"] == "02:66:66:66:66:66"
    assert spoof["details"]["macs"] == sorted([mac(1), "02:66:66:66:66:66"])


def test_password_guessing_from_http_401s(tmp_path) -> None:
    request = b"GET /admin HTTP/1.1\r\nHost: plc.local\r\nAuthorization: Basic YWRtaW46eA==\r\n\r\n"
    packets = []
    for n in range(12):
        packets += [tcp_pkt(7, 2, 41000 + n, 80, "PA", request),
                    tcp_pkt(2, 7, 80, 41000 + n, "PA",
                            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")]
    db = tmp_path / "t.db"
    run(db, write(tmp_path / "g.pcap", packets))
    (guess,) = of_type(db, "password_guessing")
    assert guess["count"] == 12 and guess["source"]["ip"] == ip(7) and guess["destination"]["ip"] == ip(2)


def test_protocol_violations_modbus_function_zero_and_port_zero(tmp_path) -> None:
    fc0 = bytes.fromhex("000100000002" "01" "00")  # MBAP, unit 1, function code 0
    packets = [tcp_pkt(4, 2, 40100, 502, "PA", fc0), tcp_pkt(4, 2, 40101, 0, "S")]
    db = tmp_path / "t.db"
    run(db, write(tmp_path / "v.pcap", packets))
    (illegal,) = of_type(db, "illegal_function_code")
    assert illegal["details"]["function_code"] == 0 and illegal["protocol"] == "modbus"
    assert illegal["evidence"] == [{"file_id": 1, "packet": 1}]
    (zero,) = of_type(db, "port_zero")
    assert zero["destination"]["ip"] == ip(2)


def test_eicar_in_cleartext_and_malicious_ip_from_a_stix_bundle(tmp_path) -> None:
    eicar = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
    bundle = {"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
         "name": "C2 server", "pattern": f"[ipv4-addr:value = '{ip(200)}']", "pattern_type": "stix",
         "valid_from": "2024-01-01T00:00:00Z", "created": "2024-01-01T00:00:00Z",
         "modified": "2024-01-01T00:00:00Z"},
        {"type": "indicator", "pattern": "[file:hashes.MD5 = 'abc']"},
    ]}
    (tmp_path / "c2.json").write_text(json.dumps(bundle))
    db = tmp_path / "t.db"
    r = CliRunner().invoke(main, ["indicators", "import", str(tmp_path / "c2.json"), "--db", str(db)])
    assert r.exit_code == 1 and "objects[1]" in r.output and "1 indicator" in r.output
    packets = conversation(5, 200, 443) + [tcp_pkt(5, 6, 40300, 9999, "PA", eicar)]
    run(db, write(tmp_path / "m.pcap", packets))
    (c2,) = of_type(db, "malicious_ip")
    assert c2["destination"]["ip"] == ip(200) and c2["details"]["description"] == "C2 server"
    (test_file,) = of_type(db, "eicar")
    assert test_file["source"]["ip"] == ip(5)


def test_same_traffic_counts_on_an_open_alert_and_raises_a_new_one_after_close(tmp_path) -> None:
    db = tmp_path / "t.db"
    run(db, write(tmp_path / "a.pcap", conversation(1, 2, 502)), no_learn=True)
    (first,) = of_type(db, "new_connection")
    run(db, write(tmp_path / "b.pcap", conversation(1, 2, 502), start=1_700_001_000))
    (same,) = of_type(db, "new_connection")
    assert same["id"] == first["id"] and same["last_detected"] > first["last_detected"]
    assert CliRunner().invoke(main, ["alerts", "update", str(first["id"]), "--mute", "--db",
                                     str(db)]).exit_code == 0
    run(db, write(tmp_path / "c.pcap", conversation(1, 2, 502), start=1_700_002_000))
    both = of_type(db, "new_connection")
    assert [a["status"] for a in both] == ["closed", "new"]
    assert CliRunner().invoke(main, ["alerts", "update", str(both[1]["id"]), "--learn", "--db",
                                     str(db)]).exit_code == 0
    run(db, write(tmp_path / "d.pcap", conversation(1, 2, 502), start=1_700_003_000))
    assert [a["status"] for a in of_type(db, "new_connection")] == ["closed", "closed"]


def test_exclusion_window_and_catalog_overrides(tmp_path, monkeypatch) -> None:
    db = tmp_path / "t.db"
    r = CliRunner().invoke(main, ["exclusions", "add", "--name", "maintenance", "--address", f"{ip(2)}/32",
                                  "--type", "new_connection", "--db", str(db)])
    assert r.exit_code == 0, r.output
    run(db, write(tmp_path / "a.pcap", conversation(1, 2, 502) + conversation(1, 300, 502)), no_learn=True)
    assert [a["destination"]["ip"] for a in of_type(db, "new_connection")] == [ip(300)]
    overrides = tmp_path / "catalog.yaml"
    overrides.write_text("new_device: {enabled: false}\nport_scan: {thresholds: {ports: 3}}\n")
    monkeypatch.setenv("TAPWATCH_ALERT_CATALOG", str(overrides))
    from tapwatch.detect import catalog
    catalog._load.cache_clear()
    db2 = tmp_path / "u.db"
    run(db2, write(tmp_path / "b.pcap", [tcp_pkt(9, 1, 33000, p) for p in (21, 22, 23)]), no_learn=True)
    assert of_type(db2, "new_device") == [] and len(of_type(db2, "port_scan")) == 1
    overrides.write_text("no_such_alert: {enabled: false}\n")
    catalog._load.cache_clear()
    with pytest.raises(catalog.CatalogError, match="no_such_alert"):
        catalog.catalog()
    catalog._load.cache_clear()


def test_alerts_close_themselves_after_90_quiet_days(tmp_path) -> None:
    db = tmp_path / "t.db"
    run(db, write(tmp_path / "a.pcap", conversation(1, 2, 502)), no_learn=True)
    assert {a["status"] for a in alerts(db)} == {"new"}
    run(db, write(tmp_path / "b.pcap", [udp_pkt(1, 2, 5353, 5353, b"x")], start=1_700_000_000 + 91 * 86400))
    expired = [a for a in alerts(db) if a["closed_reason"] == "expired"]
    assert expired and all(a["status"] == "closed" for a in expired)


def test_alert_pcap_excerpt_holds_the_triggering_packets(tmp_path) -> None:
    cap = CAPTURES / "iti-ics-tools__s7comm_downloading_block_db1.pcap"
    db = tmp_path / "t.db"
    run(db, cap, no_learn=True)
    (alert,) = of_type(db, "unauthorized_programming")
    out = tmp_path / "alert.pcap"
    r = CliRunner().invoke(main, ["alerts", "pcap", str(alert["id"]), "-o", str(out), "--db", str(db)])
    assert r.exit_code == 0, r.output
    frames = tshark(out, "s7comm.param.func == 0x1a", "ip.src", "ip.dst")
    assert (alert["source"]["ip"], alert["destination"]["ip"]) in {tuple(f) for f in frames}
    missing = CliRunner().invoke(main, ["alerts", "pcap", "999", "-o", str(out), "--db", str(db)])
    assert missing.exit_code == 2 and "no alert with id 999" in missing.output


def test_alerts_cli_json_contract(tmp_path) -> None:
    db = tmp_path / "t.db"
    run(db, CAPTURES / "zeek__nmap-vsn.pcap")
    rows = json.loads(CliRunner().invoke(main, ["alerts", "list", "--format", "json", "--db",
                                                str(db)]).output)
    assert rows and {"id", "type", "title", "engine", "severity", "status", "count", "first_detected",
                     "last_detected", "source", "destination", "protocol"} <= set(rows[0])
    csv_out = CliRunner().invoke(main, ["alerts", "list", "--format", "csv", "--status", "open",
                                        "--db", str(db)]).output
    assert csv_out.splitlines()[0].startswith("id,type,title")
    assert len(csv_out.splitlines()) == 1 + len(rows)


def test_densest_window_counts_distinct_values() -> None:
    from datetime import datetime

    t = datetime(2024, 1, 1)
    items = [(t + timedelta(seconds=s), v) for s, v in ((0, "a"), (1, "a"), (2, "b"), (200, "c"), (201, "d"))]
    count, start, end, values = densest(items, timedelta(seconds=120))
    assert (count, values) == (2, ["a", "b"]) and start == t and end == t + timedelta(seconds=2)
    assert densest([], timedelta(seconds=1))[0] == 0


def test_detection_on_postgresql(pg_url, tmp_path) -> None:
    """The same engines, baseline upserts and alert updates on the real PostgreSQL server."""
    from tapwatch.store.db import open_engine

    cap = CAPTURES / "iti-ics-tools__s7comm_downloading_block_db1.pcap"
    engine = open_engine(pg_url)
    try:
        from tapwatch.analyze import Analyzer
        from tapwatch.detect.alerts import alert_json, list_alerts
        from tapwatch.store.db import sessions

        Analyzer(engine, sensor="pg", learn_for=timedelta(seconds=1)).analyze_file(cap)
        Analyzer(engine, sensor="pg").analyze_file(shifted(cap, tmp_path / "later.pcap", MONTH))
        with sessions(engine)() as s:
            found = [alert_json(a) for a in list_alerts(s)]
        programming = [a for a in found if a["type"] == "unauthorized_programming"]
        assert len(programming) == 1 and programming[0]["count"] == 2  # one alert, seen twice
    finally:
        engine.dispose()


def test_analyze_forwards_new_alerts_to_a_syslog_receiver(tmp_path) -> None:
    """End to end: a forwarding rule, then an analysis whose alerts reach a real UDP syslog
    listener on loopback as CEF."""
    import socket

    db = tmp_path / "t.db"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(10)
        port = listener.getsockname()[1]
        r = CliRunner().invoke(main, ["forwarding", "add", "siem", "--action", "syslog", "--host",
                                      "127.0.0.1", "--port", str(port), "--min-severity", "medium",
                                      "--db", str(db)])
        assert r.exit_code == 0, r.output
        (result,) = run(db, CAPTURES / "zeek__nmap-vsn.pcap")
        message = listener.recv(65536).decode()
    assert result.forwarding and "1 sent" in result.forwarding
    assert "CEF:0|" in message and "arp_scan" in message
