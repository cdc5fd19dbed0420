"""Link-layer types other than Ethernet: cooked, raw IP, null/loop, 802.11, radiotap.

Each crafted file uses its own network number, so all supported link types are analysed
in one CLI call and checked file by file. Where the link layer carries a source MAC
(SLL, 802.11 SA) the device gets it; where it carries none (raw IP, null/loop, SLL on a
tun device) the device has ``mac`` null. A frame's receiver is found by its destination
(802.11 DA, or the destination IP where the link layer has no destination MAC).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.l2 import ARP

from craft import (
    EPB,
    IDB,
    LINKTYPE_ETHERNET,
    LINKTYPE_IEEE802_11,
    LINKTYPE_IEEE802_11_RADIOTAP,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_USER0,
    Frame,
    Host,
    Section,
    analyze,
    conversation,
    counters_of,
    crc32_le,
    describe,
    device_map,
    expected_devices,
    frame,
    host,
    icmp_echo,
    list_devices,
    records,
    stderr_lines_naming,
    tcp,
    ts,
    udp,
    write_pcap,
    write_pcapng,
)

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
ARPHRD_ETHER, ARPHRD_NONE = 1, 0xFFFE
PACKET_HOST, PACKET_OUTGOING = 0, 4


def arp_bytes(src: Host, dst: Host) -> bytes:
    """ARP reply payload (no link layer): ``src`` tells ``dst`` its MAC."""
    return bytes(ARP(op=2, hwsrc=src.mac, psrc=src.ip, hwdst=dst.mac, pdst=dst.ip))


def mac_bytes(mac: str | None) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) if mac else b""


# ----------------------------------------------------------------------- Linux cooked


def sll1(pkttype: int, arphrd: int, mac: str | None, proto: int, payload: bytes) -> bytes:
    """LINKTYPE_LINUX_SLL header (16 bytes, big-endian) + payload."""
    addr = mac_bytes(mac)
    return struct.pack(">HHH8sH", pkttype, arphrd, len(addr), addr, proto) + payload


def sll2(pkttype: int, arphrd: int, mac: str | None, proto: int, payload: bytes) -> bytes:
    """LINKTYPE_LINUX_SLL2 header (20 bytes) + payload."""
    addr = mac_bytes(mac)
    return struct.pack(">HHIHBB8s", proto, 0, 3, arphrd, pkttype, len(addr), addr) + payload


def _cooked(net: int, enc: Callable[[int, int, str | None, int, bytes], bytes]) -> list[Frame]:
    """Capture on A's Linux host ("any"): A<->B over eth0, T1<->T2 over a tun device."""
    a, b = host(net, 1), host(net, 2)
    t1, t2 = host(net, 3, mac=False), host(net, 4, mac=False)
    out, inn = PACKET_OUTGOING, PACKET_HOST

    def eth(kind: int, s: Host, proto: int, payload: bytes) -> bytes:
        return enc(kind, ARPHRD_ETHER, s.mac, proto, payload)

    spec: list[tuple[Host, Host, bytes]] = [
        (a, b, eth(out, a, ETH_P_ARP, arp_bytes(a, b))),
        (b, a, eth(inn, b, ETH_P_ARP, arp_bytes(b, a))),
        (a, b, eth(out, a, ETH_P_IP, bytes(tcp(a, b, 40000, 502, "S")))),
        (b, a, eth(inn, b, ETH_P_IP, bytes(tcp(b, a, 502, 40000, "SA", ack=1001)))),
        (a, b, eth(out, a, ETH_P_IP, bytes(tcp(a, b, 40000, 502, "A", seq=1001, ack=1)))),
        (b, a, eth(inn, b, ETH_P_IP, bytes(udp(b, a, 9999, 40000, b"\x81\x0b\x00\x0c")))),
        (t1, t2, enc(out, ARPHRD_NONE, None, ETH_P_IP, bytes(udp(t1, t2, 40001, 9999, b"vpn")))),
        (t2, t1, enc(inn, ARPHRD_NONE, None, ETH_P_IP, bytes(icmp_echo(t2, t1)))),
    ]
    return [frame(ts(i), data, s, d) for i, (s, d, data) in enumerate(spec)]


# ----------------------------------------------------------------------- raw IP, null, loop


def _raw_hosts(net: int) -> tuple[Host, Host, Host, Host]:
    """Two IPv4-only and two IPv6-only hosts, none with a MAC."""
    return (
        host(net, 1, mac=False),
        host(net, 2, mac=False),
        host(net, 3, mac=False, v4=False, v6=True),
        host(net, 4, mac=False, v4=False, v6=True),
    )


