"""SIP dissector: User-Agent of any sender, Server of responders.

No capture in ../shared/captures carries SIP (GROUND_TRUTH.jsonl has no sip protocol
entries), so the real-selector test below runs over a capture written by scapy instead.
"""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture

REGISTER = (b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 10.0.0.20:5060;branch=z9hG4bK776asdhds\r\n"
            b"f: <sip:1001@pbx.example.com>;tag=1928301774\r\n"
            b"t: <sip:1001@pbx.example.com>\r\n"
            b"i: a84b4c76e66710@10.0.0.20\r\n"
            b"CSeq: 1 REGISTER\r\n"
            b"User-Agent: Grandstream GXP2170 1.0.11.23\r\n"
            b"Content-Length: 0\r\n\r\n")
OK = (b"SIP/2.0 200 OK\r\n"
      b"Via: SIP/2.0/UDP 10.0.0.20:5060;branch=z9hG4bK776asdhds\r\n"
      b"CSeq: 1 REGISTER\r\n"
      b"Server: Asterisk PBX 18.9.0\r\n"
      b"Content-Length: 0\r\n\r\n")


def sip(payload: bytes, **kw):
    return packet(payload, **{"sport": 5060, "dport": 5060, **kw})


def test_request_user_agent_and_response_server() -> None:
    assert dissect_one("sip", sip(REGISTER)).facts == [
        ("src", "sip_user_agent", "Grandstream GXP2170 1.0.11.23", 0.8)]
    assert dissect_one("sip", sip(OK)).facts == [("src", "sip_server", "Asterisk PBX 18.9.0", 0.8)]


def test_user_agent_in_a_response_bare_line_feeds_and_header_case() -> None:
    resp = b"SIP/2.0 486 Busy Here\nuser-agent:  Yealink SIP-T46S 66.85.0.5  \nSERVER: x\n\n"
    ev = dissect_one("sip", sip(resp))
    assert ev.errors == []
    assert sorted(ev.facts) == [("src", "sip_server", "x", 0.8),
                                ("src", "sip_user_agent", "Yealink SIP-T46S 66.85.0.5", 0.8)]


def test_server_header_in_a_request_is_not_a_server_fact() -> None:
    req = b"OPTIONS sip:a@b SIP/2.0\r\nServer: odd\r\n\r\n"
    assert dissect_one("sip", sip(req)).facts == []


def test_other_protocols_on_shared_prefixes_are_ignored_silently() -> None:
    for payload, port in ((b"OPTIONS / HTTP/1.1\r\nUser-Agent: curl\r\n\r\n", 8080),
                          (b"INFO: starting up\r\n", 7000), (b"\r\n\r\n", 5060),
                          (b"\x00\x01\x00\x00\x21\x12\xa4\x42", 5060)):  # STUN on the SIP port
        ev = dissect_one("sip", packet(payload, transport="tcp", sport=40000, dport=port))
        assert ev.facts == [] and ev.errors == [], payload


@pytest.mark.parametrize("payload", [
    b"INVITE sip:a@b\r\nUser-Agent: x\r\n\r\n",
    b"SIP/2.0 OK\r\n\r\n",
    b"SIP/2.0 2000 OK\r\n\r\n",
])
def test_malformed_start_lines_are_errors(payload: bytes) -> None:
    ev = dissect_one("sip", sip(payload))
    assert ev.facts == [] and len(ev.errors) == 1


def test_truncated_and_random_payloads_never_raise() -> None:
    rng = random.Random(5060)
    payloads = [REGISTER[:i] for i in range(len(REGISTER))] + [OK[:i] for i in range(len(OK))]
    payloads += [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    payloads += [b"SIP/2.0 " + rng.randbytes(rng.randrange(0, 100)) for _ in range(100)]
    payloads += [b"INVITE " + rng.randbytes(rng.randrange(0, 100)) for _ in range(100)]
    for payload in payloads:
        dissect_one("sip", sip(payload))
        dissect_one("sip", sip(payload, transport="tcp", sport=40000, dport=5080))


def test_selector_finds_sip_on_its_port_and_by_prefix(tmp_path) -> None:
    phone, pbx = ("02:00:00:00:00:20", "10.0.0.20"), ("02:00:00:00:00:01", "10.0.0.1")
    frames = [
        Ether(src=phone[0], dst=pbx[0]) / IP(src=phone[1], dst=pbx[1]) / UDP(sport=5060, dport=5060)
        / REGISTER,
        Ether(src=pbx[0], dst=phone[0]) / IP(src=pbx[1], dst=phone[1]) / UDP(sport=5060, dport=5060) / OK,
        # SIP over TCP on a non-standard port: found by the "INVI" and "SIP/" prefixes
        Ether(src=phone[0], dst=pbx[0]) / IP(src=phone[1], dst=pbx[1])
        / TCP(sport=41000, dport=5080, flags="PA")
        / b"INVITE sip:1002@pbx SIP/2.0\r\nUser-Agent: Linphone/5.2.0\r\n\r\n",
        Ether(src=pbx[0], dst=phone[0]) / IP(src=pbx[1], dst=phone[1])
        / TCP(sport=5080, dport=41000, flags="PA") / b"SIP/2.0 100 Trying\r\nServer: FreeSWITCH\r\n\r\n",
    ]
    path = tmp_path / "sip.pcap"
    wrpcap(str(path), frames)
    results = run_capture(path, "sip")
    assert not results.errors
    assert facts_by_ip(results, "sip_user_agent") == {
        "10.0.0.20": {"Grandstream GXP2170 1.0.11.23", "Linphone/5.2.0"}}
    assert facts_by_ip(results, "sip_server") == {"10.0.0.1": {"Asterisk PBX 18.9.0", "FreeSWITCH"}}
