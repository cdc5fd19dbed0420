"""Decoding of the layers between the link layer and the transport: VLAN tags, 802.3
LLC/SNAP, ARP, IPv4 fragments, IPv6 extension headers, ICMP/ICMPv6, and which addresses
are (not) devices. Every file has its own network number and all of them are analysed
in one CLI call, then checked one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    PadN,
)
from scapy.layers.l2 import LLC, SNAP, STP, Dot1AD, Dot1Q, Dot3
from scapy.packet import Raw
from scapy.utils import checksum

from craft import (
    BROADCAST,
    Conn,
    Frame,
    Host,
    analyze,
    arp_reply,
    arp_request,
    conn_key,
    connection_map,
    counters_of,
    describe,
    device_map,
    eth_ip,
    ether,
    expected_connections,
    expected_devices,
    frame,
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


@dataclass
class Crafted:
    """One crafted file's frames, the connections it must yield and its path."""

    frames: list[Frame]
    conns: dict[Conn, list[Frame]]
    hosts: dict[str, Host]
    path: Path | None = None


def _frames(spec: list[tuple[Host | None, Host | None, bytes]]) -> list[Frame]:
    return [frame(ts(i), data, s, d) for i, (s, d, data) in enumerate(spec)]


def mac_only(h: Host) -> Host:
    """The MAC-only device of a host (no IP coupling)."""
    return Host(h.mac)


# ----------------------------------------------------------------------- VLANs


def build_vlan(net: int) -> Crafted:
    """A<->B TCP on VLAN 100; P<->Q with priority tags (VID 0 = no VLAN)."""
    a, b, p, q = host(net, 1), host(net, 2), host(net, 3), host(net, 4)
    assert a.mac and b.mac and p.mac and q.mac

    def tagged(s: Host, d: Host, vid: int, pkt: Any) -> bytes:
        return ether(s.mac, d.mac, Dot1Q(vlan=vid, prio=5) / pkt)  # type: ignore[arg-type]

    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (a, b, tagged(a, b, 100, tcp(a, b, 40000, 20000, "S"))),
        (b, a, tagged(b, a, 100, tcp(b, a, 20000, 40000, "SA", ack=1001))),
        (a, b, tagged(a, b, 100, tcp(a, b, 40000, 20000, "A", seq=1001, ack=1))),
        (p, q, tagged(p, q, 0, udp(p, q, 40000, 9999, b"prio"))),
        (q, p, tagged(q, p, 0, udp(q, p, 9999, 40000, b"prio"))),
    ]
    fr = _frames(spec)
    conns = {Conn(a, b, "tcp", 20000): fr[:3], Conn(p, q, "udp", 9999): fr[3:]}
    return Crafted(fr, conns, {"a": a, "b": b, "p": p, "q": q})


def build_qinq(net: int) -> Crafted:
    """C<->D UDP double-tagged: 802.1ad S-tag 200 outside, 802.1Q C-tag 300 inside."""
    c, d = host(net, 1), host(net, 2)
    assert c.mac and d.mac

    def qinq(s: Host, dst: Host, pkt: Any) -> bytes:
        return ether(s.mac, dst.mac, Dot1AD(vlan=200) / Dot1Q(vlan=300) / pkt)  # type: ignore[arg-type]

    fr = _frames(
        [
            (c, d, qinq(c, d, udp(c, d, 40000, 9999, b"q-in-q"))),
            (d, c, qinq(d, c, udp(d, c, 9999, 40000, b"ack"))),
        ]
    )
    return Crafted(fr, {Conn(c, d, "udp", 9999): fr}, {"c": c, "d": d})


# ----------------------------------------------------------------------- layer 2 only


def cdp_payload(device_id: str, port: str) -> bytes:
    """Minimal CDPv2 PDU (Device ID and Port ID TLVs) with a valid checksum."""
    tlvs = b""
    for t, v in ((0x0001, device_id.encode()), (0x0003, port.encode())):
        tlvs += struct.pack(">HH", t, 4 + len(v)) + v
    body = struct.pack(">BBH", 2, 180, 0) + tlvs
    return body[:2] + struct.pack(">H", checksum(body)) + body[4:]


def lldp_payload(mac: str, port: str) -> bytes:
    """LLDPDU: chassis ID (MAC), port ID (local), TTL, end."""

    def tlv(t: int, v: bytes) -> bytes:
        return struct.pack(">H", (t << 9) | len(v)) + v

    return (
        tlv(1, b"\x04" + bytes.fromhex(mac.replace(":", "")))
        + tlv(2, b"\x07" + port.encode())
        + tlv(3, struct.pack(">H", 120))
        + tlv(0, b"")
    )