def _raw_ip_frames(net: int, *, v4: bool = True, v6: bool = True) -> list[tuple[Host, Host, bytes]]:
    r1, r2, r3, r4 = _raw_hosts(net)
    spec: list[tuple[Host, Host, bytes]] = []
    if v4:
        spec += [
            (r1, r2, bytes(udp(r1, r2, 40000, 9999, b"\x30\x00"))),
            (r2, r1, bytes(tcp(r2, r1, 44818, 40001, "SA", ack=1))),
            (r1, r2, bytes(icmp_echo(r1, r2))),
        ]
    if v6:
        spec += [
            (r3, r4, bytes(udp(r3, r4, 40000, 5683, b"\x40\x01\x00\x01", v6=True))),
            (r4, r3, bytes(udp(r4, r3, 5683, 40000, b"\x60\x45\x00\x01", v6=True))),
        ]
    return spec


def _raw(net: int, *, v4: bool = True, v6: bool = True) -> list[Frame]:
    spec = _raw_ip_frames(net, v4=v4, v6=v6)
    return [frame(ts(i), data, s, d) for i, (s, d, data) in enumerate(spec)]


AF_INET = 2


def _null(net: int, af_fmt: str, af_inet6: int) -> list[Frame]:
    """BSD loopback: 4-byte address family (``af_fmt`` byte order) + IP packet."""
    out = []
    for i, (s, d, data) in enumerate(_raw_ip_frames(net)):
        af = AF_INET if data[0] >> 4 == 4 else af_inet6
        out.append(frame(ts(i), struct.pack(af_fmt, af) + data, s, d))
    return out


# ----------------------------------------------------------------------- 802.11

TO_DS, FROM_DS, PROTECTED = 0x01, 0x02, 0x40
LLC_SNAP = b"\xaa\xaa\x03\x00\x00\x00"


def dot11_data(
    flags: int,
    a1: str,
    a2: str,
    a3: str,
    a4: str | None,
    body: bytes,
    *,
    qos: bool = False,
    seq: int = 0,
) -> bytes:
    """802.11 data (subtype 0) or QoS data (subtype 8) frame, no FCS."""
    subtype = 8 if qos else 0
    fc = bytes([(subtype << 4) | (2 << 2), flags])
    hdr = fc + struct.pack("<H", 44) + mac_bytes(a1) + mac_bytes(a2) + mac_bytes(a3)
    hdr += struct.pack("<H", seq << 4)
    if a4 is not None:
        hdr += mac_bytes(a4)
    if qos:
        hdr += struct.pack("<H", 0x0000)
    return hdr + body


def snap(ethertype: int, payload: bytes) -> bytes:
    """LLC/SNAP encapsulation of an EtherType payload."""
    return LLC_SNAP + struct.pack(">H", ethertype) + payload


def _wifi(net: int) -> list[Frame]:
    """STA A and B on an AP, wired host W behind it; every ToDS/FromDS combination.

    The AP (BSSID) and the second AP of the WDS link only relay: they are never SA/DA
    and so never devices.
    """
    a, b, w = host(net, 1), host(net, 2), host(net, 3)
    ap, ap2 = f"02:00:00:{net:02x}:aa:01", f"02:00:00:{net:02x}:aa:02"
    assert a.mac and b.mac and w.mac
    ip = ETH_P_IP
    ds = TO_DS | FROM_DS
    wds_tcp = snap(ip, bytes(tcp(w, b, 1883, 50000, "SA", ack=1)))
    qos_tcp = snap(ip, bytes(tcp(b, w, 50000, 1883, "A", seq=1, ack=1)))
    spec: list[tuple[Host, Host, bytes]] = [
        # STA -> DS: A1=BSSID A2=SA A3=DA
        (a, w, dot11_data(TO_DS, ap, a.mac, w.mac, None, snap(ip, bytes(udp(a, w, 40000, 123))))),
        # DS -> STA: A1=DA A2=BSSID A3=SA
        (w, a, dot11_data(FROM_DS, a.mac, ap, w.mac, None, snap(ip, bytes(udp(w, a, 123, 40000))))),
        # IBSS: A1=DA A2=SA A3=BSSID
        (a, b, dot11_data(0, b.mac, a.mac, ap, None, snap(ip, bytes(icmp_echo(a, b))))),
        # WDS: A1=RA A2=TA A3=DA A4=SA
        (w, b, dot11_data(ds, ap2, ap, b.mac, w.mac, wds_tcp)),
        # QoS data STA -> DS
        (b, w, dot11_data(TO_DS, ap, b.mac, w.mac, None, qos_tcp, qos=True)),
        # QoS data over WDS (A4, then QoS control)
        (b, w, dot11_data(ds, ap, ap2, w.mac, b.mac, snap(ip, bytes(udp(b, w, 40005, 5000, b"q"))),
                          qos=True)),
        # QoS data DS -> STA carrying ARP
        (w, b, dot11_data(FROM_DS, b.mac, ap, w.mac, None, snap(ETH_P_ARP, arp_bytes(w, b)),
                          qos=True)),
    ]  # fmt: skip
    return [frame(ts(i), data, s, d) for i, (s, d, data) in enumerate(spec)]


