"""Damaged captures and malformed packets: read what can be read, say where it broke.

Damage is reported on stderr as a warning naming the file, the packet number (1-based,
counting packet records) and the byte offset in the file where the damaged record/block
starts. Exit code stays 0. All damaged files of this module go into one CLI call (each
uses its own network number and warnings are told apart by file name).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from craft import (
    EPB,
    IDB,
    LINKTYPE_ETHERNET,
    Frame,
    Host,
    Section,
    analyze,
    conversation,
    counters_of,
    describe,
    device_map,
    eth_ip,
    expected_devices,
    frame,
    gzip_bytes,
    host,
    list_devices,
    pcap_bytes,
    pcap_record_offsets,
    pcapng_bytes,
    pcapng_packet_block_offsets,
    records,
    stderr_lines_naming,
    tcp,
    ts,
    udp,
    write_pcap,
)

DAMAGED_INDEX = 7  # 0-based record that gets damaged in the "middle" cases (packet 8)


def damage_warning(stderr: str, path: Path, packet: int, offset: int) -> list[str]:
    """stderr lines naming ``path`` that also give ``packet N`` and ``offset N``."""
    return [
        ln
        for ln in stderr_lines_naming(stderr, path)
        if re.search(rf"\bpacket\s+#?{packet}\b", ln) and re.search(rf"\boffset\s+{offset}\b", ln)
    ]


@dataclass
class Damaged:
    """A damaged file: all frames crafted, which must be stored, which may be lost."""

    name: str
    path: Path
    frames: list[Frame]
    lost: set[int]  # indexes that must not be stored (cut off)
    maybe_lost: set[int] = field(default_factory=set)  # may or may not be recovered
    packet: int | None = None  # 1-based packet number the warning must give
    offset: int | None = None  # byte offset the warning must give

    def expected_variants(self) -> list[dict[Any, Any]]:
        """Acceptable device counters: with and without each maybe-lost frame."""
        keep = [f for i, f in enumerate(self.frames) if i not in self.lost]
        out = [expected_devices(keep)]
        if self.maybe_lost:
            out.append(
                expected_devices(
                    [f for i, f in enumerate(self.frames) if i not in self.lost | self.maybe_lost]
                )
            )
        return out


# ----------------------------------------------------------------------- damaged files


def truncated_pcap(d: Path, net: int, cut_in: str) -> Damaged:
    """Conversation pcap cut inside the last record's header or data."""
    fr = conversation(net).frames
    data = pcap_bytes(records(fr))
    off = pcap_record_offsets(records(fr))[-1]
    cut = off + (7 if cut_in == "header" else 16 + 10)
    p = d / f"truncated_{cut_in}.pcap"
    p.write_bytes(data[:cut])
    return Damaged(p.name, p, fr, {len(fr) - 1}, packet=len(fr), offset=off)


def truncated_pcapng(d: Path, net: int) -> Damaged:
    """Conversation pcapng (big-endian) cut inside the last EPB."""
    fr = conversation(net).frames
    blocks: list[Any] = [IDB(LINKTYPE_ETHERNET)] + [EPB(0, f.ts_ns, f.data) for f in fr]
    data = pcapng_bytes([Section(blocks, big_endian=True)])
    off = pcapng_packet_block_offsets(data)[-1]
    p = d / "truncated.pcapng"
    p.write_bytes(data[: off + 30])
    return Damaged(p.name, p, fr, {len(fr) - 1}, packet=len(fr), offset=off)


def garbage_record_header(d: Path, net: int, big_endian: bool = False) -> Damaged:
    """Record header of packet 8 overwritten with 0xdeadbeef garbage (length > snaplen)."""
    fr = conversation(net).frames
    data = bytearray(pcap_bytes(records(fr), big_endian=big_endian, snaplen=65535))
    off = pcap_record_offsets(records(fr), snaplen=65535)[DAMAGED_INDEX]
    data[off : off + 16] = b"\xde\xad\xbe\xef" * 4
    p = d / f"garbage_header_{'be' if big_endian else 'le'}.pcap"
    p.write_bytes(bytes(data))
    return Damaged(p.name, p, fr, set(), {DAMAGED_INDEX}, DAMAGED_INDEX + 1, off)


