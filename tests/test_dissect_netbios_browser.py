"""NetBIOS browser dissector: host announcements (name, OS version), workgroup announcements,
and the datagram's own source name."""

from __future__ import annotations

import json
import random
import struct

import pytest
from scapy.compat import raw
from scapy.layers.netbios import NBTDatagram
from scapy.layers.smb import (
    BRWS_HostAnnouncement,
    BRWS_LocalMasterAnnouncement,
    SMB_Header,
    SMBMailslot_Write,
)

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_BROWSER = [t["file"] for t in TRUTH if t["netbios_browser_servers"]]
SENDER = "10.0.0.9"
BROWSER_ATTRIBUTES = ("netbios_browser_server", "netbios_domain")


def datagram(data: bytes, *, source_ip: str = SENDER, mailslot: bytes = b"\\MAILSLOT\\BROWSE") -> bytes:
    """A direct-unique datagram from HOST1<00> carrying an SMB mailslot write (scapy's encoder)."""
    return raw(NBTDatagram(SourceName="HOST1", SUFFIX1=0x4141, DestinationName="WORKGROUP", SUFFIX2=0x4242,
                           SourceIP=source_ip)
               / SMB_Header() / SMBMailslot_Write(Name=mailslot, Data=data))


def host_announcement() -> bytes:
    return raw(BRWS_HostAnnouncement(ServerName="HOST1", OSVersionMajor=6, OSVersionMinor=1,
                                     Comment="lab pc"))


def browse(payload: bytes) -> Packet:
    return packet(payload, sport=138, dport=138, src_ip=SENDER, dst_ip="10.0.0.255")


def facts(payload: bytes) -> list[tuple[str, str]]:
    ev = dissect_one("netbios_browser", browse(payload))
    assert ev.errors == []
    return [(a, v) for _, a, v, _ in ev.facts]


def test_host_announcement() -> None:
    assert facts(datagram(host_announcement())) == [
        ("netbios_name", "HOST1"), ("netbios_browser_server", "HOST1"), ("os_version", "6.1")]
    local_master = raw(BRWS_LocalMasterAnnouncement(ServerName="NAS", OSVersionMajor=4, OSVersionMinor=9))
    assert facts(datagram(local_master))[1:] == [("netbios_browser_server", "NAS"), ("os_version", "4.9")]


def test_domain_announcement_and_election() -> None:
    # a domain announcement has the host announcement's layout: the name is the workgroup, the
    # "version" is the browser protocol's (not the OS's), the comment the master browser's name
    domain = b"\x0c" + raw(BRWS_HostAnnouncement(ServerName="WORKGROUP", OSVersionMajor=3, OSVersionMinor=10,
                                                 Comment="HOST1"))[1:]
    assert facts(datagram(domain))[1:] == [("netbios_domain", "WORKGROUP"),
                                           ("netbios_browser_server", "HOST1")]
    election = b"\x08\x01" + struct.pack("<III", 0x20011003, 60000, 0) + b"HOST1\x00"
    assert facts(datagram(election))[1:] == [("netbios_browser_server", "HOST1")]


def test_relayed_datagram_and_other_mailslots() -> None:
    # the header says another address sent it: the source name is not the frame sender's
    assert facts(datagram(host_announcement(), source_ip="10.0.0.50")) == [
        ("netbios_browser_server", "HOST1"), ("os_version", "6.1")]
    assert facts(datagram(host_announcement(), mailslot=b"\\MAILSLOT\\LANMAN")) == [("netbios_name", "HOST1")]


def test_malformed_datagrams() -> None:
    valid = datagram(host_announcement())
    ev = dissect_one("netbios_browser", browse(valid[:60]))
    assert ev.errors == [("src", "NetBIOS datagram of 60 bytes")]
    ev = dissect_one("netbios_browser", browse(valid[:-20]))
    assert ev.errors == [("src", "SMB transaction data outside the message")]
    short = datagram(b"\x01\x00\x00")  # a host announcement cut after 3 bytes
    ev = dissect_one("netbios_browser", browse(short))
    assert ev.errors == [("src", "browser announcement of 3 bytes")]


def test_garbage_never_raises() -> None:
    samples = [datagram(host_announcement()), datagram(b"\x08\x01" + b"\0" * 12 + b"HOST1\x00")]
    rng = random.Random(138)
    payloads = [s[:n] for s in samples for n in range(len(s))]
    payloads += [bytes(rng.randrange(256) for _ in range(rng.randrange(300))) for _ in range(300)]
    payloads += [b"\x11" + bytes(rng.randrange(256) for _ in range(rng.randrange(300))) for _ in range(100)]
    for _ in range(300):
        mutated = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        payloads.append(bytes(mutated))
    for payload in payloads:
        dissect_one("netbios_browser", browse(payload))


@pytest.mark.parametrize("name", WITH_BROWSER)
def test_real_captures_match_tshark(name: str) -> None:
    # tshark's browser.server is the host name of host / local master announcements and election
    # requests, and the workgroup name of domain announcements (reported as netbios_domain).
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "netbios_browser")
    assert not results.errors
    reported: dict[str, set[str]] = {}
    for attribute in BROWSER_ATTRIBUTES:
        for ip, values in facts_by_ip(results, attribute).items():
            reported.setdefault(ip, set()).update(values)
    for ip, servers in truth["netbios_browser_servers"].items():
        assert set(servers) <= reported.get(ip, set()), ip


# tshark 4.0.17 `-Y browser -T fields -e ip.src -e browser.command -e browser.os_major
# -e browser.os_minor`: the OS version of host (0x01) and local master (0x0f) announcements
OS_VERSIONS = {
    "iti-ics-tools__EIP-IPAddressChangeAttempt.pcap": {
        "192.168.10.21": {"5.2"}, "192.168.10.22": {"5.2"}, "192.168.10.24": {"5.2"}},
    "ndpi__1kxun.pcap": {"192.168.5.67": {"4.9"}},
    "suricata-verify__smb2-ntlmssp-negotiateflags_input.pcap": {"192.168.199.1": {"6.3"},
                                                                "192.168.199.133": {"10.0"}},
    "suricata-verify__tls-subjectaltname_input.pcap": {"192.168.100.206": {"6.1"}},
}


@pytest.mark.parametrize("name", sorted(OS_VERSIONS))
def test_real_capture_os_versions(name: str) -> None:
    results = run_capture(CAPTURES / name, "netbios_browser")
    assert dict(facts_by_ip(results, "os_version")) == OS_VERSIONS[name]