def _wifi_protected(net: int) -> tuple[list[Frame], Host, Host]:
    """Protected (encrypted) data frames whose opaque body happens to look like SNAP+IPv4.

    A decoder that ignores the protected bit would invent IP devices from it.
    """
    c, d = host(net, 1), host(net, 2)
    ap = f"02:00:00:{net:02x}:aa:01"
    assert c.mac and d.mac
    frames = []
    for i in range(3):
        body = snap(ETH_P_IP, bytes(udp(c, d, 40000 + i, 9000, b"secret")))
        data = dot11_data(TO_DS | PROTECTED, ap, c.mac, d.mac, None, body, qos=True, seq=i)
        frames.append(Frame(ts(i), data, ()))
    return frames, c, d


# radiotap presence bits
RT_TSFT, RT_FLAGS, RT_RATE, RT_CHANNEL, RT_DBM_SIGNAL, RT_ANTENNA = 0, 1, 2, 3, 5, 11
RT_NS_RADIOTAP, RT_EXT = 29, 31
RT_FLAG_FCS = 0x10


def radiotap(frame_80211: bytes, *, flags: int | None, ext: bool = False) -> bytes:
    """Radiotap header (+ FCS when ``flags`` has the FCS bit) around an 802.11 frame.

    ``flags`` None omits the Flags field; ``ext`` adds a second presence word
    (antenna signal + antenna), forcing the 8-byte TSFT alignment to matter.
    """
    words = [(1 << RT_TSFT) | (1 << RT_RATE) | (1 << RT_CHANNEL) | (1 << RT_DBM_SIGNAL)]
    if flags is not None:
        words[0] |= 1 << RT_FLAGS
    if ext:
        words[0] |= (1 << RT_NS_RADIOTAP) | (1 << RT_EXT)
        words.append((1 << RT_DBM_SIGNAL) | (1 << RT_ANTENNA))
    body = b""
    pos = 4 + 4 * len(words)

    def align(n: int) -> None:
        nonlocal body, pos
        pad = -pos % n
        body += b"\0" * pad
        pos += pad

    def put(b: bytes) -> None:
        nonlocal body, pos
        body += b
        pos += len(b)

    align(8)
    put(struct.pack("<Q", 123456789))  # TSFT
    if flags is not None:
        put(bytes([flags]))
    put(bytes([12]))  # rate 6 Mb/s
    align(2)
    put(struct.pack("<HH", 2437, 0x00A0))  # channel 6, 2 GHz OFDM
    put(struct.pack("<b", -42))  # antenna signal dBm
    if ext:
        put(struct.pack("<b", -40) + bytes([1]))  # antenna signal, antenna index
    hdr = struct.pack("<BBH", 0, 0, pos) + b"".join(struct.pack("<I", w) for w in words) + body
    fcs = crc32_le(frame_80211) if flags is not None and flags & RT_FLAG_FCS else b""
    return hdr + frame_80211 + fcs


def _radiotap(net: int, *, flags: int | None, ext: bool = False) -> list[Frame]:
    return [Frame(f.ts_ns, radiotap(f.data, flags=flags, ext=ext), f.hops) for f in _wifi(net)]


# ----------------------------------------------------------------------- the file set


@dataclass
class LinkFile:
    """One crafted file, the frames in it and what it must (not) produce."""

    name: str
    path: Path
    frames: list[Frame]
    # hosts whose IPs must not become devices; their MACs may appear as MAC-only devices
    hidden: list[Host] = field(default_factory=list)


def _pcap_file(d: Path, name: str, frames: list[Frame], linktype: int, **kw: Any) -> LinkFile:
    return LinkFile(name, write_pcap(d / f"{name}.pcap", records(frames), linktype=linktype,
                                     **kw), frames)  # fmt: skip


