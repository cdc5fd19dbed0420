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


def run(path: Path, seen_slots: int, in_decoder: bool = True) -> tuple[DissectResults, int]:
    """All dissectors over a capture with a seen set of `seen_slots`, rows picked by the
    decoder (or afterwards, by the stage); also how often the set was cleared."""
    stage = DissectStage()
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
