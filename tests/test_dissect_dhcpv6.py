"""DHCPv6 dissector: a client's DUID, vendor class, user class and FQDN; a server's own DUID."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.dhcp6 import (
    DUID_LL,
    DUID_LLT,
    USER_CLASS_DATA,
    VENDOR_CLASS_DATA,
    DHCP6_RelayForward,
    DHCP6_Reply,
    DHCP6_Solicit,
    DHCP6OptClientFQDN,
    DHCP6OptClientId,
    DHCP6OptRelayMsg,
    DHCP6OptServerId,
    DHCP6OptUserClass,
    DHCP6OptVendorClass,
)

from dissect_helpers import dissect_one, facts_by_ip, hostile_payloads, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

DUID = DUID_LLT(lladdr="02:00:00:00:00:01", timeval=0x20000000)
DUID_HEX = "0001000120000000020000000001"


def solicit() -> bytes:
    return raw(DHCP6_Solicit(trid=0x1234) / DHCP6OptClientId(duid=DUID)
               / DHCP6OptVendorClass(enterprisenum=311, vcdata=[VENDOR_CLASS_DATA(data=b"MSFT 5.0")])
               / DHCP6OptClientFQDN(flags=0, fqdn="pc1.corp.example.")
               / DHCP6OptUserClass(userclassdata=[USER_CLASS_DATA(data=b"lab")]))


def v6(payload: bytes, sport: int = 546, dport: int = 547) -> Packet:
    return packet(payload, sport=sport, dport=dport, src_ip="fe80::1", dst_ip="ff02::1:2", ethertype=0x86DD)


def test_client_solicit() -> None:
    ev = dissect_one("dhcpv6", v6(solicit()))
    assert ev.errors == []
    assert ev.facts == [
        ("src", "dhcpv6_duid", DUID_HEX, 0.8),
        ("src", "dhcpv6_vendor_class", "MSFT 5.0", 0.8),
        ("src", "fqdn", "pc1.corp.example", 0.8),  # the root label's trailing dot is not kept
        ("src", "dhcp_user_class", "lab", 0.7),
    ]


def test_server_reports_only_its_own_duid() -> None:
    reply = raw(DHCP6_Reply(trid=0x1234) / DHCP6OptServerId(duid=DUID_LL(lladdr="02:00:00:00:00:fe"))
                / DHCP6OptClientId(duid=DUID))
    assert dissect_one("dhcpv6", v6(reply, 547, 546)).facts == [
        ("src", "dhcpv6_duid", "000300010200000000fe", 0.7)]


def test_relayed_messages_are_skipped() -> None:
    relayed = raw(DHCP6_RelayForward(linkaddr="2001:db8::1", peeraddr="fe80::1")
                  / DHCP6OptRelayMsg(message=DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID)))
    assert dissect_one("dhcpv6", v6(relayed, 547, 547)).facts == []


def test_truncated_option_is_an_error() -> None:
    ev = dissect_one("dhcpv6", v6(solicit()[:-2]))
    assert ("src", "dhcpv6_duid", DUID_HEX, 0.8) in ev.facts
    assert ev.errors == [("src", "DHCPv6 option 15 runs past the end of the message")]


def test_garbage_never_raises() -> None:
    valid = solicit()
    payloads = hostile_payloads(valid, seed=546, max_len=120)
    for payload in payloads:
        dissect_one("dhcpv6", v6(payload))
        dissect_one("dhcpv6", v6(payload, 547, 546))


# GROUND_TRUTH.jsonl has no DHCPv6 fields. These are what tshark 4.0.17 prints for
#   tshark -r FILE -Y dhcpv6 -T fields -e ipv6.src -e dhcpv6.msgtype -e dhcpv6.duid.bytes
#          -e dhcpv6.vendorclass.data -e dhcpv6.client_domain
# (client messages; dhcpv6.client_domain shows a trailing "." for a fully qualified name,
# which the fact leaves out). Every client message in these files is listed.
TSHARK = {
    "icsnpp-profinet-io-cm__profinet_io_cm_mixed_1.pcap": {
        "fe80::14ea:3851:8243:3893": {("dhcpv6_duid", "0001000118eced2c00a0456dd344"),
                                      ("dhcpv6_vendor_class", "MSFT 5.0"), ("fqdn", "kw-VLIPC")},
        "fe80::8132:2f4e:e1e2:d82b": {("dhcpv6_duid", "0001000117e2a5f3e4115b5ad973"),
                                      ("dhcpv6_vendor_class", "MSFT 5.0"),
                                      ("fqdn", "LT-US-DSWANSON.americas.phoenixcontact.com")},
    },
    "iti-ics-tools__addroute.pcapng": {
        "fe80::d1d9:a23d:f71d:9f1a": {("dhcpv6_duid", "000100011e718f3400215cc305be"),
                                      ("dhcpv6_vendor_class", "MSFT 5.0"), ("fqdn", "ShenhuaJ6-PC")},
    },
    "ndpi__1kxun.pcap": {
        "fe80::406:55a8:6453:25dd": {("dhcpv6_duid", "000100011db8e6fb703eacf0f007")},
        "fe80::beee:7bff:fe0c:b3de": {("dhcpv6_duid", "000100011ae7386b2697719169a3")},
        "fe80::f65c:89ff:fe89:e607": {("dhcpv6_duid", "000100011ea37b92f45c8989e607")},
    },
    "suricata-verify__smb2-ntlmssp-negotiateflags_input.pcap": {
        "fe80::31cb:26de:c5bb:c367": {("dhcpv6_duid", "000100011f2a1f0e000c2903dfad"),
                                      ("dhcpv6_vendor_class", "MSFT 5.0"), ("fqdn", "DESKTOP-2AEFM7G")},
        "fe80::65b5:3a97:92d1:9199": {("dhcpv6_duid", "000100011f0c78b5000c2961f55f"),
                                      ("dhcpv6_vendor_class", "MSFT 5.0"), ("fqdn", "DESKTOP-V1FA0UQ")},
        "fe80::78da:c04d:12da:8a08": {("dhcpv6_duid", "0001000118659849b888e3ab8379"),
                                      ("dhcpv6_vendor_class", "MSFT 5.0"), ("fqdn", "SCV")},
    },
    "tcpdump__dhcpv6-ia-na.pcap": {
        "fe80::201:2ff:fe03:405": {("dhcpv6_duid", "00030001000102030405")},  # the client
        "fe80::211:22ff:fe33:4455": {("dhcpv6_duid", "000100011846488c001122334455")},  # server id
    },
}


@pytest.mark.parametrize("name", sorted(TSHARK))
def test_real_captures_match_tshark(name: str) -> None:
    results = run_capture(CAPTURES / name, "dhcpv6")
    assert not results.errors
    got = {attr: facts_by_ip(results, attr) for attr in ("dhcpv6_duid", "dhcpv6_vendor_class", "fqdn")}
    for ip, expected in TSHARK[name].items():
        assert expected == {(attr, v) for attr, by_ip in got.items() for v in by_ip.get(ip, ())}, ip