def build_link_files(d: Path, first_net: int = 41) -> dict[str, LinkFile]:
    """Every supported link-type file of this module, one network number each."""
    nets = iter(range(first_net, 255))
    files: list[LinkFile] = [
        _pcap_file(d, "sll", _cooked(next(nets), sll1), LINKTYPE_LINUX_SLL),
        _pcap_file(d, "sll2", _cooked(next(nets), sll2), LINKTYPE_LINUX_SLL2),
        _pcap_file(d, "raw101", _raw(next(nets)), LINKTYPE_RAW),
        _pcap_file(d, "raw12", _raw(next(nets)), 12),
        _pcap_file(d, "raw14", _raw(next(nets)), 14, big_endian=True),
        _pcap_file(d, "ipv4_228", _raw(next(nets), v6=False), LINKTYPE_IPV4),
        _pcap_file(d, "ipv6_229", _raw(next(nets), v4=False), LINKTYPE_IPV6),
        # null: AF in the writer's byte order, IPv6 AF as on macOS (30) / FreeBSD (28)
        _pcap_file(d, "null_le", _null(next(nets), "<I", 30), LINKTYPE_NULL),
        _pcap_file(d, "null_be", _null(next(nets), ">I", 28), LINKTYPE_NULL, big_endian=True),
        # AF in the other byte order than the file header (capture moved between hosts)
        _pcap_file(d, "null_swapped", _null(next(nets), ">I", 24), LINKTYPE_NULL),
        # LOOP: AF always big-endian; OpenBSD's AF_INET6 is 24
        _pcap_file(d, "loop", _null(next(nets), ">I", 24), LINKTYPE_LOOP),
        _pcap_file(d, "wifi", _wifi(next(nets)), LINKTYPE_IEEE802_11),
        _pcap_file(d, "radiotap_fcs", _radiotap(next(nets), flags=RT_FLAG_FCS),
                   LINKTYPE_IEEE802_11_RADIOTAP),
        _pcap_file(d, "radiotap_nofcs", _radiotap(next(nets), flags=0),
                   LINKTYPE_IEEE802_11_RADIOTAP),
        _pcap_file(d, "radiotap_noflags", _radiotap(next(nets), flags=None),
                   LINKTYPE_IEEE802_11_RADIOTAP),
        _pcap_file(d, "radiotap_ext_fcs", _radiotap(next(nets), flags=RT_FLAG_FCS, ext=True),
                   LINKTYPE_IEEE802_11_RADIOTAP, big_endian=True),
    ]  # fmt: skip
    enc_frames, c, dd = _wifi_protected(next(nets))
    enc = _pcap_file(d, "wifi_protected", enc_frames, LINKTYPE_IEEE802_11)
    enc.hidden = [c, dd]
    files.append(enc)
    return {f.name: f for f in files}


SUPPORTED = [
    "sll", "sll2", "raw101", "raw12", "raw14", "ipv4_228", "ipv6_229", "null_le", "null_be",
    "null_swapped", "loop", "wifi", "radiotap_fcs", "radiotap_nofcs", "radiotap_noflags",
    "radiotap_ext_fcs",
]  # fmt: skip


@dataclass
class LinkRun:
    res: Any
    files: dict[str, LinkFile]
    devices: list[dict[str, Any]]


@pytest.fixture(scope="module")
def link_run(tmp_path_factory: pytest.TempPathFactory) -> LinkRun:
    d = tmp_path_factory.mktemp("links")
    files = build_link_files(d)
    db = d / "links.db"
    res = analyze(db, *(f.path for f in files.values()))
    return LinkRun(res, files, list_devices(db) if db.exists() else [])


COUNTS = ("packets_sent", "packets_received", "first_seen", "last_seen")
BYTES = ("bytes_sent", "bytes_received")


def _project(m: dict[Any, dict[str, int] | None], keys: tuple[str, ...]) -> dict[Any, Any]:
    return {k: (None if v is None else {f: v[f] for f in keys}) for k, v in m.items()}


def test_supported_link_types_exit_zero_without_warnings(link_run: LinkRun) -> None:
    """All these link types are supported: exit 0 and no warning naming any of them
    (the encrypted-802.11 file may get a note)."""
    assert link_run.res.returncode == 0, describe(link_run.res)
    for f in (link_run.files[n] for n in SUPPORTED):
        assert stderr_lines_naming(link_run.res.stderr, f.path) == [], describe(link_run.res)


@pytest.mark.parametrize("name", SUPPORTED)
def test_link_type_devices_and_counts(link_run: LinkRun, name: str) -> None:
    """Devices (MAC where the link layer has one) with exact packet counts and times."""
    expected = expected_devices(link_run.files[name].frames)
    actual = counters_of(link_run.devices, expected)
    assert _project(actual, COUNTS) == _project(expected, COUNTS)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SUPPORTED)
