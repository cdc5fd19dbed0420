"""Helpers for dissector tests: run dissectors over a real capture, or over one payload."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from tapwatch.capture import CaptureReader
from tapwatch.decode import Decoder
from tapwatch.dissect import Dissector, Evidence, Packet, dissectors
from tapwatch.dissect.stage import DissectResults, DissectStage


def dissector(name: str) -> Dissector:
    """The registered dissector called `name`."""
    found = [d for d in dissectors() if d.name == name]
    assert found, f"no dissector named {name!r}"
    return found[0]


def run_capture(path: str | Path, *names: str) -> DissectResults:
    """Run the named dissectors (all when none named) over a capture through the real selector."""
    stage = DissectStage([dissector(n) for n in names] if names else None)
    decoder = Decoder()
    with CaptureReader(path) as reader:
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                stage.batch(chunk, rows)
    stage.finish()
    return stage.results


def facts_by_ip(results: DissectResults, attribute: str) -> dict[str, set[str]]:
    """{ip: {values}} of one attribute ('' ip means a MAC-only address)."""
    out: dict[str, set[str]] = defaultdict(set)
    for (_mac, ip, attr, value, _source) in results.facts:
        if attr == attribute:
            out[ip].add(value)
    return out


def facts_by_mac(results: DissectResults, attribute: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for (mac, _ip, attr, value, _source) in results.facts:
        if attr == attribute:
            out[mac].add(value)
    return out


def packet(payload: bytes, *, transport: str = "udp", sport: int = 1024, dport: int = 80,
           src_ip: str = "10.0.0.1", dst_ip: str = "10.0.0.2", src_mac: str = "02:00:00:00:00:01",
           dst_mac: str = "02:00:00:00:00:02", ethertype: int = 0x0800, protocol: str = "",
           tcp_flags: int = 0x18, ttl: int = 64, l3: bytes = b"") -> Packet:
    """A hand-made Packet for unit tests of one dissector."""
    return Packet(number=1, ts_ns=1_700_000_000_000_000_000, src_mac=src_mac, dst_mac=dst_mac,
                  src_ip=src_ip, dst_ip=dst_ip, transport=transport, sport=sport, dport=dport,
                  tcp_flags=tcp_flags, ttl=ttl, ethertype=ethertype, protocol=protocol,
                  payload=payload, l3=l3)


def dissect_one(name: str, pkt: Packet) -> Evidence:
    ev = Evidence()
    dissector(name).dissect(pkt, ev)
    return ev


def hostile_payloads(valid: bytes, *, seed: int, max_len: int = 300, count: int = 300,
                     max_changes: int = 6) -> list[bytes]:
    """Inputs a dissector must survive: every prefix of a valid payload, random byte
    strings, and copies of the valid payload with a few bytes overwritten."""
    rng = random.Random(seed)
    payloads = [valid[:n] for n in range(len(valid))]
    payloads += [bytes(rng.randrange(256) for _ in range(rng.randrange(max_len)))
                 for _ in range(count)]
    for _ in range(count):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, max_changes)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        payloads.append(bytes(mutated))
    return payloads