def cdp_frame(src: Host) -> bytes:
    assert src.mac
    pdu = LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0x00000C, code=0x2000)
    return pad60(bytes(Dot3(src=src.mac, dst="01:00:0c:cc:cc:cc") / pdu / cdp_payload("sw1", "Gi0/1")))


def stp_frame(src: Host) -> bytes:
    assert src.mac
    bpdu = LLC(dsap=0x42, ssap=0x42, ctrl=3) / STP(rootmac=src.mac, bridgemac=src.mac, portid=0x8001)
    return pad60(bytes(Dot3(src=src.mac, dst="01:80:c2:00:00:00") / bpdu))


def lldp_frame(src: Host) -> bytes:
    assert src.mac
    return ether(src.mac, "01:80:c2:00:00:0e", lldp_payload(src.mac, "port-1"), 0x88CC)


def build_l2_only(net: int) -> Crafted:
    """X speaks CDP (802.3 + LLC/SNAP), Y STP (802.3 + LLC), Z LLDP: MAC-only devices."""
    x, y, z = host(net, 1), host(net, 2), host(net, 3)
    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (mac_only(x), None, cdp_frame(x)),
        (mac_only(y), None, stp_frame(y)),
        (mac_only(z), None, lldp_frame(z)),
        (mac_only(y), None, stp_frame(y)),
    ]
    return Crafted(_frames(spec), {}, {"x": x, "y": y, "z": z})


def build_l2_merge(net: int) -> Crafted:
    """M sends LLDP before and after its IPv6 and IPv4 traffic: all one device of M."""
    m, n = host(net, 1, v6=True), host(net, 2, v6=True)
    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (m, None, lldp_frame(m)),
        (m, n, eth_ip(m, n, udp(m, n, 40000, 9999, b"v6", v6=True))),
        (m, n, eth_ip(m, n, udp(m, n, 40000, 9999, b"v4"))),
        (n, m, eth_ip(n, m, udp(n, m, 9999, 40000, b"v4"))),
        (n, m, eth_ip(n, m, udp(n, m, 9999, 40000, b"v6", v6=True))),
        (m, None, lldp_frame(m)),
    ]
    fr = _frames(spec)
    conns = {
        Conn(m, n, "udp", 9999): [fr[2], fr[3]],
        Conn(m, n, "udp", 9999, v6=True): [fr[1], fr[4]],
    }
    return Crafted(fr, conns, {"m": m, "n": n})


# ----------------------------------------------------------------------- ARP


def build_arp(net: int) -> Crafted:
    """Q asks (broadcast) for R, R replies; P probes for .77 from 0.0.0.0 twice."""
    q, r, p = host(net, 1), host(net, 2), host(net, 3)
    target = Host(None, f"192.168.{net}.77")
    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (q, None, arp_request(q, r.ip or "")),
        (r, q, arp_reply(r, q)),
        (mac_only(p), None, arp_request(p, target.ip or "", sender_ip="0.0.0.0")),
        (mac_only(p), None, arp_request(p, target.ip or "", sender_ip="0.0.0.0")),
    ]
    return Crafted(_frames(spec), {}, {"q": q, "r": r, "p": p, "target": target})


# ----------------------------------------------------------------------- IPv4 fragments

FAKE_PORT = 1234  # what a decoder reading later fragments as UDP would find


def build_ipv4_fragments(net: int) -> Crafted:
    """A sends B a 2000-byte UDP datagram (dport 20000) in 3 fragments, last one first.

    The 2nd and 3rd fragments start with bytes that look like a UDP header to port 1234.
    """
    a, b = host(net, 1), host(net, 2)
    payload = bytearray(b"\x5a" * 2000)
    fake = struct.pack(">HHHH", FAKE_PORT, FAKE_PORT, 32, 0)
    for off in (800 - 8, 1600 - 8):
        payload[off : off + 8] = fake
    frags = fragment(udp(a, b, 40000, 20000, bytes(payload)), fragsize=800)
    assert [f.frag for f in frags] == [0, 100, 200]
    order = [frags[2], frags[0], frags[1]]
    spec: list[tuple[Host | None, Host | None, bytes]] = [(a, b, eth_ip(a, b, f)) for f in order]
    spec.append((b, a, eth_ip(b, a, udp(b, a, 20000, 40000, b"got it"))))
    fr = _frames(spec)
    return Crafted(fr, {Conn(a, b, "udp", 20000): fr}, {"a": a, "b": b})


