"""Modbus/TCP dissector: unit ids, roles, writes, restarts, 43/14 identification and UMAS,
on hand-built ADUs and against what tshark decodes in the shared captures."""

from __future__ import annotations

import json
import random
import struct
from collections import defaultdict
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from dissect_helpers import dissect_one, dissector, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.capture import CaptureReader
from tapwatch.decode import Decoder
from tapwatch.dissect import Evidence, Packet
from tapwatch.dissect.modbus import Modbus, pdus
from tapwatch.dissect.stage import DissectStage

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_MODBUS = sorted(name for name, t in TRUTH.items() if t["modbus"]["function_codes"])

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def adu(unit: int, pdu: bytes, tid: int = 1, pid: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1 if length is None else length, unit) + pdu


def request(payload: bytes, **kw) -> Packet:
    return packet(payload, transport="tcp", sport=49152, dport=502, src_ip=CLIENT, dst_ip=SERVER, **kw)


def response(payload: bytes, **kw) -> Packet:
    return packet(payload, transport="tcp", sport=502, dport=49152, src_ip=SERVER, dst_ip=CLIENT, **kw)


ROLES = [("dst", "role", "modbus_server", 0.7), ("src", "role", "modbus_client", 0.7)]


def test_write_single_register_request() -> None:
    ev = dissect_one("modbus", request(adu(7, b"\x06\x00\x05\x00\x0b")))
    assert ev.errors == []
    assert ev.facts == [("dst", "modbus_unit_id", "7", 0.8), *ROLES]
    assert ev.events == [("src", "register_write", {
        "function_code": 6, "function": "write_single_register", "unit_id": 7, "address": 5,
        "quantity": 1, "value": 11})]


def test_several_adus_in_one_segment() -> None:
    two = adu(1, b"\x10\x00\x01\x00\x02\x04\x00\xaa\x00\xbb", tid=1) + adu(2, b"\x03\x00\x00\x00\x0a", tid=2)
    ev = dissect_one("modbus", request(two))
    assert ev.errors == []
    assert [f for f in ev.facts if f[1] == "modbus_unit_id"] == [
        ("dst", "modbus_unit_id", "1", 0.8), ("dst", "modbus_unit_id", "2", 0.8)]
    assert ev.events == [("src", "register_write", {
        "function_code": 16, "function": "write_multiple_registers", "unit_id": 1, "address": 1,
        "quantity": 2})]


@pytest.mark.parametrize(("pdu", "details"), [
    (b"\x05\x00\x02\xff\x00", {"function_code": 5, "function": "write_single_coil", "address": 2,
                               "quantity": 1, "value": 0xFF00}),
    (b"\x0f\x00\x13\x00\x0a\x02\xcd\x01", {"function_code": 15, "function": "write_multiple_coils",
                                           "address": 19, "quantity": 10}),
    (b"\x16\x00\x04\x00\xf2\x00\x25", {"function_code": 22, "function": "mask_write_register",
                                       "address": 4, "quantity": 1, "and_mask": 0xF2, "or_mask": 0x25}),
    (b"\x17\x00\x03\x00\x06\x00\x0e\x00\x03\x06\x00\xff\x00\xff\x00\xff",
     {"function_code": 23, "function": "read_write_multiple_registers", "address": 14, "quantity": 3,
      "read_address": 3, "read_quantity": 6}),
    (b"\x15\x0d\x06\x00\x04\x00\x07\x00\x03\x06\xaf\x04\xbe\x10\x0d",
     {"function_code": 21, "function": "write_file_record", "address": 7, "quantity": 3, "file": 4}),
])
def test_write_functions(pdu: bytes, details: dict) -> None:
    ev = dissect_one("modbus", request(adu(3, pdu)))
    assert ev.errors == []
    assert ev.events == [("src", "register_write", {**details, "unit_id": 3})]


