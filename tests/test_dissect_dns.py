"""The shared DNS message parser (names, compression, records) and the unicast DNS dissector,
which reports no facts, only malformed messages."""

from __future__ import annotations

import json
import struct

import pytest
from scapy.compat import raw
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRSRV

from dissect_helpers import dissect_one, hostile_payloads, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.dns import (
    ADDITIONAL,
    ANSWER,
    DNSError,
    incomplete,
    parse_message,
    plain_name,
    rdata_name,
    read_name,
    split_tcp,
    srv_target,
    txt_strings,
)

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_DNS = [t["file"] for t in TRUTH if t["protocols"].get("dns")]


def response() -> bytes:
    return raw(DNS(id=7, qr=1, aa=1, qd=DNSQR(qname="printer.local", qtype="A"),
                   an=[DNSRR(rrname="printer.local", type="A", rdata="10.0.0.9"),
                       DNSRR(rrname="9.0.0.10.in-addr.arpa", type="PTR", rdata="printer.local")],
                   ar=[DNSRRSRV(rrname="Printer._ipp._tcp.local", target="printer.local", port=631),
                       DNSRR(rrname="Printer._ipp._tcp.local", type="TXT", rdata=[b"ty=Laser", b"x"])]))


def test_parse_records_and_rdata() -> None:
    msg = response()
    parsed = parse_message(msg)
    assert (parsed.ident, parsed.response, parsed.opcode, parsed.rcode, parsed.error) == (7, True, 0, 0, "")
    assert [(q[0], q[1]) for q in parsed.questions] == [([b"printer", b"local"], 1)]
    assert [(r.section, r.name, r.rtype) for r in parsed.records] == [
        (ANSWER, "printer.local", 1), (ANSWER, "9.0.0.10.in-addr.arpa", 12),
        (ADDITIONAL, "Printer._ipp._tcp.local", 33), (ADDITIONAL, "Printer._ipp._tcp.local", 16)]
    a, ptr, srv, txt = parsed.records
    assert a.rdata == bytes([10, 0, 0, 9])
    assert rdata_name(msg, ptr) == "printer.local"
    assert srv_target(msg, srv) == "printer.local"
    assert txt_strings(txt) == [b"ty=Laser", b"x"]


def test_compression_pointers_and_their_limits() -> None:
    head = struct.pack("!6H", 0, 0, 0, 0, 0, 0)
    msg = head + b"\x03foo\x05local\x00" + b"\x03bar\xc0\x0c"  # name at 12, then bar + pointer to it
    assert read_name(msg, 12) == ("foo.local", 23)
    assert read_name(msg, 23) == ("bar.foo.local", 29)
    with pytest.raises(DNSError, match="loop"):
        read_name(head + b"\xc0\x0c", 12)  # points at itself
    with pytest.raises(DNSError, match="loop"):
        read_name(head + b"\x01a\xc0\x0e" + b"\xc0\x0c", 12)  # two pointers chasing each other
    with pytest.raises(DNSError, match="past the end"):
        read_name(head + b"\xc0\xff", 12)
    with pytest.raises(DNSError, match="255"):
        read_name(head + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
                  + b"\x00", 12)
    with pytest.raises(DNSError, match="label type"):
        read_name(head + b"\x41abc", 12)
    assert read_name(head + b"\x00", 12) == ("", 13)  # the root


def test_truncation_keeps_what_came_before() -> None:
    msg = response()
    parsed = parse_message(msg[:60])
    assert parsed.error and len(parsed.questions) == 1
    with pytest.raises(DNSError):
        parse_message(msg[:11])
    assert parse_message(struct.pack("!6H", 0, 0, 9000, 0, 0, 0)).error.startswith("implausible")


def test_plain_names_and_tcp_framing() -> None:
    assert plain_name(b"\x03cam\x04home\x00") == "cam.home"
    assert plain_name(b"\x03cam") == "cam"  # partial name (no root label)
    with pytest.raises(DNSError):
        plain_name(b"\x09cam")
    msg = response()
    framed = struct.pack("!H", len(msg)) + msg
    assert split_tcp(framed + framed) == [msg, msg]
    assert split_tcp(framed[:-1]) is None  # a message continues in the next segment
    assert split_tcp(b"\x00") is None


def test_incomplete_packets() -> None:
    ipv4 = bytes.fromhex("4500 0040 0000 2000 4011 0000 0a000001 0a000002".replace(" ", ""))
    assert incomplete(packet(b"", l3=ipv4 + b"\0" * 44))  # more-fragments flag
    whole = ipv4[:6] + b"\0\0" + ipv4[8:]
    assert not incomplete(packet(b"", l3=whole + b"\0" * 44))
    assert incomplete(packet(b"", l3=whole + b"\0" * 10))  # cut by the snap length
    assert not incomplete(packet(b""))


def test_unicast_dns_reports_no_facts_only_errors() -> None:
    msg = response()
    ok = dissect_one("dns", packet(msg, sport=53, dport=5000))
    assert (ok.facts, ok.errors) == ([], [])
    bad = dissect_one("dns", packet(msg[:40], sport=53, dport=5000))
    assert bad.facts == []
    assert bad.errors == [("src", "malformed DNS message: label runs past the end of the message")]
    tcp = dissect_one("dns", packet(struct.pack("!H", len(msg)) + msg, transport="tcp", sport=53))
    assert (tcp.facts, tcp.errors) == ([], [])


def test_garbage_never_raises() -> None:
    valid = response()
    payloads = hostile_payloads(valid, seed=53, max_len=200)
    for payload in payloads:
        dissect_one("dns", packet(payload, sport=53))
        dissect_one("dns", packet(struct.pack("!H", len(payload)) + payload, transport="tcp", sport=53))
        try:
            parsed = parse_message(payload)
        except DNSError:
            continue
        for rec in parsed.records:  # rdata readers raise only DNSError
            for reader in (rdata_name, srv_target):
                try:
                    reader(payload, rec)
                except DNSError:
                    pass
            try:
                txt_strings(rec)
            except DNSError:
                pass


@pytest.mark.parametrize("name", WITH_DNS)
def test_real_captures_are_well_formed(name: str) -> None:
    # tshark 4.0.17 flags no DNS message in these captures as malformed (`-Y "dns && _ws.malformed"`
    # finds nothing; the IP-fragmented responses of zeek__dns-edns-ecs.pcap it reassembles), so
    # the dissector must report no error either — and it never reports facts.
    results = run_capture(CAPTURES / name, "dns")
    assert results.errors == {}
    assert results.facts == {}
