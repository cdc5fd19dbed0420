"""Tunnels and mirror encapsulations: GRE (TEB and plain IPv4), ERSPAN II/III, VXLAN.

The inner hosts become devices with their own counters and the outer tunnel endpoints
are devices too. Byte counters: an outer endpoint counts the whole frame, an inner host
the length of the encapsulated frame/packet (checked in a separate test so that this
choice is easy to find). All files are analysed in one CLI call.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from craft import (
    Conn,
    Frame,
    Hop,
    Host,
    analyze,
    connection_map,
    counters_of,
    describe,
    device_map,
    eth_ip,
    expected_connections,
    expected_devices,
    host,
    icmp_echo,
    list_connections,
    list_devices,
    pad60,
    stderr_lines_naming,
    tcp,
    ts,
    udp,
    write_built,
)

GRE_PROTO = 47
ETH_P_TEB, ETH_P_IP = 0x6558, 0x0800
ETH_P_ERSPAN2, ETH_P_ERSPAN3 = 0x88BE, 0x22EB
GRE_SEQ = 0x1000
VXLAN_PORT = 4789


def gre(proto: int, seq: int | None = None) -> bytes:
    """GRE header (version 0), with the S bit and a sequence number when ``seq`` is given."""
    if seq is None:
        return struct.pack(">HH", 0, proto)
    return struct.pack(">HHI", GRE_SEQ, proto, seq)


def erspan2(session: int, vlan: int = 0, index: int = 0) -> bytes:
    """ERSPAN type II header: Ver=1, VLAN, COS, En, T, session; reserved, index."""
    w0 = (1 << 28) | (vlan << 16) | (0 << 13) | (0 << 11) | (0 << 10) | session
    return struct.pack(">II", w0, index & 0xFFFFF)


def erspan3(session: int, timestamp: int, *, platform: bytes | None = None) -> bytes:
    """ERSPAN type III header (+ 8-byte platform-specific subheader when O is set)."""
    w0 = (2 << 28) | (0 << 16) | (0 << 13) | (0 << 11) | (0 << 10) | session
    # SGT=0 | P=1 | FT=0 (Ethernet) | HW ID=5 | D=0 | Gra=3 (IEEE 1588) | O
    w2 = (0 << 16) | (1 << 15) | (0 << 10) | (5 << 4) | (0 << 3) | (3 << 1) | (1 if platform else 0)
    hdr = struct.pack(">III", w0, timestamp, w2)
    if platform is not None:
        assert len(platform) == 8
        hdr += platform
    return hdr


def vxlan(vni: int) -> bytes:
    """VXLAN header with the I flag and ``vni``."""
    return struct.pack(">II", 0x08 << 24, vni << 8)


def outer_gre(o1: Host, o2: Host, gre_and_payload: bytes) -> bytes:
    """Ethernet/IPv4/GRE frame from tunnel endpoint ``o1`` to ``o2``."""
    assert o1.mac and o2.mac
    ip = IP(src=o1.ip, dst=o2.ip, proto=GRE_PROTO, id=9) / Raw(gre_and_payload)
    return pad60(bytes(Ether(src=o1.mac, dst=o2.mac) / ip))


def outer_vxlan(o1: Host, o2: Host, sport: int, vni: int, inner: bytes) -> bytes:
    """Ethernet/IPv4/UDP(4789)/VXLAN frame from VTEP ``o1`` to ``o2``."""
    assert o1.mac and o2.mac
    pkt = IP(src=o1.ip, dst=o2.ip) / UDP(sport=sport, dport=VXLAN_PORT) / Raw(vxlan(vni) + inner)
    return pad60(bytes(Ether(src=o1.mac, dst=o2.mac) / pkt))


@dataclass
class Tunnel:
    """A crafted tunnel file: frames with outer (hop 0) and inner (hop 1) attributions."""

    frames: list[Frame]
    inner_conns: dict[Conn, list[Frame]]
    outer: tuple[Host, Host]
    inner: tuple[Host, Host]
    path: Path | None = None


def _inner_tcp(a: Host, b: Host, port: int) -> list[tuple[Host, Host, bytes]]:
    """A 4-frame TCP exchange between ``a`` (client) and ``b`` as Ethernet frames."""
    return [
        (a, b, eth_ip(a, b, tcp(a, b, 40000, port, "S"))),
        (b, a, eth_ip(b, a, tcp(b, a, port, 40000, "SA", ack=1001))),
        (a, b, eth_ip(a, b, tcp(a, b, 40000, port, "PA", b"\x00\x01" * 12, seq=1001, ack=1))),
        (b, a, eth_ip(b, a, tcp(b, a, port, 40000, "PA", b"\x00\x02" * 30, seq=1, ack=1025))),
    ]


INNER_PORT = 20001


def _tunnel(
    net: int,
    wrap: Callable[[int, Host, Host, Host, Host, bytes], bytes],
    *,
    mirror: bool = False,
) -> Tunnel:
    """Inner A<->B TCP carried between outer endpoints O1 and O2.

    ``wrap(i, outer_src, outer_dst, inner_src, inner_dst, inner_frame)`` builds frame i.
    A mirror session (ERSPAN) always goes from O1 (the switch) to O2 (the collector).
    """
    o1, o2 = host(net, 1), host(net, 2)
    a, b = host(net, 11), host(net, 12)
    frames = []
    for i, (s, d, inner) in enumerate(_inner_tcp(a, b, INNER_PORT)):
        os_, od = (o1, o2) if mirror or s is a else (o2, o1)
        data = wrap(i, os_, od, s, d, inner)
        frames.append(Frame(ts(i), data, (Hop(os_, od), Hop(s, d, len(inner)))))
    return Tunnel(frames, {Conn(a, b, "tcp", INNER_PORT): frames}, (o1, o2), (a, b))


def build_gre_teb(net: int) -> Tunnel:
    """GRE transparent Ethernet bridging (0x6558) between two routers."""
    return _tunnel(net, lambda i, o1, o2, s, d, inner: outer_gre(o1, o2, gre(ETH_P_TEB) + inner))


def build_gre_ip(net: int) -> Tunnel:
    """GRE carrying IPv4 directly: the inner hosts have no MAC of their own."""
    o1, o2 = host(net, 1), host(net, 2)
    x, y = host(net, 11, mac=False), host(net, 12, mac=False)
    spec = [
        (x, y, bytes(icmp_echo(x, y))),
        (y, x, bytes(icmp_echo(y, x, reply=True))),
        (x, y, bytes(udp(x, y, 40000, 9999, b"through-gre"))),
    ]
    frames = []
    for i, (s, d, inner) in enumerate(spec):
        os_, od = (o1, o2) if s is x else (o2, o1)
        data = outer_gre(os_, od, gre(ETH_P_IP) + inner)
        frames.append(Frame(ts(i), data, (Hop(os_, od), Hop(s, d, len(inner)))))
    conns = {Conn(x, y, "icmp", 0): frames[:2], Conn(x, y, "udp", 9999): frames[2:]}
    return Tunnel(frames, conns, (o1, o2), (x, y))


def build_erspan2(net: int) -> Tunnel:
    """ERSPAN type II (GRE 0x88BE with sequence numbers), switch -> collector."""
    return _tunnel(
        net,
        lambda i, o1, o2, s, d, inner: outer_gre(
            o1, o2, gre(ETH_P_ERSPAN2, seq=i + 1) + erspan2(session=7, index=3) + inner
        ),
        mirror=True,
    )


def build_erspan3(net: int) -> Tunnel:
    """ERSPAN type III (GRE 0x22EB) without the platform-specific subheader."""
    return _tunnel(
        net,
        lambda i, o1, o2, s, d, inner: outer_gre(
            o1, o2, gre(ETH_P_ERSPAN3, seq=i + 1) + erspan3(9, 1000 + i) + inner
        ),
        mirror=True,
    )


PLATFORM_SUBHEADER = struct.pack(">II", (3 << 26) | 0x42, 0x5EED5EED)  # Platf ID 3


def build_erspan3_platform(net: int) -> Tunnel:
    """ERSPAN type III with O=1 and the optional 8-byte platform-specific subheader."""
    return _tunnel(
        net,
        lambda i, o1, o2, s, d, inner: outer_gre(
            o1,
            o2,
            gre(ETH_P_ERSPAN3, seq=i + 1) + erspan3(9, 1000 + i, platform=PLATFORM_SUBHEADER) + inner,
        ),
        mirror=True,
    )


def build_vxlan(net: int) -> Tunnel:
    """VXLAN (UDP 4789, VNI 5001) between two VTEPs, varying source port per flow."""
    return _tunnel(net, lambda i, o1, o2, s, d, inner: outer_vxlan(o1, o2, 49152 + (i % 2), 5001, inner))


BUILDERS: dict[str, Callable[[int], Tunnel]] = {
    "gre_teb": build_gre_teb,
    "gre_ip": build_gre_ip,
    "erspan2": build_erspan2,
    "erspan3": build_erspan3,
    "erspan3_platform": build_erspan3_platform,
    "vxlan": build_vxlan,
}


def build_tunnel_files(d: Path, first_net: int = 81) -> dict[str, Tunnel]:
    """Write every tunnel file of this module, one network number each."""
    return write_built(d, BUILDERS, first_net)


@dataclass
class TunnelRun:
    res: Any
    files: dict[str, Tunnel]
    devices: list[dict[str, Any]]
    connections: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TunnelRun:
    d = tmp_path_factory.mktemp("tunnels")
    files = build_tunnel_files(d)
    db = d / "tunnels.db"
    res = analyze(db, *(t.path for t in files.values() if t.path))
    if not db.exists():
        return TunnelRun(res, files, [], [])
    return TunnelRun(res, files, list_devices(db), list_connections(db))


PACKETS = ("packets_sent", "packets_received", "first_seen", "last_seen")
BYTES = ("bytes_sent", "bytes_received")


def _project(m: dict[Any, Any], keys: tuple[str, ...]) -> dict[Any, Any]:
    return {k: (None if v is None else {f: v[f] for f in keys}) for k, v in m.items()}


def test_exit_zero_without_warnings(run: TunnelRun) -> None:
    """Tunnels are supported: exit 0, no warning naming a file."""
    assert run.res.returncode == 0, describe(run.res)
    for t in run.files.values():
        assert t.path and stderr_lines_naming(run.res.stderr, t.path) == [], describe(run.res)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_inner_and_outer_devices_packet_counts(run: TunnelRun, name: str) -> None:
    """Inner hosts and outer endpoints are devices with exact packet counts and times."""
    expected = expected_devices(run.files[name].frames)
    actual = counters_of(run.devices, expected)
    assert _project(actual, PACKETS) == _project(expected, PACKETS)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_inner_bytes_are_encapsulated_length(run: TunnelRun, name: str) -> None:
    """Outer endpoints count whole frames; inner hosts the encapsulated frame/packet."""
    expected = expected_devices(run.files[name].frames)
    actual = counters_of(run.devices, expected)
    assert _project(actual, BYTES) == _project(expected, BYTES)


def test_exact_device_set(run: TunnelRun) -> None:
    """Only tunnel endpoints and inner hosts: no device from tunnel/ERSPAN header bytes."""
    expected: set[Any] = set()
    for t in run.files.values():
        expected |= set(expected_devices(t.frames))
    assert set(device_map(run.devices)) == expected


def test_gre_ip_inner_hosts_have_no_mac(run: TunnelRun) -> None:
    """IPv4 directly in GRE: inner hosts get mac null (never the outer routers' MACs)."""
    x, y = run.files["gre_ip"].inner
    m = device_map(run.devices)
    for h in (x, y):
        assert h.key in m and m[h.key]["mac"] is None and m[h.key]["ip"] == h.ip
    outer_macs = {h.mac for h in run.files["gre_ip"].outer}
    assert not any(d["mac"] in outer_macs and d["ip"] in (x.ip, y.ip) for d in run.devices)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_inner_connections(run: TunnelRun, name: str) -> None:
    """The inner conversation is a connection with exact packets and times."""
    expected = expected_connections(run.files[name].inner_conns, hop=1)
    actual = connection_map(run.connections)
    keep = ("packets", "first_seen", "last_seen")
    assert _project({k: actual.get(k) for k in expected}, keep) == _project(expected, keep)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_inner_connection_bytes(run: TunnelRun, name: str) -> None:
    """Inner connection bytes add up the encapsulated lengths (same choice as devices)."""
    expected = expected_connections(run.files[name].inner_conns, hop=1)
    actual = connection_map(run.connections)
    assert _project({k: actual.get(k) for k in expected}, ("bytes",)) == _project(expected, ("bytes",))
