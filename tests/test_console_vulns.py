"""The console's vulnerabilities, recommendations, risk and sites, on the demo site's real
SQLite inventory with the test feeds imported: the API answers what the CLI prints (an
independent path through `tapwatch ... --format json`), the pages show it, and the plan gates it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from clock_helpers import T0
from inventory_helpers import analyze, devices
from tapwatch.cli import main
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.demo import build_demo_capture
from tapwatch.plans import plans as rules
from tapwatch.plans import subscriptions
from tapwatch.plans.access import CLI
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Device

FEEDS = Path(__file__).parent / "data" / "vulnfeeds"
SAMPLES = [str(FEEDS / n) for n in ("nvd-sample.json", "csaf-sample.json", "kev-sample.json")]
PLC, DRIVE = "10.20.0.60", "10.20.0.70"  # the demo's S7-1200 (V4.2.3) and PowerFlex 525


def cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("console_vulns")
    db = out / "tapwatch.db"
    analyze(db, build_demo_capture(out / "site.pcap"))
    result = CliRunner().invoke(main, ["vulns", "import", *SAMPLES, "--db", str(db)])
    assert result.exit_code == 0, result.output
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        # two sites: the PLC and the drive in a cell of "plant", the switch in "office"
        s.execute(update(Device).where(Device.ip.in_([PLC, DRIVE])).values(site="plant", zone="cell 1"))
        s.execute(update(Device).where(Device.ip == "10.20.0.2").values(site="office"))
        ids = dict(s.execute(select(Device.ip, Device.id).where(Device.ip.in_([PLC, DRIVE]))).all())
        reader = auth.add_user(s, "reader", "a long password", "security_reader", "test")
        token = auth.issue_token(s, reader, "test", "test")
    client = TestClient(create_app(engine))
    client.headers["Authorization"] = f"Bearer {token}"
    yield {"db": str(db), "dir": out, "client": client, "plc": ids[PLC], "drive": ids[DRIVE]}
    engine.dispose()


def test_vulnerabilities_api_equals_the_cli(demo) -> None:  # type: ignore[no-untyped-def]
    c = demo["client"]
    expected = cli("vulns", "list", "--db", demo["db"], "--format", "json")
    body = c.get("/api/v1/vulnerabilities", params={"page_size": 500}).json()
    assert body["total"] == len(expected) == len(body["vulnerabilities"]) > 0
    assert body["vulnerabilities"] == expected  # same rows, same (CLI) order
    per_device = Counter(r["device_id"] for r in expected)
    assert Counter(r["device_id"] for r in body["vulnerabilities"]) == per_device
    assert body["summary"]["devices"] == len(per_device) == 2
    assert body["summary"]["kev"] == sum(1 for r in expected if r["kev"])

    for device_id, n in per_device.items():
        one = c.get(f"/api/v1/devices/{device_id}/vulnerabilities").json()
        assert one["total"] == n
        assert one["vulnerabilities"] == cli("vulns", "list", "--db", demo["db"], "--device",
                                             str(device_id), "--format", "json")
    assert c.get("/api/v1/devices/999999/vulnerabilities").status_code == 404


def test_vulnerability_filters_sort_and_paging(demo) -> None:  # type: ignore[no-untyped-def]
    c = demo["client"]
    everything = c.get("/api/v1/vulnerabilities").json()["vulnerabilities"]

    def get(**params: Any) -> list[dict[str, Any]]:
        r = c.get("/api/v1/vulnerabilities", params=params)
        assert r.status_code == 200, r.text
        return r.json()["vulnerabilities"]  # type: ignore[no-any-return]

    kev = get(kev="true")
    assert kev and kev == [r for r in everything if r["kev"]]
    assert get(kev="false") == [r for r in everything if not r["kev"]]
    assert {r["device_ip"] for r in get(vendor="siemens")} == {PLC}
    assert get(device_id=demo["drive"]) == [r for r in everything if r["device_id"] == demo["drive"]]
    assert all(r["cvss_score"] >= 9.0 for r in get(cvss_min=9))
    critical = [r for r in everything if r["severity"] == "critical"]
    assert critical and get(cvss_min=9) == get(severity="critical") == critical
    assert all(7.0 <= r["cvss_score"] <= 8.9 for r in get(cvss_min=7, cvss_max=8.9))
    assert get(q="cve-2099-0001") == [r for r in everything if r["cve"] == "CVE-2099-0001"]
    scores = [r["cvss_score"] for r in get(sort="cvss", order="desc")]
    assert scores == sorted(scores, reverse=True)
    first = c.get("/api/v1/vulnerabilities", params={"page_size": 1, "page": 2, "sort": "cve"}).json()
    assert first["total"] == len(everything) and len(first["vulnerabilities"]) == 1
    assert first["vulnerabilities"][0]["cve"] == sorted(r["cve"] for r in everything)[1]
    for bad in ({"severity": "dire"}, {"sort": "nope"}, {"kev": "maybe"}, {"cvss_min": 9, "cvss_max": 1},
                {"order": "up"}):
        r = c.get("/api/v1/vulnerabilities", params=bad)
        assert r.status_code == 400, (bad, r.status_code)
    assert c.get("/api/v1/vulnerabilities", params={"cvss_min": 11}).status_code == 422


def test_one_vulnerability(demo) -> None:  # type: ignore[no-untyped-def]
    c = demo["client"]
    v = c.get("/api/v1/vulnerabilities/cve-2099-0001").json()  # ids are matched case-insensitively
    assert v["cve"] == "CVE-2099-0001" and v["kev"] is True and v["cvss_vector"].startswith("CVSS:3.1/")
    assert [d["device_ip"] for d in v["devices"]] == [PLC]
    assert v["devices"][0]["firmware"] == "V4.2.3" and v["devices"][0]["confidence"] == "firmware"
    missing = c.get("/api/v1/vulnerabilities/CVE-1999-0000")
    assert missing.status_code == 404 and "CVE-1999-0000" in missing.json()["detail"]


def test_recommendations_api_equals_the_cli(demo) -> None:  # type: ignore[no-untyped-def]
    c = demo["client"]
    expected = cli("recommendations", "list", "--db", demo["db"], "--format", "json")
    body = c.get("/api/v1/recommendations").json()
    assert body["recommendations"] == expected
    got = {r["id"]: r for r in body["recommendations"]}
    for rec in expected:
        mine = got[rec["id"]]
        assert mine["unhealthy_count"] == len(rec["unhealthy"])
        assert mine["healthy_count"] == len(rec["healthy"])
        assert [d["device_id"] for d in mine["unhealthy"]] == [d["device_id"] for d in rec["unhealthy"]]
    assert {d["ip"] for d in got["secure-vulnerable-devices:siemens"]["unhealthy"]} == {PLC}

    unhealthy = c.get("/api/v1/recommendations", params={"status": "unhealthy"}).json()
    assert [r["id"] for r in unhealthy["recommendations"]] == [r["id"] for r in expected
                                                               if r["status"] == "unhealthy"]
    plc = c.get("/api/v1/recommendations", params={"device_id": demo["plc"]}).json()["recommendations"]
    assert {r["id"] for r in plc} == {r["id"] for r in expected
                                      if any(d["device_id"] == demo["plc"] for d in r["unhealthy"])}
    one = c.get("/api/v1/recommendations/review-plc-operating-mode").json()
    assert [d["ip"] for d in one["unhealthy"]] == [PLC]
    assert c.get("/api/v1/recommendations/nope").status_code == 404
    assert c.get("/api/v1/recommendations", params={"status": "fine"}).status_code == 400


def test_risk_api_equals_the_cli(demo) -> None:  # type: ignore[no-untyped-def]
    c = demo["client"]
    body = c.get("/api/v1/risk").json()
    assert body["devices"] == cli("risk", "--db", demo["db"], "--format", "json")
    assert body["sites"] == cli("risk", "--site", "--db", demo["db"], "--format", "json")
    assert body["bands"] == {"secure": 90, "needs_improvement": 70} and "vulnerabilities" in body["weights"]
    assert sum(body["distribution"].values()) == len(body["devices"])
    assert {s["site"] for s in body["sites"]} == {"plant", "office", "(no site)"}
    plant = c.get("/api/v1/risk", params={"site": "plant"}).json()
    assert {d["ip"] for d in plant["devices"]} == {PLC, DRIVE}
    assert [s["site"] for s in plant["sites"]] == ["plant"]
    vulnerable = c.get("/api/v1/risk", params={"band": "vulnerable"}).json()["devices"]
    assert vulnerable == [d for d in body["devices"] if d["band"] == "vulnerable"]
    assert c.get("/api/v1/risk", params={"band": "meh"}).status_code == 400


def test_sites_equal_the_devices_table(demo) -> None:  # type: ignore[no-untyped-def]
    body = demo["client"].get("/api/v1/sites").json()
    table = devices(demo["db"])  # as `tapwatch devices list --format json` prints them
    assert body["total"] == len(table)
    by_site: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    by_zone: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for d in table:
        by_site[d["site"]].append(d)
        by_zone[(d["site"], d["zone"])].append(d)
    assert [s["site"] for s in body["sites"]] == ["office", "plant", None]
    for site in body["sites"]:
        rows = by_site[site["site"]]
        assert site["devices"] == len(rows)
        assert site["classes"] == {c: sum(1 for d in rows if (d["class"] or "unknown") == c)
                                   for c in ("IT", "IoT", "OT", "unknown")}
        assert site["unauthorized"] == sum(1 for d in rows if not d["authorized"])
        assert site["new"] == sum(1 for d in rows if d["new"])
        assert site["last_seen"] == max(d["last_seen"] for d in rows)
        assert site["health"] in ("active", "quiet", "silent")
        assert sum(z["devices"] for z in site["zones"]) == site["devices"]
        for zone in site["zones"]:
            assert zone["devices"] == len(by_zone[(site["site"], zone["zone"])])
    plant = next(s for s in body["sites"] if s["site"] == "plant")
    assert [(z["zone"], z["devices"]) for z in plant["zones"]] == [("cell 1", 2)]


def test_pages_show_it(demo) -> None:  # type: ignore[no-untyped-def]
    c = demo["client"]
    page = c.get("/vulnerabilities")
    assert page.status_code == 200
    for cve in ("CVE-2099-0001", "CVE-2099-0002"):
        assert f'href="/vulnerabilities/{cve}"' in page.text
    assert f'href="/devices/{demo["plc"]}"' in page.text and 'href="/vulnerabilities"' in page.text
    kev_only = c.get("/vulnerabilities", params={"kev": "true", "vendor": "Siemens"})
    assert kev_only.status_code == 200 and "CVE-2099-0001" in kev_only.text
    assert "CVE-2099-0002" not in kev_only.text
    assert c.get("/vulnerabilities", params={"severity": "dire"}).status_code == 400

    cve = c.get("/vulnerabilities/CVE-2099-0001")
    assert cve.status_code == 200 and PLC in cve.text and "V4.2.3" in cve.text
    assert c.get("/vulnerabilities/CVE-1999-0000").status_code == 404

    recs = c.get("/recommendations")
    assert recs.status_code == 200 and "Review PLC operating mode" in recs.text
    assert f'href="/devices/{demo["plc"]}"' in recs.text and "operating mode is" in recs.text

    sites = c.get("/sites")
    assert sites.status_code == 200 and "plant" in sites.text and "cell 1" in sites.text
    assert "/devices?site=plant&amp;zone=cell+1" in sites.text

    dash = c.get("/")
    assert dash.status_code == 200 and "Risk score" in dash.text
    plant = next(s for s in c.get("/api/v1/risk").json()["sites"] if s["site"] == "plant")
    assert f"<b>{plant['score']}</b>" in dash.text

    device = c.get(f"/devices/{demo['plc']}")
    assert device.status_code == 200 and "CVE-2099-0001" in device.text
    score = next(d for d in c.get("/api/v1/risk").json()["devices"] if d["device_id"] == demo["plc"])
    assert f"Risk score <b>{score['score']}</b>" in device.text

    nav = c.get("/devices").text
    assert 'href="/vulnerabilities"' in nav and 'href="/recommendations"' in nav and 'href="/sites"' in nav


def test_an_expired_trial_switches_vulnerabilities_off(demo, tmp_path, now) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "copy.db"
    shutil.copy(demo["db"], db)
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        sub = subscriptions.create(s, CLI, "plant")
        rules.add(s, CLI, sub, "trial")
        user = auth.add_user(s, "analyst", "a long password", "security_analyst", "test")
        token = auth.issue_token(s, user, "test", "test")
    client = TestClient(create_app(engine))
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/api/v1/vulnerabilities").status_code == 200  # the trial runs
    assert client.get("/api/v1/recommendations").status_code == 200
    now.at = T0 + timedelta(days=31)
    for url in ("/api/v1/vulnerabilities", "/api/v1/vulnerabilities/CVE-2099-0001", "/api/v1/risk",
                f"/api/v1/devices/{demo['plc']}/vulnerabilities"):
        refused = client.get(url)
        assert refused.status_code == 403, url
        detail = refused.json()["detail"]
        assert "'plant' has no active plan: vulnerabilities are off" in detail
        assert "trial ended unconverted" in detail
    refused = client.get("/api/v1/recommendations")
    assert refused.status_code == 403 and "recommendations are off" in refused.json()["detail"]
    page = client.get("/vulnerabilities")
    assert page.status_code == 403 and "has no active plan" in page.text
    # the inventory stays readable: sites, the dashboard and the device page answer, with
    # the plan's message where risk and CVEs would be
    assert client.get("/api/v1/sites").status_code == 200
    dash = client.get("/")
    assert dash.status_code == 200 and "vulnerabilities are off" in dash.text
    device = client.get(f"/devices/{demo['plc']}")
    assert device.status_code == 200 and "vulnerabilities are off" in device.text
    assert "CVE-2099-0001" not in device.text
    assert TestClient(create_app(engine)).get("/api/v1/vulnerabilities").status_code == 401
    engine.dispose()
