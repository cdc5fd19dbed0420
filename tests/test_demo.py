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

from tapwatch.demo import DEMO_DEVICES, DEMO_LEARNING, build_demo_capture

DEVICES = {str(d["name"]): d for d in DEMO_DEVICES}
ROUTER = next(d for d in DEMO_DEVICES if d["role"] == "router")
PLC = next(d for d in DEMO_DEVICES if d["role"] == "plc")
HMI = next(d for d in DEMO_DEVICES if d["role"] == "hmi")
SWITCH = next(d for d in DEMO_DEVICES if d["role"] == "switch")
S7_PLC = DEVICES["s7-plc"]
TIA = DEVICES["eng-tia01"]
DRIVE = DEVICES["drive"]
BMS = DEVICES["bms"]
STATIC = {"s7-plc", "eng-tia01", "drive", "bms"}  # statically addressed, with a known name
DHCP_CLIENTS = [
    d
    for d in DEMO_DEVICES
    if d["role"] not in ("router", "switch") and d["hostname"] and d["name"] not in STATIC
]
LLDP_MAC = "01:80:c2:00:00:0e"
CDP_MAC = "01:00:0c:cc:cc:cc"
SWITCH_BANNER = (
    "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E8, "
    "RELEASE SOFTWARE (fc1)"
)
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


def mac_at(raw: bytes, offset: int) -> str:
    return ":".join(f"{b:02x}" for b in raw[offset : offset + 6])


def frames_to(packets: list[Packet], dst: str, src: str) -> list[tuple[float, bytes]]:
    """(time, raw frame) of every frame from ``src`` to the link-local group ``dst``."""
    out = []
    for p in packets:
        raw = bytes(p)
        if mac_at(raw, 0) == dst and mac_at(raw, 6) == src:
            out.append((float(p.time), raw))
    return out


def lldp_tlvs(raw: bytes) -> list[tuple[int, bytes]]:
    """LLDPDU TLVs (type, value) up to End of LLDPDU, straight from the frame bytes."""
    assert raw[12:14] == b"\x88\xcc"
    body, tlvs = raw[14:], []
    while True:
        (head,) = struct.unpack(">H", body[:2])
        kind, length = head >> 9, head & 0x1FF
        if kind == 0:
            assert length == 0
            return tlvs
        tlvs.append((kind, body[2 : 2 + length]))
        body = body[2 + length :]


def lldp_org(tlvs: list[tuple[int, bytes]], oui: bytes) -> dict[int, bytes]:
    return {v[3]: v[4:] for k, v in tlvs if k == 127 and v[:3] == oui}


def cdp_checksum(pdu: bytes) -> int:
    """CDP's checksum as IOS computes it (and Wireshark verifies it): the Internet checksum,
    with an odd trailing byte added sign-extended (less one when negative) as the last word."""
    pdu = pdu[:2] + b"\x00\x00" + pdu[4:]
    if len(pdu) % 2:
        last = pdu[-1]
        pdu = pdu[:-1] + struct.pack(">H", last if last < 0x80 else 0xFF00 | (last - 1))
    total = sum(struct.unpack(f">{len(pdu) // 2}H", pdu))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def cdp_tlvs(raw: bytes) -> dict[int, bytes]:
    """Check the 802.3/LLC/SNAP/CDPv2 framing and checksum; return the TLVs by type."""
    (length,) = struct.unpack(">H", raw[12:14])
    assert length <= 1500 and len(raw) >= 14 + length
    llc = raw[14 : 14 + length]
    assert llc[:8] == b"\xaa\xaa\x03\x00\x00\x0c\x20\x00"
    pdu = llc[8:]
    version, ttl, checksum = struct.unpack(">BBH", pdu[:4])
    assert (version, ttl) == (2, 180)
    assert checksum == cdp_checksum(pdu)
    tlvs: dict[int, bytes] = {}
    rest = pdu[4:]
    while rest:
        kind, tlv_len = struct.unpack(">HH", rest[:4])
        assert 4 <= tlv_len <= len(rest) and kind not in tlvs
        tlvs[kind] = rest[4:tlv_len]
        rest = rest[tlv_len:]
    return tlvs


