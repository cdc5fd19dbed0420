"""Capture container formats: every way of storing the same conversation reads the same.

One 3-host conversation (ARP + TCP + UDP, see ``craft.conversation``) is written as
classic pcap (both byte orders, µs and ns), as pcapng in several shapes (one section,
two sections of opposite byte order, two interfaces of different link types, ns and 2^-20
timestamp resolutions, Simple Packet Blocks) and each of these again gzip-compressed.
Each file uses its own hosts (network number) so that all of them can be analysed in a
single CLI call and still be checked one by one.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from craft import (
    BT_CUSTOM,
    BT_ISB,
    BT_NRB,
    EPB,
    IDB,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    SPB,
    T0_NS,
    TSRES_2POW20,
    TSRES_NS,
    Conn,
    Conversation,
    Frame,
    RawBlock,
    Section,
    analyze,
    conn_key,
    connection_map,
    conversation,
    counters_of,
    describe,
    device_map,
    expected_connections,
    expected_devices,
    frame,
    gzip_bytes,
    gzip_file,
    host,
    icmp_echo,
    isb_body,
    list_connections,
    list_devices,
    nrb_body,
    pcap_bytes,
    records,
    stderr_lines_naming,
    ts_units,
    udp,
    write_pcap,
    write_pcapng,
)

SNAPLEN = 256  # cuts the conversation's 1454-byte frame 8; its wire length still counts

DEVICE_FIELDS = {
    "id", "mac", "ip", "ips", "vlans", "first_seen", "last_seen", "packets_sent",
    "packets_received", "bytes_sent", "bytes_received", "protocols", "is_gateway",
    "name", "vendor", "type", "model", "os", "firmware",
}  # fmt: skip
CONNECTION_FIELDS = {
    "client_ip", "client_mac", "server_ip", "server_mac", "transport", "server_port",
    "packets", "bytes", "first_seen", "last_seen",
}  # fmt: skip


@dataclass
class Variant:
    """One crafted file: its hosts' conversation plus any extra frames it carries."""

    name: str
    path: Path
    conv: Conversation
    extra: list[Frame] = field(default_factory=list)
    extra_conns: dict[Conn, list[Frame]] = field(default_factory=dict)

    @property
    def frames(self) -> list[Frame]:
        return self.conv.frames + self.extra

    @property
    def conns(self) -> dict[Conn, list[Frame]]:
        return {**self.conv.conns, **self.extra_conns}


Builder = Callable[[Path, Conversation, int], Variant]


def _pcap(big_endian: bool, nanosecond: bool, suffix: str = ".pcap") -> Builder:
    def build(path: Path, conv: Conversation, net: int) -> Variant:
        p = write_pcap(
            path.with_suffix(suffix),
            records(conv.frames),
            big_endian=big_endian,
            nanosecond=nanosecond,
            snaplen=SNAPLEN,
        )
        return Variant(path.name, p, conv)

    return build


def _single_section(big_endian: bool, tsresol: int | None) -> Builder:
    """One section, one Ethernet interface, with NRB/ISB/custom blocks and a comment to skip."""

    def build(path: Path, conv: Conversation, net: int) -> Variant:
        e = ">" if big_endian else "<"
        blocks: list[Any] = [
            IDB(LINKTYPE_ETHERNET, SNAPLEN, tsresol, name="eth0"),
            RawBlock(BT_NRB, nrb_body(e, [(conv.a.ip or "", "plc-a.local")])),
        ]
        for i, f in enumerate(conv.frames):
            blocks.append(EPB(0, f.ts_ns, f.data, f.wire_len, "crafted" if i == 3 else None))
            if i == 5:
                blocks.append(RawBlock(BT_CUSTOM, struct.pack(e + "I", 32473) + b"opaque data"))
        units = ts_units(conv.frames[-1].ts_ns, tsresol)
        blocks.append(RawBlock(BT_ISB, isb_body(e, 0, units, len(conv.frames))))
        p = write_pcapng(path.with_suffix(".pcapng"), [Section(blocks, big_endian)])
        return Variant(path.name, p, conv)

    return build


