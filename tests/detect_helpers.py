"""Helpers for detection tests: analyze with learning options, read alerts, craft traffic,
and replay a capture later in time (a new file, so the inventory does not skip it)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from tapwatch.analyze import Analyzer, FileResult
from tapwatch.detect.alerts import alert_json, list_alerts
from tapwatch.store.db import open_engine, sessions

T0 = 1_700_000_000.0  # crafted traffic starts here (2023-11-14, UTC)


def run(db: Path, *paths: Path, **options: Any) -> list[FileResult]:
    engine = open_engine(str(db))
    try:
        analyzer = Analyzer(engine, sensor="test", **options)
        results = [analyzer.analyze_file(p) for p in paths]
        for r in results:
            assert r.status == "analyzed", (r.path, r.status, r.error)
        return results
    finally:
        engine.dispose()


def alerts(db: Path, **filters: Any) -> list[dict[str, Any]]:
    engine = open_engine(str(db))
    try:
        with sessions(engine)() as s:
            return [alert_json(a) for a in list_alerts(s, **filters)]
    finally:
        engine.dispose()


def of_type(db: Path, type_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts(db) if a["type"] == type_id]


def shifted(src: Path, dst: Path, by: timedelta) -> Path:
    """The same packets `by` later (editcap), as a new file."""
    subprocess.run(["editcap", "-t", str(int(by.total_seconds())), str(src), str(dst)], check=True,
                   capture_output=True)
    return dst


def mac(n: int) -> str:
    return f"02:00:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"


def ip(n: int) -> str:
    return f"10.1.{n >> 8 & 0xFF}.{n & 0xFF}"


def write(path: Path, packets: list[Any], start: float = T0, step: float = 0.01) -> Path:
    for i, p in enumerate(packets):
        p.time = start + i * step
    wrpcap(str(path), packets)
    return path


def tcp_pkt(a: int, b: int, sport: int, dport: int, flags: str = "S", payload: bytes = b"") -> Any:
    return Ether(src=mac(a), dst=mac(b)) / IP(src=ip(a), dst=ip(b)) / TCP(sport=sport, dport=dport,
                                                                         flags=flags) / payload


def udp_pkt(a: int, b: int, sport: int, dport: int, payload: bytes = b"") -> Any:
    return Ether(src=mac(a), dst=mac(b)) / IP(src=ip(a), dst=ip(b)) / UDP(sport=sport, dport=dport) / payload


def arp_reply(claimer_mac: str, claimed_ip: str, to: int) -> Any:
    return Ether(src=claimer_mac, dst=mac(to)) / ARP(op=2, hwsrc=claimer_mac, psrc=claimed_ip,
                                                    hwdst=mac(to), pdst=ip(to))


def conversation(a: int, b: int, dport: int, rounds: int = 3, payload: bytes = b"hello") -> list[Any]:
    """A short TCP exchange: handshake and a few payloads each way."""
    sport = 40000 + b % 1000
    out = [tcp_pkt(a, b, sport, dport, "S"), tcp_pkt(b, a, dport, sport, "SA"),
           tcp_pkt(a, b, sport, dport, "A")]
    for _ in range(rounds):
        out += [tcp_pkt(a, b, sport, dport, "PA", payload), tcp_pkt(b, a, dport, sport, "PA", payload)]
    return out