def test_link_type_bytes_are_record_original_length(link_run: LinkRun, name: str) -> None:
    """bytes_* add up each record's original length (SLL/radiotap headers and FCS included)."""
    expected = expected_devices(link_run.files[name].frames)
    actual = counters_of(link_run.devices, expected)
    assert _project(actual, BYTES) == _project(expected, BYTES)  # type: ignore[arg-type]


def test_exact_device_set(link_run: LinkRun) -> None:
    """Nothing beyond the crafted hosts: no AP/BSSID, no tunnel-less phantom, no broadcast.

    Only the encrypted file's stations may show up, and then as MAC-only devices.
    """
    expected: set[Any] = set()
    tolerated: set[Any] = set()
    for f in link_run.files.values():
        expected |= set(expected_devices(f.frames))
        tolerated |= {(h.mac, ()) for h in f.hidden}
    actual = set(device_map(link_run.devices))
    assert expected <= actual
    assert actual - expected <= tolerated, actual - expected


def test_mac_comes_from_link_layer_source(link_run: LinkRun) -> None:
    """SLL address and 802.11 SA give the MAC; raw/null/loop and SLL-on-tun give none."""
    m = device_map(link_run.devices)
    for name in ("sll", "sll2", "wifi", "radiotap_fcs"):
        for key in expected_devices(link_run.files[name].frames):
            assert key in m and m[key]["mac"] == key[0]
    for name in ("raw101", "null_le", "loop", "ipv6_229"):
        for key in expected_devices(link_run.files[name].frames):
            assert key[0] is None and key in m and m[key]["mac"] is None


def test_ipv6_only_macless_device_fields(link_run: LinkRun) -> None:
    """An IPv6-only host without MAC is one device listing its address (compressed)."""
    r3 = link_run.files["ipv6_229"].frames[0].hops[0].src
    assert r3 is not None and r3.ip6 and "::" in r3.ip6
    dev = device_map(link_run.devices).get(r3.key)
    assert dev is not None
    assert dev["mac"] is None
    assert dev["ips"] == [r3.ip6]
    assert dev["ip"] in (None, r3.ip6)
    assert {"ipv6", "udp"} <= set(dev["protocols"])


def test_protected_80211_frames_give_no_ip_device(link_run: LinkRun) -> None:
    """Encrypted 802.11 payloads are not decoded: their hosts' IPs never become devices."""
    f = link_run.files["wifi_protected"]
    hidden_ips = {ip for h in f.hidden for ip in h.ips}
    for d in link_run.devices:
        assert not hidden_ips & set(d["ips"]), d
        if d["mac"] in {h.mac for h in f.hidden}:
            assert d["ip"] is None and d["ips"] == []


# ----------------------------------------------------------------------- unsupported


def test_unsupported_link_type_warns_and_continues(tmp_path: Path) -> None:
    """LINKTYPE_USER0 (147): warning naming the file and the link type, exit 0; its bytes
    (Ethernet-looking on purpose) are not decoded; other files and interfaces still count."""
    user0 = conversation(70)
    p_user = write_pcap(tmp_path / "usb_sniffer.pcap", records(user0.frames),
                        linktype=LINKTYPE_USER0)  # fmt: skip
    good = conversation(71)
    p_good = write_pcap(tmp_path / "plant.pcap", records(good.frames))
    # a pcapng with one Ethernet and one USER0 interface, interleaved
    mixed_eth, mixed_user = conversation(72), conversation(73)
    blocks: list[Any] = [IDB(LINKTYPE_ETHERNET), IDB(LINKTYPE_USER0)]
    for fe, fu in zip(mixed_eth.frames, mixed_user.frames, strict=True):
        blocks += [EPB(0, fe.ts_ns, fe.data), EPB(1, fu.ts_ns, fu.data)]
    p_mixed = write_pcapng(tmp_path / "mixed.pcapng", [Section(blocks)])

    db = tmp_path / "u.db"
    res = analyze(db, p_user, p_good, p_mixed)
    assert res.returncode == 0, describe(res)
    for p in (p_user, p_mixed):
        lines = stderr_lines_naming(res.stderr, p)
        assert lines and any("147" in ln for ln in lines), describe(res)
    assert stderr_lines_naming(res.stderr, p_good) == [], describe(res)
    expected = expected_devices(good.frames) | expected_devices(mixed_eth.frames)
    devices = list_devices(db)
    assert set(device_map(devices)) == set(expected)
    assert counters_of(devices, expected) == expected
