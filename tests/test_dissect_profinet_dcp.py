"""PROFINET DCP dissector: station name, type of station, vendor/device ID, role; Set requests."""

from __future__ import annotations

import json
import random
import struct

import pytest

from dissect_helpers import dissect_one, facts_by_mac, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.base import Evidence

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_DCP = sorted(name for name, t in TRUTH.items() if t.get("profinet_dcp"))


def block(option: int, suboption: int, data: bytes, prefix: bytes = b"\x00\x00") -> bytes:
    body = prefix + data
    return struct.pack(">BBH", option, suboption, len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def filter_block(option: int, suboption: int, data: bytes) -> bytes:
    return block(option, suboption, data, prefix=b"")


def dcp(frame_id: int, service: int, service_type: int, blocks: bytes) -> bytes:
    return struct.pack(">HBBIHH", frame_id, service, service_type, 0x1234, 0, len(blocks)) + blocks


def dissect(payload: bytes, dst_mac: str = "01:0e:cf:00:00:00") -> Evidence:
    return dissect_one("profinet_dcp", packet(payload, transport="", src_ip="", dst_ip="", dst_mac=dst_mac,
                                              ethertype=0x8892, protocol="profinet"))


IDENTIFY_RESPONSE = dcp(0xFEFF, 5, 1, block(2, 2, b"plc-line-1") + block(2, 1, b"S7-1200")
                        + block(2, 3, b"\x00\x2a\x01\x0d") + block(2, 4, b"\x02\x00")
                        + block(1, 2, bytes([192, 168, 0, 10, 255, 255, 255, 0, 192, 168, 0, 1]))
                        + block(6, 1, b"\x00\x01"))


def test_identify_response() -> None:
    ev = dissect(IDENTIFY_RESPONSE, dst_mac="00:1b:1b:00:00:01")
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "profinet_station_name", "plc-line-1", 0.9),
        ("src", "model", "S7-1200", 0.8),
        ("src", "profinet_vendor_id", "0x002a", 0.9),
        ("src", "profinet_device_id", "0x010d", 0.9),
        ("src", "profinet_role", "IO-Controller", 0.8),
    ])


def test_hello_and_roles() -> None:
    hello = dcp(0xFEFC, 6, 0, block(2, 2, b"et200sp-3") + block(2, 4, b"\x05\x00"))
    assert sorted(dissect(hello).facts) == [("src", "profinet_role", "IO-Device,IO-Multidevice", 0.8),
                                            ("src", "profinet_station_name", "et200sp-3", 0.9)]


def test_identify_request_names_the_station_looked_for() -> None:
    request = dcp(0xFEFE, 5, 0, filter_block(2, 2, b"switch3") + filter_block(2, 1, b"SCALANCE"))
    assert dissect(request).facts == [("src", "profinet_station_name", "switch3", 0.3)]
    assert dissect(dcp(0xFEFE, 5, 0, filter_block(0xFF, 0xFF, b""))).facts == []  # identify all


def test_set_requests_are_config_writes() -> None:
    set_name = dcp(0xFEFD, 4, 0, block(5, 1, b"") + block(2, 2, b"new-name", prefix=b"\x00\x01")
                   + block(5, 2, b""))
    ev = dissect(set_name, dst_mac="00:1b:1b:00:00:01")
    assert ev.events == [("src", "config_write", {"service": "dcp-set", "what": "name-of-station",
                                                  "value": "new-name"})]
    suite = bytes([10, 0, 0, 5, 255, 0, 0, 0, 10, 0, 0, 1])
    set_ip = dcp(0xFEFD, 4, 0, block(1, 2, suite, prefix=b"\x00\x01"))
    assert dissect(set_ip).events == [("src", "config_write", {"service": "dcp-set", "what": "ip-parameter",
                                                               "ip": "10.0.0.5", "netmask": "255.0.0.0",
                                                               "gateway": "10.0.0.1"})]
    reset = dcp(0xFEFD, 4, 0, block(5, 6, b"\x00\x02"))
    assert dissect(reset).events == [("src", "device_reset", {"service": "dcp-set", "what": "factory-reset"})]
    signal = dcp(0xFEFD, 4, 0, block(5, 3, b"\x01\x00"))
    assert dissect(signal).events == []
    assert dissect(dcp(0xFEFD, 4, 1, block(5, 4, b"\x02\x02\x00"))).events == []  # Set response


def test_other_frames_and_errors() -> None:
    assert dissect(b"\x80\x00" + bytes(40)).facts == []  # cyclic RT data
    assert dissect(b"\x80\x00" + bytes(40)).errors == []
    assert dissect(b"\xfe").errors == [("src", "PROFINET frame without a frame ID")]
    assert dissect(IDENTIFY_RESPONSE[:8]).errors == [("src", "truncated DCP header")]
    assert dissect(IDENTIFY_RESPONSE[:30]).errors[0][1].startswith("DCP data length")
    bad = dcp(0xFEFF, 5, 1, b"\x02\x02\x00\x40abc")
    assert dissect(bad).errors == [("src", "DCP block 2/2 longer than the data")]
    # Ethernet padding after the blocks is not an error
    assert dissect(IDENTIFY_RESPONSE + bytes(10)).errors == []


def test_garbage_never_raises() -> None:
    rng = random.Random(0x8892)
    samples = [IDENTIFY_RESPONSE[:n] for n in range(len(IDENTIFY_RESPONSE) + 1)]
    for frame_id, service, stype in ((0xFEFF, 5, 1), (0xFEFE, 5, 0), (0xFEFD, 4, 0), (0xFEFC, 6, 0)):
        for _ in range(75):
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
            samples.append(dcp(frame_id, service, stype, blob))
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))) for _ in range(200)]
    for sample in samples:
        dissect(sample)


@pytest.mark.parametrize("name", WITH_DCP)
def test_real_captures_match_tshark(name: str) -> None:
    """Every (sender MAC, NameOfStation, DeviceVendorValue, VendorID, DeviceID) tshark reports.

    Most rows are Identify requests filtered by NameOfStation (tshark reads the filter as the
    sender's pn_dcp.suboption_device_nameofstation): reported with confidence 0.3, see the module.
    """
    results = run_capture(CAPTURES / name, "profinet_dcp")
    names, models = facts_by_mac(results, "profinet_station_name"), facts_by_mac(results, "model")
    vendors = facts_by_mac(results, "profinet_vendor_id")
    devices = facts_by_mac(results, "profinet_device_id")
    for row in TRUTH[name]["profinet_dcp"]:
        mac = row["src_mac"]
        for value, ours in ((row["name_of_station"], names), (row["vendor_value"], models),
                            (row["vendor_id"], vendors), (row["device_id"], devices)):
            if value is not None:
                assert value in ours.get(mac, set()), (mac, value)
    assert results.errors == {}
