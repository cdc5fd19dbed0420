"""DNP3 dissector: link addresses and CRCs, master/outstation roles and the operations a master
performs, on hand-built frames and against what tshark decodes in the shared captures."""

from __future__ import annotations

import json
import random

import pytest

from dissect_helpers import dissect_one, dissector, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect import Evidence
from tapwatch.dissect.dnp3 import DNP3, crc16, frames, object_headers

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_DNP3 = sorted(name for name, t in TRUTH.items() if t["dnp3"]["link_src_addresses_by_ip"])

MASTER_ADDR, OUTSTATION_ADDR = 3, 4


def link_frame(control: int, dst: int, src: int, user: bytes = b"") -> bytes:
    """A link frame with its header and 16-byte data block CRCs."""
    header = (b"\x05\x64" + bytes([len(user) + 5, control]) + dst.to_bytes(2, "little")
              + src.to_bytes(2, "little"))
    out = header + crc16(header).to_bytes(2, "little")
    for i in range(0, len(user), 16):
        block = user[i : i + 16]
        out += block + crc16(block).to_bytes(2, "little")
    return out


def from_master(app: bytes, transport: int = 0xC0) -> bytes:
    """Unconfirmed user data from the master (DIR=1, PRM=1), one transport segment."""
    return link_frame(0xC4, OUTSTATION_ADDR, MASTER_ADDR, bytes([transport]) + app)


def from_outstation(app: bytes) -> bytes:
    return link_frame(0x44, MASTER_ADDR, OUTSTATION_ADDR, bytes([0xC0]) + app)


def to_outstation(payload: bytes, transport: str = "tcp"):
    return packet(payload, transport=transport, sport=50000, dport=20000, src_ip="10.0.0.8",
                  dst_ip="10.0.0.3")


def to_master(payload: bytes):
    return packet(payload, transport="tcp", sport=20000, dport=50000, src_ip="10.0.0.3", dst_ip="10.0.0.8")


MASTER_FACTS = [("src", "dnp3_address", "3", 0.8), ("src", "role", "dnp3_master", 0.7),
                ("dst", "role", "dnp3_outstation", 0.6)]


def test_crc_matches_a_captured_frame() -> None:
    # cold_restart_and_response.pcap frame 4: 05 64 08 c4 0a 00 01 00, CRC fc 42
    assert crc16(bytes.fromhex("056408c40a000100")) == 0x42FC


def test_cold_restart_request() -> None:
    ev = dissect_one("dnp3", to_outstation(from_master(b"\xc1\x0d")))
    assert ev.errors == []
    assert ev.facts == MASTER_FACTS
    assert ev.events == [("src", "cold_restart", {"function_code": 13, "function": "cold_restart",
                                                  "link_destination": 4})]


def test_select_of_a_control_relay_output_block() -> None:
    crob = bytes([0x0C, 0x01, 0x28, 0x01, 0x00, 0x07, 0x00, 0x41, 0x01]) + (100).to_bytes(4, "little")
    crob += bytes(5)
    ev = dissect_one("dnp3", to_outstation(from_master(b"\xc2\x03" + crob)))
    assert ev.errors == []
    assert ev.events == [("src", "point_operate", {
        "function_code": 3, "function": "select", "link_destination": 4, "objects": ["g12v1"],
        "points": [7], "control_code": 0x41})]


def test_direct_operate_of_an_analog_output_over_udp() -> None:
    aob = bytes([0x29, 0x02, 0x17, 0x02, 0x01]) + (500).to_bytes(2, "little") + b"\x00" + bytes([0x03]) \
        + (7).to_bytes(2, "little") + b"\x00"
    ev = dissect_one("dnp3", to_outstation(from_master(b"\xc3\x05" + aob), transport="udp"))
    assert ev.errors == []
    assert ev.events == [("src", "point_operate", {
        "function_code": 5, "function": "direct_operate", "link_destination": 4, "objects": ["g41v2"],
        "points": [1, 3]})]