def cdp_ipv4(value: bytes) -> list[str]:
    (count,) = struct.unpack(">I", value[:4])
    out, rest = [], value[4:]
    for _ in range(count):
        ptype, plen = rest[0], rest[1]
        proto = rest[2 : 2 + plen]
        (alen,) = struct.unpack(">H", rest[2 + plen : 4 + plen])
        addr = rest[4 + plen : 4 + plen + alen]
        if (ptype, proto, alen) == (1, b"\xcc", 4):
            out.append(str(ipaddress.IPv4Address(addr)))
        rest = rest[4 + plen + alen :]
    return out


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


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
    assert {mac_at(bytes(p), 6) for p in packets} <= macs


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
    static |= {DEVICES[name]["ip"] for name in STATIC}
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
        if flags & 0x04:  # a reset (the intruder's port scan): it acknowledges the SYN, if any
            if flags & 0x10:
                assert tcp.ack == next_seq[back]
            else:
                assert tcp.seq == next_seq[flow]
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

    # the port scan's resets are warnings by design; nothing else may be
    assert tshark("-Y", "_ws.malformed || (_ws.expert.severity >= warning && !tcp.flags.reset)") == ""
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
        "cdp",
        "snmp",
        "xml",
    ):
        assert f" {proto} " in hierarchy, proto


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_cdp_and_lldp_identities(capture: Path) -> None:
    done = subprocess.run(
        ["tshark", "-n", "-r", str(capture), "-Y", "cdp or lldp", "-T", "fields",
         "-E", "separator=|", "-e", "eth.src", "-e", "cdp.deviceid", "-e", "cdp.platform",
         "-e", "cdp.checksum.status", "-e", "lldp.tlv.system.name", "-e", "lldp.media.model"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    rows = {tuple(line.split("|")) for line in done.stdout.splitlines()}
    switch, phone = SWITCH["mac"], DEVICES["phone"]["mac"]
    assert (switch, "sw-plant01.plant.example", "cisco WS-C2960X-24TS-L", "1", "", "") in rows
    assert (switch, "", "", "", "sw-plant01", "") in rows
    assert (phone, "0004f2a1b2c3", "Polycom VVX 411", "1", "", "") in rows
    assert (phone, "", "", "", "Polycom_0004f2a1b2c3", "VVX 411") in rows
    assert all(row[3] == "1" for row in rows if row[1]), "every CDP checksum is good"


def test_switch_announces_itself_over_lldp_and_cdp(packets: list[Packet]) -> None:
    mac = str(SWITCH["mac"])
    lldp = frames_to(packets, LLDP_MAC, mac)
    assert len(lldp) >= 28
    assert all(29.9 < g < 30.1 for g in gaps([t for t, _ in lldp]))
    for _, raw in lldp:
        tlvs = lldp_tlvs(raw)
        values = dict(tlvs)
        assert [k for k, _ in tlvs[:3]] == [1, 2, 3]
        assert values[1] == b"\x04" + bytes.fromhex(mac.replace(":", ""))
        assert values[2] == b"\x05Gi1/0/24"
        assert values[5] == b"sw-plant01"
        assert values[6] == SWITCH_BANNER.encode()
        system, enabled = struct.unpack(">HH", values[7])
        assert system & 0x0004 and enabled == 0x0004
        assert values[8][:6] == b"\x05\x01" + ipaddress.IPv4Address(SWITCH["ip"]).packed

    cdp = frames_to(packets, CDP_MAC, mac)
    assert len(cdp) >= 14
    assert all(59.9 < g < 60.1 for g in gaps([t for t, _ in cdp]))
    for _, raw in cdp:
        tlvs = cdp_tlvs(raw)
        assert tlvs[0x01] == b"sw-plant01.plant.example"
        assert cdp_ipv4(tlvs[0x02]) == [SWITCH["ip"]]
        assert tlvs[0x03] == b"GigabitEthernet1/0/24"
        assert struct.unpack(">I", tlvs[0x04]) == (0x28,)
        software = tlvs[0x05].decode()
        assert software.splitlines()[0] == SWITCH_BANNER
        assert len(software.splitlines()) == 4
        assert tlvs[0x06] == b"cisco WS-C2960X-24TS-L"
        assert cdp_ipv4(tlvs[0x16]) == [SWITCH["ip"]]


def test_switch_answers_arp_ntp_and_snmp(packets: list[Packet]) -> None:
    replies = [p[ARP] for p in packets if ARP in p and p[ARP].op == 2]
    assert any(r.psrc == SWITCH["ip"] and r.hwsrc == SWITCH["mac"] for r in replies)
    ntp = [p for p in packets if UDP in p and p[UDP].dport == 123 and p[IP].src == SWITCH["ip"]]
    assert len(ntp) >= 10 and all(p[IP].dst == ROUTER["ip"] for p in ntp)
    snmp = [
        bytes(p[UDP].payload)
        for p in packets
        if UDP in p and p[UDP].sport == 161 and p[IP].src == SWITCH["ip"]
    ]
    assert snmp and all(SWITCH_BANNER.encode() in b and b"public" in b for b in snmp)


def test_phone_announces_itself_over_cdp_and_lldp_med(packets: list[Packet]) -> None:
    phone = DEVICES["phone"]
    cdp = frames_to(packets, CDP_MAC, str(phone["mac"]))
    assert len(cdp) >= 14
    for _, raw in cdp:
        tlvs = cdp_tlvs(raw)
        assert tlvs[0x01] == b"0004f2a1b2c3"
        assert tlvs[0x05] == b"6.4.6.2386"
        assert tlvs[0x06] == b"Polycom VVX 411"
        assert struct.unpack(">I", tlvs[0x04]) == (0x90,)
    assert any(cdp_ipv4(cdp_tlvs(raw).get(0x02, b"\0\0\0\0")) == [phone["ip"]] for _, raw in cdp)

    lldp = frames_to(packets, LLDP_MAC, str(phone["mac"]))
    assert len(lldp) >= 30
    assert lldp[0][0] < cdp[0][0] + 1 and lldp[1][0] - lldp[0][0] == pytest.approx(1.0)
    inventory = {
        5: b"3111-48450-001 Rev A",
        7: b"6.4.6.2386",
        8: b"0004F2A1B2C3",
        9: b"Polycom",
        10: b"VVX 411",
    }
    for _, raw in lldp:
        tlvs = lldp_tlvs(raw)
        values = dict(tlvs)
        assert values[5] == b"Polycom_0004f2a1b2c3"
        assert values[6].startswith(b"Polycom VVX 411") and b"6.4.6.2386" in values[6]
        assert struct.unpack(">HH", values[7])[1] & 0x0020, "telephone capability enabled"
        med = lldp_org(tlvs, b"\x00\x12\xbb")
        assert med[1] == b"\x00\x33\x03", "LLDP-MED capabilities, endpoint class III"
        assert med[2][0] == 1, "voice network policy"
        assert {k: med[k] for k in inventory} == inventory


def test_printer_mdns_txt_records(packets: list[Packet]) -> None:
    printer = DEVICES["printer"]
    txt: list[bytes] = []
    a_records: set[tuple[str, str]] = set()
    for p in packets:
        if UDP not in p or p[UDP].dport != 5353 or p[IP].src != printer["ip"]:
            continue
        for rr in p[DNS].an:
            if rr.type == 16 and rr.rrname.endswith(b"._ipp._tcp.local."):
                txt = list(rr.rdata)
            elif rr.type == 1:
                a_records.add((rr.rrname.decode(), str(rr.rdata)))
    for entry in (
        b"txtvers=1",
        b"ty=HP LaserJet Pro M404dn",
        b"product=(HP LaserJet Pro M404dn)",
        b"usb_MFG=HP",
        b"usb_MDL=LaserJet Pro M404dn",
        b"rp=ipp/print",
        b"note=",
    ):
        assert entry in txt, entry
    assert any(e.startswith(b"pdl=") and b"application/pdf" in e for e in txt)
    assert ("HP-LaserJet-M404.local.", printer["ip"]) in a_records


def test_camera_ssdp_server_header_and_description(packets: list[Packet]) -> None:
    camera = DEVICES["camera"]
    server = b"SERVER: Linux/4.19.217-axis8, UPnP/1.0, AXIS P3245-LV/10.12.220\r\n"
    ssdp = [
        bytes(p[UDP].payload)
        for p in packets
        if UDP in p and p[UDP].sport == 1900 and p[IP].src == camera["ip"]
    ]
    notify = [b for b in ssdp if b.startswith(b"NOTIFY * HTTP/1.1\r\n")]
    answers = [b for b in ssdp if b.startswith(b"HTTP/1.1 200 OK\r\n")]
    assert notify and answers
    assert all(server in b for b in notify + answers)
    described = b"".join(
        tcp_payload(p)
        for p in packets
        if TCP in p and p[TCP].sport == 49152 and p[IP].src == camera["ip"]
    )
    assert b"<modelName>AXIS P3245-LV</modelName>" in described
    assert b"<manufacturer>AXIS</manufacturer>" in described


def test_every_model_is_on_the_wire_from_its_device(packets: list[Packet]) -> None:
    sent: dict[str, list[bytes]] = {}
    for p in packets:
        raw = bytes(p)
        sent.setdefault(mac_at(raw, 6), []).append(raw)
    for dev in DEMO_DEVICES:
        if dev["model"]:
            model = str(dev["model"]).encode()
            assert any(model in raw for raw in sent[str(dev["mac"])]), dev["name"]


def s7_pdus(packets: list[Packet], client: str | None = None) -> list[tuple[str, bytes]]:
    """(sender ip, TPKT) of every port-102 segment with a payload, in capture order; only
    the sessions of `client` when given."""
    out = []
    for p in packets:
        if TCP in p and 102 in (p[TCP].sport, p[TCP].dport):
            if client is not None and client not in (p[IP].src, p[IP].dst):
                continue
            body = tcp_payload(p)
            if body:
                assert body[:2] == b"\x03\x00"
                assert struct.unpack(">H", body[2:4])[0] == len(body)
                out.append((p[IP].src, body))
    return out


def s7_header(tpkt: bytes) -> tuple[int, int, bytes, bytes]:
    """(rosctr, pdu reference, parameter, data) of an S7comm PDU in a COTP DT TPDU."""
    assert tpkt[4:7] == b"\x02\xf0\x80"
    pdu = tpkt[7:]
    assert pdu[0] == 0x32
    rosctr, ref, plen, dlen = pdu[1], *struct.unpack(">HHH", pdu[4:10])
    head = 12 if rosctr in (2, 3) else 10
    if head == 12:
        assert pdu[10:12] == b"\x00\x00"
    assert len(pdu) == head + plen + dlen
    return rosctr, ref, pdu[head : head + plen], pdu[head + plen :]


def szl_records(data: bytes) -> tuple[int, list[bytes]]:
    assert data[:2] == b"\xff\x09"
    szl = data[4 : 4 + struct.unpack(">H", data[2:4])[0]]
    szl_id, _index, size, count = struct.unpack(">HHHH", szl[:8])
    assert len(szl) == 8 + size * count
    return szl_id, [szl[8 + i * size : 8 + (i + 1) * size] for i in range(count)]


def _s7_session(packets: list[Packet], client: str) -> list[tuple[str, int, int, bytes, bytes]]:
    """(sender, rosctr, reference, parameter, data) of a client's S7 session, after checking
    its COTP connection to rack 0 slot 1 and the communication setup."""
    pdus = s7_pdus(packets, client)
    plc = S7_PLC["ip"]
    assert {src for src, _ in pdus} == {client, plc}
    (_, cr), (_, cc) = pdus[:2]
    assert cr[5] == 0xE0 and cc[5] == 0xD0
    for tpdu in (cr, cc):
        params = tpdu[11:]
        assert b"\xc1\x02\x01\x00" in params and b"\xc2\x02\x01\x01" in params  # rack 0 slot 1
    s7 = [(src, *s7_header(tpkt)) for src, tpkt in pdus[2:]]
    assert s7[0] == (client, 1, s7[0][2], b"\xf0\x00\x00\x01\x00\x01\x03\xc0", b"")
    assert s7[1][:2] == (plc, 3) and s7[1][3] == b"\xf0\x00\x00\x01\x00\x01\x00\xf0"
    return s7


def _szl(s7: list[tuple[str, int, int, bytes, bytes]]) -> dict[int, list[list[bytes]]]:
    szl: dict[int, list[list[bytes]]] = {}
    for src, rosctr, _ref, param, data in s7:
        if rosctr == 7 and param[5] == 0x84:
            assert src == S7_PLC["ip"]
            szl_id, records = szl_records(data)
            szl.setdefault(szl_id, []).append(records)
    return szl


def test_s7_session_identity_and_download(packets: list[Packet]) -> None:
    pg, plc = TIA["ip"], S7_PLC["ip"]
    s7 = _s7_session(packets, pg)
    szl = _szl(s7)
    (module,) = szl[0x0011]
    assert [struct.unpack(">H", r[:2])[0] for r in module] == [1, 6, 7]
    assert module[0][2:22] == b"6ES7 214-1AG40-0XB0 "
    assert module[2][24:28] == b"V\x04\x02\x03"
    (components,) = szl[0x001C]
    texts = {struct.unpack(">H", r[:2])[0]: r[2:].rstrip(b"\x00") for r in components}
    assert texts[1] == b"PLC_LINE1"
    assert texts[5] == b"S C-H4N123456789"
    assert texts[7] == b"CPU 1214C DC/DC/DC"
    assert [records[0][3] for records in szl[0x0424]] == [0x58]  # RUN

    jobs = [(src, param) for src, rosctr, _, param, _ in s7 if rosctr == 1]
    assert [(src, param[0]) for src, param in jobs] == [(pg, 0xF0), (pg, 0x1A), (plc, 0x1B), (plc, 0x1C)]
    download = jobs[1][1]
    assert download[8] == 9 and download[9:18] == b"_0800001P"
    acks = [(src, param[0]) for src, rosctr, _, param, _ in s7 if rosctr == 3]
    assert acks == [(plc, 0xF0), (plc, 0x1A), (pg, 0x1B), (pg, 0x1C)]
    block = next(data for _, rosctr, _, param, data in s7 if rosctr == 3 and param[0] == 0x1B)
    assert struct.unpack(">H", block[:2])[0] == len(block) - 4 and block[4:6] == b"pp"
    times = [float(p.time) for p in packets if TCP in p and 102 in (p[TCP].sport, p[TCP].dport)
             and pg in (p[IP].src, p[IP].dst)]
    assert 240 <= times[0] - START <= 280  # well inside the learning period


def test_intruder_scans_then_stops_the_plc(packets: list[Packet]) -> None:
    intruder, plc = DEVICES["intruder"]["ip"], S7_PLC["ip"]
    s7 = _s7_session(packets, intruder)
    assert [records[0][3] for records in _szl(s7)[0x0424]] == [0x58, 0x84]  # RUN, then STOP
    jobs = [(src, param) for src, rosctr, _, param, _ in s7 if rosctr == 1]
    assert [(src, param[0]) for src, param in jobs] == [(intruder, 0xF0), (intruder, 0x29)]
    assert jobs[1][1] == b"\x29\x00\x00\x00\x00\x00\x09P_PROGRAM"
    syns = [p for p in packets if TCP in p and p[IP].src == intruder and int(p[TCP].flags) == 0x02]
    scanned = {p[TCP].dport for p in syns}
    assert len(scanned) >= 30 and 102 in scanned
    resets = [p for p in packets if TCP in p and p[IP].src == plc and int(p[TCP].flags) & 0x04]
    assert {p[TCP].sport for p in resets} == scanned - {102}  # closed ports answer RST
    arp_targets = {p[ARP].pdst for p in packets
                   if ARP in p and p[ARP].op == 1 and p[ARP].psrc == intruder != p[ARP].pdst}
    assert len(arp_targets) == 253
    assert min(float(p.time) for p in syns) - START >= DEMO_LEARNING


def test_enip_list_identity_from_the_drive(packets: list[Packet]) -> None:
    requests, replies = [], []
    for p in packets:
        if UDP in p and 44818 in (p[UDP].sport, p[UDP].dport):
            body = bytes(p[UDP].payload)[: p[UDP].len - 8]
            command, length = struct.unpack("<HH", body[:4])
            assert command == 0x63 and length == len(body) - 24
            (requests if p[UDP].dport == 44818 else replies).append((p, body))
    assert requests and len(replies) == len(requests)
    for p, _ in requests:
        assert (p[Ether].dst, p[IP].src, p[IP].dst) == ("ff:ff:ff:ff:ff:ff", TIA["ip"], "10.20.0.255")
    for p, body in replies:
        assert (p[Ether].src, p[IP].src, p[IP].dst) == (DRIVE["mac"], DRIVE["ip"], TIA["ip"])
        count, kind, size = struct.unpack("<HHH", body[24:30])
        item = body[30:]
        assert (count, kind, size) == (1, 0x0C, len(item))
        assert item[2:8] == b"\x00\x02\xaf\x12" + bytes([10, 20])
        vendor, dtype, code, major, minor, _status, serial = struct.unpack("<HHHBBHI", item[18:32])
        assert (vendor, dtype, code, major, minor, serial) == (1, 2, 144, 4, 3, 0x00524D8E)
        assert item[33 : 33 + item[32]] == b"PowerFlex 525 1P 240V .5HP"


def test_bacnet_i_am_and_read_property_acks(packets: list[Packet]) -> None:
    oid = struct.pack(">I", 8 << 22 | 4001)
    who_is, i_am, acks = [], [], {}
    for p in packets:
        if UDP not in p or p[UDP].dport != 47808:
            continue
        body = bytes(p[UDP].payload)[: p[UDP].len - 8]
        assert body[0] == 0x81 and struct.unpack(">H", body[2:4])[0] == len(body)
        apdu = body[6:]
        if apdu == b"\x10\x08":
            who_is.append(p)
        elif apdu[:2] == b"\x10\x00":
            assert p[IP].src == BMS["ip"] and p[Ether].dst == "ff:ff:ff:ff:ff:ff"
            assert apdu[2:] == b"\xc4" + oid + b"\x22\x05\xc4\x91\x00\x21\x05"
            i_am.append(p)
        elif apdu[0] == 0x30:
            assert p[IP].src == BMS["ip"] and p[IP].dst == TIA["ip"]
            assert apdu[2:8] == b"\x0c\x0c" + oid and apdu[8] == 0x19 and apdu[10] == 0x3E
            assert apdu[-1] == 0x3F and apdu[11] == 0x75 and apdu[13] == 0  # UTF-8 string
            acks[apdu[9]] = apdu[14:-1]
    assert who_is and all(p[IP].src == TIA["ip"] for p in who_is)
    assert len(i_am) == 2
    assert acks == {77: b"FEC-AHU1", 121: b"Johnson Controls, Inc.", 70: b"MS-FEC2611-0",
                    44: b"10.1.0.102"}


def test_tia_workstation_registers_its_netbios_name(packets: list[Packet]) -> None:
    names = set()
    for p in packets:
        if UDP in p and p[UDP].dport == 137 and p[IP].src == TIA["ip"]:
            label = bytes(p[UDP].payload)[13:45]
            raw = bytes((label[i] - 0x41) << 4 | (label[i + 1] - 0x41) for i in range(0, 32, 2))
            names.add((raw[:15].rstrip().decode(), raw[15]))
    assert names == {("ENG-TIA01", 0x00), ("ENG-TIA01", 0x20), ("PLANT", 0x00)}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_ot_cell(capture: Path) -> None:
    def fields(display: str, *names: str) -> set[tuple[str, ...]]:
        args = ["-Y", display, "-T", "fields", "-E", "separator=|"]
        for name in names:
            args += ["-e", name]
        done = subprocess.run(["tshark", "-n", "-r", str(capture), *args],
                              capture_output=True, text=True, timeout=120, check=True)
        return {tuple(line.split("|")) for line in done.stdout.splitlines()}

    funcs = fields("s7comm.param.func", "ip.src", "s7comm.header.rosctr", "s7comm.param.func")
    assert {(TIA["ip"], "1", "0x1a"), (S7_PLC["ip"], "1", "0x1b"), (S7_PLC["ip"], "1", "0x1c"),
            (DEVICES["intruder"]["ip"], "1", "0x29"), (S7_PLC["ip"], "3", "0x29")} <= funcs
    assert fields("s7comm.szl.xy11.0001.anz", "s7comm.szl.xy11.0001.index") == {
        ("0x0001,0x0006,0x0007",)}
    assert fields("s7comm.szl.001c.0007.cputypname", "s7comm.szl.001c.0007.cputypname",
                  "s7comm.szl.001c.0005.serialn") == {("CPU 1214C DC/DC/DC", "S C-H4N123456789")}
    assert fields("s7comm.szl.0424.0000.bzu_id", "s7comm.szl.0424.0000.bzu_id.req") == {
        ("0x08",), ("0x04",)}
    assert fields("enip.lir.name", "enip.lir.vendor", "enip.lir.devtype", "enip.lir.name") == {
        ("0x0001", "2", "PowerFlex 525 1P 240V .5HP")}
    assert fields("bacapp.vendor_identifier", "ip.src", "bacapp.instance_number",
                  "bacapp.vendor_identifier") == {(BMS["ip"], "4001", "5")}
