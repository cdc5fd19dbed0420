"""DHCPv4 dissector: a client's own options become facts about it; relayed or forwarded
messages and what servers echo do not; real captures match tshark's ground truth."""

from __future__ import annotations

import json
import random
import struct
from collections import defaultdict
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.dhcp import BOOTP, DHCP

from dissect_helpers import dissect_one, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_DHCP = [t["file"] for t in TRUTH if t["dhcp"]]
CLIENT_MAC = "02:00:00:00:00:01"
SERVER_MAC = "02:00:00:00:00:fe"
MAGIC = b"\x63\x82\x53\x63"


def client_packet(payload: bytes, **kw: Any) -> Packet:
    """A client's broadcast from 0.0.0.0 (the framework's '' address)."""
    args: dict[str, Any] = {"sport": 68, "dport": 67, "src_ip": "", "dst_ip": "255.255.255.255",
                            "src_mac": CLIENT_MAC, "dst_mac": "ff:ff:ff:ff:ff:ff"}
    return packet(payload, **{**args, **kw})


def discover() -> bytes:
    return raw(BOOTP(op=1, chaddr=bytes.fromhex("020000000001")) / DHCP(options=[
        ("message-type", "discover"),
        ("hostname", b"cam-1"),
        ("vendor_class_id", b"udhcp 1.30.1"),
        ("param_req_list", [1, 3, 6, 15, 28, 42]),
        ("client_id", b"\x01\x02\x00\x00\x00\x00\x01"),
        ("user_class", b"\x05iPXE1\x03abc"),
        ("client_FQDN", b"\x05\x00\x00\x03cam\x04home\x04arpa\x00"),  # E flag: wire-format name
        "end"]))


def bootp(op: int, chaddr: str, options: bytes, *, giaddr: bytes = b"\0" * 4, sname: bytes = b"",
          file: bytes = b"") -> bytes:
    """A hand-built BOOTP/DHCP message (for cases scapy would normalise away)."""
    head = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, 0x1234, 0, 0, b"\0" * 4, b"\0" * 4, b"\0" * 4, giaddr)
    return (head + bytes.fromhex(chaddr.replace(":", "")).ljust(16, b"\0") + sname.ljust(64, b"\0")
            + file.ljust(128, b"\0") + MAGIC + options)


def test_client_options_are_facts_about_the_sender() -> None:
    ev = dissect_one("dhcp", client_packet(discover()))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "hostname", "cam-1", 0.8),
        ("src", "dhcp_vendor_class", "udhcp 1.30.1", 0.8),
        ("src", "dhcp_parameter_list", "1,3,6,15,28,42", 0.8),
        ("src", "dhcp_client_id", "01020000000001", 0.8),
        ("src", "dhcp_user_class", "iPXE1", 0.7),
        ("src", "dhcp_user_class", "abc", 0.7),
        ("src", "fqdn", "cam.home.arpa", 0.8),
    ])


def test_ascii_fqdn_and_plain_user_class() -> None:
    # Windows: option 81 with the E flag clear (ASCII name), option 77 as a bare string
    opts = bytes([81, 3 + 9, 0x00, 0, 0]) + b"pc1.corp." + bytes([77, 14]) + b"RRAS.Microsoft" + b"\xff"
    ev = dissect_one("dhcp", client_packet(bootp(1, CLIENT_MAC, opts)))
    assert sorted(ev.facts) == [("src", "dhcp_user_class", "RRAS.Microsoft", 0.7),
                                ("src", "fqdn", "pc1.corp", 0.8)]


def test_relayed_or_forwarded_requests_describe_the_client_not_the_sender() -> None:
    opts = bytes([12, 3]) + b"cam" + b"\xff"
    relayed = bootp(1, CLIENT_MAC, opts, giaddr=bytes([10, 0, 0, 1]))
    ev = dissect_one("dhcp", client_packet(relayed, src_mac="02:00:00:00:00:99"))
    assert ev.facts == [] and ev.mac_facts == [(CLIENT_MAC, "hostname", "cam", 0.7)]
    other = bootp(1, "02:00:00:00:00:42", opts)  # chaddr is not the frame's sender
    ev = dissect_one("dhcp", client_packet(other))
    assert ev.facts == [] and ev.mac_facts == [("02:00:00:00:00:42", "hostname", "cam", 0.7)]
    # without a link layer the chaddr cannot be checked; giaddr 0 means the client sent it
    assert dissect_one("dhcp", client_packet(other, src_mac="", src_ip="10.0.0.5")).facts == [
        ("src", "hostname", "cam", 0.8)]