# ----------------------------------------------------------------------- IPv6


def _v6_ext(src: Host, dst: Host) -> Any:
    """IPv6 + hop-by-hop + destination options + (atomic) fragment header."""
    assert src.ip6 and dst.ip6
    return (
        IPv6(src=src.ip6, dst=dst.ip6)
        / IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])
        / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])
        / IPv6ExtHdrFragment(offset=0, m=0, id=0x1234)
    )


def build_ipv6_ext(net: int) -> Crafted:
    """IPv6-only A6->B6 TCP and UDP behind three extension headers; plain replies."""
    a6, b6 = host(net, 1, v4=False, v6=True), host(net, 2, v4=False, v6=True)
    syn = _v6_ext(a6, b6) / TCP(sport=40000, dport=8443, flags="S", seq=1000)
    dgram = _v6_ext(a6, b6) / UDP(sport=40001, dport=9000) / Raw(b"ext-hdr-udp")
    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (a6, b6, eth_ip(a6, b6, syn)),
        (b6, a6, eth_ip(b6, a6, tcp(b6, a6, 8443, 40000, "SA", v6=True, ack=1001))),
        (a6, b6, eth_ip(a6, b6, dgram)),
        (b6, a6, eth_ip(b6, a6, udp(b6, a6, 9000, 40001, b"reply", v6=True))),
    ]
    fr = _frames(spec)
    conns = {
        Conn(a6, b6, "tcp", 8443, v6=True): [fr[0], fr[1]],
        Conn(a6, b6, "udp", 9000, v6=True): [fr[2], fr[3]],
    }
    return Crafted(fr, conns, {"a6": a6, "b6": b6})


def build_icmpv6_nd(net: int) -> Crafted:
    """N announces itself (unsolicited NA to ff02::1); Q6 solicits, N answers unicast."""
    n, q6 = host(net, 1, v4=False, v6=True), host(net, 2, v4=False, v6=True)
    assert n.mac and n.ip6 and q6.mac and q6.ip6
    last = n.ip6.rsplit(":", 1)[1].rjust(2, "0")[-2:]
    sn_ip, sn_mac = f"ff02::1:ff00:{last}", f"33:33:ff:00:00:{last}"
    unsolicited = (
        IPv6(src=n.ip6, dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=n.ip6, R=0, S=0, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=n.mac)
    )
    ns = IPv6(src=q6.ip6, dst=sn_ip, hlim=255) / ICMPv6ND_NS(tgt=n.ip6) / ICMPv6NDOptSrcLLAddr(lladdr=q6.mac)
    na = (
        IPv6(src=n.ip6, dst=q6.ip6, hlim=255)
        / ICMPv6ND_NA(tgt=n.ip6, R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=n.mac)
    )
    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (n, None, ether(n.mac, "33:33:00:00:00:01", unsolicited)),
        (q6, None, ether(q6.mac, sn_mac, ns)),
        (n, q6, eth_ip(n, q6, na)),
    ]
    return Crafted(_frames(spec), {}, {"n": n, "q6": q6})


# ----------------------------------------------------------------------- ICMP, broadcast


def build_icmp(net: int) -> Crafted:
    """A pings B twice."""
    a, b = host(net, 1), host(net, 2)
    spec: list[tuple[Host | None, Host | None, bytes]] = []
    for seq in (1, 2):
        spec.append((a, b, eth_ip(a, b, icmp_echo(a, b, seq=seq))))
        spec.append((b, a, eth_ip(b, a, icmp_echo(b, a, reply=True, seq=seq))))
    fr = _frames(spec)
    return Crafted(fr, {Conn(a, b, "icmp", 0): fr}, {"a": a, "b": b})


def build_broadcast(net: int) -> Crafted:
    """S sends to L2/L3 broadcast and IPv4/IPv6 multicast; T sends a DHCP discover."""
    s, t = host(net, 1, v6=True), host(net, 2)
    assert s.mac and t.mac and s.ip
    discover = (
        IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex(t.mac.replace(":", "")), xid=0x1234)
        / DHCP(options=[("message-type", "discover"), "end"])
    )
    spec: list[tuple[Host | None, Host | None, bytes]] = [
        (s, None, ether(s.mac, BROADCAST, udp(s, "255.255.255.255", 40000, 9999, b"hello"))),
        (s, None, ether(s.mac, "01:00:5e:7f:00:01", udp(s, "239.255.0.1", 40000, 9999, b"m"))),
        (s, None, ether(s.mac, "33:33:00:00:00:01",
                        udp(s, "ff02::1", 40000, 9999, b"m6", v6=True))),
        (mac_only(t), None, ether(t.mac, BROADCAST, discover)),
    ]  # fmt: skip
    return Crafted(_frames(spec), {}, {"s": s, "t": t})


