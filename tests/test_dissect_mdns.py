"""mDNS dissector: the names, services and TXT values a responder announces about itself."""

from __future__ import annotations

import json

import pytest
from scapy.compat import raw
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT, DNSRRSRV

from dissect_helpers import dissect_one, facts_by_ip, hostile_payloads, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_MDNS = [t["file"] for t in TRUTH if t["mdns_response_names"]]
MDNS_ATTRIBUTES = ("mdns_name", "mdns_service")


def mdns(payload: bytes) -> Packet:
    return packet(payload, sport=5353, dport=5353, src_ip="10.0.0.9", dst_ip="224.0.0.251")


def announcement() -> bytes:
    """What a printer sends when it comes up: host, reverse mapping, service and its TXT."""
    return raw(DNS(id=0, qr=1, aa=1, an=[
        DNSRR(rrname="npi-1.local", type="A", rdata="10.0.0.9", rclass=0x8001),
        DNSRR(rrname="npi-1.local", type="AAAA", rdata="fe80::9"),
        DNSRR(rrname="9.0.0.10.in-addr.arpa", type="PTR", rdata="npi-1.local"),
        DNSRR(rrname="_services._dns-sd._udp.local", type="PTR", rdata="_ipp._tcp.local"),
        DNSRR(rrname="_ipp._tcp.local", type="PTR", rdata="HP LaserJet 400._ipp._tcp.local"),
        DNSRRSRV(rrname="HP LaserJet 400._ipp._tcp.local", target="npi-1.local", port=631),
        DNSRR(rrname="HP LaserJet 400._ipp._tcp.local", type="TXT",
              rdata=[b"txtvers=1", b"ty=HP LaserJet 400 M401dne", b"usb_MFG=Hewlett-Packard", b"Color=F",
                     b"=ignored", b""]),
    ], ar=[DNSRROPT()]))


def test_response_names_services_and_txt() -> None:
    ev = dissect_one("mdns", mdns(announcement()))
    assert ev.errors == []
    assert ev.facts == [
        ("src", "mdns_name", "npi-1.local", 0.7),  # reverse-mapping owner and OPT root: nothing
        ("src", "mdns_service", "_services._dns-sd._udp.local", 0.7),
        ("src", "mdns_service", "_ipp._tcp.local", 0.7),
        ("src", "mdns_service", "HP LaserJet 400._ipp._tcp.local", 0.7),
        ("src", "mdns_txt", "txtvers=1", 0.6),
        ("src", "mdns_txt", "ty=HP LaserJet 400 M401dne", 0.6),
        ("src", "model", "HP LaserJet 400 M401dne", 0.6),
        ("src", "mdns_txt", "usb_MFG=Hewlett-Packard", 0.6),
        ("src", "vendor", "Hewlett-Packard", 0.6),
        ("src", "mdns_txt", "Color=F", 0.6),
    ]


def test_device_info_keys() -> None:
    txt = [b"model=MacBookPro18,3", b"osxvers=21", b"MANUFACTURER=Apple"]
    payload = raw(DNS(qr=1, aa=1, an=[DNSRR(rrname="Mac._device-info._tcp.local", type="TXT", rdata=txt)]))
    facts = {(a, v) for _, a, v, _ in dissect_one("mdns", mdns(payload)).facts}
    assert {("model", "MacBookPro18,3"), ("os_version", "21"), ("vendor", "Apple")} <= facts


def test_queries_say_nothing_but_probes_do() -> None:
    # a query's answer section holds records the querier already knows: other devices' names
    query = raw(DNS(qr=0, qd=DNSQR(qname="_ipp._tcp.local", qtype="PTR"),
                    an=DNSRR(rrname="_ipp._tcp.local", type="PTR", rdata="Other._ipp._tcp.local")))
    assert dissect_one("mdns", mdns(query)).facts == []
    probe = raw(DNS(qr=0, qd=DNSQR(qname="cam-7.local", qtype="ALL"),
                    ns=DNSRR(rrname="cam-7.local", type="A", rdata="10.0.0.9")))
    assert dissect_one("mdns", mdns(probe)).facts == [("src", "mdns_name", "cam-7.local", 0.5)]


def test_malformed_messages_and_records() -> None:
    msg = announcement()
    ev = dissect_one("mdns", mdns(msg[:100]))
    assert ev.errors and ev.errors[0][1].startswith("malformed mDNS message")
    assert ("src", "mdns_name", "npi-1.local", 0.7) in ev.facts  # records before the cut are kept
    # a PTR whose rdata is a pointer past the message: that record is an error, the rest stands
    bad_ptr = bytearray(raw(DNS(qr=1, an=[DNSRR(rrname="_x._tcp.local", type="PTR", rdata=b"\xc0\xff"),
                                          DNSRR(rrname="h.local", type="A", rdata="10.0.0.9")])))
    ev = dissect_one("mdns", mdns(bytes(bad_ptr)))
    assert ev.errors == [("src", "malformed mDNS record: name runs past the end of the message")]
    assert ("src", "mdns_name", "h.local", 0.7) in ev.facts


def test_garbage_never_raises() -> None:
    valid = announcement()
    payloads = hostile_payloads(valid, seed=5353)
    for payload in payloads:
        dissect_one("mdns", mdns(payload))


def not_a_name(name: str) -> bool:
    """Ground-truth names deliberately not reported as facts:
    * "<Root>" is how tshark prints the empty (root) owner name of the EDNS0 OPT pseudo-record
      (type 41) — no name at all;
    * reverse-mapping owner names (*.in-addr.arpa, *.ip6.arpa, from PTR records) only spell the
      responder's own address backwards; the host name they map to (the PTR target, also in the
      ground truth) is reported as `mdns_name` instead."""
    return name == "<Root>" or name.lower().endswith((".in-addr.arpa", ".ip6.arpa"))


@pytest.mark.parametrize("name", WITH_MDNS)
def test_real_captures_match_tshark(name: str) -> None:
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "mdns")
    assert not results.errors
    reported: dict[str, set[str]] = {}
    for attribute in MDNS_ATTRIBUTES:
        for ip, values in facts_by_ip(results, attribute).items():
            reported.setdefault(ip, set()).update(values)
    for ip, names in truth["mdns_response_names"].items():
        expected = {n for n in names if not not_a_name(n)}
        assert expected and expected <= reported.get(ip, set()), ip