def _two_sections(path: Path, conv: Conversation, net: int) -> Variant:
    """LE section (µs) then BE section (ns) whose Ethernet interface is number 1."""
    fr = conv.frames
    s1 = Section([IDB(LINKTYPE_ETHERNET, SNAPLEN)] + [EPB(0, f.ts_ns, f.data) for f in fr[:8]])
    s2 = Section(
        [IDB(LINKTYPE_RAW, 0, TSRES_NS), IDB(LINKTYPE_ETHERNET, SNAPLEN, TSRES_NS)]
        + [EPB(1, f.ts_ns, f.data) for f in fr[8:]],
        big_endian=True,
    )
    return Variant(path.name, write_pcapng(path.with_suffix(".pcapng"), [s1, s2]), conv)


def _two_interfaces(path: Path, conv: Conversation, net: int) -> Variant:
    """Ethernet interface 0 interleaved with a raw-IP interface 1 carrying two MAC-less hosts."""
    d = host(net, 40).without_mac()
    e = host(net, 50).without_mac()
    half = 500_000_000
    fr = conv.frames
    extra_spec = [
        (1, d, e, bytes(udp(d, e, 41000, 5000, b"hello-raw"))),
        (3, e, d, bytes(udp(e, d, 5000, 41000, b"hi"))),
        (6, d, e, bytes(icmp_echo(d, e))),
        (7, e, d, bytes(icmp_echo(e, d, reply=True))),
        (12, d, e, bytes(udp(d, e, 41000, 5000, b"bye"))),
    ]
    extra = [frame(fr[i].ts_ns + half, data, s, dst) for i, s, dst, data in extra_spec]
    blocks: list[Any] = [IDB(LINKTYPE_ETHERNET, SNAPLEN), IDB(LINKTYPE_RAW, SNAPLEN)]
    by_index = {i: x for (i, *_), x in zip(extra_spec, extra, strict=True)}
    for i, f in enumerate(fr):
        blocks.append(EPB(0, f.ts_ns, f.data))
        if i in by_index:
            blocks.append(EPB(1, by_index[i].ts_ns, by_index[i].data))
    conns = {
        Conn(d, e, "udp", 5000): [extra[0], extra[1], extra[4]],
        Conn(d, e, "icmp", 0): [extra[2], extra[3]],
    }
    p = write_pcapng(path.with_suffix(".pcapng"), [Section(blocks)])
    return Variant(path.name, p, conv, extra, conns)


SPB_FRAMES = range(5, 10)  # each host appears in EPBs both before and after these


def _with_spb(path: Path, conv: Conversation, net: int) -> Variant:
    """Frames 5-9 as Simple Packet Blocks (no timestamp) between EPBs."""
    blocks: list[Any] = [IDB(LINKTYPE_ETHERNET, SNAPLEN)]
    for i, f in enumerate(conv.frames):
        blocks.append(SPB(f.data) if i in SPB_FRAMES else EPB(0, f.ts_ns, f.data))
    return Variant(path.name, write_pcapng(path.with_suffix(".pcapng"), [Section(blocks)]), conv)


BUILDERS: dict[str, Builder] = {
    "pcap-le-us": _pcap(False, False),
    "pcap-be-us": _pcap(True, False),
    "pcap-le-ns": _pcap(False, True),
    "pcap-be-ns": _pcap(True, True),
    "pcapng-le": _single_section(False, None),
    "pcapng-be": _single_section(True, None),
    "pcapng-two-sections": _two_sections,
    "pcapng-two-interfaces": _two_interfaces,
    "pcapng-tsresol-ns": _single_section(False, TSRES_NS),
    "pcapng-tsresol-2pow20": _single_section(True, TSRES_2POW20),
    "pcapng-spb": _with_spb,
}
VARIANT_IDS = [n + gz for n in BUILDERS for gz in ("", ".gz")]


def build_variants(directory: Path, first_net: int = 11) -> dict[str, Variant]:
    """Write every variant (plain and gzip) into ``directory``; one network per file."""
    out: dict[str, Variant] = {}
    net = first_net
    for name, builder in BUILDERS.items():
        for gz in ("", ".gz"):
            conv = conversation(net)
            stem = name.replace("-", "_") + ("_z" if gz else "")
            v = builder(directory / stem, conv, net)
            if gz:
                plain = v.path
                v.path = gzip_file(plain)
                plain.unlink()
            v.name = name + gz
            out[v.name] = v
            net += 1
    return out