def test_write_echoed_in_a_response_is_not_an_event() -> None:
    ev = dissect_one("modbus", response(adu(7, b"\x06\x00\x05\x00\x0b")))
    assert ev.events == [] and ev.errors == []
    assert ev.facts == [("src", "modbus_unit_id", "7", 0.8), ("src", "role", "modbus_server", 0.7),
                        ("dst", "role", "modbus_client", 0.7)]


def test_read_device_identification_response() -> None:
    objects = [(0, b"Schneider Electric"), (1, b"BMX NOE 0100"), (2, b"V2.60"), (3, b"www.se.com"),
               (4, b"Modicon M340"), (5, b"BMX P34 2020"), (6, b"Line 3")]
    body = b"".join(bytes([i, len(v)]) + v for i, v in objects)
    pdu = bytes([0x2B, 0x0E, 0x01, 0x83, 0x00, 0x00, len(objects)]) + body
    ev = dissect_one("modbus", response(adu(1, pdu)))
    assert ev.errors == []
    assert sorted(f for f in ev.facts if f[1] != "role") == sorted([
        ("src", "vendor", "Schneider Electric", 0.9), ("src", "product_code", "BMX NOE 0100", 0.9),
        ("src", "firmware", "V2.60", 0.9), ("src", "product_name", "Modicon M340", 0.9),
        ("src", "model", "BMX P34 2020", 0.9), ("src", "modbus_unit_id", "1", 0.8)])


def test_device_identification_with_a_lying_object_count_stops_at_the_data() -> None:
    pdu = bytes([0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 9, 0, 4]) + b"Acme" + bytes([1, 50]) + b"short"
    ev = dissect_one("modbus", response(adu(1, pdu)))
    assert ("src", "vendor", "Acme", 0.9) in ev.facts
    assert not [f for f in ev.facts if f[1] == "product_code"]


def test_exception_response_is_not_an_error() -> None:
    ev = dissect_one("modbus", response(adu(0, b"\x83\x02")))
    assert ev.errors == [] and ev.events == []
    assert ("src", "modbus_unit_id", "0", 0.8) in ev.facts


def test_diagnostics_restart_and_listen_only() -> None:
    ev = dissect_one("modbus", request(adu(10, b"\x08\x00\x01\xff\x00")))
    assert ev.events == [("src", "device_reset", {"function_code": 8, "function": "diagnostics",
                                                  "unit_id": 10, "sub_function": 1, "clear_event_log": True})]
    ev = dissect_one("modbus", request(adu(10, b"\x08\x00\x04\x00\x00")))
    assert ev.events == [("src", "mode_change", {"function_code": 8, "function": "diagnostics",
                                                 "unit_id": 10, "sub_function": 4, "mode": "listen_only"})]
    assert dissect_one("modbus", request(adu(10, b"\x08\x00\x00\x12\x34"))).events == []  # echo test


@pytest.mark.parametrize(("payload", "reason"), [
    (adu(1, b"\x00\x00\x01"), "function code 0"),
    (adu(1, b"\x32\x00\x01"), "undefined function code 50"),
    (adu(1, b"\x10\x00\x01\x00\x02\x05\x00\xaa\x00\xbb"),
     "function 16 request fields disagree with its length"),
    (adu(1, b"\x03\x00\x01\x00\x01", length=0x8804), "MBAP length 34820"),
    (adu(1, b"\x03\x00\x01\x00\x01", length=1), "MBAP length 1"),
    (adu(1, b"\x03\x00\x01\x00\x01") + b"\x16\x03\x01\x00\x05\x01",
     "bytes after an ADU are not an MBAP header"),
])
def test_broken_modbus_is_an_error(payload: bytes, reason: str) -> None:
    ev = dissect_one("modbus", request(payload))
    assert [r for _side, r in ev.errors] == [reason]
    assert ev.events == []


def test_response_byte_count_must_match() -> None:
    ev = dissect_one("modbus", response(adu(1, b"\x03\x04\x00\x01")))
    assert [r for _side, r in ev.errors] == ["function 3 response byte count 4 disagrees with its length"]