def test_write_of_the_time_is_a_time_set() -> None:
    time_ms = 1324573673682
    write = b"\xc4\x02" + bytes([0x32, 0x01, 0x07, 0x01]) + time_ms.to_bytes(6, "little")
    ev = dissect_one("dnp3", to_outstation(from_master(write)))
    assert ev.events == [("src", "time_set", {"function_code": 2, "function": "write", "link_destination": 4,
                                              "objects": ["g50v1"], "time_ms": time_ms})]


def test_clearing_the_restart_indication_is_not_a_config_write() -> None:
    clear = b"\xc5\x02" + bytes([0x50, 0x01, 0x00, 0x07, 0x07, 0x00])
    ev = dissect_one("dnp3", to_outstation(from_master(clear)))
    assert ev.events == [] and ev.errors == []


def test_other_writes_are_config_writes() -> None:
    deadband = b"\xc6\x02" + bytes([0x22, 0x01, 0x00, 0x00, 0x01]) + (10).to_bytes(2, "little") * 2
    ev = dissect_one("dnp3", to_outstation(from_master(deadband)))
    assert ev.events == [("src", "config_write", {"function_code": 2, "function": "write",
                                                  "link_destination": 4, "objects": ["g34v1"],
                                                  "points": [0, 1]})]


@pytest.mark.parametrize(("fc", "kind"), [(14, "warm_restart"), (17, "plc_start"), (18, "plc_stop"),
                                          (31, "config_write"), (27, "file_transfer")])
def test_function_codes_to_events(fc: int, kind: str) -> None:
    ev = dissect_one("dnp3", to_outstation(from_master(bytes([0xC7, fc]))))
    assert [k for _s, k, _d in ev.events] == [kind]


def test_open_file_names_the_file() -> None:
    name = b"./test.xml"
    command = (26).to_bytes(2, "little") + len(name).to_bytes(2, "little") + bytes(22) + name
    app = b"\xce\x19" + bytes([0x46, 0x03, 0x5B, 0x01]) + len(command).to_bytes(2, "little") + command
    ev = dissect_one("dnp3", to_outstation(from_master(app)))
    assert ev.events == [("src", "file_transfer", {"function_code": 25, "function": "open_file",
                                                   "link_destination": 4, "objects": ["g70v3"],
                                                   "file": "./test.xml"})]


def test_read_of_file_data_is_a_file_transfer() -> None:
    transport = (0x12345678).to_bytes(4, "little") + bytes(4)
    app = b"\xcf\x01" + bytes([0x46, 0x05, 0x5B, 0x01]) + len(transport).to_bytes(2, "little") + transport
    ev = dissect_one("dnp3", to_outstation(from_master(app)))
    assert [k for _s, k, _d in ev.events] == ["file_transfer"]


def test_class_poll_is_no_event_and_its_headers_parse() -> None:
    poll = bytes([0x3C, 0x02, 0x06, 0x3C, 0x03, 0x06, 0x3C, 0x04, 0x06, 0x3C, 0x01, 0x06])
    headers, error = object_headers(poll, with_data=False)
    assert error is None and [(h.group, h.variation) for h in headers] == [(60, 2), (60, 3), (60, 4), (60, 1)]
    ev = dissect_one("dnp3", to_outstation(from_master(b"\xc0\x01" + poll)))
    assert ev.events == [] and ev.errors == []


def test_read_with_index_prefix_has_no_object_data() -> None:
    headers, error = object_headers(bytes([0x01, 0x02, 0x17, 0x02, 0x05, 0x09, 0x1E, 0x01, 0x06]), False)
    assert error is None
    assert [(h.group, h.variation, h.points) for h in headers] == [(1, 2, (5, 9)), (30, 1, ())]


