"""The vulns / recommendations / risk / report commands on the demo site, as a user runs them."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from inventory_helpers import analyze
from tapwatch.cli import main
from tapwatch.demo import build_demo_capture
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Device

FEEDS = Path(__file__).parent / "data" / "vulnfeeds"
SAMPLES = [str(FEEDS / n) for n in ("nvd-sample.json", "csaf-sample.json", "kev-sample.json")]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("demo")
    analyze(out / "tapwatch.db", build_demo_capture(out / "site.pcap"))
    result = CliRunner().invoke(main, ["vulns", "import", *SAMPLES, "--db", str(out / "tapwatch.db")])
    assert result.exit_code == 0, result.output
    return str(out / "tapwatch.db")


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def device_id(db: str, ip: str) -> int:
    engine = open_engine(db)
    with sessions(engine)() as s:
        found = s.scalar(select(Device.id).where(Device.ip == ip))
    engine.dispose()
    assert found is not None
    return found


def test_import_reports_bad_records_by_file_and_location(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    result = CliRunner().invoke(main, ["vulns", "import", *SAMPLES, "--db", db])
    assert result.exit_code == 0
    assert (f"tapwatch: warning: {SAMPLES[2]}: $.vulnerabilities[1].cveID: missing or not a CVE id: "
            "'not-a-cve': record skipped") in result.output
    assert "3 files: 6 records added, 0 updated, 0 unchanged, 4 skipped as malformed" in result.output
    again = CliRunner().invoke(main, ["vulns", "import", *SAMPLES, "--db", db])
    assert "0 records added, 0 updated, 6 unchanged" in again.output
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = CliRunner().invoke(main, ["vulns", "import", str(broken), SAMPLES[2], "--db", db])
    assert bad.exit_code == 2
    assert f"tapwatch: error: {broken}: line 1 column 2: not valid JSON" in bad.output
    missing = CliRunner().invoke(main, ["vulns", "import", str(tmp_path / "nope.json"), "--db", db])
    assert missing.exit_code == 2 and "no such file or directory" in missing.output


def test_vulns_list_on_the_demo_site(demo_db) -> None:
    rows = json.loads(run("vulns", "list", "--db", demo_db, "--format", "json"))
    by_ip = {(r["device_ip"], r["cve"]): r for r in rows}
    s7 = by_ip[("10.20.0.60", "CVE-2099-0001")]  # the demo's S7-1200, firmware V4.2.3
    assert (s7["firmware"], s7["confidence"], s7["kev"]) == ("V4.2.3", "firmware", True)
    assert s7["cvss_vector"].startswith("CVSS:3.1/") and s7["remediation"]
    drive = by_ip[("10.20.0.70", "CVE-2099-0002")]  # the PowerFlex 525, revision 4.03
    assert drive["confidence"] == "firmware" and drive["severity"] == "critical"
    assert {ip for ip, _ in by_ip} == {"10.20.0.60", "10.20.0.70"}

    plc = device_id(demo_db, "10.20.0.60")
    only = json.loads(run("vulns", "list", "--db", demo_db, "--device", str(plc), "--format", "json"))
    assert only and {r["device_id"] for r in only} == {plc}
    table = list(csv.DictReader(io.StringIO(run("vulns", "list", "--db", demo_db, "--format", "csv"))))
    assert len(table) == len(rows) and table[0]["cve"] and "kev" in table[0]
    text = run("vulns", "list", "--db", demo_db)
    assert "CVE-2099-0001" in text and "firmware" in text
    missing = CliRunner().invoke(main, ["vulns", "list", "--db", demo_db, "--device", "9999"])
    assert missing.exit_code == 2


def test_recommendations_and_risk_on_the_demo_site(demo_db) -> None:
    recs = {r["id"]: r for r in json.loads(run("recommendations", "list", "--db", demo_db,
                                               "--format", "json"))}
    insecure = {d["ip"]: d["reasons"] for d in recs["disable-insecure-admin-protocols"]["unhealthy"]}
    assert insecure["10.20.0.2"] == ["SNMP v1/v2c with default community 'public'"]  # the switch
    assert insecure["10.20.0.30"] == ["serves HTTP administration (port 80)"]  # the camera
    assert [d["ip"] for d in recs["review-plc-operating-mode"]["unhealthy"]] == ["10.20.0.60"]
    assert {d["ip"] for d in recs["secure-vulnerable-devices:siemens"]["unhealthy"]} == {"10.20.0.60"}

    devices = json.loads(run("risk", "--db", demo_db, "--format", "json"))
    assert [d["score"] for d in devices] == sorted(d["score"] for d in devices)
    # the two devices with KEV-listed CVEs matched on firmware score lowest
    assert {d["ip"] for d in devices[:2]} == {"10.20.0.60", "10.20.0.70"}
    assert {d["band"] for d in devices[:2]} == {"vulnerable"}
    sites = json.loads(run("risk", "--site", "--db", demo_db, "--format", "json"))
    assert len(sites) == 1 and sites[0]["devices"] == len(devices)
    assert sum(sites[0]["bands"].values()) == len(devices)
    assert "Score" in run("risk", "--site", "--db", demo_db)
    flat = list(csv.DictReader(io.StringIO(run("risk", "--db", demo_db, "--format", "csv"))))
    assert {"score", "band", "points_vulnerabilities"} <= set(flat[0])


def test_risk_report_is_one_self_contained_page(demo_db, tmp_path) -> None:
    engine = open_engine(demo_db)
    with sessions(engine).begin() as s:
        s.get(Device, device_id(demo_db, "10.20.0.70")).name = "<script>alert(1)</script>"
    engine.dispose()
    out = tmp_path / "report.html"
    assert "risk report:" in run("report", "risk", "--db", demo_db, "-o", str(out))
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)  # nothing fetched from elsewhere
    svgs = re.findall(r"<svg .*?</svg>", page, re.S)
    assert len(svgs) == 3
    histogram, top, protocols = svgs
    with sessions(open_engine(demo_db))() as s:
        total = len(s.scalars(select(Device.id)).all())
    assert sum(int(n) for n in re.findall(r": (\d+) devices</title>", histogram)) == total
    assert "10.20.0.60" in top and "KEV" in top
    assert "SNMP default community" in protocols and "HTTP administration" in protocols