# Nanosecond timestamps that are not whole microseconds: JSON shows them truncated.
NS_FRACTION = 999


def build_ns_precision(directory: Path, net: int) -> tuple[list[Path], Conversation]:
    """The conversation with +999 ns on every timestamp, as ns pcap and 10^-9 pcapng."""
    conv = conversation(net, base=T0_NS + NS_FRACTION)
    p1 = write_pcap(directory / "ns_precision.pcap", records(conv.frames[:8]), nanosecond=True)
    blocks: list[Any] = [IDB(LINKTYPE_ETHERNET, 0, TSRES_NS)]
    blocks += [EPB(0, f.ts_ns, f.data) for f in conv.frames[8:]]
    p2 = write_pcapng(directory / "ns_precision.pcapng", [Section(blocks)])
    return [p1, p2], conv


def build_header_only(directory: Path) -> list[Path]:
    """Valid files holding no packet at all."""
    p1 = write_pcap(directory / "header_only.pcap", [])
    p2 = write_pcapng(directory / "header_only.pcapng", [Section([IDB()])])
    return [p1, p2]


def build_mislabeled(directory: Path, net: int) -> tuple[list[Path], list[Conversation]]:
    """A gzip file named .pcap and a plain pcap named .pcap.gz (content decides)."""
    c1, c2 = conversation(net), conversation(net + 1)
    p1 = directory / "gzipped_but_named.pcap"
    p1.write_bytes(gzip_bytes(pcap_bytes(records(c1.frames))))
    p2 = directory / "plain_but_named.pcap.gz"
    p2.write_bytes(pcap_bytes(records(c2.frames), big_endian=True))
    return [p1, p2], [c1, c2]


@dataclass
class BulkRun:
    """Result of analysing every crafted file of this module in one CLI call."""

    res: Any
    variants: dict[str, Variant]
    ns_conv: Conversation
    mislabeled: list[Conversation]
    devices: list[dict[str, Any]]
    connections: list[dict[str, Any]]


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> BulkRun:
    d = tmp_path_factory.mktemp("formats")
    variants = build_variants(d)
    ns_paths, ns_conv = build_ns_precision(d, 90)
    empty_paths = build_header_only(d)
    mis_paths, mis_convs = build_mislabeled(d, 91)
    db = d / "bulk.db"
    paths = [v.path for v in variants.values()] + ns_paths + empty_paths + mis_paths
    res = analyze(db, *paths)
    devices = list_devices(db) if db.exists() else []
    conns = list_connections(db) if db.exists() else []
    return BulkRun(res, variants, ns_conv, mis_convs, devices, conns)


def test_bulk_analysis_exits_zero_without_warnings(bulk: BulkRun) -> None:
    """All valid files (incl. header-only ones) read: exit 0 and no warning naming a file."""
    assert bulk.res.returncode == 0, describe(bulk.res)
    for v in bulk.variants.values():
        assert stderr_lines_naming(bulk.res.stderr, v.path) == [], describe(bulk.res)


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_variant_device_counters(bulk: BulkRun, variant: str) -> None:
    """Each format yields the conversation's devices with exact counts and timestamps."""
    v = bulk.variants[variant]
    expected = expected_devices(v.frames)
    assert counters_of(bulk.devices, expected) == expected


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_variant_device_fields(bulk: BulkRun, variant: str) -> None:
    """MAC/IP coupling, address list, no VLAN, no gateway, protocols seen."""
    v = bulk.variants[variant]
    m = device_map(bulk.devices)
    sends = {
        v.conv.a: {"arp", "ipv4", "tcp", "udp"},
        v.conv.b: {"arp", "ipv4", "tcp", "udp"},
        v.conv.c: {"ipv4", "udp"},
    }
    for f in v.extra:  # raw-IP hosts of the two-interface variant
        sends.setdefault(f.hops[0].src, {"ipv4", "udp", "icmp"})  # type: ignore[arg-type]
    for h, protos in sends.items():
        dev = m.get(h.key)
        assert dev is not None, f"missing device {h.key}"
        assert (dev["mac"], dev["ip"], dev["ips"]) == (h.mac, h.ip, [h.ip])
        assert dev["vlans"] == []
        assert dev["is_gateway"] is False
        assert protos <= set(dev["protocols"]), dev["protocols"]


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_variant_connections(bulk: BulkRun, variant: str) -> None:
    """Each format yields the conversation's connections with exact counts and times."""
    v = bulk.variants[variant]
    expected = expected_connections(v.conns)
    actual = connection_map(bulk.connections)
    assert {k: actual.get(k) for k in expected} == expected


