"""Hand-crafted capture files and CLI helpers for the tapwatch reader/decoder tests.

Everything that ends up in a capture file is built here byte by byte with ``struct`` so
that byte order, timestamp resolution, sections, interfaces and block types are fully
under the test's control; packet bytes above the link layer come from scapy.

The module also carries the *expectation model* the tests use: every crafted frame is
annotated with who sent it and who received it (``Hop``), and ``expected_devices`` /
``expected_connections`` turn those annotations into the numbers ``tapwatch`` must report.
The rules are the CLI contract's: a frame counts as sent by its source device and as
received by its destination device; broadcast/multicast destinations are nobody;
bytes are the frame's original (wire) length unless a hop says otherwise (tunnels).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

REPO = Path(__file__).resolve().parent.parent

# 2024-01-01T00:00:01Z in nanoseconds; crafted timestamps are offsets from here.
T0_NS = 1_704_067_201 * 10**9
# 1/64 s: a multiple of it is exact in µs, ns and 2^-20 s units alike.
TICK_NS = 15_625_000

BROADCAST = "ff:ff:ff:ff:ff:ff"

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IEEE802_11 = 105
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_USER0 = 147
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

# pcapng if_tsresol option values
TSRES_US = 6
TSRES_NS = 9
TSRES_2POW20 = 0x80 | 20


# --------------------------------------------------------------------------------------
# classic pcap
# --------------------------------------------------------------------------------------

# A record: (timestamp_ns, captured bytes) or (timestamp_ns, bytes, original_length).
Record = tuple[int, bytes] | tuple[int, bytes, int]

PCAP_HEADER_LEN = 24
PCAP_RECORD_HEADER_LEN = 16


def _split_record(rec: Record) -> tuple[int, bytes, int]:
    if len(rec) == 2:
        ts_ns, data = rec  # type: ignore[misc]
        return ts_ns, data, len(data)
    ts_ns, data, orig = rec  # type: ignore[misc]
    return ts_ns, data, orig


def pcap_bytes(
    packets: Iterable[Record],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    big_endian: bool = False,
    nanosecond: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """Serialise a classic pcap file; records longer than ``snaplen`` are cut to it."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in packets:
        ts_ns, data, orig = _split_record(rec)
        sec, frac = divmod(ts_ns, 10**9)
        if not nanosecond:
            if frac % 1000:
                raise ValueError(f"timestamp {ts_ns} is not representable in microseconds")
            frac //= 1000
        cap = data[:snaplen]
        out.append(struct.pack(e + "IIII", sec, frac, len(cap), orig) + cap)
    return b"".join(out)


def write_pcap(
    path: Path,
    packets: Iterable[Record],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    big_endian: bool = False,
    nanosecond: bool = False,
    snaplen: int = 262144,
) -> Path:
    """Write a classic pcap file (µs or ns magic, either byte order) and return its path."""
    path.write_bytes(
        pcap_bytes(
            packets,
            linktype=linktype,
            big_endian=big_endian,
            nanosecond=nanosecond,
            snaplen=snaplen,
        )
    )
    return path


def pcap_record_offsets(packets: Sequence[Record], *, snaplen: int = 262144) -> list[int]:
    """File offset of each record header in the file ``pcap_bytes`` would produce."""
    offsets = []
    pos = PCAP_HEADER_LEN
    for rec in packets:
        offsets.append(pos)
        pos += PCAP_RECORD_HEADER_LEN + min(len(_split_record(rec)[1]), snaplen)
    return offsets


# --------------------------------------------------------------------------------------
# pcapng
# --------------------------------------------------------------------------------------

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_SPB = 0x00000003
BT_NRB = 0x00000004
BT_ISB = 0x00000005
BT_EPB = 0x00000006
BT_CUSTOM = 0x00000BAD
PACKET_BLOCK_TYPES = (BT_SPB, BT_EPB)


@dataclass
class IDB:
    """Interface Description Block; ``tsresol`` is the raw if_tsresol byte (None = 10^-6)."""

    linktype: int = LINKTYPE_ETHERNET
    snaplen: int = 0
    tsresol: int | None = None
    name: str | None = None


@dataclass
class EPB:
    """Enhanced Packet Block on interface ``interface`` of the current section."""

    interface: int
    ts_ns: int
    data: bytes
    orig_len: int | None = None
    comment: str | None = None