def test_response_makes_the_sender_an_outstation() -> None:
    ev = dissect_one("dnp3", to_master(from_outstation(b"\xc0\x81\x90\x00")))
    assert ev.errors == [] and ev.events == []
    assert ev.facts == [("src", "dnp3_address", "4", 0.8), ("src", "role", "dnp3_outstation", 0.7),
                        ("dst", "role", "dnp3_master", 0.6)]


def test_link_status_frames_take_the_role_from_the_direction_bit() -> None:
    ev = dissect_one("dnp3", to_master(link_frame(0x0B, MASTER_ADDR, OUTSTATION_ADDR)))  # LINK_STATUS
    assert ev.facts == [("src", "dnp3_address", "4", 0.8), ("src", "role", "dnp3_outstation", 0.7),
                        ("dst", "role", "dnp3_master", 0.6)]


def test_several_frames_in_one_segment() -> None:
    two = from_master(b"\xc1\x0d") + link_frame(0xC9, OUTSTATION_ADDR, MASTER_ADDR)  # + REQUEST_LINK_STATUS
    ev = dissect_one("dnp3", to_outstation(two))
    assert ev.errors == [] and [k for _s, k, _d in ev.events] == ["cold_restart"]


def test_a_frame_continued_from_the_previous_segment_is_skipped() -> None:
    tail = from_master(b"\xc1\x0d" + bytes(40))[-15:]
    ev = dissect_one("dnp3", to_outstation(tail + from_master(b"\xc2\x0e")))
    assert ev.errors == [] and [k for _s, k, _d in ev.events] == ["warm_restart"]


def test_bad_crcs_are_errors() -> None:
    frame = bytearray(from_master(b"\xc1\x0d"))
    frame[8] ^= 0xFF  # header CRC
    ev = dissect_one("dnp3", to_outstation(bytes(frame)))
    assert [r for _s, r in ev.errors] == ["link header CRC mismatch"] and ev.facts == []
    frame = bytearray(from_master(b"\xc1\x0d"))
    frame[-1] ^= 0xFF  # data block CRC
    ev = dissect_one("dnp3", to_outstation(bytes(frame)))
    assert [r for _s, r in ev.errors] == ["data block CRC mismatch"] and ev.events == []
    assert ("src", "dnp3_address", "3", 0.8) in ev.facts  # the header itself was sound


@pytest.mark.parametrize(("payload", "reason"), [
    (from_master(b"\xc1\x63"), "undefined application function code 99"),
    (from_master(b"\xc1"), "application header truncated"),
    (from_outstation(b"\xc0\x81"), "response without internal indications"),
    (from_master(b"\xc1\x01\x01\x02\x00\x09\x03"), "object range 9..3 reversed"),
    (from_master(b"\xc1\x01\x01\x02\x0a"), "object qualifier 0x0a reserved"),
    (link_frame(0xC4, 4, 3)[:2] + b"\x03" + link_frame(0xC4, 4, 3)[3:8]
     + crc16(b"\x05\x64\x03" + link_frame(0xC4, 4, 3)[3:8]).to_bytes(2, "little"), "link length 3 below 5"),
])
def test_malformed_dnp3_is_an_error(payload: bytes, reason: str) -> None:
    ev = dissect_one("dnp3", to_outstation(payload))
    assert [r for _s, r in ev.errors] == [reason]


@pytest.mark.parametrize("payload", [b"", b"\x05", b"GET / HTTP/1.1\r\n\r\n",
                                     b"\x05\x05\x11\xc4" + bytes(20)])
def test_other_traffic_on_20000_says_nothing(payload: bytes) -> None:
    ev = dissect_one("dnp3", to_outstation(payload))
    assert ev.facts == [] and ev.events == [] and ev.errors == []