def test_no_device_beyond_the_crafted_hosts(bulk: BulkRun) -> None:
    """The device set is exactly the union of the crafted hosts (nothing from padding etc.)."""
    expected: set[Any] = set()
    for v in bulk.variants.values():
        expected |= set(expected_devices(v.frames))
    expected |= set(expected_devices(bulk.ns_conv.frames))
    for c in bulk.mislabeled:
        expected |= set(expected_devices(c.frames))
    assert set(device_map(bulk.devices)) == expected


def test_no_connection_beyond_the_crafted_ones(bulk: BulkRun) -> None:
    """The connection set is exactly the crafted one (client/server direction included)."""
    expected: set[Any] = set()
    for v in bulk.variants.values():
        expected |= {conn_key(c) for c in v.conns}
    expected |= {conn_key(c) for c in bulk.ns_conv.conns}
    for conv in bulk.mislabeled:
        expected |= {conn_key(c) for c in conv.conns}
    assert set(connection_map(bulk.connections)) == expected


def test_json_shapes(bulk: BulkRun) -> None:
    """Every device/connection carries the contract's fields with the right types."""
    assert bulk.devices and bulk.connections
    for d in bulk.devices:
        assert DEVICE_FIELDS <= set(d), DEVICE_FIELDS - set(d)
        assert isinstance(d["ips"], list) and isinstance(d["vlans"], list)
        assert isinstance(d["protocols"], list)
        assert all(p == p.lower() for p in d["protocols"])
        for k in ("packets_sent", "packets_received", "bytes_sent", "bytes_received"):
            assert isinstance(d[k], int) and not isinstance(d[k], bool)
    for c in bulk.connections:
        assert CONNECTION_FIELDS <= set(c), CONNECTION_FIELDS - set(c)
        assert isinstance(c["server_port"], int)


def test_nanosecond_timestamps_are_truncated_to_microseconds(bulk: BulkRun) -> None:
    """ns pcap and 10^-9 pcapng keep sub-µs parts; JSON shows them cut (not rounded) to µs."""
    expected = expected_devices(bulk.ns_conv.frames)
    assert counters_of(bulk.devices, expected) == expected
    a = device_map(bulk.devices)[bulk.ns_conv.a.key]
    # frame 0 is at ...:01.015625999 -> ".015625"
    assert a["first_seen"].startswith("2024-01-01T00:00:01.015625"), a["first_seen"]


def test_gzip_detected_by_content_not_name(bulk: BulkRun) -> None:
    """A gzip file named .pcap and a plain pcap named .pcap.gz are both read."""
    for conv in bulk.mislabeled:
        expected = expected_devices(conv.frames)
        assert counters_of(bulk.devices, expected) == expected


def test_directory_argument_is_recursive(tmp_path: Path) -> None:
    """A directory means every .pcap/.pcapng/.cap (and .gz of those) below it, nothing else."""
    top = tmp_path / "captures"
    (top / "sub" / "deeper").mkdir(parents=True)
    convs = {net: conversation(net) for net in range(101, 108)}
    write_pcap(top / "a.pcap", records(convs[101].frames))
    blocks: list[Any] = [IDB()] + [EPB(0, f.ts_ns, f.data) for f in convs[102].frames]
    write_pcapng(top / "sub" / "b.pcapng", [Section(blocks)])
    write_pcap(top / "sub" / "deeper" / "c.cap", records(convs[103].frames), big_endian=True)
    gzip_file(write_pcap(top / "sub" / "d.pcap", records(convs[104].frames)))
    (top / "sub" / "d.pcap").unlink()
    ng = write_pcapng(
        top / "e.pcapng", [Section([IDB()] + [EPB(0, f.ts_ns, f.data) for f in convs[105].frames])]
    )
    gzip_file(ng)
    ng.unlink()
    gzip_file(write_pcap(top / "sub" / "deeper" / "f.cap", records(convs[106].frames)))
    (top / "sub" / "deeper" / "f.cap").unlink()
    # not capture files by name: ignored, not an error
    (top / "README.txt").write_text("captures from the plant floor\n")
    write_pcap(top / "sub" / "g.bin", records(convs[107].frames))

    db = tmp_path / "dir.db"
    res = analyze(db, top)
    assert res.returncode == 0, describe(res)
    expected: dict[Any, Any] = {}
    for net in range(101, 107):
        expected.update(expected_devices(convs[net].frames))
    devices = list_devices(db)
    assert set(device_map(devices)) == set(expected)
    assert counters_of(devices, expected) == expected