BUILDERS: dict[str, Callable[[int], Crafted]] = {
    "vlan": build_vlan,
    "qinq": build_qinq,
    "l2_only": build_l2_only,
    "l2_merge": build_l2_merge,
    "arp": build_arp,
    "ipv4_fragments": build_ipv4_fragments,
    "ipv6_ext": build_ipv6_ext,
    "icmpv6_nd": build_icmpv6_nd,
    "icmp": build_icmp,
    "broadcast": build_broadcast,
}


def build_decode_files(d: Path, first_net: int = 61) -> dict[str, Crafted]:
    """Write every file of this module, one network number each."""
    return write_built(d, BUILDERS, first_net)


@dataclass
class DecodeRun:
    res: Any
    files: dict[str, Crafted]
    devices: list[dict[str, Any]]
    connections: list[dict[str, Any]]

    def dev(self, h: Host) -> dict[str, Any]:
        m = device_map(self.devices)
        assert h.key in m, f"no device {h.key}"
        return m[h.key]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DecodeRun:
    d = tmp_path_factory.mktemp("decode")
    files = build_decode_files(d)
    db = d / "decode.db"
    res = analyze(db, *(c.path for c in files.values() if c.path))
    if not db.exists():
        return DecodeRun(res, files, [], [])
    return DecodeRun(res, files, list_devices(db), list_connections(db))


def test_exit_zero_without_warnings(run: DecodeRun) -> None:
    """Nothing here is damaged: exit 0, no warning naming a file."""
    assert run.res.returncode == 0, describe(run.res)
    for c in run.files.values():
        assert c.path and stderr_lines_naming(run.res.stderr, c.path) == [], describe(run.res)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_device_counters(run: DecodeRun, name: str) -> None:
    """Exact devices and counters per file (MAC-only devices where there is no IP)."""
    expected = expected_devices(run.files[name].frames)
    assert counters_of(run.devices, expected) == expected


def test_exact_device_set(run: DecodeRun) -> None:
    """No broadcast/multicast/0.0.0.0/ARP-target/fragment-garbage device anywhere."""
    expected: set[Any] = set()
    for c in run.files.values():
        expected |= set(expected_devices(c.frames))
    assert set(device_map(run.devices)) == expected


CONN_FILES = ["vlan", "qinq", "l2_merge", "ipv4_fragments", "ipv6_ext", "icmp"]


@pytest.mark.parametrize("name", CONN_FILES)
def test_connections(run: DecodeRun, name: str) -> None:
    """Connections through VLAN tags, IPv6 extension headers and ICMP, exact counts."""
    c = run.files[name]
    expected = expected_connections(c.conns)
    actual = connection_map(run.connections)
    if name == "ipv4_fragments":  # packet/byte counting of fragments is left open
        assert set(expected) <= set(actual)
    else:
        assert {k: actual.get(k) for k in expected} == expected


def _group_address(ip: str) -> bool:
    return ip in ("0.0.0.0", "255.255.255.255", "::") or ip.startswith(("224.", "239.", "ff0"))


def test_no_spurious_connections(run: DecodeRun) -> None:
    """Only the crafted connections exist (no fake-port fragment flow, nothing from L2-only
    frames); flows to broadcast/multicast and neighbour discovery are left open."""
    expected: set[Any] = set()
    for c in run.files.values():
        expected |= {conn_key(x) for x in c.conns}
    actual = set(connection_map(run.connections))
    assert expected <= actual, expected - actual
    for k in actual - expected:
        client_ip, _, server_ip, _, transport, _ = k
        open_question = _group_address(server_ip or "") or transport == "icmpv6"
        assert open_question, f"unexpected connection {k}"


def test_vlan_ids_kept(run: DecodeRun) -> None:
    """802.1Q VID 100 is listed; a priority tag (VID 0) is no VLAN."""
    h = run.files["vlan"].hosts
    assert run.dev(h["a"])["vlans"] == [100]
    assert run.dev(h["b"])["vlans"] == [100]
    assert run.dev(h["p"])["vlans"] == []
    assert run.dev(h["q"])["vlans"] == []
    assert {"ipv4", "tcp"} <= set(run.dev(h["a"])["protocols"])