@pytest.mark.parametrize("payload", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS on port 502
    b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n",
    adu(1, b"\x03\x00\x01\x00\x01", pid=1),  # protocol id 1: not Modbus
    b"\x00\x01\x00\x00\x00",  # too short for an ADU
])
def test_other_traffic_on_502_says_nothing(payload: bytes) -> None:
    ev = dissect_one("modbus", request(payload))
    assert ev.facts == [] and ev.events == [] and ev.errors == []


def test_umas_start_stop_and_program_transfer() -> None:
    for code, kind, name in ((0x40, "plc_start", "start_plc"), (0x41, "plc_stop", "stop_plc"),
                             (0x30, "program_download", "initialize_upload"),
                             (0x33, "program_upload", "initialize_download")):
        ev = dissect_one("modbus", request(adu(0, bytes([0x5A, 0x01, code, 0x00]))))
        assert ev.events == [("src", kind, {"function_code": 90, "function": "umas", "unit_id": 0,
                                            "umas_function": name, "umas_code": code})]


def test_umas_read_id_answer_names_the_cpu() -> None:
    mb = Modbus()
    ev = Evidence()
    mb.dissect(request(adu(0, b"\x5a\x00\x02", tid=9)), ev)
    assert ev.events == []
    answer = b"\x5a\x00\xfe" + bytes(22) + b"\x0e140 CPU 311 10" + b"\x01\x01\x01\x00"
    ev = Evidence()
    mb.dissect(response(adu(0, answer, tid=9)), ev)
    assert ("src", "model", "140 CPU 311 10", 0.8) in ev.facts
    assert ("src", "device_type", "plc", 0.6) in ev.facts
    ev = Evidence()  # the same answer to another transaction is not taken as READ_ID
    mb.dissect(response(adu(0, answer, tid=10)), ev)
    assert not [f for f in ev.facts if f[1] == "model"]


def with_seq(pkt: Packet, seq: int) -> Packet:
    pkt.l3 = bytes(IP(src=pkt.src_ip, dst=pkt.dst_ip) / TCP(sport=pkt.sport, dport=pkt.dport, seq=seq)
                   / Raw(pkt.payload))
    return pkt


def test_adu_cut_by_its_segment_is_skipped_in_the_next() -> None:
    """A register dump of zeros runs into the next segment: its continuation is not an MBAP
    header (as in ModbusTCP.pcap frame 8334), and the ADU after it is still found."""
    long_response = adu(255, b"\x04\x28" + bytes(40))  # 49 bytes
    mb = Modbus()
    ev = Evidence()
    mb.dissect(with_seq(response(long_response[:20]), 1000), ev)
    assert ev.errors == [] and ("src", "modbus_unit_id", "255", 0.8) in ev.facts
    ev = Evidence()
    mb.dissect(with_seq(response(long_response[20:40]), 1020), ev)  # all continuation
    assert ev.facts == [] and ev.errors == []
    ev = Evidence()
    mb.dissect(with_seq(response(long_response[40:] + adu(7, b"\x03\x02\x00\x01")), 1040), ev)
    assert ev.errors == []
    assert [f for f in ev.facts if f[1] == "modbus_unit_id"] == [("src", "modbus_unit_id", "7", 0.8)]


def valid_payloads() -> list[tuple[bool, bytes]]:
    devid = bytes([0x2B, 0x0E, 0x01, 0x83, 0x00, 0x00, 2, 0, 4]) + b"Acme" + bytes([1, 3]) + b"X-1"
    return [
        (True, adu(1, b"\x10\x00\x01\x00\x02\x04\x00\xaa\x00\xbb") + adu(2, b"\x08\x00\x01\x00\x00")),
        (True, adu(3, b"\x17\x00\x03\x00\x06\x00\x0e\x00\x03\x06\x00\xff\x00\xff\x00\xff")),
        (True, adu(3, b"\x15\x0d\x06\x00\x04\x00\x07\x00\x03\x06\xaf\x04\xbe\x10\x0d")),
        (True, adu(0, b"\x5a\x00\x41\x00")),
        (False, adu(1, devid)),
        (False, adu(0, b"\x5a\x00\xfe" + bytes(22) + b"\x03CPU")),
        (False, adu(1, b"\x03\x04\x00\x01\x00\x02") + adu(1, b"\x83\x02")),
    ]


