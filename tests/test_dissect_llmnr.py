"""LLMNR dissector: a positive answer names its sender; queries name nobody."""

from __future__ import annotations

import json

import pytest
from scapy.compat import raw
from scapy.layers.dns import DNSQR, DNSRR
from scapy.layers.llmnr import LLMNRQuery, LLMNRResponse

from dissect_helpers import dissect_one, facts_by_ip, hostile_payloads, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_LLMNR = [t["file"] for t in TRUTH if t["protocols"].get("llmnr")]


def llmnr(payload: bytes, src_ip: str = "10.0.0.9") -> Packet:
    return packet(payload, sport=5355, dport=50000, src_ip=src_ip, dst_ip="10.0.0.1")


def answer(*records: DNSRR) -> bytes:
    return raw(LLMNRResponse(id=5, qd=DNSQR(qname="ws-12", qtype="A"), an=list(records)))


def test_answer_about_the_sender() -> None:
    ev = dissect_one("llmnr", llmnr(answer(DNSRR(rrname="ws-12", type="A", rdata="10.0.0.9"))))
    assert (ev.facts, ev.errors) == ([("src", "hostname", "ws-12", 0.8)], [])
    # an IPv6-carried answer with the host's IPv4 address cannot be compared: lower confidence
    ev = dissect_one("llmnr", llmnr(answer(DNSRR(rrname="ws-12", type="A", rdata="10.0.0.9")), "fe80::9"))
    assert ev.facts == [("src", "hostname", "ws-12", 0.6)]
    # both kinds in one answer: the matching address decides
    both = answer(DNSRR(rrname="ws-12", type="A", rdata="10.0.0.9"),
                  DNSRR(rrname="ws-12", type="AAAA", rdata="fe80::9"))
    assert dissect_one("llmnr", llmnr(both, "fe80::9")).facts == [("src", "hostname", "ws-12", 0.8)]


def test_answers_about_others_and_queries_say_nothing() -> None:
    other = answer(DNSRR(rrname="ws-12", type="A", rdata="10.0.0.77"))
    assert dissect_one("llmnr", llmnr(other)).facts == []
    query = raw(LLMNRQuery(id=5, qd=DNSQR(qname="ws-12", qtype="A")))
    assert dissect_one("llmnr", llmnr(query)).facts == []
    # header (response, 0 questions, 1 answer) + A record "ws-12" with 3 bytes of rdata
    bad_a = (bytes.fromhex("0005 8000 0000 0001 0000 0000") + b"\x05ws-12\x00"
             + bytes.fromhex("0001 0001 0000001e 0003 0a0000"))
    assert dissect_one("llmnr", llmnr(bad_a)).errors == [("src", "LLMNR address record of 3 bytes")]


def test_garbage_never_raises() -> None:
    valid = answer(DNSRR(rrname="ws-12", type="A", rdata="10.0.0.9"),
                   DNSRR(rrname="ws-12", type="AAAA", rdata="fe80::9"))
    payloads = hostile_payloads(valid, seed=5355, max_len=120)
    for payload in payloads:
        dissect_one("llmnr", llmnr(payload))
        dissect_one("llmnr", llmnr(payload, "fe80::9"))
        dissect_one("llmnr", llmnr(payload, ""))


# GROUND_TRUTH.jsonl has no LLMNR names. In these captures tshark 4.0.17
# (`-Y "llmnr && dns.flags.response == 1" -T fields -e ip.src -e ipv6.src -e dns.resp.name -e dns.a
# -e dns.aaaa`) shows answers from one host only: SCV, with A 192.168.199.1 and AAAA
# fe80::78da:c04d:12da:8a08, sent from both of those addresses. Every other LLMNR packet is a
# query, which must produce no fact.
ANSWERS = {
    "suricata-verify__smb2-ntlmssp-negotiateflags_input.pcap": {
        "192.168.199.1": {"SCV"}, "fe80::78da:c04d:12da:8a08": {"SCV"}},
}


@pytest.mark.parametrize("name", WITH_LLMNR)
def test_real_captures_match_tshark(name: str) -> None:
    results = run_capture(CAPTURES / name, "llmnr")
    assert not results.errors
    assert dict(facts_by_ip(results, "hostname")) == ANSWERS.get(name, {})
