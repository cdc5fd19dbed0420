"""SNMP dissector: community strings, and sysDescr / sysObjectID / sysName from agents."""

from __future__ import annotations

import json
import random

import pytest
from scapy.asn1.asn1 import ASN1_NULL, ASN1_OID, ASN1_STRING, ASN1_TIME_TICKS
from scapy.layers.snmp import (
    SNMP,
    SNMPget,
    SNMPresponse,
    SNMPset,
    SNMPtrapv1,
    SNMPtrapv2,
    SNMPvarbind,
)

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.snmp import Malformed, oid_text

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_SYSDESCR = [t["file"] for t in TRUTH if t["snmp_sysdescr"]]

SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME = (f"1.3.6.1.2.1.1.{i}.0" for i in (1, 2, 3, 5))


def varbind(oid: str, value) -> SNMPvarbind:
    return SNMPvarbind(oid=ASN1_OID(oid), value=value)


def from_agent(payload: bytes):
    return packet(payload, sport=161, dport=40000, src_ip="10.0.0.161", dst_ip="10.0.0.9")


def agent_response() -> bytes:
    return bytes(SNMP(version=1, community=b"private", PDU=SNMPresponse(id=7, varbindlist=[
        varbind(SYS_DESCR, ASN1_STRING(b"Acme RTU-7 firmware 3.2\x00")),
        varbind(SYS_OBJECT_ID, ASN1_OID("1.3.6.1.4.1.99999.1.2")),
        varbind(SYS_UPTIME, ASN1_TIME_TICKS(1234)),
        varbind(SYS_NAME, ASN1_STRING(b"rtu-7")),
    ])))


def test_get_response_identifies_the_agent() -> None:
    ev = dissect_one("snmp", from_agent(agent_response()))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "snmp_community", "private", 0.9),
        ("src", "snmp_sysdescr", "Acme RTU-7 firmware 3.2", 0.9),  # trailing NUL dropped
        ("src", "snmp_sysobjectid", "1.3.6.1.4.1.99999.1.2", 0.9),
        ("src", "snmp_sysname", "rtu-7", 0.9),
    ])


def test_request_gives_only_the_managers_community() -> None:
    request = SNMP(version=0, community=b"public", PDU=SNMPget(id=1, varbindlist=[
        varbind(SYS_DESCR, ASN1_NULL(0)), varbind(SYS_NAME, ASN1_NULL(0))]))
    ev = dissect_one("snmp", packet(bytes(request), sport=40000, dport=161))
    assert ev.errors == [] and ev.facts == [("src", "snmp_community", "public", 0.9)]


def test_traps() -> None:
    v1 = SNMP(version=0, community=b"traps", PDU=SNMPtrapv1(
        enterprise=ASN1_OID("1.3.6.1.4.1.9"), agent_addr="10.0.0.161", generic_trap=6, specific_trap=1,
        time_stamp=ASN1_TIME_TICKS(5), varbindlist=[varbind(SYS_DESCR, ASN1_STRING(b"Acme PLC"))]))
    ev = dissect_one("snmp", packet(bytes(v1), sport=40000, dport=162))
    assert ev.errors == []
    assert sorted(ev.facts) == [("src", "snmp_community", "traps", 0.9),
                                ("src", "snmp_sysdescr", "Acme PLC", 0.9)]
    v2 = SNMP(version=1, community=b"traps", PDU=SNMPtrapv2(id=3, varbindlist=[
        varbind(SYS_UPTIME, ASN1_TIME_TICKS(5)), varbind(SYS_NAME, ASN1_STRING(b"plc-3"))]))
    ev = dissect_one("snmp", packet(bytes(v2), sport=40000, dport=162))
    assert ev.errors == []
    assert ("src", "snmp_sysname", "plc-3", 0.9) in ev.facts


def test_set_request_names_the_receiver_weakly() -> None:
    request = SNMP(version=1, community=b"rw", PDU=SNMPset(id=1, varbindlist=[
        varbind(SYS_NAME, ASN1_STRING(b"new-name"))]))
    ev = dissect_one("snmp", packet(bytes(request), sport=40000, dport=161))
    assert sorted(ev.facts) == [("dst", "snmp_sysname", "new-name", 0.3),
                                ("src", "snmp_community", "rw", 0.9)]


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag, len(value)]) + value


