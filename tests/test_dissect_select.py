"""The selector: each distinct payload of a sender is dissected once and its repeats are
counted, also when the seen set fills up and is cleared in the middle of a batch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tapwatch.capture import CaptureReader
from tapwatch.decode import Decoder
from tapwatch.decode import select as sel
from tapwatch.dissect.stage import DissectResults, DissectStage

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"
TCP_MASK, UDP_MASK, MASKS = 6, 7, 8  # in Picker.tables: the mask row of each port, the rows


def run(path: Path, seen_slots: int, in_decoder: bool = True,
        whole_payloads: bool = False) -> tuple[DissectResults, int]:
    """All dissectors over a capture with a seen set of `seen_slots`, rows picked by the
    decoder (or afterwards, by the stage); also how often the set was cleared. With
    `whole_payloads`, no byte is left out of a payload's identity (no novelty_ignore)."""
    stage = DissectStage()
    if whole_payloads:
        stage.picker.tables[TCP_MASK][:] = -1
        stage.picker.tables[UDP_MASK][:] = -1
    stage.seen = np.zeros((seen_slots, sel.SEEN_COLUMNS), dtype=np.int64)
    clears = 0
    finish = stage.finish

    def counted_finish() -> None:
        nonlocal clears
        clears += 1
        finish()

    stage.finish = counted_finish  # type: ignore[method-assign]
    decoder = Decoder(picker=stage.picker if in_decoder else None)
    with CaptureReader(path) as reader:
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                stage.batch(chunk, rows)
    finish()
    return stage.results, clears


def operations(results: DissectResults) -> Counter[str]:
    """How many times each distinct operation happened (folded repeats included)."""
    total: Counter[str] = Counter()
    for e in results.events + results.signals:
        total[json.dumps([e.src, e.dst, e.protocol, e.kind, e.details], sort_keys=True,
                         default=str)] += e.count
    return total


@pytest.mark.parametrize("name", ["iti-ics-tools__ModbusTCP.pcap", "iti-ics-tools__EthernetIP-CIP.pcap",
                                  "icsnpp-dnp3__dnp3_example.pcap", "icsnpp-s7comm__s7comm_plus.pcap"])
def test_a_full_seen_set_is_cleared_without_losing_or_double_counting(name: str) -> None:
    large, large_clears = run(CAPTURES / name, sel.SEEN_SLOTS)
    small, small_clears = run(CAPTURES / name, 64)
    assert large_clears == 0
    assert small_clears > 0  # the small set really filled up, several times over
    assert set(small.facts) == set(large.facts)
    assert sum(operations(large).values()) > len(large.events) + len(large.signals)  # folded
    assert operations(small) == operations(large)
    assert small.errors.keys() == large.errors.keys()


def test_repeats_are_counted_not_dissected_again() -> None:
    path = CAPTURES / "iti-ics-tools__ModbusTCP.pcap"
    with CaptureReader(path) as reader:
        packets = sum(len(chunk) for chunk in reader.chunks())
    results, _ = run(path, sel.SEEN_SLOTS)
    assert 0 < results.packets < packets // 2  # a polling loop: most payloads repeat


@pytest.mark.parametrize("name", ["iti-ics-tools__EthernetIP-CIP.pcap", "ndpi__iphone.pcap",
                                  "tcpdump__LLDP_and_CDP.pcap", "zeek__nmap-vsn.pcap"])
def test_the_decoder_picks_the_rows_the_stage_would(name: str) -> None:
    fused, _ = run(CAPTURES / name, sel.SEEN_SLOTS)
    after, _ = run(CAPTURES / name, sel.SEEN_SLOTS, in_decoder=False)
    assert fused.packets == after.packets > 0
    assert fused.facts == after.facts
    assert operations(fused) == operations(after)


FOLDING = ["iti-ics-tools__modbus_test_data_part1.pcap", "iti-ics-tools__modbus_test_2.pcap",
           "iti-ics-tools__ModbusTCP.pcap", "zeek__modbus-and-non-modbus-p502.pcap", "ndpi__umas.pcap",
           "iti-ics-tools__EthernetIP-CIP.pcap", "icsnpp-s7comm__s7comm_plus.pcap",
           "ndpi__iphone.pcap", "ndpi__1kxun.pcap", "iot-dataset__blink-cam-01.pcap"]


@pytest.mark.parametrize("name", FOLDING)
def test_bytes_left_out_of_identities_lose_nothing(name: str) -> None:
    """Transaction and message ids (Modbus, DNS, DHCP...), pipelined ADUs' ids and read
    values are left out of a payload's identity: what is folded that way said nothing else."""
    masked, _ = run(CAPTURES / name, sel.SEEN_SLOTS)
    whole, _ = run(CAPTURES / name, sel.SEEN_SLOTS, whole_payloads=True)
    assert set(masked.facts) == set(whole.facts)
    assert operations(masked) == operations(whole)
    assert masked.errors.keys() == whole.errors.keys()
    assert masked.packets < whole.packets  # and something was folded


def test_pipelined_modbus_polls_and_read_values_fold() -> None:
    """A poll of several ADUs per segment with new transaction ids, and its answers with new
    register values, are dissected once; a write among them is not folded away."""
    stage = DissectStage()
    modbus = next(d for d in stage.dissectors if d.name == "modbus")
    spec = stage.picker.tables[MASKS][stage.picker.tables[TCP_MASK][502]]

    def identity(payload: bytes) -> int:
        buf = np.frombuffer(payload + bytes(64), dtype=np.uint8)
        keep = np.full(sel.MASKED_WORDS, -1, dtype=np.int64)
        sel._blank.py_func(spec.reshape(1, -1), 0, buf, 0, len(payload), keep)
        words = [int.from_bytes(payload[i:i + 8].ljust(8, b"\0"), "little", signed=True)
                 for i in range(0, 64, 8)]
        return hash(tuple(w & k for w, k in zip(words, keep.tolist(), strict=True)))

    def adu(tid: int, pdu: bytes, unit: int = 1) -> bytes:
        return tid.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu

    poll = [b"\x03\x00\x10\x00\x02", b"\x04\x00\x20\x00\x01", b"\x01\x00\x00\x00\x08"]
    assert identity(b"".join(adu(t, p) for t, p in zip((1, 2, 3), poll, strict=True))) == \
        identity(b"".join(adu(t, p) for t, p in zip((7, 8, 9), poll, strict=True)))
    answers = (b"\x03\x04\x00\x01\x00\x02", b"\x03\x04\x12\x34\x56\x78")
    assert identity(adu(1, answers[0])) == identity(adu(2, answers[1]))
    write = b"\x06\x00\x10\x00\x05"
    assert identity(adu(1, write)) != identity(adu(1, b"\x06\x00\x10\x00\x06"))
    assert identity(adu(1, poll[0]) + adu(2, write)) != \
        identity(adu(1, poll[0]) + adu(2, b"\x06\x00\x10\x00\x06"))
    # another unit, another byte count, an exception: all new
    assert identity(adu(1, answers[0])) != identity(adu(1, answers[0], unit=2))
    assert identity(adu(1, answers[0])) != identity(adu(1, b"\x03\x02\x00\x01" + b"\0\0"))
    assert identity(adu(1, b"\x83\x02")) != identity(adu(1, b"\x83\x03"))
    # bytes that are not Modbus framing are not masked beyond the first range
    junk = b"\x00\x01\x12\x34\x00\x06\x01\x03\x04\x00\x01\x00\x02"
    assert identity(junk) != identity(junk[:9] + b"\x09" + junk[10:])
    assert modbus.novelty_frames == (4, 6, 2)