def test_truncated_and_random_payloads_never_raise() -> None:
    d = DNP3()
    rng = random.Random(20000)
    crob = bytes([0x0C, 0x01, 0x28, 0x01, 0x00, 0x07, 0x00, 0x41, 0x01]) + bytes(9)
    valid = [from_master(b"\xc2\x03" + crob), from_master(b"\xc4\x02\x32\x01\x07\x01" + bytes(6)),
             from_master(b"\xc0\x01\x3c\x02\x06\x3c\x03\x06\x01\x02\x17\x02\x05\x09"),
             from_outstation(b"\xc0\x81\x90\x00\x01\x02\x00\x00\x03\x01\x01\x01\x01"),
             from_master(b"\xce\x19\x46\x03\x5b\x01\x24\x00\x1a\x00\x0a\x00" + bytes(22) + b"./test.xml")]
    for payload in valid:
        for cut in range(len(payload) + 1):
            d.dissect(to_outstation(payload[:cut]), Evidence())
        for _ in range(40):
            mutated = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            d.dissect(to_outstation(bytes(mutated)), Evidence())
    for _ in range(300):
        d.dissect(to_outstation(b"\x05\x64" + rng.randbytes(rng.randint(0, 300))), Evidence())
        d.dissect(to_master(rng.randbytes(rng.randint(0, 300))), Evidence())
    for _ in range(300):  # random application layers inside valid link frames
        d.dissect(to_outstation(from_master(rng.randbytes(rng.randint(0, 60)))), Evidence())
        assert object_headers(rng.randbytes(rng.randint(0, 80)), rng.random() < 0.5) is not None


# ---------------------------------------------------------------- real captures


@pytest.mark.parametrize("name", WITH_DNP3)
def test_link_source_addresses_match_tshark(name: str) -> None:
    # dnp3.src per ip.src, exactly: every station's address is a fact about the sender
    truth = TRUTH[name]["dnp3"]["link_src_addresses_by_ip"]
    results = run_capture(CAPTURES / name, "dnp3")
    got = facts_by_ip(results, "dnp3_address")
    assert dict(got) == {ip: {str(a) for a in addrs} for ip, addrs in truth.items()}
    assert results.errors == {}  # tshark finds no CRC error in any of them (dnp3.hdr.CRC.incorrect)


def events(name: str) -> list[tuple[int, str, str, str, dict]]:
    results = run_capture(CAPTURES / name, "dnp3")
    return [(e.packet, e.kind, e.src[1], e.dst[1], e.details) for e in results.events]


def test_cold_restart_capture() -> None:
    # tshark -Y 'dnp3.al.func == 13': frame 4, 192.168.60.1 (address 1) -> 192.168.60.130 (10)
    assert events("iti-ics-tools__cold_restart_and_response.pcap") == [
        (4, "cold_restart", "192.168.60.1", "192.168.60.130",
         {"function_code": 13, "function": "cold_restart", "link_destination": 10})]
    results = run_capture(CAPTURES / "iti-ics-tools__cold_restart_and_response.pcap", "dnp3")
    roles = facts_by_ip(results, "role")
    assert roles == {"192.168.60.1": {"dnp3_master"}, "192.168.60.130": {"dnp3_outstation"}}


def test_select_operate_capture() -> None:
    # tshark -Y 'dnp3.al.func == 3 || dnp3.al.func == 4': frames 4 (SELECT) and 7 (OPERATE), one
    # CROB (dnp3.al.obj 0x0c01, qualifier 0x28) on index 0, control code 0x03 (latch on)
    crob = {"link_destination": 10, "objects": ["g12v1"], "points": [0], "control_code": 3}
    m, o = "192.168.60.1", "192.168.60.130"
    assert events("iti-ics-tools__select_operate_and_responses.pcap") == [
        (4, "point_operate", m, o, {"function_code": 3, "function": "select", **crob}),
        (7, "point_operate", m, o, {"function_code": 4, "function": "operate", **crob})]


