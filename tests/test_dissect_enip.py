"""EtherNet/IP + CIP dissector: identity and operations, checked by hand and against tshark.

Real-capture expectations were read with tshark 4.0.17 (filters named next to each one).
The selector hands a dissector each distinct payload of a sender once, so expected event
counts are counts of distinct payloads. These tests rely on `tcp_all_segments` (every new
port-44818 payload reaches the dissector, not only the first segments of each flow).
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter

import pytest

from dissect_helpers import facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import enip
from tapwatch.dissect.base import Evidence
from tapwatch.dissect.enip import EtherNetIP, vendor_names

TRUTH = {t["file"]: t for t in (json.loads(line) for line in
                                (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_ENIP = sorted(f for f, t in TRUTH.items() if t["enip"]["commands"])
WITH_LIST_IDENTITY = sorted(f for f, t in TRUTH.items() if t["enip"]["list_identity"])
WITH_CIP_IDENTITY = sorted(f for f, t in TRUTH.items() if t["cip_identity"])
CLIENT, DEVICE = "10.0.0.1", "10.0.0.2"


# ---------------------------------------------------------------- builders

def encap(command: int, body: bytes, context: bytes = bytes(8)) -> bytes:
    return struct.pack("<HHII8sI", command, len(body), 0x1234, 0, context, 0) + body


def cpf(*items: tuple[int, bytes]) -> bytes:
    return struct.pack("<H", len(items)) + b"".join(struct.pack("<HH", t, len(d)) + d for t, d in items)


def rr(cip: bytes, context: bytes = b"ctx00001") -> bytes:
    """SendRRData carrying an unconnected CIP message."""
    return encap(0x6F, bytes(6) + cpf((0x0000, b""), (0x00B2, cip)), context)


def unit(cip: bytes, seq: int) -> bytes:
    """SendUnitData carrying a connected CIP message with its sequence count."""
    return encap(0x70, bytes(6) + cpf((0x00A1, b"\x01\x00\x8b\x00"), (0x00B1, struct.pack("<H", seq) + cip)))


def identity(vendor: int = 1, dtype: int = 14, code: int = 54, rev: tuple[int, int] = (20, 11),
             serial: int = 0x0012ABCD, name: bytes = b"1756-L61/B LOGIX5561") -> bytes:
    head = struct.pack("<HHHBBHI", vendor, dtype, code, rev[0], rev[1], 0x3060, serial)
    return head + bytes([len(name)]) + name


def symbol(name: bytes) -> bytes:
    return b"\x91" + bytes([len(name)]) + name + (b"\x00" if len(name) % 2 else b"")


def request(service: int, path: bytes, data: bytes = b"") -> bytes:
    return bytes([service, len(path) // 2]) + path + data


def services(*parts: bytes) -> bytes:
    """Count, offsets and messages: the data of a Multiple Service Packet request or reply."""
    offsets, pos = [], 2 + 2 * len(parts)
    for part in parts:
        offsets.append(pos)
        pos += len(part)
    return struct.pack("<H", len(parts)) + b"".join(struct.pack("<H", o) for o in offsets) + b"".join(parts)


def multiple(*parts: bytes) -> bytes:
    return request(0x0A, b"\x20\x02\x24\x01", services(*parts))


def to_device(payload: bytes, transport: str = "tcp") -> object:
    return packet(payload, transport=transport, sport=50000, dport=44818, src_ip=CLIENT, dst_ip=DEVICE)


def from_device(payload: bytes, transport: str = "tcp") -> object:
    return packet(payload, transport=transport, sport=44818, dport=50000, src_ip=DEVICE, dst_ip=CLIENT,
                  src_mac="02:00:00:00:00:02", dst_mac="02:00:00:00:00:01")


def run(d: EtherNetIP, pkt: object) -> Evidence:
    ev = Evidence()
    d.dissect(pkt, ev)  # type: ignore[arg-type]
    return ev


def identity_facts(confidence: float) -> list[tuple[str, str, str, float]]:
    return [("src", a, v, confidence) for a, v in (
        ("enip_vendor_id", "1"), ("vendor", "Rockwell Automation/Allen-Bradley"), ("enip_device_type", "14"),
        ("device_type", "plc"), ("product_code", "54"), ("firmware", "20.11"), ("serial", "0x0012abcd"),
        ("cip_product_name", "1756-L61/B LOGIX5561"), ("model", "1756-L61/B LOGIX5561"))]


GAA_IDENTITY = request(0x01, b"\x20\x01\x24\x01")
GAA_REPLY = b"\x81\x00\x00\x00" + identity()


# ---------------------------------------------------------------- unit tests

def test_vendor_table() -> None:
    names = vendor_names()
    assert names[1] == "Rockwell Automation/Allen-Bradley"
    assert names[243] == "Schneider Electric"
    assert names[283] == "Hilscher GmbH"
    assert names[309] == "ProSoft Technology"
    assert names[1251] == "Siemens AG"
    assert 6 not in names  # "Reserved" ids are left out


def test_list_identity_response() -> None:
    sockaddr = struct.pack(">HH4s8s", 2, 44818, bytes([10, 0, 0, 2]), bytes(8))
    item = struct.pack("<H", 1) + sockaddr + identity() + b"\x03"
    for transport in ("udp", "tcp"):
        ev = run(EtherNetIP(), from_device(encap(0x63, cpf((0x0C, item))), transport))
        assert ev.facts == identity_facts(0.9) and ev.errors == []
    # the request (empty) says nothing
    assert run(EtherNetIP(), to_device(encap(0x63, b""), "udp")).facts == []


def test_identity_from_get_attributes_all_direct_and_routed() -> None:
    d = EtherNetIP()
    assert run(d, to_device(rr(GAA_IDENTITY))).facts == []
    assert run(d, from_device(rr(GAA_REPLY))).facts == identity_facts(0.8)
    # through Unconnected Send to backplane slot 2: the identity of a module behind the adapter
    routed = request(0x52, b"\x20\x06\x24\x01",
                     b"\x0a\xf0" + struct.pack("<H", len(GAA_IDENTITY)) + GAA_IDENTITY + b"\x01\x00\x01\x02")
    run(d, to_device(rr(routed, b"ctx00002")))
    assert run(d, from_device(rr(GAA_REPLY, b"ctx00002"))).facts == identity_facts(0.5)
    # a reply nobody asked for, or to another object, gives nothing
    assert run(d, from_device(rr(GAA_REPLY, b"ctx00003"))).facts == []
    run(d, to_device(rr(request(0x01, b"\x20\xf5\x24\x01"), b"ctx00004")))
    assert run(d, from_device(rr(GAA_REPLY, b"ctx00004"))).facts == []


def test_identity_from_attribute_list_and_single() -> None:
    d = EtherNetIP()
    run(d, to_device(unit(request(0x03, b"\x20\x01\x24\x01", b"\x03\x00\x01\x00\x07\x00\x06\x00"), 7)))
    reply = (b"\x83\x00\x00\x00\x03\x00" + b"\x01\x00\x00\x00\x01\x00" + b"\x07\x00\x00\x00\x05PLC-A"
             + b"\x06\x00\x00\x00" + struct.pack("<I", 0x0012ABCD))
    assert run(d, from_device(unit(reply, 7))).facts == [
        ("src", "enip_vendor_id", "1", 0.8), ("src", "vendor", "Rockwell Automation/Allen-Bradley", 0.8),
        ("src", "serial", "0x0012abcd", 0.8), ("src", "cip_product_name", "PLC-A", 0.8),
        ("src", "model", "PLC-A", 0.8)]
    run(d, to_device(unit(request(0x0E, b"\x20\x01\x24\x01\x30\x07"), 8)))
    assert run(d, from_device(unit(b"\x8e\x00\x00\x00\x05PLC-B", 8))).facts == [
        ("src", "cip_product_name", "PLC-B", 0.8), ("src", "model", "PLC-B", 0.8)]


def test_tag_writes_in_a_multiple_service_packet() -> None:
    d = EtherNetIP()
    write = request(0x4D, symbol(b"Speed"), b"\xc4\x00\x01\x00\x2a\x00\x00\x00")
    read = request(0x4C, symbol(b"Temp"), b"\x01\x00")
    fragment = request(0x53, symbol(b"Array") + b"\x28\x03", b"\xc4\x00\x01\x00" + bytes(8))
    ev = run(d, to_device(unit(multiple(write, read, fragment), 9)))
    assert ev.events == [("src", "register_write", {"services": ["write_tag", "write_tag_fragmented"],
                                                   "tags": ["Speed", "Array[3]"], "items": 2})]
    assert ev.facts == [] and ev.errors == []
    # reads alone are no event, and the replies (matched by sequence count) neither
    assert run(d, to_device(unit(multiple(read), 10))).events == []
    reply = b"\x8a\x00\x00\x00" + services(b"\xcd\x00\x00\x00", b"\xcc\x00\x00\x00\xc4\x00\x01\x00\x00\x00",
                                           b"\xd3\x00\x00\x00")
    ev = run(d, from_device(unit(reply, 9)))
    assert ev.events == [] and ev.facts == [] and ev.errors == []


def test_a_repeated_request_is_reported_again_from_memory() -> None:
    """A client repeats its messages in every session: the second copy is not parsed again,
    yet reports the same operations, signals and errors, and its reply still finds it."""
    d = EtherNetIP()
    write = request(0x4D, symbol(b"Speed"), b"\xc4\x00\x01\x00\x2a\x00\x00\x00")
    set_attr = request(0x10, b"\x20\xf5\x24\x01\x30\x05", bytes(22))
    truncated = request(0x0A, b"\x20\x02\x24\x01", b"\x05\x00")
    message = multiple(write, GAA_IDENTITY, set_attr, truncated)
    first = run(d, to_device(unit(message, 21)))
    assert len(d._parsed) == 1
    config = next(details for _, kind, details in first.events if kind == "config_write")
    config["changed"] = "by a consumer of the first copy"
    again = run(d, to_device(unit(message, 22)))
    assert len(d._parsed) == 1  # remembered, not parsed again
    assert again.events == [
        ("src", "config_write", {"service": "set_attribute_single", "object_class": 0xF5,
                                 "instance": 1, "attribute": 5}),
        ("src", "register_write", {"services": ["write_tag"], "tags": ["Speed"], "items": 1})]
    assert again.signals == first.signals
    assert {s[2]["code"] for s in again.signals} == {0x01, 0x10, 0x4D}
    assert again.errors == first.errors != []  # the truncated inner Multiple Service Packet
    reply = b"\x8a\x00\x00\x00" + services(b"\xcd\x00\x00\x00", b"\x81\x00\x00\x00" + identity(),
                                           b"\x90\x00\x00\x00", b"\x8a\x00\x00\x00")
    assert run(d, from_device(unit(reply, 22))).facts == identity_facts(0.8)


def test_identity_inside_a_multiple_service_reply() -> None:
    d = EtherNetIP()
    run(d, to_device(unit(multiple(request(0x4C, symbol(b"Temp"), b"\x01\x00"), GAA_IDENTITY), 11)))
    # general status 0x1e: one embedded service failed; the others are still read
    reply = b"\x8a\x00\x1e\x00" + services(b"\xcc\x00\x05\x00", GAA_REPLY)
    ev = run(d, from_device(unit(reply, 11)))
    assert ev.facts == identity_facts(0.8) and ev.errors == []


def test_other_operations() -> None:
    d = EtherNetIP()
    cases = [
        (request(0x05, b"\x20\x01\x24\x01", b"\x01"),
         [("src", "device_reset", {"service": "reset", "reset_type": 1})]),
        (request(0x10, b"\x20\xf5\x24\x01\x30\x05", bytes(22)),
         [("src", "config_write", {"service": "set_attribute_single", "object_class": 0xF5,
                                   "instance": 1, "attribute": 5})]),
        (request(0x04, b"\x20\xac\x24\x01", b"\x01\x00\x01\x00\x00\x00"), []),  # vendor-specific object
        (request(0x4B, b"\x20\x37\x24\xc8", b"\xff"),
         [("src", "program_upload", {"object": "file", "instance": 200})]),
        (request(0x4C, b"\x20\x37\x24\x01", b"\x00\x10\x00\x00\x01\x00\x00\x00\x00\x00"),
         [("src", "program_download", {"object": "file", "instance": 1})]),
        (request(0x4B, b"\x20\x68\x24\x01"), []),  # a Logix object's own service 0x4B
    ]
    for n, (cip, events) in enumerate(cases):
        ev = run(d, to_device(rr(cip, b"ctx%05d" % n)))
        assert ev.events == events and ev.errors == []


def test_forward_open_roles() -> None:
    d = EtherNetIP()
    ev = run(d, to_device(rr(request(0x54, b"\x20\x06\x24\x01", bytes(36)))))
    assert ev.facts == [("src", "role", "cip_originator", 0.6), ("dst", "role", "cip_target", 0.6)]
    ev = run(d, from_device(rr(b"\xd4\x00\x00\x00" + bytes(26))))
    assert ev.facts == [("src", "role", "cip_target", 0.6), ("dst", "role", "cip_originator", 0.6)]


def test_several_messages_in_one_segment() -> None:
    d = EtherNetIP()
    first = request(0x4D, symbol(b"A"), b"\xc1\x00\x01\x00\x01")
    second = request(0x4D, symbol(b"B"), b"\xc1\x00\x01\x00\x00")
    ev = run(d, to_device(unit(first, 1) + unit(second, 2)))
    assert [e[2]["tags"] for e in ev.events] == [["A"], ["B"]]


def test_malformed_is_reported() -> None:
    assert run(EtherNetIP(), to_device(b"\x63\x00\x01", "udp")).errors == [
        ("src", "EtherNet/IP datagram shorter than its header")]
    bad_item = encap(0x63, struct.pack("<HHH", 1, 0x0C, 40) + bytes(4))
    assert run(EtherNetIP(), from_device(bad_item, "udp")).errors == [
        ("src", "CPF item longer than the message")]
    bad_msp = unit(request(0x0A, b"\x20\x02\x24\x01", b"\x02\x00\x06\x00\xff\x00"), 3)
    assert run(EtherNetIP(), to_device(bad_msp)).errors == [
        ("src", "Multiple Service Packet offset out of range")]
    # a segment that continues a long message is not an error
    assert run(EtherNetIP(), to_device(b"\xff" * 40)).errors == []


VALID = [
    encap(0x63, cpf((0x0C, bytes(18) + identity() + b"\x03"))),
    rr(request(0x52, b"\x20\x06\x24\x01", b"\x0a\xf0\x06\x00" + GAA_IDENTITY + b"\x01\x00\x01\x02")),
    rr(GAA_REPLY),
    unit(multiple(request(0x4D, symbol(b"Speed") + b"\x28\x01", b"\xc4\x00\x01\x00" + bytes(4)),
                  request(0x03, b"\x20\x01\x24\x01", b"\x02\x00\x01\x00\x07\x00")), 5),
    unit(b"\x83\x00\x00\x00\x02\x00\x01\x00\x00\x00\x01\x00\x07\x00\x00\x00\x03abc", 6),
]


def test_never_raises_on_prefixes_and_random_bytes() -> None:
    d = EtherNetIP()
    for payload in VALID:
        for end in range(len(payload) + 1):
            part = payload[:end]
            for pkt in (to_device(part), from_device(part), from_device(part, "udp")):
                run(d, pkt)
    rng = random.Random(44818)
    for _ in range(400):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        for command in (0x63, 0x6F, 0x70):
            run(d, from_device(encap(command, body[:6] + b"\x02\x00" + body[6:])))
            run(d, to_device(encap(command, bytes(6) + cpf((0x00B2, body)))))
        run(d, to_device(body))


# ---------------------------------------------------------------- real captures

@pytest.mark.parametrize("name", WITH_ENIP)
def test_encapsulation_commands_match_tshark(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[int] = set()
    real = enip.HEADER

    class Spy:
        size = real.size

        def unpack_from(self, data: bytes, off: int) -> tuple:  # type: ignore[type-arg]
            fields = real.unpack_from(data, off)
            if fields[0] in enip.COMMANDS:
                seen.add(fields[0])
            return fields

    monkeypatch.setattr(enip, "HEADER", Spy())
    results = run_capture(CAPTURES / name, "enip")
    assert {int(c, 16) for c in TRUTH[name]["enip"]["commands"]} == seen  # enip.command
    assert not results.errors


@pytest.mark.parametrize("name", WITH_LIST_IDENTITY)
def test_list_identity_matches_tshark(name: str) -> None:
    # enip.lir.* fields; tshark's revision is major << 8 | minor (shown as "4.03")
    results = run_capture(CAPTURES / name, "enip")
    for entry in TRUTH[name]["enip"]["list_identity"]:
        ip, revision = entry["src_ip"], int(entry["revision"])
        expected = {"cip_product_name": entry["product_name"], "model": entry["product_name"],
                    "enip_vendor_id": str(int(entry["vendor_id"], 16)),
                    "enip_device_type": entry["device_type"],
                    "product_code": entry["product_code"], "serial": entry["serial"],
                    "firmware": f"{revision >> 8}.{revision & 0xFF:02d}"}
        for attribute, value in expected.items():
            assert value in facts_by_ip(results, attribute).get(ip, set()), (attribute, value)


@pytest.mark.parametrize("name", WITH_CIP_IDENTITY)
def test_cip_identity_matches_tshark(name: str) -> None:
    # cip.id.* fields of Identity Get Attributes All / Get Attribute List replies
    results = run_capture(CAPTURES / name, "enip")
    for entry in TRUTH[name]["cip_identity"]:
        ip = entry["src_ip"]
        expected = {"cip_product_name": entry["product_name"],
                    "enip_vendor_id": str(int(entry["vendor_id"], 16)),
                    "enip_device_type": str(int(entry["device_type"], 16)),
                    "product_code": entry["product_code"], "serial": entry["serial"]}
        for attribute, value in expected.items():
            assert value in facts_by_ip(results, attribute).get(ip, set()), (attribute, value)


def test_chassis_identities_behind_the_adapter() -> None:
    # The ENBT (192.168.10.120, renumbered 192.168.10.125: same MAC 00:00:bc:3e:eb:e4) answers List
    # Identity itself; the L61 CPU and the ProSoft MVI56 answer Get Attributes All sent through
    # Unconnected Send to backplane slots (tshark: cip.service == 0x52 && cip.class == 0x01)
    results = run_capture(CAPTURES / "iti-ics-tools__EIP-IPAddressChangeAttempt.pcap", "enip")
    conf = {(k[1], k[2], k[3]): v.confidence for k, v in results.facts.items()}
    assert conf[("192.168.10.120", "model", "1756-ENBT/A")] == 0.9
    assert conf[("192.168.10.120", "firmware", "4.07")] == 0.9
    assert conf[("192.168.10.125", "model", "1756-L61/B LOGIX5561")] == 0.5
    assert conf[("192.168.10.125", "vendor", "ProSoft Technology")] == 0.5
    assert conf[("192.168.10.125", "device_type", "plc")] == 0.5
    assert results.events == []


def test_logix_upload_session() -> None:
    # RSLogix reads the program through Rockwell's own objects (classes 0x68-0x8e, 0x3xx, services
    # 0x4b/0x4f); it never touches the File object (cip.class == 0x37: no frame), so no upload event.
    # Forward Open: cip.service == 0x54 (7 requests from .105) and 0xd4 (7 replies from .120).
    results = run_capture(CAPTURES / "iti-ics-tools__EIP-SoftwareUpload.pcap", "enip")
    assert results.events == []
    assert facts_by_ip(results, "role") == {"192.168.10.105": {"cip_originator"},
                                           "192.168.10.120": {"cip_target"}}
    assert facts_by_ip(results, "model")["192.168.10.120"] == {"1756-L61/B LOGIX5561"}
    assert facts_by_ip(results, "firmware")["192.168.10.120"] == {"16.20"}


@pytest.mark.parametrize(("name", "expected"), [
    # cip.service == 0x4e (Logix Read-Modify-Write Tag on symbolic paths, which tshark 4.0 shows as
    # "Unknown Service (0x4e)"; no Forward Close in these captures): writes per PLC, where identical
    # connected messages (they differ only in the sequence count) fold into one counted event
    ("iti-ics-tools__EthernetIP-CIP.pcap", {"141.81.0.23": 82, "141.81.0.43": 82, "141.81.0.63": 114,
                                            "141.81.0.83": 164}),
    ("iti-ics-tools__mb2.pcap", {"141.81.0.23": 21, "141.81.0.43": 21, "141.81.0.63": 29, "141.81.0.83": 41}),
])
def test_tag_writes_match_tshark(name: str, expected: dict[str, int]) -> None:
    results = run_capture(CAPTURES / name, "enip")
    assert {(e.kind, e.src[1]) for e in results.events} == {("register_write", "141.81.0.10")}
    writes: Counter[str] = Counter()
    for e in results.events:
        writes[e.dst[1]] += e.count
    assert writes == expected
    assert len(results.events) < sum(expected.values())  # the sequence count does not defeat folding
    assert {s for e in results.events for s in e.details["services"]} == {"read_modify_write_tag"}
