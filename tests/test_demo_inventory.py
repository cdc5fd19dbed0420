"""`tapwatch demo`'s example site is identified: each device that announces itself on the
wire (LLDP/CDP, mDNS/IPP, SSDP, SIP/CDP, Modbus 43/14, S7 SZL, ENIP List Identity, BACnet)
gets its type, vendor and model; the engineering workstation's download and the intruder's
PLC stop are events; and after the learning period the incident raises exactly its alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from detect_helpers import alerts, run
from inventory_helpers import devices, events
from tapwatch.demo import DEMO_DEVICES, DEMO_LEARNING, build_demo_capture

INTRUDER = "10.20.0.166"

TYPE_OF_ROLE = {"camera": "ip_camera", "phone": "voip_phone"}
ANNOUNCED = ["gateway", "switch", "printer", "camera", "phone", "plc", "hmi", "s7-plc",
             "eng-tia01", "drive", "bms"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("demo")
    capture = build_demo_capture(d / "site.pcap")
    run(d / "inv.db", capture, learn_for=timedelta(seconds=DEMO_LEARNING))
    return {"devices": {x["ip"]: x for x in devices(d / "inv.db")}, "events": events(d / "inv.db"),
            "alerts": alerts(d / "inv.db")}


@pytest.mark.parametrize("name", ANNOUNCED)
def test_type_vendor_and_model(site: dict, name: str) -> None:
    spec = next(d for d in DEMO_DEVICES if d["name"] == name)
    dev = site["devices"][spec["ip"]]
    assert dev["mac"] == spec["mac"]
    assert dev["type"] == TYPE_OF_ROLE.get(spec["role"], spec["role"])
    assert dev["vendor"].startswith(str(spec["vendor"]).split()[0])
    if spec["model"] and name != "plc":  # the Modicon states a product code, not a model
        assert dev["model"] == spec["model"]


def test_every_demo_host_is_one_device(site: dict) -> None:
    assert {d["ip"] for d in DEMO_DEVICES} == set(site["devices"])


def test_s7_plc_details_and_what_was_done_to_it(site: dict) -> None:
    plc = site["devices"]["10.20.0.60"]
    assert (plc["firmware"], plc["rack_slot"], plc["plc_mode"], plc["purdue_level"]) == (
        "V4.2.3", "0/1", "stop", 1)
    assert plc["os"] is None  # no OS guessed for a controller from its TCP stack alone
    done = [(e["type"], e["source"]["ip"], e["destination"]["ip"]) for e in site["events"]
            if e["destination"]["ip"] == "10.20.0.60" or e["source"]["ip"] == "10.20.0.60"]
    assert ("program_download", "10.20.0.105", "10.20.0.60") in done
    assert ("plc_stop", INTRUDER, "10.20.0.60") in done
    assert ("mode_change", "10.20.0.60", INTRUDER) in done


def test_the_incident_after_learning_raises_its_alerts_and_nothing_else(site: dict) -> None:
    found = {(a["type"], a["source"]["ip"] or a["source"]["mac"], (a["destination"] or {}).get("ip"))
             for a in site["alerts"]}
    intruder_mac = next(d["mac"] for d in DEMO_DEVICES if d["name"] == "intruder")
    assert found == {
        ("new_device", INTRUDER, None),
        ("arp_scan", intruder_mac, None),  # ARP carries no IP of the sweeper's choosing
        ("port_scan", INTRUDER, "10.20.0.60"),
        ("plc_stop", INTRUDER, "10.20.0.60"),
        ("plc_mode_change", "10.20.0.60", INTRUDER),
    }
    # the download during learning made ENG-TIA01 a programming device: no alert for it
    tia = site["devices"]["10.20.0.105"]
    assert tia["programming_device"] and tia["authorized"] and not tia["new"]
    intruder = site["devices"][INTRUDER]
    assert intruder["new"] and not intruder["authorized"]
    scan = next(a for a in site["alerts"] if a["type"] == "arp_scan")
    assert scan["count"] == 253  # every other address of the /24
