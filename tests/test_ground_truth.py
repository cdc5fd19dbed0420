"""The inventory of every real capture agrees with what tshark saw (GROUND_TRUTH.jsonl).

Every (MAC, IP) source coupling tshark reports is a device address with exactly the
frame count tshark counts — unless the MAC is a gateway, in which case the coupling is
either one of the gateway's own addresses or a remote endpoint behind it. Every MAC that
only speaks layer 2 is a device too.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from inventory_helpers import CAPTURES, analyze, devices

GROUND_TRUTH = {
    entry["file"]: entry
    for entry in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())
}


@pytest.mark.parametrize("name", sorted(GROUND_TRUTH))
def test_inventory_matches_tshark(name: str, tmp_path) -> None:
    truth = GROUND_TRUTH[name]
    [result] = analyze(tmp_path / "inv.db", CAPTURES / name)
    assert result.status == "analyzed", result.error
    assert result.packets == truth["packets"]
    assert not [w for w in result.warnings if "unsupported" in w.message]

    devs = devices(tmp_path / "inv.db")
    by_pair = {}
    gateways = {d["mac"]: d for d in devs if d["is_gateway"]}
    for d in devs:
        for a in d["addresses"]:
            by_pair[(d["mac"], a["ip"])] = a
    for pair in truth["src_pairs"]:
        key = (pair["mac"], pair["ip"])
        if pair["mac"] in gateways:
            continue  # checked by the gateway tests below
        assert key in by_pair, f"{key} missing from the inventory"
        assert by_pair[key]["packets_sent"] == pair["packets"], key
    for mac, frames in truth["macs_without_ip"].items():
        layer2 = by_pair.get((mac, None))
        assert layer2 is not None, f"layer-2-only MAC {mac} missing"
        # tshark leaves out frames from 0.0.0.0 / ::; tapwatch files them under the MAC
        assert layer2["packets_sent"] >= frames


def test_devices_are_unique_couplings(tmp_path) -> None:
    analyze(tmp_path / "inv.db", CAPTURES / "iti-ics-tools__mb2.pcap")
    devs = devices(tmp_path / "inv.db")
    keys = [(d["mac"], d["ip"]) for d in devs]
    assert len(keys) == len(set(keys))
    ips = defaultdict(list)
    for d in devs:
        for ip in d["ips"]:
            ips[(d["mac"], ip)].append(d["id"])
    assert all(len(v) == 1 for v in ips.values()), "an address belongs to one device at most"
    for d in devs:
        assert not d["ip"] or not d["ip"].startswith(("224.", "239.", "255.", "ff0")), d
        assert d["mac"] != "ff:ff:ff:ff:ff:ff"


def test_router_is_a_gateway_and_internet_hosts_are_not_its_devices(tmp_path) -> None:
    """On the IoT uplink capture the router's MAC sources many public IPs: those are remote."""
    analyze(tmp_path / "inv.db", CAPTURES / "iot-dataset__schlage-lock-01.pcap")
    devs = devices(tmp_path / "inv.db")
    router = [d for d in devs if d["mac"] == "00:1c:7f:53:d0:28"]
    assert len(router) == 1 and router[0]["is_gateway"]
    public_sources = {
        p["ip"]
        for p in GROUND_TRUTH["iot-dataset__schlage-lock-01.pcap"]["src_pairs"]
        if p["mac"] == "00:1c:7f:53:d0:28" and not p["ip"].startswith(("10.", "192.168."))
    }
    assert len(public_sources) >= 10
    all_device_ips = {ip for d in devs for ip in d["ips"]}
    assert not public_sources & all_device_ips
    # the router carries every frame its MAC sent, routed or its own
    sent = sum(
        p["packets"]
        for p in GROUND_TRUTH["iot-dataset__schlage-lock-01.pcap"]["src_pairs"]
        if p["mac"] == "00:1c:7f:53:d0:28"
    )
    assert router[0]["packets_sent"] >= sent


def test_plant_devices_are_not_gateways(tmp_path) -> None:
    analyze(tmp_path / "inv.db", CAPTURES / "iti-ics-tools__mb2.pcap")
    devs = devices(tmp_path / "inv.db")
    assert devs and not any(d["is_gateway"] for d in devs)
    assert len([d for d in devs if d["ip"] and d["ip"].startswith("141.81.0.")]) >= 30


def test_vlan_ids_are_kept(tmp_path) -> None:
    """The IoT uplink carries the router's frames in VLAN 100 (tshark: 9,133 tagged frames)."""
    analyze(tmp_path / "inv.db", CAPTURES / "iot-dataset__blink-cam-01.pcap")
    router = next(d for d in devices(tmp_path / "inv.db") if d["mac"] == "00:1c:7f:53:d0:28")
    assert router["vlans"] == [100]
    assert router["packets_sent"] == 9133