def test_truncated_and_random_payloads_never_raise() -> None:
    mb = Modbus()
    rng = random.Random(502)
    for to_server, payload in valid_payloads():
        make = request if to_server else response
        for cut in range(len(payload) + 1):
            mb.dissect(make(payload[:cut]), Evidence())
        for _ in range(50):
            mutated = bytearray(payload)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            mb.dissect(make(bytes(mutated)), Evidence())
    for _ in range(400):
        payload = rng.randbytes(rng.randint(0, 300))
        if rng.random() < 0.5:  # make the MBAP protocol id valid, so the PDU gets parsed
            payload = payload[:2] + b"\x00\x00" + payload[4:]
        pkt = (request if rng.random() < 0.5 else response)(payload)
        pkt.l3 = rng.randbytes(rng.choice((0, 20, 60)))
        mb.dissect(pkt, Evidence())


# ---------------------------------------------------------------- real captures


def run_recording(path: Path) -> tuple[object, list[tuple[str, str, bytes]]]:
    """Run the Modbus dissector through the real selector, recording every payload it got."""
    seen: list[tuple[str, str, bytes]] = []

    class Recording(Modbus):
        def dissect(self, pkt: Packet, out: Evidence) -> None:
            seen.append((pkt.src_ip, pkt.dst_ip, pkt.payload) if pkt.dport == 502 else
                        (pkt.dst_ip, pkt.src_ip, pkt.payload))
            super().dissect(pkt, out)

    stage = DissectStage([Recording()])
    decoder = Decoder()
    with CaptureReader(path) as reader:
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                stage.batch(chunk, rows)
    return stage.results, seen


@pytest.mark.parametrize("name", WITH_MODBUS)
def test_real_captures_match_tshark(name: str) -> None:
    truth = TRUTH[name]["modbus"]
    results, seen = run_recording(CAPTURES / name)
    units = facts_by_ip(results, "modbus_unit_id")
    roles = facts_by_ip(results, "role")
    servers_of: dict[str, set[str]] = defaultdict(set)  # client -> servers it sent requests to
    codes: set[int] = set()
    meis: set[int] = set()
    for client, server, payload in seen:
        servers_of[client].add(server)
        for pdu in pdus(payload):
            codes.add(pdu[0] & 0x7F)
            if pdu[0] == 43 and len(pdu) > 1:
                meis.add(pdu[1])
    # every function code and MEI type tshark decoded (modbus.func_code, modbus.mei) is parsed
    assert set(truth["function_codes"]) <= codes
    assert set(truth["mei_types"]) <= meis
    # tshark keys mbtcp.unit_id by the frame's source. A server's responses carry its own unit
    # ids; a client's requests carry the unit ids of the servers they address. The unit id is a
    # fact about the server: about the source of responses, the destination of requests.
    for ip, ids in truth["unit_ids_by_src"].items():
        expected = {str(i) for i in ids}
        if "modbus_server" in roles.get(ip, set()):
            assert expected <= units[ip], ip
        if "modbus_client" in roles.get(ip, set()):
            assert expected <= set().union(*(units.get(s, set()) for s in servers_of[ip])), ip
        assert roles.get(ip, set()) & {"modbus_server", "modbus_client"}, ip
    # Read Device Identification objects (modbus.object_id / modbus.object_str_value), keyed by
    # the responding server
    attribute = {0: "vendor", 1: "product_code", 2: "firmware", 4: "product_name", 5: "model"}
    for ip, objects in truth["device_id_objects"].items():
        for obj in objects:
            if obj["object_id"] in attribute:
                assert obj["value"] in facts_by_ip(results, attribute[obj["object_id"]])[ip], obj