def test_same_file_twice_does_not_double_count(tmp_path: Path) -> None:
    """Re-analysing a file into the same db leaves every counter unchanged."""
    conv = conversation(120)
    p = write_pcap(tmp_path / "twice.pcap", records(conv.frames), snaplen=SNAPLEN)
    db = tmp_path / "twice.db"
    for _ in range(2):
        res = analyze(db, p)
        assert res.returncode == 0, describe(res)
    expected = expected_devices(conv.frames)
    devices = list_devices(db)
    assert counters_of(devices, expected) == expected
    assert len(devices) == 3
    actual = connection_map(list_connections(db))
    assert {k: actual.get(k) for k in expected_connections(conv.conns)} == expected_connections(conv.conns)


# ------------------------------------------------------------------ not capture files

BAD_KINDS = ("text", "random", "empty", "gzipped-text")


def build_bad_files(directory: Path) -> dict[str, Path]:
    """Files that are not captures at all, named like captures."""
    rnd = random.Random(1234).randbytes(4096)
    assert rnd[:2] != b"\x1f\x8b" and rnd[:4] not in (
        b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
        b"\x0a\x0d\x0d\x0a",
    )  # fmt: skip
    files = {
        "text": directory / "notes.pcap",
        "random": directory / "noise.pcapng",
        "empty": directory / "empty.cap",
        "gzipped-text": directory / "textdump.pcap.gz",
    }
    files["text"].write_text("This is not a capture.\nJust some notes about PLC-7.\n")
    files["random"].write_bytes(rnd)
    files["empty"].write_bytes(b"")
    files["gzipped-text"].write_bytes(gzip_bytes(b"hostname,ip\nplc-7,192.168.1.7\n" * 20))
    return files


@dataclass
class BadRun:
    res: Any
    files: dict[str, Path]
    conv: Conversation
    devices: list[dict[str, Any]]


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> BadRun:
    d = tmp_path_factory.mktemp("bad")
    files = build_bad_files(d)
    conv = conversation(130)
    good = write_pcap(d / "good.pcap", records(conv.frames))
    db = d / "bad.db"
    order = [files["text"], files["random"], good, files["empty"], files["gzipped-text"]]
    res = analyze(db, *order)
    return BadRun(res, files, conv, list_devices(db) if db.exists() else [])


def test_non_capture_files_exit_2(bad_run: BadRun) -> None:
    """Any path that is not a capture file makes the exit code 2, without a traceback."""
    assert bad_run.res.returncode == 2, describe(bad_run.res)
    assert "Traceback" not in bad_run.res.stderr, describe(bad_run.res)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_non_capture_file_gets_one_error_line(bad_run: BadRun, kind: str) -> None:
    """Each rejected file is named on exactly one stderr line."""
    lines = stderr_lines_naming(bad_run.res.stderr, bad_run.files[kind])
    assert len(lines) == 1, describe(bad_run.res)


def test_valid_capture_beside_bad_ones_is_stored(bad_run: BadRun) -> None:
    """The valid capture given in the same call is analysed completely, and only it."""
    expected = expected_devices(bad_run.conv.frames)
    assert set(device_map(bad_run.devices)) == set(expected)
    assert counters_of(bad_run.devices, expected) == expected
    good_lines = [ln for ln in bad_run.res.stderr.splitlines() if "good.pcap" in ln]
    assert good_lines == [], describe(bad_run.res)