def test_udp_select_operate_capture() -> None:
    # tshark -Y 'dnp3.al.func == 3 || dnp3.al.func == 4' (UDP): frames 1 and 3, CROB index 1
    got = [(n, k, s, d, det["function"], det["points"]) for n, k, s, d, det in
           events("zeek__dnp3_udp_select_operate.pcap")]
    assert got == [(1, "point_operate", "192.168.80.160", "192.168.80.12", "select", [1]),
                   (3, "point_operate", "192.168.80.160", "192.168.80.12", "operate", [1])]


def test_file_and_time_capture() -> None:
    # tshark -Y 'dnp3.al.func == 25 || dnp3.al.func == 26 || dnp3.al.obj == 0x4605 ||
    #   (dnp3.al.func == 2 && dnp3.al.obj == 0x3201)': 4 OPEN_FILE ./test.xml, 7 READ g70v5,
    # 18 and 21 WRITE g50v1 (time), 24 CLOSE_FILE
    got = [(n, k, det["function"], det.get("file"))
           for n, k, _s, _d, det in events("zeek__dnp3_file_read.pcap")]
    assert got == [(4, "file_transfer", "open_file", "./test.xml"), (7, "file_transfer", "read", None),
                   (18, "time_set", "write", None), (21, "time_set", "write", None),
                   (24, "file_transfer", "close_file", None)]


def test_restarts_stops_and_time_in_the_test_data_capture() -> None:
    # tshark -Y 'dnp3.ctl.dir == 1 && dnp3.al.func in {2,13,14,18}': frames 7 33 128 133 WRITE
    # g50v1; 88 137 WRITE g80v1 (clear restart: no event); 70 76 COLD_RESTART; 143 146
    # WARM_RESTART; 163 166 174 176 STOP_APPL (166 and 176 repeat 163 and 174 byte for byte,
    # so they are parsed once); 174 is to the broadcast address 0xffff.
    got = [(n, k, s) for n, k, s, _d, _det in events("iti-ics-tools__dnp3_test_data_part1.pcap")]
    assert got == [(7, "time_set", "10.0.0.8"), (33, "time_set", "10.0.0.8"),
                   (70, "cold_restart", "10.0.0.8"), (76, "cold_restart", "10.0.0.9"),
                   (128, "time_set", "10.0.0.8"), (133, "time_set", "10.0.0.8"),
                   (143, "warm_restart", "10.0.0.8"), (146, "warm_restart", "10.0.0.8"),
                   (163, "plc_stop", "10.0.0.8"), (174, "plc_stop", "10.0.0.9")]


def test_every_distinct_operate_in_the_icsnpp_capture() -> None:
    # tshark -Y 'dnp3.al.func == 3 || dnp3.al.func == 4' -e tcp.payload | sort -u: 28 distinct
    # payloads (134 SELECT and 133 OPERATE frames, repeats parsed once), all CROBs to address 5
    got = events("icsnpp-dnp3__dnp3_example.pcap")
    assert len(got) == 28
    assert {(k, s, d, det["objects"][0], det["link_destination"]) for _n, k, s, d, det in got} == {
        ("point_operate", "10.10.20.5", "10.10.20.8", "g12v1", 5)}


@pytest.mark.parametrize("name", ["iti-ics-tools__auth_change_session_keys.pcap",
                                  "iti-ics-tools__conformance-8.9.2.2_dump.pcap",
                                  "iti-ics-tools__unsolcited_response_and_confirm.pcap"])
def test_captures_without_operations(name: str) -> None:
    # authentication challenges, class polls, unsolicited responses and confirms only
    assert events(name) == []


def test_dissector_is_registered_for_tcp_and_udp() -> None:
    d = dissector("dnp3")
    assert d.tcp_ports == d.udp_ports == frozenset({20000}) and d.tcp_all_segments


def test_frames_helper_reports_addresses() -> None:
    found, errors = frames(from_master(b"\xc1\x0d") + from_outstation(b"\xc1\x81\x00\x00"))
    assert errors == [] and [(f.source, f.destination) for f in found] == [(3, 4), (4, 3)]