def events(name: str) -> list[tuple[int, str, str, str, dict]]:
    results = run_capture(CAPTURES / name, "modbus")
    return [(e.packet, e.kind, e.src[1], e.dst[1], e.details) for e in results.events]


def test_writes_in_the_icsnpp_capture() -> None:
    # tshark -Y 'tcp.dstport == 502 && modbus.func_code in {5,6,15,16,21,22,23}' gives frames
    # 36 40 52 56 68 72 76 80 84; frame 68 is a Write File Record with byte count 0 (no
    # sub-request), which is malformed and counted as an error instead.
    got = [(n, d["function_code"], d["unit_id"], d["address"], d["quantity"])
           for n, kind, _s, _d, d in events("icsnpp-modbus__modbus_example.pcap") if kind == "register_write"]
    assert got == [(36, 5, 6, 1, 1), (40, 6, 7, 1, 1), (52, 15, 7, 1, 4), (56, 16, 7, 1, 4),
                   (72, 22, 4, 10, 1), (76, 22, 4, 10, 1), (80, 23, 6, 2, 1), (84, 23, 6, 2, 3)]
    results = run_capture(CAPTURES / "icsnpp-modbus__modbus_example.pcap", "modbus")
    assert [v[1] for v in results.errors.values()] == ["function 21 request fields disagree with its length"]


def test_diagnostics_and_writes_in_the_test_data_capture() -> None:
    # tshark -Y 'tcp.dstport == 502 && modbus.func_code == 8' -e modbus.diagnostic_code:
    # frames 8,10,12 sub-function 4 (force listen only), 15,17 sub-function 1 (restart
    # communications), 20,23,26 others; repeated identical requests are parsed once.
    # tshark -Y 'tcp.dstport == 502 && modbus.func_code in {5,6}': frames 60 63 66.
    got = [(n, kind, s, d, det.get("sub_function", det.get("address")))
           for n, kind, s, d, det in events("iti-ics-tools__modbus_test_data_part1.pcap")]
    assert got == [(8, "mode_change", "10.0.0.57", "10.0.0.3", 4),
                   (15, "device_reset", "10.0.0.57", "10.0.0.3", 1),
                   (60, "register_write", "10.0.0.9", "10.0.0.3", 2),
                   (63, "register_write", "10.0.0.9", "10.0.0.3", 1),
                   (66, "register_write", "10.0.0.9", "10.0.0.3", 5)]


def test_umas_capture() -> None:
    # Frame 4 asks READ_ID (5a 00 02); frame 6 answers with CPU "140 CPU 311 10" (the name nmap's
    # modicon-info reads at the same place). Frame 76 is UMAS 0x33, initialize download: the
    # engineering station reads the program out of the PLC.
    results = run_capture(CAPTURES / "ndpi__umas.pcap", "modbus")
    assert facts_by_ip(results, "model")["192.168.63.253"] == {"140 CPU 311 10"}
    assert facts_by_ip(results, "device_type")["192.168.63.253"] == {"plc"}
    assert [(e.packet, e.kind, e.src[1], e.dst[1]) for e in results.events] == [
        (76, "program_upload", "192.168.63.100", "192.168.63.253")]
    assert results.errors == {}


def test_non_modbus_traffic_on_502_is_ignored() -> None:
    results = run_capture(CAPTURES / "zeek__modbus-and-non-modbus-p502.pcap", "modbus")
    assert results.errors == {}
    assert set(facts_by_ip(results, "modbus_unit_id")) == {"10.0.0.3"}


def test_dissector_is_registered_for_all_segments() -> None:
    d = dissector("modbus")
    assert d.tcp_ports == frozenset({502}) and d.tcp_all_segments