def test_server_reply_states_the_clients_name_about_chaddr() -> None:
    opts = bytes([53, 1, 5, 12, 6]) + b"plc-07" + bytes([60, 7]) + b"ArubaAP" + b"\xff"
    ack = bootp(2, CLIENT_MAC, opts)
    for dst in (CLIENT_MAC, "ff:ff:ff:ff:ff:ff"):  # unicast or broadcast: the client is chaddr
        ev = dissect_one("dhcp", packet(ack, sport=67, dport=68, src_mac=SERVER_MAC, dst_mac=dst))
        assert ev.facts == []  # nothing about the server
        assert ev.mac_facts == [(CLIENT_MAC, "hostname", "plc-07", 0.5)]  # option 60: not the client's


def test_overloaded_and_split_options() -> None:
    # option 52 = 1: more options in the `file` field; two option-12 parts concatenate (RFC 3396)
    opts = bytes([52, 1, 1, 12, 3]) + b"lon" + b"\xff"
    file = bytes([12, 4]) + b"g-pc" + bytes([55, 2, 1, 3]) + b"\xff"
    ev = dissect_one("dhcp", client_packet(bootp(1, CLIENT_MAC, opts, file=file)))
    assert sorted(ev.facts) == [("src", "dhcp_parameter_list", "1,3", 0.8),
                                ("src", "hostname", "long-pc", 0.8)]


def test_truncated_option_is_an_error_and_earlier_options_are_kept() -> None:
    opts = bytes([12, 3]) + b"cam" + bytes([60, 40]) + b"x"
    ev = dissect_one("dhcp", client_packet(bootp(1, CLIENT_MAC, opts)))
    assert ev.facts == [("src", "hostname", "cam", 0.8)]
    assert ev.errors == [("src", "option 60 runs past the end of the message")]
    assert dissect_one("dhcp", client_packet(b"\x01" * 100)).errors != []
    plain_bootp = bootp(1, CLIENT_MAC, b"")[:236] + b"\0" * 64  # no magic cookie: BOOTP, no options
    assert dissect_one("dhcp", client_packet(plain_bootp)).errors == []


def test_garbage_never_raises() -> None:
    valid = discover()
    rng = random.Random(67)
    payloads = [valid[:n] for n in range(len(valid))]
    payloads += [bytes(rng.randrange(256) for _ in range(rng.randrange(400))) for _ in range(300)]
    for _ in range(300):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            mutated[rng.randrange(236, len(mutated))] = rng.randrange(256)
        payloads.append(bytes(mutated))
    for payload in payloads:
        dissect_one("dhcp", client_packet(payload))
        dissect_one("dhcp", packet(payload, sport=67, dport=68, dst_mac=CLIENT_MAC))


# Server-stated values tshark lists under the server's frames (src_mac != client_mac):
SERVER_VALUES_NOT_REPORTED = {
    # Option 60 is the client's vendor class (RFC 2132 §9.13); a server putting its own in
    # its OFFER/ACK describes neither the client nor, reliably, the server.
    ("zeek__dhcp.pcap", "vendor_class_id", "ArubaAP"),
}


@pytest.mark.parametrize("name", WITH_DHCP)
def test_real_captures_match_tshark(name: str) -> None:
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "dhcp")
    facts: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    by_mac: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for (mac, ip, attribute, value, _source) in results.facts:
        facts[(mac, ip)].add((attribute, value))
        by_mac[mac].add((attribute, value))
    assert not results.errors
    for entry in truth["dhcp"]:
        client, sender = entry["client_mac"], entry["src_mac"]
        expected = {("hostname", entry["hostname"]), ("dhcp_vendor_class", entry["vendor_class_id"]),
                    ("dhcp_parameter_list", ",".join(str(n) for n in entry["param_request_list"]))}
        expected = {(a, v) for a, v in expected if v}
        if sender == client and entry["msg_type"] not in ("2", "5", "6"):
            # the client's own message: facts on its (MAC, IP), IP "" when 0.0.0.0
            ip = "" if entry["src_ip"] == "0.0.0.0" else entry["src_ip"]
            assert expected <= facts[(client, ip)], entry
            continue
        # relayed/forwarded requests and server replies: filed under the client's MAC
        assert not (by_mac.get(sender, set()) & expected) or sender == client, entry
        for attribute, value in sorted(expected):
            field = {"hostname": "hostname", "dhcp_vendor_class": "vendor_class_id",
                     "dhcp_parameter_list": "param_request_list"}[attribute]
            if (name, field, value) in SERVER_VALUES_NOT_REPORTED:
                assert (attribute, value) not in by_mac.get(client, set())
            elif entry["msg_type"] in ("2", "5", "6") and attribute != "hostname":
                continue  # a reply's other options describe the server's offer, not the client
            else:
                assert (attribute, value) in by_mac.get(client, set()), entry
