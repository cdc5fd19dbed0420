"""IEC 60870-5-104 dissector: common addresses, controlling/controlled roles and commands, on
hand-built APDUs and against what tshark decodes in the shared captures."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest

from dissect_helpers import dissect_one, dissector, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.capture import CaptureReader
from tapwatch.decode import Decoder
from tapwatch.dissect import Evidence, Packet
from tapwatch.dissect.iec104 import IEC104, apdus, cp56time
from tapwatch.dissect.stage import DissectResults, DissectStage

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_IEC104 = sorted(name for name, t in TRUTH.items() if t["iec104"]["type_ids"])

CONTROLLING, CONTROLLED = "10.0.0.10", "10.0.0.20"
CA = 37133
STARTDT_ACT = bytes.fromhex("680407000000")


def i_frame(type_id: int, cause: int, elements: bytes, count: int = 1, ioa: int = 0, sq: bool = False,
            ca: int = CA, send: int = 0, recv: int = 0) -> bytes:
    asdu = bytes([type_id, count | (0x80 if sq else 0), cause, 0]) + ca.to_bytes(2, "little")
    asdu += ioa.to_bytes(3, "little") + elements
    control = (send << 1).to_bytes(2, "little") + (recv << 1).to_bytes(2, "little")
    return bytes([0x68, len(asdu) + 4]) + control + asdu


def command(payload: bytes) -> Packet:
    return packet(payload, transport="tcp", sport=49200, dport=2404, src_ip=CONTROLLING, dst_ip=CONTROLLED)


def monitor(payload: bytes) -> Packet:
    return packet(payload, transport="tcp", sport=2404, dport=49200, src_ip=CONTROLLED, dst_ip=CONTROLLING)


def test_startdt_gives_roles() -> None:
    ev = dissect_one("iec104", command(STARTDT_ACT))
    assert ev.errors == [] and ev.events == []
    assert ev.facts == [("dst", "role", "iec104_controlled", 0.7), ("src", "role", "iec104_controlling", 0.7)]


def test_spontaneous_measurements_name_the_sender() -> None:
    payload = i_frame(36, 3, struct.pack("<fB", 1.5, 0) + bytes(7), ca=10516)
    ev = dissect_one("iec104", monitor(payload + i_frame(13, 3, struct.pack("<fB", 2.0, 0), ca=10772)))
    assert ev.errors == [] and ev.events == []
    assert ev.facts == [("src", "iec104_common_address", "10516", 0.8),
                        ("src", "iec104_common_address", "10772", 0.8),
                        ("src", "role", "iec104_controlled", 0.7), ("dst", "role", "iec104_controlling", 0.7)]


def test_single_command_select_and_execute() -> None:
    select = dissect_one("iec104", command(i_frame(45, 6, b"\x81", ioa=10010)))
    assert select.errors == []
    assert ("dst", "iec104_common_address", "37133", 0.8) in select.facts  # the commanded station's
    assert select.events == [("src", "point_operate", {
        "type_id": 45, "type": "C_SC_NA_1", "cause": 6, "common_address": CA, "ioa": 10010,
        "value": 1, "select": True})]
    execute = dissect_one("iec104", command(i_frame(45, 6, b"\x01", ioa=10010)))
    assert execute.events[0][2]["select"] is False


@pytest.mark.parametrize(("type_id", "element", "extra"), [
    (46, b"\x02", {"value": 2, "select": False}),
    (47, b"\x81", {"value": 1, "select": True}),
    (48, struct.pack("<hB", -1200, 0), {"value": -1200, "select": False}),
    (49, struct.pack("<hB", 300, 0x80), {"value": 300, "select": True}),
    (50, struct.pack("<fB", 0.5, 0), {"value": 0.5, "select": False}),
    (51, (0xDEADBEEF).to_bytes(4, "little"), {"value": 0xDEADBEEF}),
    (58, b"\x01" + bytes(7), {"value": 1, "select": False}),
    (63, struct.pack("<fB", 2.5, 0) + bytes(7), {"value": 2.5, "select": False}),
])
def test_other_commands(type_id: int, element: bytes, extra: dict) -> None:
    ev = dissect_one("iec104", command(i_frame(type_id, 6, element, ioa=7)))
    assert ev.errors == []
    (side, kind, details), = ev.events
    assert (side, kind) == ("src", "point_operate")
    assert {k: details[k] for k in extra} == extra


def test_confirmation_of_a_command_is_not_an_event() -> None:
    ev = dissect_one("iec104", monitor(i_frame(45, 7, b"\x81", ioa=10010)))
    assert ev.events == [] and ev.errors == []
    assert ("src", "iec104_common_address", "37133", 0.8) in ev.facts


def test_clock_synchronisation() -> None:
    time = bytes.fromhex("c83239081d0808")  # TestDissectIec104.pcap frame 139
    assert cp56time(time) == "2008-08-29T08:57:13.000"
    ev = dissect_one("iec104", command(i_frame(103, 6, time)))
    assert ev.events == [("src", "time_set", {"type_id": 103, "type": "C_CS_NA_1", "cause": 6,
                                              "common_address": CA, "ioa": 0,
                                              "time": "2008-08-29T08:57:13.000"})]


def test_reset_process_and_parameters() -> None:
    ev = dissect_one("iec104", command(i_frame(105, 6, b"\x01")))
    assert ev.events == [("src", "device_reset", {"type_id": 105, "type": "C_RP_NA_1", "cause": 6,
                                                  "common_address": CA, "ioa": 0, "qualifier": 1})]
    ev = dissect_one("iec104", command(i_frame(112, 6, struct.pack("<fB", 0.1, 1), ioa=4001)))
    assert [k for _s, k, _d in ev.events] == ["config_write"]


def test_interrogation_is_not_an_event() -> None:
    ev = dissect_one("iec104", command(i_frame(100, 6, b"\x14")))
    assert ev.events == [] and ev.errors == []


def test_file_transfer_actor_is_the_controlling_station() -> None:
    call = dissect_one("iec104", command(i_frame(122, 13, (3).to_bytes(2, "little") + b"\x00\x01", ioa=8)))
    assert call.events == [("src", "file_transfer", {"type_id": 122, "type": "F_SC_NA_1", "cause": 13,
                                                     "common_address": CA, "ioa": 8, "file": 3})]
    ready = dissect_one("iec104", monitor(i_frame(120, 13, (3).to_bytes(2, "little") + bytes(4), ioa=8)))
    assert [(s, k) for s, k, _d in ready.events] == [("dst", "file_transfer")]
    segment = dissect_one("iec104", monitor(i_frame(125, 13, b"\x03\x00\x01\x02ab", ioa=8)))
    assert segment.events == [] and segment.errors == []


def test_several_apdus_and_s_frames_in_one_segment() -> None:
    s_frame = bytes.fromhex("680401000200")
    payload = s_frame + i_frame(100, 7, b"\x14") + i_frame(1, 20, b"\x00" * 10, count=10, sq=True, ioa=10010)
    found, end = apdus(payload)
    assert end == len(payload)
    assert [(a.format, a.type_id, a.error) for a in found] == [
        ("S", None, None), ("I", 100, None), ("I", 1, None)]
    ev = dissect_one("iec104", monitor(payload))
    assert ev.errors == [] and ev.events == []


@pytest.mark.parametrize(("payload", "reason"), [
    (bytes.fromhex("680207000000"), "APCI length 2"),
    (bytes.fromhex("68050700000000"), "U format APDU of length 5"),
    (bytes.fromhex("680417000000"), "U format control 0x17"),
    (i_frame(22, 3, b"\x00"), "undefined type id 22"),
    (i_frame(1, 0, b"\x00"), "cause of transmission 0"),
    (i_frame(1, 3, b"\x00", count=0), "ASDU without information objects"),
    (i_frame(1, 3, b"\x00\x00", count=2), "ASDU length 11 disagrees with 2 x M_SP_NA_1"),
    (bytes.fromhex("680600000000") + b"\x18\x01", "ASDU of 2 bytes"),
])
def test_malformed_apdus_are_errors(payload: bytes, reason: str) -> None:
    ev = dissect_one("iec104", command(payload))
    assert [r for _s, r in ev.errors] == [reason]
    assert ev.events == []


def test_bytes_before_an_apdu_are_skipped() -> None:
    ev = dissect_one("iec104", command(b"\x01\x02\x03" + i_frame(45, 6, b"\x01", ioa=5)))
    assert ev.errors == [] and [k for _s, k, _d in ev.events] == ["point_operate"]


@pytest.mark.parametrize("payload", [b"", b"\x68", b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 20])
def test_other_traffic_on_2404_says_nothing(payload: bytes) -> None:
    ev = dissect_one("iec104", command(payload))
    assert ev.facts == [] and ev.events == [] and ev.errors == []


def test_truncated_and_random_payloads_never_raise() -> None:
    d = IEC104()
    rng = random.Random(2404)
    valid = [STARTDT_ACT + i_frame(45, 6, b"\x81", ioa=10010),
             i_frame(103, 6, bytes.fromhex("c83239081d0808")),
             i_frame(36, 3, struct.pack("<fB", 1.5, 0) + bytes(7)) + bytes.fromhex("680401000200"),
             i_frame(122, 13, b"\x03\x00\x00\x01", ioa=8), i_frame(1, 20, bytes(10), count=10, sq=True)]
    for payload in valid:
        for cut in range(len(payload) + 1):
            d.dissect(command(payload[:cut]), Evidence())
            d.dissect(monitor(payload[cut:]), Evidence())
        for _ in range(40):
            mutated = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            d.dissect(command(bytes(mutated)), Evidence())
    for _ in range(400):
        pkt = (command if rng.random() < 0.5 else monitor)(b"\x68" + rng.randbytes(rng.randint(0, 300)))
        pkt.l3 = rng.randbytes(rng.choice((0, 20, 60)))
        d.dissect(pkt, Evidence())
        d.dissect(command(rng.randbytes(rng.randint(0, 300))), Evidence())


# ---------------------------------------------------------------- real captures


def run_recording(path: Path) -> tuple[DissectResults, set[int]]:
    """Run the IEC 104 dissector through the real selector; also the type ids it parsed."""
    type_ids: set[int] = set()

    class Recording(IEC104):
        def dissect(self, pkt: Packet, out: Evidence) -> None:
            type_ids.update(a.type_id for a in apdus(pkt.payload)[0] if a.type_id is not None)
            super().dissect(pkt, out)

    stage = DissectStage([Recording()])
    decoder = Decoder()
    with CaptureReader(path) as reader:
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                stage.batch(chunk, rows)
    return stage.results, type_ids


@pytest.mark.parametrize("name", WITH_IEC104)
def test_real_captures_match_tshark(name: str) -> None:
    truth = TRUTH[name]["iec104"]
    results, type_ids = run_recording(CAPTURES / name)
    # every iec60870_asdu.typeid tshark decoded is parsed. In TestDissectIec104.pcap, 24 and 26
    # come from APDUs tshark itself marks [Malformed Packet] (frames 41 and 83: garbage bytes,
    # then an APDU whose ASDU is 2 bytes long): the parser reads their type id too, but they
    # give no fact and, found by skipping garbage, count no error.
    assert set(truth["type_ids"]) <= type_ids
    addresses = facts_by_ip(results, "iec104_common_address")
    roles = facts_by_ip(results, "role")
    # iec60870_asdu.addr: every common address is a fact, about the controlled station (2404)
    assert {str(a) for a in truth["common_addresses"]} <= set().union(*addresses.values())
    for ip in addresses:
        assert roles[ip] == {"iec104_controlled"}, ip
    assert results.errors == {}


def test_ndpi_capture_addresses_and_roles() -> None:
    # ip.src 10.175.211.1 (tcp.srcport 2404) sends M_ME_TF_1 with common addresses 10516 and
    # 10772 (frame 13 holds two APDUs); 10.175.211.3 sends only an S frame from 2404
    results = run_capture(CAPTURES / "ndpi__IEC104.pcap", "iec104")
    assert facts_by_ip(results, "iec104_common_address") == {"10.175.211.1": {"10516", "10772"}}
    assert facts_by_ip(results, "role") == {"10.175.211.1": {"iec104_controlled"},
                                            "10.175.211.3": {"iec104_controlled"},
                                            "10.119.105.26": {"iec104_controlling"}}


def test_commands_in_the_test_capture() -> None:
    # tshark -Y 'iec60870_asdu.causetx == 6' -e frame.number -e iec60870_asdu.typeid
    # -e iec60870_asdu.ioa: 109 C_IC_NA_1 (interrogation: no event), 117 C_DC_NA_1 15000,
    # 124 126 133 136 C_SC_NA_1 on 10010 10010 22222 33333, 139 C_CS_NA_1
    results = run_capture(CAPTURES / "iti-ics-tools__TestDissectIec104.pcap", "iec104")
    got = [(e.packet, e.kind, e.src[1], e.dst[1], e.details["type"], e.details["ioa"])
           for e in results.events]
    c, o = "172.27.248.109", "172.27.248.79"
    assert got == [(117, "point_operate", c, o, "C_DC_NA_1", 15000),
                   (124, "point_operate", c, o, "C_SC_NA_1", 10010),
                   (126, "point_operate", c, o, "C_SC_NA_1", 10010),
                   (133, "point_operate", c, o, "C_SC_NA_1", 22222),
                   (136, "point_operate", c, o, "C_SC_NA_1", 33333),
                   (139, "time_set", c, o, "C_CS_NA_1", 0)]
    assert [e.details.get("select") for e in results.events[:5]] == [True, True, False, True, True]
    assert results.events[3].details.get("test") is True  # cause 0x86: test bit


def test_dissector_is_registered_for_all_segments() -> None:
    d = dissector("iec104")
    assert d.tcp_ports == frozenset({2404}) and d.tcp_all_segments
