"""SSDP dissector: what devices announce (NOTIFY, search answers) and who searches for what."""

from __future__ import annotations

import json
import random

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_SSDP = [t["file"] for t in TRUTH if t["ssdp"]]
HEADER_FACTS = {"server": "ssdp_server", "location": "ssdp_location", "usn": "ssdp_usn", "nt": "ssdp_nt",
                "user-agent": "http_user_agent"}

NOTIFY = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
          b"LOCATION: http://10.0.0.9:49152/desc.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
          b"SERVER: Linux/3.10 UPnP/1.0 IpCam/2.1\r\nUSN: uuid:1234::upnp:rootdevice\r\n\r\n")
ANSWER = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
          b"ST: urn:schemas-upnp-org:device:MediaRenderer:1\r\n"
          b"USN: uuid:abcd::urn:schemas-upnp-org:device:MediaRenderer:1\r\nEXT:\r\n"
          b"SERVER: Linux UPnP/1.0 Sonos/70.3\r\nLOCATION: http://10.0.0.9:1400/xml/device_description.xml\r\n\r\n")
SEARCH = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n'
          b"ST: urn:dial-multiscreen-org:service:dial:1\r\nUSER-AGENT: Google Chrome/63.0 Windows\r\n\r\n")


def ssdp(payload: bytes, sport: int = 1900, dport: int = 1900) -> Packet:
    return packet(payload, sport=sport, dport=dport, src_ip="10.0.0.9", dst_ip="239.255.255.250")


def test_notify() -> None:
    ev = dissect_one("ssdp", ssdp(NOTIFY))
    assert (ev.errors, ev.events) == ([], [])
    assert ev.facts == [
        ("src", "ssdp_server", "Linux/3.10 UPnP/1.0 IpCam/2.1", 0.7),
        ("src", "ssdp_usn", "uuid:1234::upnp:rootdevice", 0.7),
        ("src", "ssdp_nt", "upnp:rootdevice", 0.7),
        ("src", "ssdp_location", "http://10.0.0.9:49152/desc.xml", 0.7),
    ]


def test_search_answer_to_the_searchers_port() -> None:
    ev = dissect_one("ssdp", ssdp(ANSWER, 1900, 53211))
    assert ev.facts == [
        ("src", "ssdp_server", "Linux UPnP/1.0 Sonos/70.3", 0.7),
        ("src", "ssdp_usn", "uuid:abcd::urn:schemas-upnp-org:device:MediaRenderer:1", 0.7),
        ("src", "ssdp_nt", "urn:schemas-upnp-org:device:MediaRenderer:1", 0.7),
        ("src", "ssdp_location", "http://10.0.0.9:1400/xml/device_description.xml", 0.7),
    ]


def test_search_says_only_its_user_agent() -> None:
    # the search target is what the sender looks for, not what it is
    ev = dissect_one("ssdp", ssdp(SEARCH, 53211, 1900))
    assert (ev.facts, ev.events) == ([("src", "http_user_agent", "Google Chrome/63.0 Windows", 0.7)], [])


def test_other_traffic_and_malformed_requests() -> None:
    assert dissect_one("ssdp", ssdp(b"\x00\x01binary on port 1900")).facts == []
    assert dissect_one("ssdp", ssdp(b"\x00\x01binary on port 1900")).errors == []
    bad = dissect_one("ssdp", ssdp(b"NOTIFY *\r\nNT: upnp:rootdevice\r\n\r\n"))
    assert (bad.facts, bad.errors) == ([], [("src", "SSDP request line without an HTTP version")])


def test_garbage_never_raises() -> None:
    rng = random.Random(1900)
    payloads = [m[:n] for m in (NOTIFY, ANSWER, SEARCH) for n in range(len(m))]
    payloads += [bytes(rng.randrange(256) for _ in range(rng.randrange(300))) for _ in range(300)]
    for _ in range(300):
        mutated = bytearray(rng.choice((NOTIFY, ANSWER, SEARCH)))
        for _ in range(rng.randrange(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        payloads.append(bytes(mutated))
    for payload in payloads:
        dissect_one("ssdp", ssdp(payload))


# The ground truth's "st" mixes two things: the ST header of search answers (the type the
# device offers, reported as ssdp_nt) and the ST header of M-SEARCH requests (what the sender
# looks for, not a fact about it). These are the M-SEARCH ones, from tshark 4.0.17:
#   tshark -r FILE -Y 'ssdp && http.request.method == "M-SEARCH"' -T fields -e ip.src -e udp.payload
# (ST lines of the payloads). They must NOT become facts about the searcher.
IGD = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
DIAL = "urn:dial-multiscreen-org:service:dial:1"
SEARCHED = {
    "icsnpp-profinet-io-cm__profinet_io_cm_mixed_1.pcap": {"169.254.216.43": {IGD}},
    "iti-ics-tools__c37118_1100_unclean.pcap": {"192.168.0.21": {IGD}},
    "iti-ics-tools__melsoft_UDP_unclean_1.pcap": {"192.168.3.101": {DIAL, IGD}},
    "ndpi__1kxun.pcap": {ip: {IGD} for ip in (
        "192.168.101.33", "192.168.3.95", "192.168.5.37", "192.168.5.41", "192.168.5.44", "192.168.5.47",
        "192.168.5.48", "192.168.5.49", "192.168.5.50", "192.168.5.57", "192.168.5.9")},
    "ndpi__iphone.pcap": {"169.254.225.216": {DIAL}, "192.168.2.1": {DIAL}},
    "suricata-verify__output-eve-ftp-data_input.pcap": {"192.168.0.13": {IGD}},
    "suricata-verify__smb2-ntlmssp-negotiateflags_input.pcap": {"192.168.199.133": {IGD}},
}


@pytest.mark.parametrize("name", WITH_SSDP)
def test_real_captures_match_tshark(name: str) -> None:
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "ssdp")
    assert not results.errors
    searched = SEARCHED.get(name, {})
    offered = facts_by_ip(results, "ssdp_nt")
    for ip, headers in truth["ssdp"].items():
        for header, values in headers.items():
            if header == "st":
                assert set(values) - searched.get(ip, set()) <= offered.get(ip, set()), ip
            else:
                assert set(values) <= facts_by_ip(results, HEADER_FACTS[header]).get(ip, set()), (ip, header)
    for ip, targets in searched.items():
        assert not (targets & offered.get(ip, set())), ip
