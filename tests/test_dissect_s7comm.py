"""S7comm dissector: TPKT/COTP, S7 jobs and SZL identity, checked by hand and against tshark.

Real-capture expectations were read with tshark 4.0.17 (filters named next to each one).
The selector hands a dissector each distinct payload of a sender once, so where a capture
repeats a byte-identical request the expected count is the number of distinct payloads.
These tests rely on `tcp_all_segments` (every new port-102 payload reaches the dissector).
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter

import pytest

from dissect_helpers import facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.base import Evidence
from tapwatch.dissect.s7comm import S7Comm

TRUTH = {t["file"]: t for t in (json.loads(line) for line in
                                (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_S7 = sorted(f for f, t in TRUTH.items() if t["s7comm"]["present"])
WITH_SZL = sorted(f for f, t in TRUTH.items() if t["s7comm"]["szl_identity"])
PLC, PG = "10.0.0.2", "10.0.0.1"


# ---------------------------------------------------------------- builders

def tpkt(body: bytes) -> bytes:
    return b"\x03\x00" + struct.pack(">H", len(body) + 4) + body


def dt(s7: bytes, eot: bool = True) -> bytes:
    return tpkt(b"\x02\xf0" + (b"\x80" if eot else b"\x00") + s7)


def s7(rosctr: int, param: bytes, data: bytes = b"", ref: int = 1) -> bytes:
    head = struct.pack(">BBHHHH", 0x32, rosctr, 0, ref, len(param), len(data))
    if rosctr in (2, 3):
        head += b"\x00\x00"  # error class, error code
    return head + param + data


def cotp_connect(code: int, called: bytes) -> bytes:
    params = b"\xc0\x01\x0a" + b"\xc1\x02\x01\x00" + b"\xc2" + bytes([len(called)]) + called
    return tpkt(bytes([6 + len(params), code]) + b"\x00\x00\x00\x01\x00" + params)


def szl_response(szl: bytes, dur: int = 0, more: bool = False) -> bytes:
    param = b"\x00\x01\x12\x08\x12\x84\x01\x01" + bytes([dur, 1 if more else 0]) + b"\x00\x00"
    return dt(s7(7, param, b"\xff\x09" + struct.pack(">H", len(szl)) + szl))


def szl_list(szl_id: int, size: int, records: list[bytes]) -> bytes:
    return struct.pack(">HHHH", szl_id, 0, size, len(records)) + b"".join(records)


def to_plc(payload: bytes) -> object:
    return packet(payload, transport="tcp", sport=40000, dport=102, src_ip=PG, dst_ip=PLC)


def from_plc(payload: bytes) -> object:
    return packet(payload, transport="tcp", sport=102, dport=40000, src_ip=PLC, dst_ip=PG,
                  src_mac="02:00:00:00:00:02", dst_mac="02:00:00:00:00:01")


def run(d: S7Comm, pkt: object) -> Evidence:
    ev = Evidence()
    d.dissect(pkt, ev)  # type: ignore[arg-type]
    return ev


PLC_FACTS = [("src", "s7_protocol", "s7comm", 0.9), ("src", "vendor", "Siemens", 0.8),
             ("src", "device_type", "plc", 0.7)]
SETUP_ACK = dt(s7(3, bytes.fromhex("f0000001000101e0")))


# ---------------------------------------------------------------- unit tests

def test_rack_slot_once_the_connection_speaks_s7() -> None:
    d = S7Comm()
    assert run(d, to_plc(cotp_connect(0xE0, b"\x01\x02"))).facts == []
    assert run(d, from_plc(cotp_connect(0xD0, b"\x01\x02"))).facts == []
    ev = run(d, from_plc(SETUP_ACK))
    assert ev.facts == PLC_FACTS + [("src", "rack_slot", "0/2", 0.6)]
    assert run(d, from_plc(SETUP_ACK)).facts == PLC_FACTS  # said once per connection
    # rack 1, slot 3 is encoded 0x23
    run(d, to_plc(cotp_connect(0xE0, b"\x03\x23")))
    assert ("src", "rack_slot", "1/3", 0.6) in run(d, from_plc(SETUP_ACK)).facts


def test_mms_tsaps_and_payloads_are_not_s7() -> None:
    d = S7Comm()
    run(d, to_plc(cotp_connect(0xE0, b"\x00\x01")))
    mms = dt(bytes.fromhex("a0 1c 02 01 01 a4 17".replace(" ", "")))
    for pkt in (from_plc(cotp_connect(0xD0, b"\x00\x01")), from_plc(mms)):
        ev = run(d, pkt)
        assert ev.facts == [] and ev.events == [] and ev.errors == []


def test_job_requests_are_events_of_the_sender() -> None:
    d = S7Comm()
    write = s7(1, bytes.fromhex("0501120a100200040001840000 20".replace(" ", "")),
               bytes.fromhex("000400200102 0304".replace(" ", "")))
    download = s7(1, bytes.fromhex("1a00010000000000") + b"\x09_0A00001P" + b"\x0d1000500000400")
    upload = s7(1, bytes.fromhex("1d00000000000000") + b"\x09_0B00000A")
    insert = s7(1, bytes.fromhex("28000000000000fd000a0100") + b"0A00001P" + b"\x05_INSE")
    start = s7(1, bytes.fromhex("28000000000000fd0000") + b"\x09P_PROGRAM")
    stop = s7(1, bytes.fromhex("290000000000") + b"\x09P_PROGRAM")
    clock = s7(7, bytes.fromhex("0001120411470200"), bytes.fromhex("ff09000a00192401011234567801"))
    expected = [
        (write, ("src", "register_write", {"service": "write_var", "items": 1, "addresses": ["DB1.4.0"]})),
        (download, ("src", "program_download", {"block": "DB1"})),
        (upload, ("src", "program_upload", {"block": "SDB0"})),
        (insert, ("src", "config_write", {"service": "_INSE", "blocks": ["DB1"]})),
        (start, ("src", "plc_start", {"service": "P_PROGRAM", "argument": ""})),
        (stop, ("src", "plc_stop", {"service": "P_PROGRAM"})),
        (clock, ("src", "time_set", {"service": "set_clock"})),
    ]
    for pdu, event in expected:
        ev = run(d, to_plc(dt(pdu)))
        assert ev.events == [event] and ev.facts == [] and ev.errors == []


def test_several_tpkts_in_one_segment() -> None:
    read = s7(1, bytes.fromhex("0401120a10020004000184000000"))
    write = s7(1, bytes.fromhex("0501120a10010001000083000008"), bytes.fromhex("0003000101"))
    ev = run(S7Comm(), to_plc(dt(read) + dt(write) + tpkt(b"\x02\xf0\x00")))
    assert ev.events == [("src", "register_write",
                          {"service": "write_var", "items": 1, "addresses": ["M1.0"]})]
    assert ev.errors == []


def test_szl_module_identification() -> None:
    records = [b"\x00\x01" + b"6ES7 214-1AG40-0XB0 " + bytes.fromhex("00c0 0000 0001".replace(" ", "")),
               b"\x00\x07" + b" " * 20 + bytes.fromhex("00c0 5604 0203".replace(" ", ""))]
    ev = run(S7Comm(), from_plc(szl_response(szl_list(0x0011, 28, records))))
    assert ev.facts == PLC_FACTS + [("src", "order_number", "6ES7 214-1AG40-0XB0", 0.9),
                                    ("src", "firmware", "V4.2.3", 0.9)]


def test_szl_component_identification_reassembled() -> None:
    def rec(index: int, text: str) -> bytes:
        return struct.pack(">H", index) + text.encode().ljust(32, b"\x00")

    szl = szl_list(0x001C, 34, [rec(1, "Line 4"), rec(2, "PLC_1"), rec(3, ""),
                                rec(4, "Original Siemens Equipment"), rec(5, "S C-X4U12345678"),
                                rec(7, "CPU 1214C DC/DC/DC")])
    d = S7Comm()
    first = run(d, from_plc(szl_response(szl[:100], dur=6, more=True)))
    assert first.facts == PLC_FACTS
    last = run(d, from_plc(szl_response(szl[100:], dur=6)))
    assert last.facts == PLC_FACTS + [("src", "hostname", "Line 4", 0.6), ("src", "module", "PLC_1", 0.9),
                                      ("src", "serial", "S C-X4U12345678", 0.9),
                                      ("src", "model", "CPU 1214C DC/DC/DC", 0.9)]


def test_cpu_mode_and_its_change() -> None:
    def mode(bzu: int) -> bytes:
        return szl_response(szl_list(0x0424, 20, [bytes([0x51, 0x44, 0xFF, bzu]) + bytes(16)]))

    d = S7Comm()
    assert run(d, from_plc(mode(0x08))).facts[-1] == ("src", "plc_mode", "run", 0.9)
    assert run(d, from_plc(mode(0x08))).events == []
    ev = run(d, from_plc(mode(0x83)))
    assert ev.facts[-1] == ("src", "plc_mode", "stop", 0.9)
    assert ev.events == [("src", "mode_change", {"from": "run", "to": "stop"})]


def test_s7comm_plus_is_recognised() -> None:
    plus = dt(bytes.fromhex("720300622008c83ace381dfdbc42"))
    ev = run(S7Comm(), from_plc(plus))
    assert ev.facts == [("src", "s7_protocol", "s7comm-plus", 0.9), ("src", "vendor", "Siemens", 0.8),
                        ("src", "device_type", "plc", 0.7)]
    assert run(S7Comm(), to_plc(plus)).facts == []  # the client is not the PLC


def test_malformed_is_reported() -> None:
    assert run(S7Comm(), to_plc(tpkt(b"\x02\xf0\x80\x32\x09" + bytes(8)))).errors == [
        ("src", "unknown S7 ROSCTR 9")]
    assert run(S7Comm(), to_plc(b"\x03\x00\x00\x05\x00")).errors == [
        ("src", "TPKT length shorter than a COTP header")]
    short = struct.pack(">BBHHHH", 0x32, 1, 0, 1, 10, 0) + b"\x04\x01"  # says 10 parameter bytes
    assert run(S7Comm(), to_plc(dt(short))).errors == [
        ("src", "S7 PDU shorter than its header says")]


VALID = [
    cotp_connect(0xE0, b"\x01\x02"),
    dt(s7(1, bytes.fromhex("0502120a100200040001840000201200"), bytes.fromhex("0004002001020304"))),
    dt(s7(1, bytes.fromhex("28000000000000fd000a0100") + b"0A00001P" + b"\x05_INSE")),
    szl_response(szl_list(0x0011, 28, [b"\x00\x07" + b" " * 20 + bytes.fromhex("00c056040203")])),
    szl_response(szl_list(0x001C, 34, [b"\x00\x01" + b"x" * 32]), more=True),
    szl_response(szl_list(0x0424, 20, [bytes([0x51, 0x44, 0xFF, 0x08]) + bytes(16)])),
]


def test_never_raises_on_prefixes_and_random_bytes() -> None:
    d = S7Comm()
    for payload in VALID:
        for end in range(len(payload) + 1):
            for pkt in (to_plc(payload[:end]), from_plc(payload[:end])):
                run(d, pkt)
    rng = random.Random(102)
    for _ in range(400):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        payload = rng.choice([b"", b"\x03\x00", tpkt(b"\x02\xf0\x80\x32"), tpkt(b"\x02\xf0\x80\x72")])
        run(d, from_plc(payload + body))
        run(d, to_plc(tpkt(body)))


# ---------------------------------------------------------------- real captures

def _plc_ips(results: object) -> set[str]:
    return {ip for ip, v in facts_by_ip(results, "s7_protocol").items() if "s7comm" in v}  # type: ignore[arg-type]


@pytest.mark.parametrize("name", WITH_S7)
def test_every_s7_capture_shows_its_plc_and_rosctrs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[int] = set()
    original = S7Comm._s7

    def spy(self: S7Comm, pkt: object, pdu: bytes, out: Evidence) -> None:
        if pdu[0] == 0x32 and len(pdu) > 1:
            seen.add(pdu[1])
        original(self, pkt, pdu, out)  # type: ignore[arg-type]

    monkeypatch.setattr(S7Comm, "_s7", spy)
    results = run_capture(CAPTURES / name, "s7comm")
    truth = TRUTH[name]["s7comm"]
    assert seen == set(truth["rosctr"])
    # ROSCTR 7 only (readDiagData): the PLC answers in userdata; otherwise in ack_data too
    assert _plc_ips(results), "no S7 responder found"
    assert not results.errors


SZL_FIELDS = {"name": ("hostname", "module"), "serialn": ("serial",), "cputypname": ("model",)}


@pytest.mark.parametrize("name", WITH_SZL)
def test_szl_identity_strings_are_facts_of_the_plc(name: str) -> None:
    results = run_capture(CAPTURES / name, "s7comm")
    plcs = _plc_ips(results)
    for entry in TRUTH[name]["s7comm"]["szl_identity"]:
        # s7comm.szl.001c.000{1,2}.name, .0005.serialn, .0007.cputypname (tshark pads nothing here)
        found = [ip for ip in plcs if any(entry["value"].strip() in facts_by_ip(results, a).get(ip, set())
                                          for a in SZL_FIELDS[entry["field"]])]
        assert found, entry


def test_identity_of_the_et200s_cpu() -> None:
    # tshark: s7comm.data.userdata.szl_id == 0x001c (reassembled from 2 fragments, frames 69+72),
    # 0x0011 index 1/6 MlfB, 0x0424 bzu-id 0x08 (RUN); cotp.dst-tsap-bytes == 01:02 in the CR
    results = run_capture(CAPTURES / "iti-ics-tools__s7comm_reading_plc_status.pcap", "s7comm")
    plc = "192.168.1.40"
    want = {"hostname": {"IM151-8-CPU"}, "module": {"IM151-8 PN/DP CPU"}, "model": {"IM151-8 PN/DP CPU"},
            "serial": {"S C-C6TW74882012"}, "order_number": {"6ES7 151-8AB01-0AB0"},
            "firmware": {"V3.2.6"}, "plc_mode": {"run"}, "rack_slot": {"0/2"}, "vendor": {"Siemens"},
            "device_type": {"plc"}, "s7_protocol": {"s7comm"}}
    for attribute, values in want.items():
        assert facts_by_ip(results, attribute).get(plc) == values, attribute
    assert {ip for (_m, ip, *_rest) in results.facts} == {plc}
    assert results.events == []


def test_snap7_identity_and_rejected_uploads() -> None:
    # tshark: SZL 0x0011 index 7 Ausbg 0x5603 Ausbe 0x0206 -> V3.2.6; cotp.dst-tsap-bytes == 01:01;
    # s7comm.header.rosctr == 1 && s7comm.param.func == 0x1d -> frames 20, 22, 25, 28 (_0B00000A = SDB0)
    results = run_capture(CAPTURES / "icsnpp-s7comm__s7ident.pcap", "s7comm")
    plc = "172.17.0.2"
    assert facts_by_ip(results, "firmware")[plc] == {"V3.2.6"}
    assert facts_by_ip(results, "order_number")[plc] == {"6ES7 315-2EH14-0AB0"}
    assert facts_by_ip(results, "rack_slot")[plc] == {"0/1"}
    assert facts_by_ip(results, "hostname")[plc] == {"SNAP7-SERVER"}
    # the four identical jobs (only the PDU reference differs) fold into one event, counted
    assert [(e.packet, e.kind, e.details, e.count) for e in results.events] == [
        (20, "program_upload", {"block": "SDB0"}, 4)]


def test_block_download_and_insert() -> None:
    # tshark: s7comm.param.func == 0x1a (Request download, frame 43, _0A00001P = DB1) from the PG;
    # s7comm.param.func == 0x28 (PI-Service _INSE(DB1), frame 58). The Download block/ended jobs
    # (0x1b/0x1c) are sent by the PLC to pull the block and are not separate events.
    results = run_capture(CAPTURES / "iti-ics-tools__s7comm_downloading_block_db1.pcap", "s7comm")
    events = [(e.packet, e.src[1], e.dst[1], e.kind, e.details) for e in results.events]
    assert events == [
        (43, "192.168.1.10", "192.168.1.40", "program_download", {"block": "DB1"}),
        (58, "192.168.1.10", "192.168.1.40", "config_write", {"service": "_INSE", "blocks": ["DB1"]}),
    ]
    # the PG answers the PLC's Download block jobs with ack_data but is not taken for a PLC
    assert _plc_ips(results) == {"192.168.1.40"}


def test_s7comm_plus_and_classic_writes_on_linux_cooked_capture() -> None:
    # tshark: tcp.srcport == 102 && tcp.payload[7] == 0x72 -> 87 frames from 192.168.0.1 (tshark 4.0
    # has no S7comm-plus dissector, so it shows them as COTP);
    # s7comm.header.rosctr == 1 && s7comm.param.func == 0x05: frames 155 160 164 183 206 214 218 234
    results = run_capture(CAPTURES / "icsnpp-s7comm__s7comm_plus.pcap", "s7comm")
    assert facts_by_ip(results, "s7_protocol") == {"192.168.0.1": {"s7comm", "s7comm-plus"}}
    counts = {k[3]: v.count for k, v in results.facts.items() if k[1:3] == ("192.168.0.1", "s7_protocol")}
    assert counts["s7comm-plus"] == 87
    writes = [(e.packet, e.details["addresses"], e.count) for e in results.events
              if e.kind == "register_write"]
    # frames 206-234 repeat the jobs of 155-183 byte for byte but for the PDU reference
    assert writes == [(155, ["Q1.0"], 2), (160, ["Q2.0"], 2), (164, ["DB5.0.0"], 2),
                      (183, ["Q1.0"], 2)]
    # the Linux cooked header carries the sender's MAC (sll.src.eth)
    assert {e.src for e in results.events} == {("00:50:56:bd:18:fd", "192.168.0.33")}


@pytest.mark.parametrize(("name", "expected"), [
    # tshark -Y "s7comm.header.rosctr == 1 && s7comm.param.func == 0x05" -T fields -e ip.dst:
    # Write Var jobs per PLC; repeats fold into events whose counts add up to these
    ("iti-ics-tools__mb2.pcap", {"141.81.0.111": 14, "141.81.0.130": 7, "141.81.0.146": 41,
                                 "141.81.0.151": 14, "141.81.0.166": 28, "141.81.0.237": 7,
                                 "141.81.0.31": 8, "141.81.0.51": 8, "141.81.0.71": 8,
                                 "141.81.0.91": 7}),
    ("iti-ics-tools__wincc_s400_production.pcapng", {"194.250.63.170": 27}),
])
def test_write_var_jobs_match_tshark(name: str, expected: dict[str, int]) -> None:
    results = run_capture(CAPTURES / name, "s7comm")
    assert {e.kind for e in results.events} == {"register_write"}
    counted: Counter[str] = Counter()
    for e in results.events:
        counted[e.dst[1]] += e.count
    assert counted == expected
    assert len({e.src[1] for e in results.events}) == 1


@pytest.mark.parametrize("name", ["iti-ics-tools__iec61850_read.pcap",
                                  "iti-ics-tools__Sample_File_MMS_and_GOOSE.pcap"])
def test_mms_on_port_102_gives_nothing(name: str) -> None:
    results = run_capture(CAPTURES / name, "s7comm")
    assert results.facts == {} and results.events == [] and results.errors == {}