@dataclass
class SPB:
    """Simple Packet Block: interface 0, no timestamp; stored length = min(len, snaplen)."""

    data: bytes


@dataclass
class RawBlock:
    """Any other block (NRB, ISB, custom...), body given as already-encoded bytes."""

    block_type: int
    body: bytes


Block = IDB | EPB | SPB | RawBlock


@dataclass
class Section:
    """One pcapng section: its own byte order and its own interface table."""

    blocks: Sequence[Block]
    big_endian: bool = False
    user_appl: str | None = "tapwatch-tests"


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _options(e: str, opts: Sequence[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    out = b"".join(struct.pack(e + "HH", code, len(val)) + _pad4(val) for code, val in opts)
    return out + struct.pack(e + "HH", 0, 0)


def _block(e: str, block_type: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = len(body) + 12
    return struct.pack(e + "II", block_type, total) + body + struct.pack(e + "I", total)


def ts_units(ts_ns: int, tsresol: int | None) -> int:
    """A timestamp in units of an if_tsresol value; it must be exact."""
    res = TSRES_US if tsresol is None else tsresol
    if res & 0x80:
        num, den = 2 ** (res & 0x7F), 10**9
    else:
        num, den = 10 ** (res & 0x7F), 10**9
    units, rem = divmod(ts_ns * num, den)
    if rem:
        raise ValueError(f"timestamp {ts_ns} not exact at if_tsresol {res:#x}")
    return units


def nrb_body(e: str, entries: Sequence[tuple[str, str]]) -> bytes:
    """Name Resolution Block body with IPv4 records (ip, name)."""
    out = b""
    for ip, name in entries:
        val = ipaddress.IPv4Address(ip).packed + name.encode() + b"\0"
        out += struct.pack(e + "HH", 1, len(val)) + _pad4(val)
    return out + struct.pack(e + "HH", 0, 0)


def isb_body(e: str, interface: int, ts_units: int, received: int) -> bytes:
    """Interface Statistics Block body with an isb_ifrecv option."""
    opts = _options(e, [(4, struct.pack(e + "Q", received))])
    return struct.pack(e + "III", interface, ts_units >> 32, ts_units & 0xFFFFFFFF) + opts


def pcapng_bytes(sections: Sequence[Section]) -> bytes:
    """Serialise pcapng sections; EPB/SPB data is cut to the interface snaplen."""
    out = []
    for sec in sections:
        e = ">" if sec.big_endian else "<"
        shb_opts = []
        if sec.user_appl:
            shb_opts.append((4, sec.user_appl.encode()))
        shb = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(e, shb_opts)
        out.append(_block(e, BT_SHB, shb))
        ifaces: list[IDB] = []
        for blk in sec.blocks:
            if isinstance(blk, IDB):
                ifaces.append(blk)
                opts = []
                if blk.name:
                    opts.append((2, blk.name.encode()))
                if blk.tsresol is not None:
                    opts.append((9, bytes([blk.tsresol])))
                body = struct.pack(e + "HHI", blk.linktype, 0, blk.snaplen) + _options(e, opts)
                out.append(_block(e, BT_IDB, body))
            elif isinstance(blk, EPB):
                idb = ifaces[blk.interface]
                cap = blk.data[: idb.snaplen] if idb.snaplen else blk.data
                orig = len(blk.data) if blk.orig_len is None else blk.orig_len
                units = ts_units(blk.ts_ns, idb.tsresol)
                opts = [(1, blk.comment.encode())] if blk.comment else []
                body = struct.pack(
                    e + "IIIII", blk.interface, units >> 32, units & 0xFFFFFFFF, len(cap), orig
                )
                body += _pad4(cap) + _options(e, opts)
                out.append(_block(e, BT_EPB, body))
            elif isinstance(blk, SPB):
                snap = ifaces[0].snaplen
                cap = blk.data[:snap] if snap else blk.data
                out.append(_block(e, BT_SPB, struct.pack(e + "I", len(blk.data)) + cap))
            else:
                out.append(_block(e, blk.block_type, blk.body))
    return b"".join(out)


def write_pcapng(path: Path, sections: Sequence[Section]) -> Path:
    """Write a pcapng file made of ``sections`` and return its path."""
    path.write_bytes(pcapng_bytes(sections))
    return path


def pcapng_packet_block_offsets(data: bytes) -> list[int]:
    """Offsets of the packet blocks (EPB/SPB) of a well-formed pcapng file, in order."""
    offsets = []
    pos = 0
    e = "<"
    while pos + 12 <= len(data):
        if data[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
            e = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(e + "II", data, pos)
        if btype in PACKET_BLOCK_TYPES:
            offsets.append(pos)
        pos += blen
    return offsets


# --------------------------------------------------------------------------------------
# gzip
# --------------------------------------------------------------------------------------


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def gzip_file(src: Path, dst: Path | None = None) -> Path:
    """Write a gzip-compressed copy of ``src`` (default ``src`` + ".gz") and return it."""
    dst = dst or src.with_name(src.name + ".gz")
    dst.write_bytes(gzip_bytes(src.read_bytes()))
    return dst


# --------------------------------------------------------------------------------------
# hosts, frames and the expectation model
# --------------------------------------------------------------------------------------


def canon_ip(addr: str) -> str:
    """Canonical text of an address as Python's ipaddress prints it."""
    return str(ipaddress.ip_address(addr))


@dataclass(frozen=True)
class Host:
    """A crafted network host. ``mac`` None means it is only seen where there is no MAC."""

    mac: str | None
    ip: str | None = None
    ip6: str | None = None

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(sorted(canon_ip(a) for a in (self.ip, self.ip6) if a))

    @property
    def key(self) -> DeviceKey:
        return (self.mac, self.ips)

    def without_mac(self) -> Host:
        return Host(None, self.ip, self.ip6)


DeviceKey = tuple[str | None, tuple[str, ...]]


def host(net: int, n: int, *, v4: bool = True, v6: bool = False, mac: bool = True) -> Host:
    """Host number ``n`` of crafted network ``net``: 02:00:00:<net>:00:<n>, 192.168.<net>.<n>,
    2001:db8:<net>::<n>."""
    return Host(
        f"02:00:00:{net:02x}:00:{n:02x}" if mac else None,
        f"192.168.{net}.{n}" if v4 else None,
        canon_ip(f"2001:db8:{net:x}:0:0:0:0:{n:x}") if v6 else None,
    )


@dataclass(frozen=True)
class Hop:
    """One attribution of a frame: ``src`` sent it, ``dst`` received it (None = nobody,
    e.g. broadcast). ``nbytes`` overrides the byte count (tunnelled inner frames)."""

    src: Host | None
    dst: Host | None
    nbytes: int | None = None


@dataclass
class Frame:
    """A crafted frame: timestamp, link-layer bytes, who sent/received it."""

    ts_ns: int
    data: bytes
    hops: tuple[Hop, ...]
    orig_len: int | None = None

    @property
    def wire_len(self) -> int:
        return len(self.data) if self.orig_len is None else self.orig_len

    @property
    def record(self) -> Record:
        return (self.ts_ns, self.data, self.wire_len)


def frame(ts_ns: int, data: bytes, src: Host | None, dst: Host | None) -> Frame:
    """A frame with a single sender/receiver attribution."""
    return Frame(ts_ns, data, (Hop(src, dst),))


def records(frames: Iterable[Frame]) -> list[Record]:
    return [f.record for f in frames]


def write_built(directory: Path, builders: Mapping[str, Any], first_net: int) -> dict[str, Any]:
    """Build each crafted scenario on its own network number and write it as NAME.pcap;
    the scenarios (anything with `frames` and a `path`) come back by name."""
    out = {}
    for i, (name, build) in enumerate(builders.items()):
        built = build(first_net + i)
        built.path = write_pcap(directory / f"{name}.pcap", records(built.frames))
        out[name] = built
    return out


def expected_devices(frames: Iterable[Frame]) -> dict[DeviceKey, dict[str, int]]:
    """Per-device counters the CLI must report for ``frames`` (times in µs since epoch)."""
    out: dict[DeviceKey, dict[str, int]] = {}

    def slot(h: Host) -> dict[str, int]:
        return out.setdefault(
            h.key,
            {
                "packets_sent": 0,
                "packets_received": 0,
                "bytes_sent": 0,
                "bytes_received": 0,
                "first_seen": 2**63,
                "last_seen": -1,
            },
        )

    for f in frames:
        us = f.ts_ns // 1000
        for hop in f.hops:
            n = f.wire_len if hop.nbytes is None else hop.nbytes
            for h, kind in ((hop.src, "sent"), (hop.dst, "received")):
                if h is None:
                    continue
                s = slot(h)
                s[f"packets_{kind}"] += 1
                s[f"bytes_{kind}"] += n
                s["first_seen"] = min(s["first_seen"], us)
                s["last_seen"] = max(s["last_seen"], us)
    return out


def _hop_bytes(f: Frame, hop: int) -> int:
    n = f.hops[hop].nbytes
    return f.wire_len if n is None else n


@dataclass(frozen=True)
class Conn:
    """An expected connection: client, server, transport, server port (over IPv6 if v6)."""

    client: Host
    server: Host
    transport: str
    port: int
    v6: bool = False


ConnKey = tuple[str | None, str | None, str | None, str | None, str, int]


def conn_key(c: Conn) -> ConnKey:
    """Key of a connection as ``connection_map`` builds it from the JSON."""
    return (
        canon_ip(ip_of(c.client, c.v6)),
        c.client.mac,
        canon_ip(ip_of(c.server, c.v6)),
        c.server.mac,
        c.transport,
        c.port,
    )


def expected_connections(
    conns: Mapping[Conn, Sequence[Frame]], *, hop: int = 0
) -> dict[ConnKey, dict[str, int]]:
    """Counters of each connection from the frames that make it up (``hop`` picks whose
    byte count applies when frames are tunnelled)."""
    out = {}
    for c, frames in conns.items():
        out[conn_key(c)] = {
            "packets": len(frames),
            "bytes": sum(_hop_bytes(f, hop) for f in frames),
            "first_seen": min(f.ts_ns for f in frames) // 1000,
            "last_seen": max(f.ts_ns for f in frames) // 1000,
        }
    return out


# --------------------------------------------------------------------------------------
# packet builders
# --------------------------------------------------------------------------------------


def pad60(b: bytes) -> bytes:
    """Pad an Ethernet frame to the 60-byte minimum (without FCS), as on the wire."""
    return b + b"\0" * (60 - len(b)) if len(b) < 60 else b


def ether(src_mac: str, dst_mac: str, payload: ScapyPacket | bytes, etype: int | None = None) -> bytes:
    """Ethernet II frame carrying ``payload``; padded to 60 bytes."""
    if isinstance(payload, bytes):
        assert etype is not None
        return pad60(bytes(Ether(src=src_mac, dst=dst_mac, type=etype)) + payload)
    return pad60(bytes(Ether(src=src_mac, dst=dst_mac) / payload))


def ip_of(h: Host, v6: bool) -> str:
    addr = h.ip6 if v6 else h.ip
    assert addr, f"{h} has no {'IPv6' if v6 else 'IPv4'} address"
    return addr


def l3(src: Host, dst: Host | str, *, v6: bool = False) -> ScapyPacket:
    """IPv4 or IPv6 header from ``src`` to ``dst`` (a Host or a literal address)."""
    d = dst if isinstance(dst, str) else ip_of(dst, v6)
    return IPv6(src=ip_of(src, True), dst=d) if v6 else IP(src=ip_of(src, False), dst=d, id=7)


def tcp(
    src: Host,
    dst: Host,
    sport: int,
    dport: int,
    flags: str = "S",
    payload: bytes = b"",
    *,
    v6: bool = False,
    seq: int = 1000,
    ack: int = 0,
) -> ScapyPacket:
    """IP/TCP segment (no link layer)."""
    pkt = l3(src, dst, v6=v6) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
    return pkt / Raw(payload) if payload else pkt


def udp(
    src: Host, dst: Host | str, sport: int, dport: int, payload: bytes = b"", *, v6: bool = False
) -> ScapyPacket:
    """IP/UDP datagram (no link layer)."""
    pkt = l3(src, dst, v6=v6) / UDP(sport=sport, dport=dport)
    return pkt / Raw(payload) if payload else pkt


def icmp_echo(src: Host, dst: Host, *, reply: bool = False, seq: int = 1) -> ScapyPacket:
    """IPv4 ICMP echo request (or reply) with a small payload."""
    return l3(src, dst) / ICMP(type=0 if reply else 8, id=0x77, seq=seq) / Raw(b"tapwatch-ping..")


def arp_reply(src: Host, dst: Host) -> bytes:
    """Unicast ARP reply: ``src`` tells ``dst`` its MAC (Ethernet frame)."""
    assert src.mac and dst.mac
    return ether(src.mac, dst.mac, ARP(op=2, hwsrc=src.mac, psrc=src.ip, hwdst=dst.mac, pdst=dst.ip))


def arp_request(src: Host, target_ip: str, *, sender_ip: str | None = None) -> bytes:
    """Broadcast ARP who-has ``target_ip`` from ``src`` (sender_ip "0.0.0.0" = probe)."""
    assert src.mac
    return ether(
        src.mac,
        BROADCAST,
        ARP(
            op=1,
            hwsrc=src.mac,
            psrc=sender_ip or src.ip,
            hwdst="00:00:00:00:00:00",
            pdst=target_ip,
        ),
    )


def eth_ip(src: Host, dst: Host, pkt: ScapyPacket) -> bytes:
    """``pkt`` (an IP packet) in an Ethernet frame between the hosts' MACs."""
    assert src.mac and dst.mac
    return ether(src.mac, dst.mac, pkt)


def ts(i: int, *, base: int = T0_NS, step: int = 1_000_000_000 + TICK_NS) -> int:
    """Timestamp of the ``i``-th crafted packet: base + (i+1)/64 s + i s (exact everywhere)."""
    return base + TICK_NS + i * step


# --------------------------------------------------------------------------------------
# the 3-host conversation used by the format tests
# --------------------------------------------------------------------------------------


@dataclass
class Conversation:
    """Frames of a 3-host Ethernet conversation (ARP + TCP + UDP) and its expectations."""

    a: Host
    b: Host
    c: Host
    frames: list[Frame]
    conns: dict[Conn, list[Frame]] = field(default_factory=dict)
    big_frame_index: int = 8


def conversation(net: int, *, base: int = T0_NS) -> Conversation:
    """16 frames between A, B, C of network ``net``.

    A: sent 8 / received 6, B: sent 5 / received 8, C: sent 3 / received 2. Frame 8 is a
    1454-byte TCP segment so that a 256-byte snaplen cuts it (wire length still counts).
    Every frame is unicast, so the counts do not depend on broadcast rules.
    """
    a, b, c = host(net, 10), host(net, 20), host(net, 30)
    assert a.mac and b.mac and c.mac
    t = [ts(i, base=base) for i in range(16)]
    seq_a, seq_b = 1000, 5000
    spec: list[tuple[Host, Host, bytes]] = [
        (c, a, eth_ip(c, a, udp(c, a, 40001, 9999, b"status?" + bytes(9)))),  # 0
        (a, c, eth_ip(a, c, udp(a, c, 9999, 40001, b"status:ok" + bytes(7)))),  # 1
        (b, a, arp_reply(b, a)),  # 2
        (a, b, arp_reply(a, b)),  # 3
        (a, b, eth_ip(a, b, tcp(a, b, 50000, 9000, "S", seq=seq_a))),  # 4
        (b, a, eth_ip(b, a, tcp(b, a, 9000, 50000, "SA", seq=seq_b, ack=seq_a + 1))),  # 5
        (a, b, eth_ip(a, b, tcp(a, b, 50000, 9000, "A", seq=seq_a + 1, ack=seq_b + 1))),  # 6
        (
            a,
            b,
            eth_ip(a, b, tcp(a, b, 50000, 9000, "PA", b"R" * 40, seq=seq_a + 1, ack=seq_b + 1)),
        ),  # 7
        (
            b,
            a,
            eth_ip(b, a, tcp(b, a, 9000, 50000, "PA", b"D" * 1400, seq=seq_b + 1, ack=seq_a + 41)),
        ),  # 8 (big)
        (a, b, eth_ip(a, b, tcp(a, b, 50000, 9000, "A", seq=seq_a + 41, ack=seq_b + 1401))),  # 9
        (c, b, eth_ip(c, b, udp(c, b, 40002, 9999, b"ping" * 2))),  # 10
        (b, c, eth_ip(b, c, udp(b, c, 9999, 40002, b"pong" * 2))),  # 11
        (a, b, eth_ip(a, b, tcp(a, b, 50000, 9000, "FA", seq=seq_a + 41, ack=seq_b + 1401))),
        (b, a, eth_ip(b, a, tcp(b, a, 9000, 50000, "FA", seq=seq_b + 1401, ack=seq_a + 42))),
        (a, b, eth_ip(a, b, tcp(a, b, 50000, 9000, "A", seq=seq_a + 42, ack=seq_b + 1402))),
        (c, a, eth_ip(c, a, udp(c, a, 40001, 9999, b"status?" + bytes(9)))),  # 15
    ]
    frames = [frame(t[i], data, s, d) for i, (s, d, data) in enumerate(spec)]
    conns = {
        Conn(c, a, "udp", 9999): [frames[i] for i in (0, 1, 15)],
        Conn(a, b, "tcp", 9000): [frames[i] for i in (4, 5, 6, 7, 8, 9, 12, 13, 14)],
        Conn(c, b, "udp", 9999): [frames[i] for i in (10, 11)],
    }
    return Conversation(a, b, c, frames, conns)


# --------------------------------------------------------------------------------------
# running the CLI
# --------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tapwatch.cli ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "tapwatch.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )


def analyze(db: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    """``tapwatch analyze PATHS --db DB``."""
    return run_cli("analyze", *paths, "--db", db)


def _list(db: Path, what: str) -> list[dict[str, Any]]:
    res = run_cli(what, "list", "--db", db, "--format", "json")
    assert res.returncode == 0, f"{what} list failed ({res.returncode}): {res.stderr}"
    data = json.loads(res.stdout)
    assert isinstance(data, list), data
    return data


def list_devices(db: Path) -> list[dict[str, Any]]:
    """``tapwatch devices list --format json`` parsed."""
    return _list(db, "devices")


def list_connections(db: Path) -> list[dict[str, Any]]:
    """``tapwatch connections list --format json`` parsed."""
    return _list(db, "connections")


def stderr_lines_naming(stderr: str, path: Path) -> list[str]:
    """Lines of ``stderr`` that mention the file (its name is enough, as a whole word:
    "a.pcap" does not match "a.pcap.gz")."""
    pat = re.compile(r"(?<![\w.-])" + re.escape(path.name) + r"(?![\w.-])")
    return [ln for ln in stderr.splitlines() if pat.search(ln)]


def describe(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"


# --------------------------------------------------------------------------------------
# reading the JSON back
# --------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_us(value: str) -> int:
    """Microseconds since the epoch of a JSON timestamp; it must be explicit UTC."""
    assert isinstance(value, str), value
    assert value.endswith(("Z", "+00:00")), f"timestamp not marked UTC: {value!r}"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (dt - _EPOCH) // timedelta(microseconds=1)


def device_key(d: dict[str, Any]) -> DeviceKey:
    return (d["mac"], tuple(sorted(d["ips"])))


def device_map(devices: Iterable[dict[str, Any]]) -> dict[DeviceKey, dict[str, Any]]:
    """Devices by (mac, sorted ips); fails on duplicates (a device must be listed once)."""
    out: dict[DeviceKey, dict[str, Any]] = {}
    for d in devices:
        k = device_key(d)
        assert k not in out, f"device listed twice: {k}"
        out[k] = d
    return out


def device_counters(d: dict[str, Any]) -> dict[str, int]:
    """The counters of a JSON device in the shape ``expected_devices`` produces."""
    return {
        "packets_sent": d["packets_sent"],
        "packets_received": d["packets_received"],
        "bytes_sent": d["bytes_sent"],
        "bytes_received": d["bytes_received"],
        "first_seen": iso_to_us(d["first_seen"]),
        "last_seen": iso_to_us(d["last_seen"]),
    }


def counters_of(
    devices: Iterable[dict[str, Any]], keys: Iterable[DeviceKey]
) -> dict[DeviceKey, dict[str, int] | None]:
    """Counters of the devices with ``keys`` (None where the device is missing)."""
    m = device_map(devices)
    return {k: (device_counters(m[k]) if k in m else None) for k in keys}


def connection_map(conns: Iterable[dict[str, Any]]) -> dict[ConnKey, dict[str, int]]:
    """Connections by (client ip, client mac, server ip, server mac, transport, port)."""
    out: dict[ConnKey, dict[str, int]] = {}
    for c in conns:
        k = (
            c["client_ip"],
            c["client_mac"],
            c["server_ip"],
            c["server_mac"],
            c["transport"],
            c["server_port"],
        )
        assert k not in out, f"connection listed twice: {k}"
        out[k] = {
            "packets": c["packets"],
            "bytes": c["bytes"],
            "first_seen": iso_to_us(c["first_seen"]),
            "last_seen": iso_to_us(c["last_seen"]),
        }
    return out


def crc32_le(b: bytes) -> bytes:
    """IEEE 802 FCS as it follows a frame (little-endian CRC-32)."""
    return struct.pack("<I", zlib.crc32(b) & 0xFFFFFFFF)
