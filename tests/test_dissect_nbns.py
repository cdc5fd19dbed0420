"""NBNS dissector: names a host registers, defends or lists about itself; never the names it
asks for."""

from __future__ import annotations

import json
import random
import re
import struct

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Packet

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_NBNS = [t["file"] for t in TRUTH if t["nbns_names"]]
SENDER = "10.0.0.9"


def encode(name: bytes, suffix: int) -> bytes:
    """RFC 1001 §14.1 first-level encoding, as a length-prefixed label and the root."""
    raw = name.ljust(15, b" ") + bytes([suffix])
    return b"\x20" + bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 15))) + b"\x00"


def nb_rdata(flags: int, address: str) -> bytes:
    return struct.pack("!H", flags) + bytes(int(x) for x in address.split("."))


def registration(name: bytes, suffix: int, *, group: bool = False, address: str = SENDER,
                 opcode: int = 5) -> bytes:
    """A NAME REGISTRATION REQUEST (RFC 1002 §4.2.2): question + additional RR pointing at it."""
    flags = (opcode << 11) | 0x0110  # opcode, RD, broadcast
    head = struct.pack("!6H", 0x6001, flags, 1, 0, 0, 1)
    rdata = nb_rdata(0x8000 if group else 0, address)
    return (head + encode(name, suffix) + struct.pack("!HH", 0x20, 1)
            + b"\xc0\x0c" + struct.pack("!HHIH", 0x20, 1, 300000, len(rdata)) + rdata)


def query(name: bytes, suffix: int) -> bytes:
    return struct.pack("!6H", 0x6002, 0x0110, 1, 0, 0, 0) + encode(name, suffix) + struct.pack("!HH", 0x20, 1)


def query_answer(name: bytes, suffix: int, *addresses: str) -> bytes:
    rdata = b"".join(nb_rdata(0, a) for a in addresses)
    return (struct.pack("!6H", 0x6002, 0x8500, 0, 1, 0, 0) + encode(name, suffix)
            + struct.pack("!HHIH", 0x20, 1, 300000, len(rdata)) + rdata)


def node_status(*names: tuple[bytes, int, int]) -> bytes:
    table = bytes([len(names)]) + b"".join(n.ljust(15, b" ") + bytes([s]) + struct.pack("!H", f)
                                           for n, s, f in names) + b"\x02\x00\x00\x00\x00\x09" + b"\0" * 40
    return (struct.pack("!6H", 0x6003, 0x8400, 0, 1, 0, 0) + encode(b"*", 0)
            + struct.pack("!HHIH", 0x21, 1, 0, len(table)) + table)


def nbns(payload: bytes) -> Packet:
    return packet(payload, sport=137, dport=137, src_ip=SENDER, dst_ip="10.0.0.255")


def facts(payload: bytes) -> list[tuple[str, str]]:
    ev = dissect_one("nbns", nbns(payload))
    assert ev.errors == []
    return [(a, v) for _, a, v, _ in ev.facts]


def test_registrations_of_the_sender() -> None:
    assert facts(registration(b"PLC-HMI-01", 0x20)) == [("netbios_name", "PLC-HMI-01")]
    assert facts(registration(b"PLC-HMI-01", 0x00, opcode=8)) == [("netbios_name", "PLC-HMI-01")]  # refresh
    assert facts(registration(b"WORKGROUP", 0x00, group=True)) == [("netbios_domain", "WORKGROUP")]
    assert facts(registration(b"WORKGROUP", 0x1E, group=True)) == [("netbios_domain", "WORKGROUP")]
    # the unique <1D> name is held by the workgroup's local master browser
    assert facts(registration(b"WORKGROUP", 0x1D)) == [("netbios_domain", "WORKGROUP")]
    assert facts(registration(b"ADMINISTRATOR", 0x03)) == []  # messenger names include user names
    assert facts(registration(b"\x01\x02__MSBROWSE__\x02", 0x01, group=True)) == []
    assert facts(registration(b"PLC-HMI-01", 0x20, address="10.0.0.50")) == []  # on another's behalf


def test_queries_and_answers() -> None:
    assert facts(query(b"WPAD", 0x00)) == []  # the name the sender looks for
    assert facts(query_answer(b"NAS", 0x20, "10.0.0.7", SENDER)) == [("netbios_name", "NAS")]
    assert facts(query_answer(b"NAS", 0x20, "10.0.0.7")) == []  # a name server answering for another host


def test_node_status_lists_the_senders_names() -> None:
    payload = node_status((b"CAM-3", 0x00, 0x0400), (b"CAM-3", 0x20, 0x0400), (b"HOME", 0x00, 0x8400),
                          (b"OLD-NAME", 0x00, 0x1400))  # deregistering: not kept
    assert facts(payload) == [("netbios_name", "CAM-3"), ("netbios_domain", "HOME")]


def test_malformed_messages() -> None:
    bad_name = registration(b"X", 0x20).replace(b"\x20FI", b"\x20zI", 1)  # 'z' is no half-byte code
    assert dissect_one("nbns", nbns(bad_name)).errors == [
        ("src", "NBNS name is not a 32-byte encoded NetBIOS name")]
    assert dissect_one("nbns", nbns(registration(b"X", 0x20)[:-3])).errors == [
        ("src", "malformed NBNS message: record data runs past the end of the message")]
    short = node_status((b"CAM-3", 0x00, 0x0400))
    short = short[:56] + b"\x05" + short[57:]  # the name count (rdata at 12 + 34 + 10): 5, holds 1
    assert dissect_one("nbns", nbns(short)).errors == [
        ("src", "NBSTAT record lists 5 names but holds 65 bytes")]


def test_garbage_never_raises() -> None:
    samples = [registration(b"PLC-HMI-01", 0x20), node_status((b"CAM-3", 0x00, 0x0400)),
               query_answer(b"NAS", 0x20, SENDER)]
    rng = random.Random(137)
    payloads = [s[:n] for s in samples for n in range(len(s))]
    payloads += [bytes(rng.randrange(256) for _ in range(rng.randrange(120))) for _ in range(300)]
    for _ in range(300):
        mutated = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        payloads.append(bytes(mutated))
    for payload in payloads:
        dissect_one("nbns", nbns(payload))


# tshark prints nbns.name as "NAME<xx>" for a question and "NAME<xx> (service)" for a resource
# record (registration, answer). Only RR names are names the sender holds: a question-only name
# is a name it asks for (WPAD, ISATAP, another host, …) and must NOT become its fact.
NBNS_NAME = re.compile(r"^(?P<name>.*)<(?P<suffix>[0-9a-f]{2})>(?P<rr> \(.*\))?$")


@pytest.mark.parametrize("name", WITH_NBNS)
def test_real_captures_match_tshark(name: str) -> None:
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "nbns")
    assert not results.errors
    names, domains = facts_by_ip(results, "netbios_name"), facts_by_ip(results, "netbios_domain")
    for ip, values in truth["nbns_names"].items():
        parsed = [m for m in map(NBNS_NAME.match, values) if m]
        assert len(parsed) == len(values)
        held = {m["name"] for m in parsed if m["rr"]}
        asked = {m["name"] for m in parsed if not m["rr"]} - held
        reported = names.get(ip, set()) | domains.get(ip, set())
        # "<01><02>__MSBROWSE__<02><01>" is the special group a master browser joins: it says
        # the host is a browser, it is no name of the host (tshark prints its control bytes as
        # <01>/<02>).
        assert held - {"<01><02>__MSBROWSE__<02>"} <= reported, ip
        assert not (asked & reported), ip