def test_snmpv3_and_other_protocols_are_left_alone() -> None:
    # SNMPv3 (RFC 3412): version 3, msgGlobalData, msgSecurityParameters, encrypted scopedPDU
    header = tlv(0x30, tlv(2, b"\x01") + tlv(2, b"\x05\xdc") + tlv(4, b"\x07") + tlv(2, b"\x03"))
    v3 = tlv(0x30, tlv(2, b"\x03") + header + tlv(4, b"usm") + tlv(4, bytes(24)))
    for payload in (v3, b"GET / HTTP/1.1\r\n\r\n", b"\x00\x01\x02"):
        ev = dissect_one("snmp", packet(payload, dport=161))
        assert ev.facts == [] and ev.errors == [], payload


@pytest.mark.parametrize("payload, reason", [
    (bytes.fromhex("3008" "020101" "040170"), "BER element longer"),
    (bytes.fromhex("3008" "020105" "040170" "a000"), "unknown version"),
    (bytes.fromhex("3008" "020101" "040170" "b000"), "unknown PDU type"),
    (bytes.fromhex("3080" "020101"), "indefinite"),
    (bytes.fromhex("300a" "020101" "040170" "a204" "0201"), "BER element longer"),
    (bytes.fromhex("3008" "040101" "040170" "a000"), "expected version"),
])
def test_malformed_messages_are_errors(payload: bytes, reason: str) -> None:
    ev = dissect_one("snmp", from_agent(payload))
    assert len(ev.errors) == 1 and reason in ev.errors[0][1], ev.errors


def test_oid_text() -> None:
    assert oid_text(bytes.fromhex("2b0601020101")) == "1.3.6.1.2.1.1"
    assert oid_text(bytes.fromhex("883703")) == "2.999.3"  # X.690 8.19.5 example
    assert oid_text(bytes.fromhex("01")) == "0.1"
    for bad in (b"", b"\x2b\x86", b"\x81" * 300):
        with pytest.raises(Malformed):
            oid_text(bad)


def test_truncated_and_random_payloads_never_raise() -> None:
    valid = agent_response()
    for i in range(1, len(valid)):  # every cut-short message is reported, none raises
        assert dissect_one("snmp", from_agent(valid[:i])).errors, i
    rng = random.Random(161)
    payloads = [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    payloads += [b"\x30" + rng.randbytes(rng.randrange(0, 200)) for _ in range(300)]
    # random mutations of a valid message reach every branch of the BER reader
    for _ in range(300):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        payloads.append(bytes(mutated))
    for payload in payloads:
        dissect_one("snmp", from_agent(payload))


@pytest.mark.parametrize("name", WITH_SYSDESCR)
def test_real_captures_match_tshark(name: str) -> None:
    """Every sysDescr.0 value tshark decodes (snmp.value.octets of varbinds named
    1.3.6.1.2.1.1.1.0) is an snmp_sysdescr fact of the sender's IP."""
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "snmp")
    assert not results.errors
    found = facts_by_ip(results, "snmp_sysdescr")
    for ip, values in truth["snmp_sysdescr"].items():
        assert set(values) <= found.get(ip, set()), ip


def test_sysname_and_sysobjectid_match_tshark() -> None:
    """Values checked by hand with `tshark -Y 'snmp.name == 1.3.6.1.2.1.1.5.0 or snmp.name ==
    1.3.6.1.2.1.1.2.0' -e ip.src -e snmp.name -e snmp.value.oid -e snmp.value.octets`: the
    agent 172.31.19.73 answers sysName "B6300" (hex 4236333030) and sysObjectID
    1.3.6.1.4.1.2001.1.1.1.297.93.1.27.2.2.1; 172.31.19.54 answers both with NULL values."""
    results = run_capture(CAPTURES / "zeek__snmpv1_get.pcap", "snmp")
    assert not results.errors
    assert facts_by_ip(results, "snmp_sysname") == {"172.31.19.73": {"B6300"}}
    assert facts_by_ip(results, "snmp_sysobjectid") == {
        "172.31.19.73": {"1.3.6.1.4.1.2001.1.1.1.297.93.1.27.2.2.1"}}
    assert facts_by_ip(results, "snmp_community") == {"172.31.19.73": {"public"},
                                                      "172.31.19.54": {"public"}}
    walk = run_capture(CAPTURES / "zeek__snmpwalk-short.pcap", "snmp")
    # tshark: the walked agent 138.68.10.203 answers sysName.0 and sysObjectID.0 as well
    assert facts_by_ip(walk, "snmp_sysname") == {"138.68.10.203": {"ubuntu-512mb-sfo2-01"}}
    assert facts_by_ip(walk, "snmp_sysobjectid") == {"138.68.10.203": {"1.3.6.1.4.1.8072.3.2.10"}}