def test_qinq_inner_vlan_kept(run: DecodeRun) -> None:
    """802.1ad + 802.1Q: decoding reaches UDP and the inner (customer) VID 300 is listed;
    the outer S-tag 200 may or may not be listed, nothing else."""
    h = run.files["qinq"].hosts
    for k in ("c", "d"):
        dev = run.dev(h[k])
        assert 300 in dev["vlans"] and set(dev["vlans"]) <= {200, 300}, dev["vlans"]
        assert {"ipv4", "udp"} <= set(dev["protocols"])


def test_l2_only_hosts_are_mac_only_devices(run: DecodeRun) -> None:
    """CDP, STP and LLDP speakers are devices with ip null and no addresses."""
    h = run.files["l2_only"].hosts
    for k in ("x", "y", "z"):
        dev = run.dev(mac_only(h[k]))
        assert (dev["ip"], dev["ips"], dev["vlans"]) == (None, [], [])
    assert "lldp" in run.dev(mac_only(h["z"]))["protocols"]


def test_l2_frames_and_ipv6_join_the_macs_ipv4_device(run: DecodeRun) -> None:
    """LLDP and IPv6 of a MAC that also has an IPv4 address land on that single device."""
    m = run.files["l2_merge"].hosts["m"]
    assert m.ip and m.ip6
    dev = run.dev(m)
    assert dev["ip"] == m.ip
    assert sorted(dev["ips"]) == sorted([m.ip, m.ip6])
    assert {"lldp", "ipv4", "ipv6", "udp"} <= set(dev["protocols"])
    same_mac = [d for d in run.devices if d["mac"] == m.mac]
    assert len(same_mac) == 1, same_mac


def test_arp_couplings(run: DecodeRun) -> None:
    """ARP reply couples sender MAC+IP; the probe from 0.0.0.0 couples nothing."""
    h = run.files["arp"].hosts
    assert run.dev(h["r"])["ip"] == h["r"].ip
    assert "arp" in run.dev(h["r"])["protocols"]
    probe = run.dev(mac_only(h["p"]))
    assert (probe["ip"], probe["ips"]) == (None, [])
    assert all(h["target"].ip not in d["ips"] for d in run.devices)


def test_never_devices(run: DecodeRun) -> None:
    """Broadcast, multicast and unspecified addresses are never devices."""
    for d in run.devices:
        mac = d["mac"]
        assert mac is None or not int(mac.split(":")[0], 16) & 1, d
        assert not any(_group_address(ip) for ip in d["ips"]), d


def test_fragments_give_port_from_first_fragment_only(run: DecodeRun) -> None:
    """Later fragments are not parsed as UDP: no connection to the fake port 1234."""
    h = run.files["ipv4_fragments"].hosts
    mine = [c for c in run.connections if h["a"].ip in (c["client_ip"], c["server_ip"])]
    assert [(c["transport"], c["server_port"]) for c in mine] == [("udp", 20000)], mine
    assert conn_key(Conn(h["a"], h["b"], "udp", 20000)) in connection_map(run.connections)


def test_icmpv6_and_ipv6_only_devices(run: DecodeRun) -> None:
    """NA sender is a device with its compressed IPv6 address; ip is that address or null."""
    n = run.files["icmpv6_nd"].hosts["n"]
    dev = run.dev(n)
    assert n.ip6 and "::" in n.ip6
    assert dev["ips"] == [n.ip6] and dev["ip"] in (None, n.ip6)
    assert {"ipv6", "icmpv6"} <= set(dev["protocols"])
    a6 = run.files["ipv6_ext"].hosts["a6"]
    assert {"ipv6", "tcp", "udp"} <= set(run.dev(a6)["protocols"])


def test_icmp_echo(run: DecodeRun) -> None:
    """ICMP echo: both ends list icmp; connection is icmp with server_port 0 (checked above)."""
    h = run.files["icmp"].hosts
    for k in ("a", "b"):
        assert {"ipv4", "icmp"} <= set(run.dev(h[k])["protocols"])


def test_broadcast_sender_counts_only_sent(run: DecodeRun) -> None:
    """Frames to broadcast/multicast count as sent for the sender and received by nobody;
    the DHCP client (0.0.0.0) is a MAC-only device."""
    h = run.files["broadcast"].hosts
    s = run.dev(h["s"])
    assert (s["packets_sent"], s["packets_received"]) == (3, 0)
    assert s["ip"] == h["s"].ip
    t = run.dev(mac_only(h["t"]))
    assert (t["ip"], t["ips"], t["packets_sent"]) == (None, [], 1)
