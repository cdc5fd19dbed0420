"""CDP dissector: device ID, platform, software version, port ID and capabilities."""

from __future__ import annotations

import json
import random

import pytest
from scapy.contrib.cdp import (
    CDPAddrRecordIPv4,
    CDPMsgAddr,
    CDPMsgCapabilities,
    CDPMsgDeviceID,
    CDPMsgNativeVLAN,
    CDPMsgPlatform,
    CDPMsgPortID,
    CDPMsgSoftwareVersion,
    CDPv2_HDR,
)

from dissect_helpers import dissect_one, facts_by_mac, packet, run_capture
from inventory_helpers import CAPTURES

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_CDP = [t["file"] for t in TRUTH if t["cdp"]]


def cdp_packet(payload: bytes):
    return packet(payload, transport="", src_ip="", dst_ip="", dst_mac="01:00:0c:cc:cc:cc",
                  ethertype=0, protocol="cdp")


def phone_pdu() -> bytes:
    return bytes(CDPv2_HDR(vers=2, ttl=180, msg=[
        CDPMsgDeviceID(val=b"SEP001122334455"),
        CDPMsgSoftwareVersion(val=b"sip88xx.12-0-1MN-23\nCopyright (c) Cisco"),
        CDPMsgPlatform(val=b"Cisco IP Phone 8845"),
        CDPMsgAddr(addr=[CDPAddrRecordIPv4(addr="10.1.2.3")]),
        CDPMsgPortID(iface=b"Port 1"),
        CDPMsgCapabilities(cap=0x490),  # host, phone, two-port MAC relay
        CDPMsgNativeVLAN(vlan=10),
    ]))


def test_phone_announcement() -> None:
    ev = dissect_one("cdp", cdp_packet(phone_pdu()))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "cdp_device_id", "SEP001122334455", 0.9),
        ("src", "cdp_software_version", "sip88xx.12-0-1MN-23\nCopyright (c) Cisco", 0.9),
        ("src", "cdp_platform", "Cisco IP Phone 8845", 0.9),
        ("src", "cdp_port_id", "Port 1", 0.9),
        ("src", "cdp_capabilities", "host,phone,two-port-mac-relay", 0.9),
    ])


def test_ethernet_padding_after_the_last_tlv_is_fine() -> None:
    ev = dissect_one("cdp", cdp_packet(bytes(CDPv2_HDR(msg=[CDPMsgDeviceID(val=b"sw")])) + b"\x00" * 7))
    assert ev.errors == [] and ev.facts == [("src", "cdp_device_id", "sw", 0.9)]


@pytest.mark.parametrize("payload, reason", [
    (b"\x02\xb4", "truncated CDP header"),
    (b"\x07\xb4\x00\x00\x00\x01\x00\x06sw", "unknown CDP version"),
    (b"\x02\xb4\x00\x00\x00\x01\x00\x09sw", "bad CDP TLV length"),
    (b"\x02\xb4\x00\x00\x00\x01\x00\x02sw", "bad CDP TLV length"),
    (b"\x02\xb4\x00\x00\x00\x04\x00\x06\x00\x01", "Capabilities TLV length"),
])
def test_malformed_pdus_are_errors(payload: bytes, reason: str) -> None:
    ev = dissect_one("cdp", cdp_packet(payload))
    assert len(ev.errors) == 1 and reason in ev.errors[0][1], ev.errors


def test_truncated_and_random_payloads_never_raise() -> None:
    valid = phone_pdu()
    rng = random.Random(2000)
    payloads = [valid[:i] for i in range(len(valid))]
    payloads += [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    payloads += [b"\x02\xb4\x00\x00" + rng.randbytes(rng.randrange(0, 200)) for _ in range(200)]
    for payload in payloads:
        dissect_one("cdp", cdp_packet(payload))


@pytest.mark.parametrize("name", WITH_CDP)
def test_real_captures_match_tshark(name: str) -> None:
    """tshark's cdp.deviceid, cdp.platform, cdp.portid and cdp.software_version values are facts
    of the frame's source MAC."""
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "cdp")
    assert not results.errors
    for entry in truth["cdp"]:
        mac = entry["src_mac"]
        assert entry["device_id"] in facts_by_mac(results, "cdp_device_id")[mac]
        assert entry["platform"] in facts_by_mac(results, "cdp_platform")[mac]
        assert entry["port_id"] in facts_by_mac(results, "cdp_port_id")[mac]
        # tshark shows the Software Version TLV as one cdp.software_version item per line and
        # ground_truth.py keeps the first; the dissector reports the whole TLV text (as on the
        # wire, e.g. "Cisco IOS Software, ... (fc1)\nCopyright (c) ...\nCompiled ..."), so the
        # ground-truth value is the first line of that fact.
        versions = facts_by_mac(results, "cdp_software_version")[mac]
        assert entry["software_version"] in {v.splitlines()[0] for v in versions}
        assert any(len(v.splitlines()) == 3 for v in versions)
