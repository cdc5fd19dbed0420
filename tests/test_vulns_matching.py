"""Matching devices to imported vulnerabilities, recommendations and risk, on device rows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tapwatch.store.alert_models import Alert
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Address, Connection, Device, Fact
from tapwatch.vulns import findings, importer, matcher, recommendations, risk

FEEDS = Path(__file__).parent / "data" / "vulnfeeds"
SAMPLES = [FEEDS / "nvd-sample.json", FEEDS / "csaf-sample.json", FEEDS / "kev-sample.json"]
T = datetime(2026, 3, 2, 8, 0, 0)


def add_device(s: Any, n: int, *, facts: tuple[tuple[str, str], ...] = (), **fields: Any) -> int:
    mac, ip = f"02:00:00:00:00:{n:02x}", f"10.0.0.{n}"
    d = Device(key_mac=mac, key_ip=ip, mac=mac, ip=ip, sensor="test", first_seen=T, last_seen=T,
               created_at=T, updated_at=T, **fields)
    s.add(d)
    s.flush()
    s.add(Address(mac=mac, ip=ip, device_id=d.id, role="device", first_seen=T, last_seen=T))
    for attribute, value in facts:
        s.add(Fact(mac=mac, ip=ip, attribute=attribute, value=value, source="test", confidence=0.9,
                   first_seen=T, last_seen=T))
    return d.id


def connect(s: Any, client: int | str, server: int | str, protocol: str, port: int) -> None:
    """A connection between device numbers (or raw IPs for outside hosts)."""
    def end(x: int | str) -> tuple[str, str]:
        if isinstance(x, int):
            return f"02:00:00:00:00:{x:02x}", f"10.0.0.{x}"
        return "02:ff:ff:ff:ff:ff", x
    (cm, ci), (sm, si) = end(client), end(server)
    ids = {ip: d for ip, d in s.query(Device.ip, Device.id)}
    s.add(Connection(client_mac=cm, client_ip=ci, server_mac=sm, server_ip=si, transport="tcp",
                     server_port=port, protocol=protocol, client_device_id=ids.get(ci),
                     server_device_id=ids.get(si), first_seen=T, last_seen=T))


S7 = dict(vendor="Siemens AG", model="CPU 1214C DC/DC/DC", type="plc", device_class="OT")


def build_matching_inventory(db: str) -> dict[str, int]:
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        ids = {
            "s7_old": add_device(s, 1, firmware="V4.2.3",
                                 facts=(("order_number", "6ES7 214-1AG40-0XB0"),), **S7),
            "s7_new": add_device(s, 2, firmware="V4.6.0", **S7),
            "s7_unknown": add_device(s, 3, **S7),
            "drive": add_device(s, 4, vendor="Rockwell Automation", model="PowerFlex 525 1P 240V .5HP",
                                firmware="4.03", type="drive", device_class="OT"),
            "acme_fw20": add_device(s, 5, vendor="ACME Corp", model="EG-200 Edge Gateway",
                                    firmware="FW 20.11"),
            "acme_fw2": add_device(s, 6, vendor="Acme", model="EG-200 Edge Gateway", firmware="2.1.0.18"),
            "acme_old": add_device(s, 7, vendor="Acme", model="EG-100 Edge Gateway", firmware="1.0"),
            "other": add_device(s, 8, vendor="Contoso", model="EG-200 Edge Gateway", firmware="2.1.0.18"),
            "scalance": add_device(s, 9, vendor="Siemens", model="SCALANCE X208", firmware="V5.2"),
        }
    importer.import_files(engine, SAMPLES)
    with sessions(engine).begin() as s:
        matcher.refresh(s)
    engine.dispose()
    return ids


def by_device(db: str) -> dict[int, dict[str, dict[str, Any]]]:
    engine = open_engine(db)
    with sessions(engine)() as s:
        rows = matcher.list_matches(s)
    engine.dispose()
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["device_id"], {})[r["cve"]] = r
    return out


def test_matching_uses_vendor_model_and_firmware_ranges(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    ids = build_matching_inventory(db)
    got = by_device(db)

    old = got[ids["s7_old"]]
    # NVD: firmware < 4.5.0 on S7-1200 hardware; "Siemens AG" = CPE vendor "siemens"
    assert old["CVE-2099-0001"]["confidence"] == "firmware"
    assert old["CVE-2099-0001"]["version_check"] == "in_range"
    assert old["CVE-2099-0001"]["kev"] and old["CVE-2099-0001"]["cvss_score"] == 7.5
    assert old["CVE-2099-0001"]["remediation"].endswith("(https://cert-portal.example/ssa-000001.pdf)")
    # CSAF: the exact part is < V4.2.1 (V4.2.3 is fixed); the family entry's text can't be read
    assert old["CVE-2099-0005"]["version_check"] == "range_unparsed"
    assert old["CVE-2099-0005"]["confidence"] == "model"

    assert "CVE-2099-0001" not in got.get(ids["s7_new"], {})  # V4.6.0 is past the fix
    unknown = got[ids["s7_unknown"]]
    assert unknown["CVE-2099-0001"]["version_check"] == "firmware_unknown"
    assert unknown["CVE-2099-0005"]["confidence"] == "model"

    drive = got[ids["drive"]]["CVE-2099-0002"]
    assert (drive["confidence"], drive["kev"], drive["severity"]) == ("firmware", True, "critical")
    assert drive["remediation"] == ("Apply mitigations per vendor instructions or discontinue use "
                                    "of the product.")  # NVD names no fix: KEV's required action

    fw20 = got[ids["acme_fw20"]]["CVE-2099-0004"]  # NVD range 20.0 <= v < 20.12, firmware "FW 20.11"
    assert (fw20["source"], fw20["confidence"]) == ("nvd", "firmware")
    fw2 = got[ids["acme_fw2"]]["CVE-2099-0004"]  # CSAF range >= V2.0.0 and < V2.1.0.20
    assert (fw2["source"], fw2["confidence"]) == ("csaf", "firmware")
    assert fw2["remediation"] == "Update EG-200 to V2.1.0.20 or later. (https://acme.example/fw)"
    eol = got[ids["acme_old"]]["CVE-2099-0004"]
    assert (eol["confidence"], eol["version_check"]) == ("model", "all_versions")
    assert ids["other"] not in got  # same model name, another vendor
    assert ids["scalance"] not in got  # same vendor, another product


def test_matches_follow_identity_changes_and_keep_first_seen(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    ids = build_matching_inventory(db)
    first = by_device(db)[ids["s7_old"]]["CVE-2099-0001"]["first_matched"]
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        s.get(Device, ids["s7_old"]).firmware = "V4.2.4"  # still affected
        s.get(Device, ids["s7_new"]).firmware = "V4.4"  # now affected
        matcher.refresh(s)
    got = by_device(db)
    assert got[ids["s7_old"]]["CVE-2099-0001"]["first_matched"] == first
    assert got[ids["s7_new"]]["CVE-2099-0001"]["confidence"] == "firmware"
    with sessions(engine).begin() as s:
        s.get(Device, ids["s7_new"]).firmware = "V4.5.0"
        matcher.refresh(s)
    assert "CVE-2099-0001" not in by_device(db).get(ids["s7_new"], {})
    engine.dispose()


def test_postgresql_import_and_match(pg_url) -> None:
    ids = build_matching_inventory(pg_url)
    got = by_device(pg_url)
    assert got[ids["s7_old"]]["CVE-2099-0001"]["confidence"] == "firmware"
    assert got[ids["drive"]]["CVE-2099-0002"]["kev"]
    engine = open_engine(pg_url)
    again = importer.import_files(engine, SAMPLES)
    engine.dispose()
    assert sum(r.unchanged for r in again) == 6 and sum(r.added + r.updated for r in again) == 0


# -- recommendations and risk ---------------------------------------------------------------


def build_exposure_inventory(db: str) -> dict[str, int]:
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        ids = {
            "clean": add_device(s, 10, vendor="Dell", type="workstation", device_class="IT"),
            "mqtt_client": add_device(s, 11, facts=(("mqtt_client_id", "sensor-1"),
                                                    ("mqtt_username_present", "true"),
                                                    ("mqtt_password_cleartext", "true"))),
            "mqtt_anon": add_device(s, 12, facts=(("mqtt_client_id", "sensor-2"),)),
            "broker": add_device(s, 13),
            "opcua_none": add_device(s, 14, protocols=["opcua"], facts=(("opcua_security_mode", "None"),)),
            "opcua_ok": add_device(s, 15, protocols=["opcua"],
                                   facts=(("opcua_security_mode", "SignAndEncrypt"),)),
            "smb1": add_device(s, 16, protocols=["smb"], facts=(("smb_os", "Windows 5.1"),)),
            "smb2": add_device(s, 17, protocols=["smb"]),
            "telnet": add_device(s, 18, vendor="Moxa", type="switch", device_class="IT"),
            "snmp_agent": add_device(s, 19, facts=(("snmp_community", "public"),)),
            "snmp_manager": add_device(s, 20, facts=(("snmp_community", "public"),)),
            "ot_online": add_device(s, 21, type="plc", device_class="OT", plc_mode="stop"),
            "ot_local": add_device(s, 22, type="plc", device_class="OT", plc_mode="run"),
            "rogue": add_device(s, 23, authorized=False),
            "important": add_device(s, 24, importance="high"),
            "unimportant": add_device(s, 25, importance="low"),
        }
        connect(s, 11, 13, "mqtt", 1883)
        connect(s, 12, 13, "mqtt", 1883)
        connect(s, 20, 19, "snmp", 161)
        connect(s, 21, "8.8.8.8", "dns", 53)
        connect(s, 17, "93.184.216.34", "https", 443)  # IT: not the OT recommendation's concern
        for n in (18, 24, 25):
            connect(s, 10, n, "telnet", 23)  # the same exposure on devices of different importance
        s.add_all([
            Alert(key="a1", type="t", title="t", engine="test", severity="high", category="c",
                  status="new", dst_device_id=ids["ot_local"], first_detected=T, last_detected=T),
            Alert(key="a2", type="t", title="t", engine="test", severity="high", category="c",
                  status="closed", dst_device_id=ids["clean"], first_detected=T, last_detected=T),
        ])
    engine.dispose()
    return ids


def evaluate(db: str, weights: dict[str, Any] | None = None
             ) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        matcher.refresh(s)
    with sessions(engine)() as s:
        found = findings.gather(s)
    engine.dispose()
    recs = {r["id"]: r for r in recommendations.evaluate(found)}
    risks = {r["device_id"]: r for r in risk.device_risks(found, weights)}
    return recs, risks


def verdicts(rec: dict[str, Any]) -> tuple[set[int], set[int]]:
    return {d["device_id"] for d in rec["unhealthy"]}, {d["device_id"] for d in rec["healthy"]}


def test_recommendations_list_healthy_and_unhealthy_devices(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    ids = build_exposure_inventory(db)
    recs, _ = evaluate(db)

    bad, good = verdicts(recs["set-secure-password"])
    assert bad == {ids["mqtt_client"], ids["mqtt_anon"], ids["broker"]} and good == set()
    broker = next(d for d in recs["set-secure-password"]["unhealthy"] if d["device_id"] == ids["broker"])
    assert broker["reasons"] == ["MQTT broker accepting clear-text passwords from 10.0.0.11",
                                 "MQTT broker with clients logging in without credentials (10.0.0.12)"]

    assert verdicts(recs["opcua-security-mode"]) == ({ids["opcua_none"]}, {ids["opcua_ok"]})
    assert verdicts(recs["disable-smbv1"]) == ({ids["smb1"]}, {ids["smb2"]})
    bad, good = verdicts(recs["disable-insecure-admin-protocols"])
    assert {ids["telnet"], ids["snmp_agent"]} <= bad
    assert ids["snmp_manager"] in good  # it sends 'public', but the agent is the one to fix
    telnet = next(d for d in recs["disable-insecure-admin-protocols"]["unhealthy"]
                  if d["device_id"] == ids["telnet"])
    assert telnet["reasons"] == ["serves Telnet (port 23)"]
    # internet connectivity concerns OT devices only
    assert verdicts(recs["restrict-internet-connectivity-ot"]) == ({ids["ot_online"]}, {ids["ot_local"]})
    assert verdicts(recs["review-plc-operating-mode"]) == ({ids["ot_online"]}, {ids["ot_local"]})
    bad, good = verdicts(recs["review-unauthorized-devices"])
    assert bad == {ids["rogue"]} and len(good) == len(ids) - 1


def test_vendor_recommendations_come_from_matched_vulnerabilities(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    ids = build_matching_inventory(db)
    recs, _ = evaluate(db)
    siemens = recs["secure-vulnerable-devices:siemens"]
    assert siemens["title"] == "Secure vulnerable Siemens AG devices"
    # V4.6.0 is past the NVD fix, but the family entry's unreadable range still names its model
    assert verdicts(siemens) == ({ids["s7_old"], ids["s7_new"], ids["s7_unknown"]}, {ids["scalance"]})
    assert "known exploited: CVE-2099-0001" in siemens["unhealthy"][0]["reasons"]
    assert not any(r.startswith("secure-vulnerable-devices:contoso") for r in recs)


def test_risk_scores_weigh_vulnerabilities_exposure_alerts_and_importance(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    ids = build_exposure_inventory(db)
    _, risks = evaluate(db)
    weights = risk.load_weights()
    assert risks[ids["clean"]]["score"] == 100 and risks[ids["clean"]]["band"] == "secure"  # closed alert
    alerted = risks[ids["ot_local"]]
    assert alerted["score"] == 100 - weights["alerts"]["high"] and alerted["open_alerts"] == 1
    # the same telnet exposure costs more on an important device, less on an unimportant one
    scores = [risks[ids[k]]["score"] for k in ("important", "telnet", "unimportant")]
    assert scores[0] < scores[1] < scores[2]
    assert risks[ids["telnet"]]["score"] == 100 - weights["exposure"]["insecure_protocol"]

    db2 = str(tmp_path / "m.db")
    mids = build_matching_inventory(db2)
    _, risks2 = evaluate(db2)
    drive = risks2[mids["drive"]]  # one CVSS 9.1 KEV CVE matched on firmware
    w = weights["vulnerabilities"]
    lost = w["max"] * min(1.0, w["per_cve"] * 9.1 / 10 * w["kev_multiplier"])
    assert drive["score"] == round(100 - lost) and drive["band"] == "vulnerable"
    assert risks2[mids["s7_new"]]["score"] > risks2[mids["s7_old"]]["score"]
    for r in risks2.values():
        expected = ("secure" if r["score"] >= 90 else "needs improvement" if r["score"] >= 70
                    else "vulnerable")
        assert r["band"] == expected


def test_weights_are_configurable_and_checked(tmp_path) -> None:
    db = str(tmp_path / "m.db")
    ids = build_matching_inventory(db)
    custom = tmp_path / "weights.yaml"
    custom.write_text(yaml.safe_dump({"vulnerabilities": {"max": 0}, "bands": {"secure": 100}}))
    _, risks = evaluate(db, risk.load_weights(custom))
    assert risks[ids["drive"]]["score"] == 100 and risks[ids["drive"]]["band"] == "secure"
    bad = tmp_path / "bad.yaml"
    bad.write_text("exposure: {internet: lots}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: exposure: internet must be a number"):
        risk.load_weights(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("vulnerabilites: {max: 1}\n")
    with pytest.raises(ValueError, match="unknown setting 'vulnerabilites'"):
        risk.load_weights(unknown)


def test_site_scores(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    ids = build_exposure_inventory(db)
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        for key in ("telnet", "important"):
            s.get(Device, ids[key]).site = "north"
    engine.dispose()
    _, risks = evaluate(db)
    sites = {s["site"]: s for s in risk.site_risks(list(risks.values()))}
    north = sites["north"]
    assert north["devices"] == 2
    t, i = risks[ids["telnet"]]["score"], risks[ids["important"]]["score"]
    assert north["score"] == round((t * 2 + i * 4) / 6)  # normal weighs 2, high 4
    assert north["worst"][0]["device_id"] == ids["important"]
    assert sites[risk.UNASSIGNED_SITE]["devices"] == len(ids) - 2
