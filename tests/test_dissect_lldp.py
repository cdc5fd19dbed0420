"""LLDP dissector: chassis/port IDs, system name/description, capabilities, management address."""

from __future__ import annotations

import json
import random
import socket

import pytest
from scapy.config import conf
from scapy.contrib.lldp import (
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUGenericOrganisationSpecific,
    LLDPDUManagementAddress,
    LLDPDUPortID,
    LLDPDUSystemCapabilities,
    LLDPDUSystemDescription,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)

from dissect_helpers import dissect_one, facts_by_mac, packet, run_capture
from inventory_helpers import CAPTURES

conf.contribs["LLDP"].strict_mode_disable()  # build LLDPDUs without an Ethernet layer

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_LLDP = [t["file"] for t in TRUTH if t["lldp"]]


def lldp_packet(payload: bytes):
    return packet(payload, transport="", src_ip="", dst_ip="", dst_mac="01:80:c2:00:00:0e",
                  ethertype=0x88CC, protocol="lldp")


def switch_lldpdu() -> bytes:
    return bytes(
        LLDPDUChassisID(subtype=4, id="00:11:22:33:44:55")
        / LLDPDUPortID(subtype=5, id="Gi0/1")
        / LLDPDUTimeToLive(ttl=120)
        / LLDPDUSystemName(system_name="sw1.example.net")
        / LLDPDUSystemDescription(description="Acme SwitchOS 1.2\nbuild 7")
        / LLDPDUSystemCapabilities(mac_bridge_available=1, router_available=1, telephone_available=1,
                                   mac_bridge_enabled=1, router_enabled=1)
        / LLDPDUManagementAddress(management_address_subtype=1,
                                  management_address=socket.inet_aton("192.0.2.1"),
                                  interface_numbering_subtype=2, interface_number=1)
        / LLDPDUManagementAddress(management_address_subtype=2,
                                  management_address=socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                                  interface_numbering_subtype=2, interface_number=1)
        / LLDPDUEndOfLLDPDU()
    )


def test_switch_announcement() -> None:
    ev = dissect_one("lldp", lldp_packet(switch_lldpdu()))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "lldp_chassis_id", "00:11:22:33:44:55", 0.9),
        ("src", "lldp_port_id", "Gi0/1", 0.9),
        ("src", "lldp_system_name", "sw1.example.net", 0.9),
        ("src", "lldp_system_description", "Acme SwitchOS 1.2\nbuild 7", 0.9),
        ("src", "lldp_capabilities", "bridge,router", 0.9),  # enabled ones only
        ("src", "lldp_management_ip", "192.0.2.1", 0.8),
        ("src", "lldp_management_ip", "2001:db8::1", 0.8),
    ])


def test_other_id_subtypes_and_med_inventory() -> None:
    payload = bytes(
        LLDPDUChassisID(subtype=7, id=b"plc-17")  # locally assigned
        / LLDPDUPortID(subtype=3, id="00:0e:8c:00:00:01")  # MAC address
        / LLDPDUTimeToLive(ttl=20)
        / LLDPDUGenericOrganisationSpecific(org_code=0x0012BB, subtype=9, data=b"Acme Phones")
        / LLDPDUGenericOrganisationSpecific(org_code=0x0012BB, subtype=10, data=b"P-100")
        / LLDPDUGenericOrganisationSpecific(org_code=0x0012BB, subtype=8, data=b"SN123")
        / LLDPDUGenericOrganisationSpecific(org_code=0x0012BB, subtype=6, data=b"fw 2.1")
        / LLDPDUGenericOrganisationSpecific(org_code=0x000ECF, subtype=2, data=b"ignored PROFINET")
        / LLDPDUEndOfLLDPDU()
    )
    ev = dissect_one("lldp", lldp_packet(payload + b"\x00" * 10))  # Ethernet padding after End
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "lldp_chassis_id", "plc-17", 0.9),
        ("src", "lldp_port_id", "00:0e:8c:00:00:01", 0.9),
        ("src", "vendor", "Acme Phones", 0.8),
        ("src", "model", "P-100", 0.8),
        ("src", "serial", "SN123", 0.8),
        ("src", "firmware", "fw 2.1", 0.8),
    ])


def test_network_address_chassis_id() -> None:
    payload = bytes.fromhex("0206" "05" "01" "0a000007" "0000")  # subtype 5, IANA family 1 (IPv4)
    assert dissect_one("lldp", lldp_packet(payload)).facts == [("src", "lldp_chassis_id", "10.0.0.7", 0.9)]


@pytest.mark.parametrize("payload, reason", [
    (bytes.fromhex("0207040011223344"), "longer than the frame"),
    (bytes.fromhex("0406054769302f31"), "does not start with a Chassis ID"),
    (bytes.fromhex("020704001122334455" "0e03001400"), "Capabilities TLV length"),
    (bytes.fromhex("020704001122334455" "1002" "0701"), "Management Address length"),
])
def test_malformed_lldpdus_are_errors(payload: bytes, reason: str) -> None:
    ev = dissect_one("lldp", lldp_packet(payload))
    assert len(ev.errors) == 1 and reason in ev.errors[0][1], ev.errors


def test_truncated_and_random_payloads_never_raise() -> None:
    valid = switch_lldpdu()
    rng = random.Random(8021)
    payloads = [valid[:i] for i in range(len(valid))]
    payloads += [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    payloads += [b"\x02\x07\x04" + rng.randbytes(rng.randrange(0, 200)) for _ in range(200)]
    for payload in payloads:
        dissect_one("lldp", lldp_packet(payload))


@pytest.mark.parametrize("name", WITH_LLDP)
def test_real_captures_match_tshark(name: str) -> None:
    """Every value of tshark's lldp.chassis.id.mac, lldp.port.id, lldp.tlv.system.name,
    lldp.tlv.system.desc and lldp.mgn.addr.ip4 is a fact of the frame's source MAC."""
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "lldp")
    assert not results.errors
    fields = {"chassis_mac": "lldp_chassis_id", "port_id": "lldp_port_id",
              "system_name": "lldp_system_name", "system_desc": "lldp_system_description",
              "mgmt_ipv4": "lldp_management_ip"}
    for entry in truth["lldp"]:
        for field, attribute in fields.items():
            if entry[field] is not None:
                assert entry[field] in facts_by_mac(results, attribute)[entry["src_mac"]], (entry, field)
