"""The command line as a user runs it: exit codes, output formats, the JSON contract."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from inventory_helpers import CAPTURES

PLANT = str(CAPTURES / "iti-ics-tools__mb2.pcap")
DEVICE_KEYS = {
    "id", "mac", "ip", "ips", "vlans", "first_seen", "last_seen", "packets_sent",
    "packets_received", "bytes_sent", "bytes_received", "protocols", "name", "vendor", "type",
    "model", "os", "firmware",
}


def tapwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tapwatch.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_analyze_then_list_devices_as_json(tmp_path) -> None:
    db = str(tmp_path / "inv.db")
    run = tapwatch("analyze", PLANT, "--db", db)
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert "13,472 packets" in summary and "devices: 52 new, 0 known" in summary
    listed = tapwatch("devices", "list", "--db", db, "--format", "json")
    devices = json.loads(listed.stdout)
    assert len(devices) == 52
    for d in devices:
        assert DEVICE_KEYS <= set(d)
        assert d["first_seen"].endswith("Z") and d["first_seen"] <= d["last_seen"]
    plc = next(d for d in devices if d["ip"] == "141.81.0.146")
    assert plc["mac"] == "00:1b:1b:35:84:10" and "s7comm" in plc["protocols"]
    assert plc["vendor"] == "Siemens"  # IEEE registry: 00:1b:1b Siemens AG


def test_the_database_file_alone_holds_a_finished_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The program skips the collector's last pass at exit, but closes its databases first:
    SQLite's write-ahead log is folded back, so copying the .db file copies everything."""
    db = tmp_path / "inv.db"
    assert tapwatch("analyze", PLANT, "--db", str(db)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inv.db"]
    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    copy.write_bytes(db.read_bytes())
    listed = tapwatch("devices", "list", "--db", str(copy), "--format", "json")
    assert len(json.loads(listed.stdout)) == 52


def test_second_run_reports_known_devices(tmp_path) -> None:
    db = str(tmp_path / "inv.db")
    tapwatch("analyze", PLANT, "--db", db)
    again = tapwatch("analyze", PLANT, "--db", db)
    assert again.returncode == 0
    assert "1 already ingested" in again.stdout


def test_db_from_environment_and_csv_output(tmp_path) -> None:
    env = {"TAPWATCH_DB": str(tmp_path / "env.db")}
    assert tapwatch("analyze", PLANT, env=env).returncode == 0
    out = tapwatch("devices", "list", "--format", "csv", env=env).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 52
    assert {"id", "mac", "ip", "packets_sent"} <= set(rows[0])


def test_table_output_and_connections(tmp_path) -> None:
    db = str(tmp_path / "inv.db")
    tapwatch("analyze", PLANT, "--db", db)
    table = tapwatch("devices", "list", "--db", db, "--sort", "ip").stdout
    assert "52 devices" in table and "00:1b:1b:35:84:10" in table
    conns = json.loads(tapwatch("connections", "list", "--db", db, "--format", "json").stdout)
    modbus = [c for c in conns if c["server_port"] == 502]
    assert modbus and all(c["transport"] == "tcp" and c["protocol"] == "modbus" for c in modbus)
    assert all(c["packets"] == c["packets_client_to_server"] + c["packets_server_to_client"]
               for c in conns)


def test_missing_path_is_a_one_line_error(tmp_path) -> None:
    run = tapwatch("analyze", str(tmp_path / "nope.pcap"), "--db", str(tmp_path / "x.db"))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "nope.pcap" in run.stderr


def test_demo_prints_the_example_site_inventory(tmp_path) -> None:
    run = tapwatch("demo", "--dir", str(tmp_path / "demo"))
    assert run.returncode == 0, run.stderr
    assert "15 devices" in run.stdout and "10.20.0.50" in run.stdout
    assert "plc_stop" in run.stdout and "arp_scan" in run.stdout and "5 alerts" in run.stdout
    assert "carries 2 published vulnerabilities" in run.stdout
    vulns = json.loads(tapwatch("vulns", "list", "--db", str(tmp_path / "demo" / "tapwatch.db"),
                                "--format", "json").stdout)
    # the S7-1200's V4.2.3 lies in both ranges (< V4.5.0, < V4.4.0), matched by firmware
    assert sorted((v["device_ip"], v["cve"], v["confidence"]) for v in vulns) == [
        ("10.20.0.60", "CVE-2019-10936", "firmware"), ("10.20.0.60", "CVE-2020-15782", "firmware")]


def test_edits_survive_reanalysis_until_reset(tmp_path) -> None:
    db = str(tmp_path / "inv.db")
    first, second = (str(CAPTURES / n) for n in ("iti-ics-tools__dnp3_test_data_part1.pcap",
                                                   "zeek__dnp3.pcap"))
    tapwatch("analyze", first, "--db", db)
    listed = json.loads(tapwatch("devices", "list", "--db", db, "--format", "json").stdout)
    outstation = next(d for d in listed if d["ip"] == "10.0.0.3")
    assert outstation["type"] == "rtu" and outstation["purdue_level"] == 1
    edit = tapwatch("devices", "edit", str(outstation["id"]), "--db", db, "--name", "Feeder 7 RTU",
                    "--purdue-level", "0", "--type", "ied")
    assert edit.returncode == 0, edit.stderr
    tapwatch("analyze", second, "--db", db)  # the same outstation again, identified again
    after = json.loads(tapwatch("devices", "show", str(outstation["id"]), "--db", db,
                                "--format", "json").stdout)
    assert (after["name"], after["type"], after["class"], after["purdue_level"]) == (
        "Feeder 7 RTU", "ied", "OT", 0)
    tapwatch("devices", "edit", str(outstation["id"]), "--db", db, "--reset", "type",
             "--reset", "purdue_level")
    reset = json.loads(tapwatch("devices", "show", str(outstation["id"]), "--db", db,
                                "--format", "json").stdout)
    assert (reset["name"], reset["type"], reset["purdue_level"]) == ("Feeder 7 RTU", "rtu", 1)
    bad = tapwatch("devices", "edit", str(outstation["id"]), "--db", db, "--type", "toaster")
    assert bad.returncode == 2 and "unknown type 'toaster'" in bad.stderr


def test_tables_print_wire_values_literally(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A MAC with ':ab:' is not an emoji code and a name with brackets is not markup."""
    from click.testing import CliRunner
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from detect_helpers import write
    from tapwatch.cli import main

    cap = write(tmp_path / "m.pcap", [Ether(src="02:ab:00:00:ab:01", dst="ff:ff:ff:ff:ff:ff")
                                      / IP(src="10.9.9.9", dst="10.9.9.255") / UDP(sport=9, dport=9)])
    db = str(tmp_path / "t.db")
    assert CliRunner().invoke(main, ["analyze", str(cap), "--db", db]).exit_code == 0
    devices = json.loads(CliRunner().invoke(main, ["devices", "list", "--db", db, "--format",
                                                   "json"]).output)
    CliRunner().invoke(main, ["devices", "edit", str(devices[0]["id"]), "--name", "[red]line 1[/red]",
                              "--db", db])
    table = CliRunner().invoke(main, ["devices", "list", "--db", db]).output
    assert "02:ab:00:00:ab:01" in table and "[red]line 1[/red]" in table
    shown = CliRunner().invoke(main, ["devices", "show", str(devices[0]["id"]), "--db", db]).output
    assert "[red]line 1[/red]" in shown