def corrupt_block_length(d: Path, net: int, kind: str) -> Damaged:
    """The EPB of packet 8 gets a wrong leading block-total-length (trailer left intact)."""
    fr = conversation(net).frames
    blocks: list[Any] = [IDB(LINKTYPE_ETHERNET)] + [EPB(0, f.ts_ns, f.data) for f in fr]
    data = bytearray(pcapng_bytes([Section(blocks)]))
    off = pcapng_packet_block_offsets(bytes(data))[DAMAGED_INDEX]
    bogus = {"huge": 0x7FFFFFF0, "misaligned": 0x0000004D, "short": 32}[kind]
    struct.pack_into("<I", data, off + 4, bogus)
    p = d / f"corrupt_length_{kind}.pcapng"
    p.write_bytes(bytes(data))
    return Damaged(p.name, p, fr, set(), {DAMAGED_INDEX}, DAMAGED_INDEX + 1, off)


def truncated_gzip(d: Path, net: int) -> Damaged:
    """gzip stream of a pcap cut at 60 %: every record fully inside the inflatable prefix
    is stored, the rest is not."""
    fr = conversation(net).frames
    raw = pcap_bytes(records(fr))
    gz = gzip_bytes(raw)
    cut = gz[: len(gz) * 6 // 10]
    prefix = zlib.decompressobj(wbits=31).decompress(cut)
    offsets = pcap_record_offsets(records(fr))
    complete = sum(1 for i, o in enumerate(offsets) if o + 16 + len(fr[i].data) <= len(prefix))
    assert 0 < complete < len(fr)
    p = d / "truncated.pcap.gz"
    p.write_bytes(cut)
    return Damaged(p.name, p, fr, set(range(complete, len(fr))))


DAMAGED_BUILDERS: dict[str, Callable[[Path, int], Damaged]] = {
    "truncated_header": lambda d, n: truncated_pcap(d, n, "header"),
    "truncated_data": lambda d, n: truncated_pcap(d, n, "data"),
    "truncated_pcapng": truncated_pcapng,
    "garbage_header_le": garbage_record_header,
    "garbage_header_be": lambda d, n: garbage_record_header(d, n, big_endian=True),
    "corrupt_length_huge": lambda d, n: corrupt_block_length(d, n, "huge"),
    "corrupt_length_misaligned": lambda d, n: corrupt_block_length(d, n, "misaligned"),
    "corrupt_length_short": lambda d, n: corrupt_block_length(d, n, "short"),
    "truncated_gzip": truncated_gzip,
}
WITH_POSITION = [n for n in DAMAGED_BUILDERS if n != "truncated_gzip"]


# ----------------------------------------------------------------------- malformed packets


def _bad_hosts(net: int) -> tuple[Host, Host]:
    return host(net, 66), host(net, 67)


def _eth_raw(e: Host, f: Host, etype: int, payload: bytes) -> bytes:
    """Ethernet header + arbitrary bytes, NOT padded (so lengths are exactly as crafted)."""
    return bytes(Ether(src=e.mac, dst=f.mac, type=etype)) + payload


def _nested_gre(e: Host, f: Host, depth: int) -> bytes:
    inner = bytes(udp(e, f, 40000, 9999, b"deep"))
    for _ in range(depth):
        inner = bytes(IP(src=e.ip, dst=f.ip, proto=47) / Raw(struct.pack(">HH", 0, 0x0800) + inner))
    return inner


MALFORMED: dict[str, Callable[[Host, Host], bytes]] = {
    "empty_frame": lambda e, f: b"",
    "three_bytes": lambda e, f: b"\x02\x00\x00",
    "ethernet_header_cut": lambda e, f: _eth_raw(e, f, 0x0800, b"")[:13],
    "ipv4_ihl15_20_bytes": lambda e, f: _eth_raw(
        e, f, 0x0800, b"\x4f" + bytes(bytes(IP(src=e.ip, dst=f.ip))[1:20])
    ),
    "ipv4_ihl_below_5": lambda e, f: _eth_raw(
        e, f, 0x0800, b"\x43" + bytes(bytes(IP(src=e.ip, dst=f.ip) / Raw(b"x" * 30))[1:])
    ),
    "ipv4_total_length_beyond_frame": lambda e, f: _eth_raw(
        e, f, 0x0800, bytes(IP(src=e.ip, dst=f.ip, len=4000) / UDP(sport=1, dport=9999) / Raw(b"y" * 18))
    ),
    "tcp_data_offset_beyond_packet": lambda e, f: _eth_raw(
        e, f, 0x0800, bytes(IP(src=e.ip, dst=f.ip) / TCP(sport=1, dport=2, dataofs=15))
    ),
    "tcp_header_cut": lambda e, f: _eth_raw(
        e, f, 0x0800, bytes(IP(src=e.ip, dst=f.ip, proto=6, len=30) / Raw(b"\x9c\x40\x01"))[:23]
    ),
    "arp_cut": lambda e, f: _eth_raw(e, f, 0x0806, b"\x00\x01\x08\x00\x06\x04\x00\x02"),
    "vlan_tag_cut": lambda e, f: _eth_raw(e, f, 0x8100, b"\x00"),
    "vlan_tag_bomb": lambda e, f: _eth_raw(
        e, f, 0x8100, b"\x00\x05\x81\x00" * 200 + b"\x00\x05\x08\x00" + bytes(udp(e, f, 1, 2))
    ),
    "ipv6_ext_len_beyond_packet": lambda e, f: _eth_raw(
        e,
        f,
        0x86DD,
        bytes(IPv6(src="2001:db8::66", dst="2001:db8::67", nh=0, plen=8)) + b"\x11\xff" + b"\x00" * 6,
    ),
    "gre_cut": lambda e, f: _eth_raw(
        e, f, 0x0800, bytes(IP(src=e.ip, dst=f.ip, proto=47) / Raw(b"\x10\x00"))
    ),
    "erspan_cut": lambda e, f: _eth_raw(
        e,
        f,
        0x0800,
        bytes(IP(src=e.ip, dst=f.ip, proto=47) / Raw(b"\x10\x00\x88\xbe\x00\x00\x00\x01\x10")),
    ),
    "vxlan_cut": lambda e, f: _eth_raw(e, f, 0x0800, bytes(udp(e, f, 40000, 4789, b"\x08\x00"))),
    "gre_nested_64_deep": lambda e, f: _eth_raw(e, f, 0x0800, _nested_gre(e, f, 64)),
}


@dataclass
class MalformedFile:
    path: Path
    valid: list[Frame]
    bad: tuple[Host, Host]


def build_malformed(d: Path, net: int, name: str) -> MalformedFile:
    """Valid V1<->V2 TCP/UDP frames with one malformed frame from E to F in the middle."""
    v1, v2 = host(net, 1), host(net, 2)
    e, f = _bad_hosts(net)
    valid_spec = [
        (v1, v2, eth_ip(v1, v2, tcp(v1, v2, 40000, 20002, "S"))),
        (v2, v1, eth_ip(v2, v1, tcp(v2, v1, 20002, 40000, "SA", ack=1001))),
        (v1, v2, eth_ip(v1, v2, udp(v1, v2, 40001, 9999, b"before"))),
        # the malformed frame goes here (index 3 in the file)
        (v2, v1, eth_ip(v2, v1, udp(v2, v1, 9999, 40001, b"after"))),
        (v1, v2, eth_ip(v1, v2, tcp(v1, v2, 40000, 20002, "A", seq=1001, ack=1))),
    ]
    valid = [frame(ts(i if i < 3 else i + 1), data, s, dd) for i, (s, dd, data) in
             enumerate(valid_spec)]  # fmt: skip
    bad = (ts(3), MALFORMED[name](e, f))
    recs = [v.record for v in valid[:3]] + [bad] + [v.record for v in valid[3:]]
    p = write_pcap(d / f"malformed_{name}.pcap", recs)
    return MalformedFile(p, valid, (e, f))


# ----------------------------------------------------------------------- the bulk run


@dataclass
class DamagedRun:
    res: Any
    damaged: dict[str, Damaged]
    malformed: dict[str, MalformedFile]
    devices: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DamagedRun:
    d = tmp_path_factory.mktemp("damaged")
    damaged = {n: b(d, 141 + i) for i, (n, b) in enumerate(DAMAGED_BUILDERS.items())}
    malformed = {n: build_malformed(d, 161 + i, n) for i, n in enumerate(MALFORMED)}
    db = d / "damaged.db"
    paths = [x.path for x in damaged.values()] + [m.path for m in malformed.values()]
    res = analyze(db, *paths)
    return DamagedRun(res, damaged, malformed, list_devices(db) if db.exists() else [])


def test_damage_is_not_fatal(run: DamagedRun) -> None:
    """Every file was read (with warnings): exit 0, no traceback."""
    assert run.res.returncode == 0, describe(run.res)
    assert "Traceback" not in run.res.stderr, describe(run.res)


@pytest.mark.parametrize("name", list(DAMAGED_BUILDERS))
def test_packets_around_damage_are_stored(run: DamagedRun, name: str) -> None:
    """Everything before the damage and (for mid-file damage) after it is stored; a
    record lost to the damage may be missing, nothing else."""
    dmg = run.damaged[name]
    variants = dmg.expected_variants()
    keys = set().union(*variants)
    actual = counters_of(run.devices, keys)
    ok = [{k: v.get(k) for k in keys} for v in variants]
    assert actual in ok, f"{actual}\nnot one of\n{ok}"


@pytest.mark.parametrize("name", list(DAMAGED_BUILDERS))
def test_damage_warning_names_file(run: DamagedRun, name: str) -> None:
    """A warning line names the damaged file."""
    assert stderr_lines_naming(run.res.stderr, run.damaged[name].path), describe(run.res)


@pytest.mark.parametrize("name", WITH_POSITION)
def test_damage_warning_gives_packet_and_offset(run: DamagedRun, name: str) -> None:
    """The warning gives the 1-based packet number and the byte offset of the damaged
    record (pcap: its record header; pcapng: its block)."""
    dmg = run.damaged[name]
    assert dmg.packet is not None and dmg.offset is not None
    lines = damage_warning(run.res.stderr, dmg.path, dmg.packet, dmg.offset)
    assert lines, describe(run.res)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_packet_does_not_disturb_valid_ones(run: DamagedRun, name: str) -> None:
    """Valid frames before and after a malformed one count exactly; no crash."""
    m = run.malformed[name]
    expected = expected_devices(m.valid)
    assert counters_of(run.devices, expected) == expected


def test_malformed_packets_create_no_phantom_devices(run: DamagedRun) -> None:
    """Devices only come from crafted hosts (malformed frames may add their sender/receiver)."""
    allowed_macs: set[str | None] = set()
    allowed_ips: set[str] = set()
    expected: set[Any] = set()
    for m in run.malformed.values():
        expected |= set(expected_devices(m.valid))
        for h in m.bad:
            allowed_macs.add(h.mac)
            allowed_ips |= set(h.ips)
    allowed_ips |= {"2001:db8::66", "2001:db8::67"}
    for dmg in run.damaged.values():
        expected |= set(expected_devices(dmg.frames))
    for dev in run.devices:
        key = (dev["mac"], tuple(sorted(dev["ips"])))
        if key in expected:
            continue
        assert dev["mac"] in allowed_macs or (dev["mac"] is None and set(dev["ips"]) <= allowed_ips), dev


# ----------------------------------------------------------------------- existing db


def test_damaged_file_keeps_existing_devices(tmp_path: Path) -> None:
    """Analysing a damaged capture into a db that already holds devices keeps them as
    they were and adds the damaged file's readable packets."""
    good = conversation(201)
    p_good = write_pcap(tmp_path / "good.pcap", records(good.frames))
    db = tmp_path / "keep.db"
    res = analyze(db, p_good)
    assert res.returncode == 0, describe(res)
    before = {k: v for k, v in device_map(list_devices(db)).items()}

    dmg = garbage_record_header(tmp_path, 202)
    res = analyze(db, dmg.path)
    assert res.returncode == 0, describe(res)
    after = device_map(list_devices(db))
    for k, dev in before.items():
        assert k in after
        for field_ in ("id", "packets_sent", "packets_received", "bytes_sent",
                       "bytes_received", "first_seen", "last_seen"):  # fmt: skip
            assert after[k][field_] == dev[field_], (k, field_)
    expected_good = expected_devices(good.frames)
    assert counters_of(list(after.values()), expected_good) == expected_good
    new_keys = set(expected_devices(dmg.frames))
    assert new_keys <= set(after)
