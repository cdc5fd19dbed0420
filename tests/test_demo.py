"""The built-in demo capture must really contain the site that DEMO_DEVICES describes.

Each test reads the generated pcap back with scapy (and, where installed, tshark) and checks
the traffic itself, not the generator's internals.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from scapy.utils import rdpcap

from tapwatch.demo import DEMO_DEVICES, build_demo_capture

DEVICES = {str(d["name"]): d for d in DEMO_DEVICES}
ROUTER = next(d for d in DEMO_DEVICES if d["role"] == "router")
PLC = next(d for d in DEMO_DEVICES if d["role"] == "plc")
HMI = next(d for d in DEMO_DEVICES if d["role"] == "hmi")
DHCP_CLIENTS = [d for d in DEMO_DEVICES if d["role"] != "router" and d["hostname"]]
START = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_capture(tmp_path_factory.mktemp("demo") / "site.pcap")


@pytest.fixture(scope="module")
def packets(capture: Path) -> list[Packet]:
    return list(rdpcap(str(capture)))


def tcp_payload(pkt: Packet) -> bytes:
    ip, tcp = pkt[IP], pkt[TCP]
    raw = bytes(ip)[: ip.len]
    return raw[ip.ihl * 4 + tcp.dataofs * 4 :]


def dhcp_options(pkt: Packet) -> dict[str, object]:
    return {opt[0]: opt[1] for opt in pkt[DHCP].options if isinstance(opt, tuple)}


def test_same_seed_is_byte_identical_and_seed_matters(tmp_path: Path) -> None:
    first = build_demo_capture(tmp_path / "a.pcap", seed=7).read_bytes()
    second = build_demo_capture(tmp_path / "b.pcap", seed=7).read_bytes()
    other = build_demo_capture(tmp_path / "c.pcap", seed=8).read_bytes()
    assert first == second
    assert first != other


def test_build_is_quick_and_creates_parent_dirs(tmp_path: Path) -> None:
    began = time.perf_counter()
    out = build_demo_capture(tmp_path / "nested" / "dir" / "demo.pcap", seed=3)
    assert time.perf_counter() - began < 3.0
    assert out == tmp_path / "nested" / "dir" / "demo.pcap"
    assert out.stat().st_size > 0


def test_classic_little_endian_pcap_ethernet_microseconds(capture: Path) -> None:
    magic, major, minor, _, _, snaplen, linktype = struct.unpack(
        "<IHHiIII", capture.read_bytes()[:24]
    )
    assert magic == 0xA1B2C3D4
    assert (major, minor) == (2, 4)
    assert linktype == 1
    assert snaplen >= 65535


def test_size_span_and_monotonic_timestamps(packets: list[Packet]) -> None:
    assert 2000 <= len(packets) <= 6000
    times = [float(p.time) for p in packets]
    assert times == sorted(times)
    assert START <= times[0] < START + 5
    assert 600 <= times[-1] - times[0] <= 900
    assert all(len(bytes(p)) >= 60 for p in packets)


def test_every_device_sends_with_its_own_mac_and_ip(packets: list[Packet]) -> None:
    pairs = {(p[Ether].src, p[IP].src) for p in packets if IP in p}
    for dev in DEMO_DEVICES:
        assert (dev["mac"], dev["ip"]) in pairs, dev["name"]
    macs = {dev["mac"] for dev in DEMO_DEVICES}
    assert {p[Ether].src for p in packets} <= macs


def test_arp_requests_replies_and_gratuitous(packets: list[Packet]) -> None:
    arps = [p[ARP] for p in packets if ARP in p]
    requests = [a for a in arps if a.op == 1]
    replies = [a for a in arps if a.op == 2]
    assert requests and replies
    owner = {dev["ip"]: dev["mac"] for dev in DEMO_DEVICES}
    for reply in replies:
        assert owner[reply.psrc] == reply.hwsrc
        assert any(r.pdst == reply.psrc and r.psrc == reply.pdst for r in requests)
    gratuitous = {a.psrc for a in requests if a.psrc == a.pdst}
    static = {d["ip"] for d in DEMO_DEVICES if d["role"] in ("plc", "hmi", "camera")}
    assert static <= gratuitous
    probes = {a.pdst for a in requests if a.psrc == "0.0.0.0"}
    assert {d["ip"] for d in DHCP_CLIENTS} <= probes


def test_dhcp_dora_for_every_dhcp_client(packets: list[Packet]) -> None:
    dhcp = [p for p in packets if DHCP in p]
    types = {dhcp_options(p)["message-type"] for p in dhcp}
    assert {1, 2, 3, 5} <= types
    for dev in DHCP_CLIENTS:
        mine = [p for p in dhcp if p[Ether].src == dev["mac"] or p[Ether].dst == dev["mac"]]
        kinds = [dhcp_options(p)["message-type"] for p in mine]
        assert kinds == [1, 2, 3, 5], dev["name"]
        discover = dhcp_options(mine[0])
        assert discover["hostname"] == str(dev["hostname"]).encode()
        assert isinstance(discover["param_req_list"], list) and discover["param_req_list"]
        assert discover.get("vendor_class_id"), dev["name"]
        assert mine[3][IP].src == ROUTER["ip"]
        assert mine[3][BOOTP].yiaddr == dev["ip"]
    vendor_classes = {
        dhcp_options(p).get("vendor_class_id") for p in dhcp if dhcp_options(p)["message-type"] == 1
    }
    assert {b"MSFT 5.0", b"Hewlett-Packard JetDirect"} <= vendor_classes
    assert any(isinstance(v, bytes) and v.startswith(b"Polycom-") for v in vendor_classes)


def test_dns_queries_answered_by_router(packets: list[Packet]) -> None:
    dns = [p for p in packets if DNS in p and UDP in p and 53 in (p[UDP].sport, p[UDP].dport)]
    queries = {(p[IP].src, p[UDP].sport, p[DNS].id) for p in dns if p[DNS].qr == 0}
    responses = [p for p in dns if p[DNS].qr == 1]
    assert queries and responses
    assert all(p[IP].dst == ROUTER["ip"] for p in dns if p[DNS].qr == 0)
    answered: set[str] = set()
    for p in responses:
        assert p[IP].src == ROUTER["ip"]
        assert (p[IP].dst, p[UDP].dport, p[DNS].id) in queries
        answered.update(str(rr.rdata) for rr in p[DNS].an if rr.type == 1)
    assert {"93.184.216.34", "13.107.4.52"} <= answered


def test_http_user_agents_and_server_headers(packets: list[Packet]) -> None:
    requests, responses = [], []
    for p in packets:
        if TCP not in p or 80 not in (p[TCP].sport, p[TCP].dport):
            continue
        body = tcp_payload(p)
        if body.startswith((b"GET ", b"POST ")):
            requests.append((p, body))
        elif body.startswith(b"HTTP/1.1 "):
            responses.append((p, body))
    assert any(b"\r\nUser-Agent: Mozilla/5.0 " in b for _, b in requests)
    assert any(b"\r\nUser-Agent: Microsoft NCSI\r\n" in b for _, b in requests)
    served = {p[IP].src for p, b in responses if b"\r\nServer: " in b}
    assert {DEVICES["printer"]["ip"], DEVICES["camera"]["ip"]} <= served
    printer = [b for p, b in responses if p[IP].src == DEVICES["printer"]["ip"]]
    assert all(b"\r\nServer: HP HTTP Server; HP LaserJet Pro M404dn" in b for b in printer)
    internet = [p for p, _ in requests if ipaddress.ip_address(p[IP].dst).is_global]
    assert internet and all(p[Ether].dst == ROUTER["mac"] for p in internet)
    assert any(p[IP].src == DEVICES["camera"]["ip"] for p in internet)


def test_modbus_polling_writes_and_device_identification(packets: list[Packet]) -> None:
    function_codes: Counter[int] = Counter()
    poll_times = []
    identification = b""
    for p in packets:
        if TCP not in p or 502 not in (p[TCP].sport, p[TCP].dport):
            continue
        body = tcp_payload(p)
        if not body:
            continue
        tid, proto, length, _unit = struct.unpack(">HHHB", body[:7])
        assert proto == 0 and length == len(body) - 6
        if p[TCP].dport == 502:
            function_codes[body[7]] += 1
            if body[7] == 3 and p[IP].src == HMI["ip"]:
                poll_times.append(float(p.time))
        elif body[7] == 0x2B:
            identification = body
        assert p[IP].src in (PLC["ip"], HMI["ip"]) or p[IP].dst == PLC["ip"]
    assert {1, 3, 6, 0x2B} <= set(function_codes)
    gaps = [b - a for a, b in zip(poll_times, poll_times[1:], strict=False)]
    assert len(poll_times) > 300
    assert all(1.9 < g < 2.2 for g in gaps)
    assert identification[8:10] == b"\x0e\x01"
    assert b"Schneider Electric" in identification


def test_router_mac_fronts_public_addresses(packets: list[Packet]) -> None:
    public = {
        p[IP].src
        for p in packets
        if IP in p and p[Ether].src == ROUTER["mac"] and ipaddress.ip_address(p[IP].src).is_global
    }
    assert len(public) >= 3
    assert {"93.184.216.34", "151.101.1.69", "13.107.4.52"} <= public


def test_tcp_sequence_numbers_are_consistent(packets: list[Packet]) -> None:
    next_seq: dict[tuple[str, int, str, int], int] = {}
    for p in packets:
        if TCP not in p:
            continue
        ip, tcp = p[IP], p[TCP]
        flow = (ip.src, tcp.sport, ip.dst, tcp.dport)
        back = (ip.dst, tcp.dport, ip.src, tcp.sport)
        flags = int(tcp.flags)
        if flags & 0x02:
            if flags & 0x10:
                assert tcp.ack == next_seq[back]
            next_seq[flow] = (tcp.seq + 1) & 0xFFFFFFFF
            continue
        assert tcp.seq == next_seq[flow], flow
        assert (next_seq[back] - tcp.ack) & 0xFFFFFFFF < 1 << 20, flow
        grow = len(tcp_payload(p)) + (1 if flags & 0x01 else 0)
        next_seq[flow] = (tcp.seq + grow) & 0xFFFFFFFF


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_every_protocol_cleanly(capture: Path) -> None:
    def tshark(*args: str) -> str:
        done = subprocess.run(
            ["tshark", "-n", "-r", str(capture), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    assert tshark("-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""
    hierarchy = tshark("-q", "-z", "io,phs")
    for proto in (
        "arp",
        "dhcp",
        "dns",
        "http",
        "mbtcp",
        "modbus",
        "lldp",
        "sip",
        "mdns",
        "ssdp",
        "ntp",
    ):
        assert f" {proto} " in hierarchy, proto
