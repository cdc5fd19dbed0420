"""The built-in example site that ``tapwatch demo`` analyses.

A first-time user has no tap and no capture, yet should see what tapwatch finds on a
real network. This module synthesises one: fifteen minutes of a small plant LAN
(gateway, access switch, office workstations, printer, camera, desk phone, PLC and HMI, and
an OT cell of an S7-1200, a PowerFlex drive, a Metasys controller and a TIA Portal workstation)
on a Monday morning as the site powers up. Every frame is built from protocol state (ARP caches,
DHCP leases, DNS caches, TCP sequence numbers), so Wireshark decodes the streams
cleanly, and ``DEMO_DEVICES`` records the ground truth the inventory should recover.

Devices announce themselves the way real ones do, so a passive engine can tell type, vendor
and model from the wire: the switch and the gateway send LLDP, the switch and the phone CDP,
the phone LLDP-MED inventory, the printer ``_ipp._tcp`` mDNS TXT records, the camera SSDP
(SERVER header and a UPnP description fetched by a Windows workstation). The OT cell speaks
its own protocols: S7comm SZL identity and CPU mode, EtherNet/IP List Identity, BACnet I-Am
and ReadProperty; at minute four the TIA workstation downloads OB1 to the S7 PLC.

The first ten minutes are the learning period (``DEMO_LEARNING``). Then an incident: a laptop
nobody has seen before plugs in, sweeps the subnet with ARP, port-scans the S7 PLC and
stops it over S7comm.

The capture is a pure function of the seed: fixed start time, ``random.Random(seed)``,
no wall clock, so two builds with the same seed are byte-identical.

Internet addresses are the well-known ones for the named services where they exist
(example.com, msftconnecttest.com, ...); the camera cloud and hosted PBX addresses
are illustrative.
"""

from __future__ import annotations

import hashlib
import heapq
import pathlib
import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate

from scapy.asn1.asn1 import ASN1_OID, ASN1_STRING, ASN1_TIME_TICKS
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRSRV
from scapy.layers.snmp import SNMP, SNMPget, SNMPresponse, SNMPvarbind
from scapy.utils import PcapWriter

__all__ = ["DEMO_DEVICES", "DEMO_DURATION", "DEMO_LEARNING", "DEMO_START", "build_demo_capture"]

DEMO_START = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
DEMO_DURATION = 900.0
DEMO_LEARNING = 600.0  # seconds of normal operation the demo learns from before the incident

DEMO_DEVICES: list[dict[str, str | None]] = [
    {"name": "gateway", "role": "router", "mac": "58:8d:09:3a:5c:01", "ip": "10.20.0.1",
     "vendor": "Cisco", "hostname": "gw-plant01", "model": None},
    {"name": "switch", "role": "switch", "mac": "70:db:98:5e:21:c0", "ip": "10.20.0.2",
     "vendor": "Cisco", "hostname": "sw-plant01", "model": "WS-C2960X-24TS-L"},
    {"name": "eng-ws01", "role": "workstation", "mac": "18:66:da:4e:7a:21", "ip": "10.20.0.101",
     "vendor": "Dell", "hostname": "ENG-WS01", "model": None},
    {"name": "ops-lt02", "role": "workstation", "mac": "a4:8c:db:19:c2:6e", "ip": "10.20.0.102",
     "vendor": "Lenovo", "hostname": "OPS-LT02", "model": None},
    {"name": "eng-ubuntu03", "role": "workstation", "mac": "3c:52:82:7b:0d:94",
     "ip": "10.20.0.103", "vendor": "HP", "hostname": "eng-ubuntu03", "model": None},
    {"name": "printer", "role": "printer", "mac": "a0:8c:fd:62:18:3b", "ip": "10.20.0.110",
     "vendor": "HP", "hostname": "HP-LaserJet-M404", "model": "LaserJet Pro M404dn"},
    {"name": "camera", "role": "camera", "mac": "ac:cc:8e:2b:41:f7", "ip": "10.20.0.30",
     "vendor": "Axis", "hostname": None, "model": "P3245-LV"},
    {"name": "phone", "role": "phone", "mac": "00:04:f2:a1:b2:c3", "ip": "10.20.0.120",
     "vendor": "Polycom", "hostname": "Polycom_0004f2a1b2c3", "model": "VVX 411"},
    {"name": "plc", "role": "plc", "mac": "00:80:f4:0c:5e:12", "ip": "10.20.0.50",
     "vendor": "Schneider Electric", "hostname": None, "model": "BMX P34 2020"},
    {"name": "hmi", "role": "hmi", "mac": "00:0c:26:4a:90:07", "ip": "10.20.0.51",
     "vendor": "Weintek", "hostname": None, "model": None},
    {"name": "s7-plc", "role": "plc", "mac": "28:63:36:8a:41:5c", "ip": "10.20.0.60",
     "vendor": "Siemens", "hostname": "PLC_LINE1", "model": "CPU 1214C DC/DC/DC"},
    {"name": "eng-tia01", "role": "engineering_workstation", "mac": "f8:bc:12:73:9e:05",
     "ip": "10.20.0.105", "vendor": "Dell", "hostname": "ENG-TIA01", "model": None},
    {"name": "drive", "role": "drive", "mac": "00:00:bc:5e:2a:91", "ip": "10.20.0.70",
     "vendor": "Rockwell Automation", "hostname": None, "model": "PowerFlex 525 1P 240V .5HP"},
    {"name": "bms", "role": "building_controller", "mac": "00:10:8d:0f:a1:22",
     "ip": "10.20.0.80", "vendor": "Johnson Controls", "hostname": None,
     "model": "MS-FEC2611-0"},
    # the incident: a laptop that is not part of the site
    {"name": "intruder", "role": "laptop", "mac": "3c:7c:3f:1d:66:06", "ip": "10.20.0.166",
     "vendor": "ASUSTek", "hostname": None, "model": None},
]
_SCANNED_PORTS = (21, 22, 23, 25, 53, 80, 102, 110, 111, 135, 139, 143, 161, 443, 445, 502, 515,
                  554, 631, 993, 1433, 1883, 2222, 2404, 3306, 3389, 4840, 5000, 5432, 5900, 8000,
                  8080, 8443, 9100, 9600, 20000, 44818)

_EPOCH = int(DEMO_START.timestamp())
_NTP_OFFSET = 2_208_988_800
_BROADCAST = "ff:ff:ff:ff:ff:ff"
_ZERO_MAC = "00:00:00:00:00:00"
_SUBNET_BROADCAST = "10.20.0.255"
_DOMAIN = "plant.example.net"
_MSS = 1460

_UA_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36")
_UA_EDGE = _UA_CHROME + " Edg/122.0.2365.66"
_UA_FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"
_UA_CAMERA = "AXIS P3245-LV/10.12.220 libcurl/8.4.0"
_UA_PHONE = "PolycomVVX-VVX_411-UA/6.4.6.2386"

_PRINTER_SERVER = ("HP HTTP Server; HP LaserJet Pro M404dn - W1A53A; Serial Number: PHBBL20817; "
                   "Built: Wed Jan 10, 2024 09:41:12AM {002_2352A}")
_CAMERA_REALM = "AXIS_ACCC8E2B41F7"

_PLC_IDENTITY = ((0x00, b"Schneider Electric"), (0x01, b"BMX P34 2020"), (0x02, b"v3.50"))

_LLDP_SYSDESC = (b"Cisco IOS Software [Dublin], ISR Software "
                 b"(ARMV8EB_LINUX_IOSD-UNIVERSALK9_IAS-M), Version 17.12.3, RELEASE SOFTWARE (fc7)")

_SWITCH_BANNER = ("Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E8, "
                  "RELEASE SOFTWARE (fc1)")
_SWITCH_SOFTWARE = (f"{_SWITCH_BANNER}\nTechnical Support: http://www.cisco.com/techsupport\n"
                    "Copyright (c) 1986-2023 by Cisco Systems, Inc.\n"
                    "Compiled Thu 15-Jun-23 01:35 by mcpre")
_SWITCH_PLATFORM = "cisco WS-C2960X-24TS-L"
_SWITCH_CDP_ID = "sw-plant01.plant.example"
_SWITCH_UPLINK = ("Gi1/0/24", "GigabitEthernet1/0/24")

_PHONE_MODEL = "VVX 411"
_PHONE_SOFTWARE = "6.4.6.2386"
_PHONE_PLATFORM = f"Polycom {_PHONE_MODEL}"
_PHONE_CDP_ID = "0004f2a1b2c3"
_PHONE_SYSDESC = f"Polycom {_PHONE_MODEL} UC Software {_PHONE_SOFTWARE}"
_PHONE_INVENTORY = ((5, "3111-48450-001 Rev A"), (6, "6.0.0.0107"), (7, _PHONE_SOFTWARE),
                    (8, "0004F2A1B2C3"), (9, "Polycom"), (10, _PHONE_MODEL))

_CAMERA_SERVER = "Linux/4.19.217-axis8, UPnP/1.0, AXIS P3245-LV/10.12.220"
_CAMERA_UPNP_UUID = "Upnp-BasicDevice-1_0-ACCC8E2B41F7"

# The OT cell: a Siemens S7-1200 (S7comm on ISO-on-TCP), a PowerFlex drive (EtherNet/IP) and
# a Metasys field controller (BACnet/IP), looked after from a TIA Portal workstation.
_S7_ORDER_NUMBER = "6ES7 214-1AG40-0XB0"
_S7_FIRMWARE = (4, 2, 3)
_S7_COMPONENTS = ((1, "PLC_LINE1"), (2, "PLC_LINE1"), (3, ""), (4, "Original Siemens Equipment"),
                  (5, "S C-H4N123456789"), (7, "CPU 1214C DC/DC/DC"))
_S7_BLOCK = "_0800001P"  # OB1, passive file system: the block TIA Portal downloads
_S7_TSAP_CALLING, _S7_TSAP_CALLED = 0x0100, 0x0101  # PG connection to rack 0, slot 1
_S7_RUN, _S7_STOP = (0x4302, 0x58), (0x4304, 0x84)  # (event id, bzu-id: previous/requested mode)

_DRIVE_IDENTITY = (1, 2, 144, (4, 3), 0x0030, 0x00524D8E, "PowerFlex 525 1P 240V .5HP")

_BMS_INSTANCE, _BMS_VENDOR_ID = 4001, 5  # ASHRAE vendor 5: Johnson Controls, Inc.
_BMS_PROPERTIES = ((77, "FEC-AHU1"), (121, "Johnson Controls, Inc."), (70, "MS-FEC2611-0"),
                   (44, "10.1.0.102"))


def _tpkt_cotp(tpdu: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, 4 + len(tpdu)) + tpdu


def _cotp_connect(code: int, dst_ref: int, src_ref: int) -> bytes:
    """COTP CR (0xE0) / CC (0xD0), class 0, TPDU size 1024 and the PG's TSAPs."""
    params = (b"\xc0\x01\x0a" + struct.pack(">BBH", 0xC1, 2, _S7_TSAP_CALLING)
              + struct.pack(">BBH", 0xC2, 2, _S7_TSAP_CALLED))
    body = bytes([code]) + struct.pack(">HHB", dst_ref, src_ref, 0) + params
    return _tpkt_cotp(bytes([len(body)]) + body)


def _s7(rosctr: int, ref: int, param: bytes, data: bytes = b"") -> bytes:
    """One S7comm PDU in a COTP DT TPDU (last data unit) in a TPKT."""
    header = struct.pack(">BBHHHH", 0x32, rosctr, 0, ref, len(param), len(data))
    if rosctr in (2, 3):
        header += b"\x00\x00"  # error class, error code
    return _tpkt_cotp(b"\x02\xf0\x80" + header + param + data)


def _s7_szl_request(ref: int, szl_id: int, index: int) -> bytes:
    return _s7(7, ref, b"\x00\x01\x12\x04\x11\x44\x01\x00",
               b"\xff\x09" + struct.pack(">HHH", 4, szl_id, index))


def _s7_szl_response(ref: int, seq: int, szl_id: int, size: int, records: Sequence[bytes]) -> bytes:
    szl = struct.pack(">HHHH", szl_id, 0, size, len(records)) + b"".join(records)
    return _s7(7, ref, b"\x00\x01\x12\x08\x12\x84\x01" + bytes([seq]) + bytes(4),
               b"\xff\x09" + struct.pack(">H", len(szl)) + szl)


def _s7_filename_param(func: int, status: int, filename: str) -> bytes:
    return bytes([func, status]) + b"\x01\x00" + bytes(4) + bytes([len(filename)]) + filename.encode()


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _s7_time(t: float) -> bytes:
    """S7 DATE_AND_TIME (BCD, weekday 1 = Sunday) of a moment of the capture."""
    when = datetime.fromtimestamp(_EPOCH + t, UTC)
    ms = when.microsecond // 1000
    weekday = when.isoweekday() % 7 + 1
    return bytes([_bcd(when.year % 100), _bcd(when.month), _bcd(when.day), _bcd(when.hour),
                  _bcd(when.minute), _bcd(when.second), _bcd(ms // 10), (ms % 10) << 4 | weekday])


def _enip(command: int, context: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<HHII8sI", command, len(body), 0, 0, context, 0) + body


def _bvlc(function: int, npdu: bytes) -> bytes:
    return struct.pack(">BBH", 0x81, function, 4 + len(npdu)) + npdu


def _bacnet_oid(kind: int, instance: int) -> bytes:
    return struct.pack(">I", kind << 22 | instance)


def _bacnet_string(text: str) -> bytes:
    """Application-tagged CharacterString (ANSI X3.4 / UTF-8)."""
    value = b"\x00" + text.encode()
    return (bytes([0x70 | len(value)]) if len(value) < 5 else bytes([0x75, len(value)])) + value


@dataclass(frozen=True)
class _Stack:
    """How a host's TCP/IP stack shapes its packets."""

    ttl: int
    syn_win: int
    syn_opts: bytes
    scaled_win: int | None
    eph_ports: tuple[int, int]
    sequential_ports: bool
    arp_life: float
    delayed_ack: tuple[float, float]


_OPT_MSS = struct.pack("!BBH", 2, 4, _MSS)
_OPT_NOP, _OPT_SACK_OK = b"\x01", b"\x04\x02"


def _opt_wscale(shift: int) -> bytes:
    return bytes([3, 3, shift])


_WS_OPTS = _OPT_MSS + _OPT_NOP + _opt_wscale(8) + _OPT_NOP * 2 + _OPT_SACK_OK
_LINUX_OPTS = _OPT_MSS + _OPT_NOP * 2 + _OPT_SACK_OK + _OPT_NOP + _opt_wscale(7)
_CDN_OPTS = _OPT_MSS + _OPT_NOP * 2 + _OPT_SACK_OK + _OPT_NOP + _opt_wscale(9)

_STACK_OF = {"gateway": "cisco", "switch": "cisco", "eng-ws01": "windows", "ops-lt02": "windows",
             "eng-ubuntu03": "linux", "printer": "embedded", "camera": "linux",
             "phone": "linux", "plc": "embedded", "hmi": "linux", "s7-plc": "embedded",
             "eng-tia01": "windows", "drive": "embedded", "bms": "embedded", "intruder": "linux"}

_STACKS: dict[str, _Stack] = {
    "windows": _Stack(128, 64240, _WS_OPTS, 1026, (49152, 65535), True, 120.0, (0.002, 0.2)),
    "linux": _Stack(64, 64240, _LINUX_OPTS, 502, (32768, 60999), False, 300.0, (0.04, 0.06)),
    "embedded": _Stack(64, 8192, _OPT_MSS, None, (1024, 5000), True, 300.0,
                       (0.05, 0.2)),
    "cisco": _Stack(255, 4128, _OPT_MSS, None, (49152, 65535), False, 14400.0,
                    (0.05, 0.2)),
    "internet": _Stack(255, 65535, _CDN_OPTS, 256, (1024, 65535), False, 0.0, (0.04, 0.2)),
}


@dataclass
class _Node:
    name: str
    ip: str
    mac: str | None
    stack: _Stack
    ttl: int
    rtt: float = 0.0
    ipid: int = 0
    next_port: int = 0
    arp: dict[str, tuple[float, float]] = field(default_factory=dict)
    dns: dict[str, float] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.mac is not None

    def port(self, rng: random.Random) -> int:
        low, high = self.stack.eph_ports
        if not self.stack.sequential_ports:
            return rng.randint(low, high)
        self.next_port = self.next_port + 1 if low <= self.next_port < high else low
        return self.next_port

    def next_ipid(self) -> int:
        self.ipid = (self.ipid + 1) & 0xFFFF
        return self.ipid


@dataclass(frozen=True)
class _Remote:
    fqdn: str
    ip: str
    rtt: float
    ttl: int
    dns_ttl: int


_REMOTES = (
    _Remote("www.example.com", "93.184.216.34", 0.082, 52, 3600),
    _Remote("stackoverflow.com", "151.101.1.69", 0.014, 58, 300),
    _Remote("www.msftconnecttest.com", "13.107.4.52", 0.011, 120, 60),
    _Remote("connectivity-check.ubuntu.com", "185.125.190.17", 0.026, 53, 60),
    _Remote("time.cloudflare.com", "162.159.200.123", 0.009, 58, 300),
    _Remote("dispatcher.axis.com", "195.60.68.148", 0.031, 51, 300),
    _Remote("pbx.example.net", "52.57.104.20", 0.022, 49, 3600),
)


def _http_date(t: float) -> str:
    return formatdate(_EPOCH + int(t), usegmt=True)


def _http_response(status: str, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _http_request(method: str, target: str, headers: Sequence[tuple[str, str]],
                  body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _browser_headers(host: str, ua: str) -> list[tuple[str, str]]:
    return [
        ("Host", host),
        ("Connection", "keep-alive"),
        ("Upgrade-Insecure-Requests", "1"),
        ("User-Agent", ua),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,"
                   "image/avif,image/webp,*/*;q=0.8"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Accept-Language", "en-US,en;q=0.9"),
    ]


def _mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _lldp_tlv(kind: int, value: bytes) -> bytes:
    return struct.pack(">H", (kind << 9) | len(value)) + value


def _lldp_org(oui: int, subtype: int, value: bytes) -> bytes:
    return _lldp_tlv(127, oui.to_bytes(3, "big") + bytes([subtype]) + value)


def _lldp_mgmt_ipv4(ip: str, ifindex: int) -> bytes:
    return _lldp_tlv(8, bytes([5, 1]) + socket.inet_aton(ip) + b"\x02" + struct.pack(">I", ifindex)
                     + b"\x00")


_OUI_IEEE_8021, _OUI_IEEE_8023, _OUI_TIA = 0x0080C2, 0x00120F, 0x0012BB
_CDP_MAC = "01:00:0c:cc:cc:cc"
_CDP_SWITCH, _CDP_HOST, _CDP_IGMP, _CDP_PHONE = 0x08, 0x10, 0x20, 0x80


def _cdp_tlv(kind: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack(">HH", kind, 4 + len(data)) + data


def _cdp_addresses(kind: int, ip: str) -> bytes:
    """Addresses (2) / Management Addresses (0x16) TLV holding one IPv4 address (NLPID 0xCC)."""
    return _cdp_tlv(kind, struct.pack(">IBBBH", 1, 1, 1, 0xCC, 4) + socket.inet_aton(ip))


def _cdp(src: str, tlvs: Sequence[bytes], ttl: int = 180) -> bytes:
    """CDPv2 in 802.3 + LLC/SNAP (OUI 00000c, PID 0x2000), with Cisco's checksum.

    The checksum is the Internet checksum, except that an odd trailing byte is added as a
    sign-extended low-order byte, less one when negative (IOS's quirk, which Wireshark mirrors).
    """
    body = struct.pack(">BBH", 2, ttl, 0) + b"".join(tlvs)
    summed = body
    if len(body) % 2:
        last = body[-1]
        summed = body[:-1] + struct.pack(">H", last if last < 0x80 else 0xFF00 | (last - 1))
    body = body[:2] + struct.pack(">H", _checksum(summed)) + body[4:]
    llc = b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + body
    return _ether(_CDP_MAC, src, len(llc), llc)


def _ntp_stamp(t: float) -> bytes:
    whole = _EPOCH + _NTP_OFFSET + int(t)
    frac = int((t - int(t)) * 2**32) & 0xFFFFFFFF
    return struct.pack(">II", whole, frac)


_TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}
_ETH_IPV4, _ETH_ARP, _ETH_LLDP = 0x0800, 0x0806, 0x88CC
_PROTO_TCP, _PROTO_UDP = 6, 17


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def _arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return (struct.pack("!HHBBH", 1, _ETH_IPV4, 6, 4, op) + _mac(sha) + socket.inet_aton(spa)
            + _mac(tha) + socket.inet_aton(tpa))


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: str, window: int,
         options: bytes = b"", payload: bytes = b"") -> bytes:
    bits = sum(_TCP_FLAG_BITS[f] for f in flags)
    offset = (5 + len(options) // 4) << 4
    return (struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset, bits, window, 0, 0)
            + options + payload)


def _ipv4(src: str, dst: str, proto: int, segment: bytes, *, ttl: int, ident: int,
          df: bool = True) -> bytes:
    """IPv4 packet around a TCP/UDP segment, filling in both checksums."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    where = 16 if proto == _PROTO_TCP else 6
    csum = _checksum(s + d + struct.pack("!BBH", 0, proto, len(segment)) + segment)
    if proto == _PROTO_UDP and csum == 0:
        csum = 0xFFFF
    segment = segment[:where] + struct.pack("!H", csum) + segment[where + 2:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), ident,
                         0x4000 if df else 0, ttl, proto, 0, s, d)
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + segment


class _Site:
    """Event-driven simulation of the demo site; collects frames in capture order."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.frames: list[tuple[int, int, bytes]] = []
        self._events: list[tuple[float, int, Callable[[float], object]]] = []
        self._event_no = 0
        self.hosts: dict[str, _Node] = {}
        for dev in DEMO_DEVICES:
            name = str(dev["name"])
            stack = _STACKS[_STACK_OF[name]]
            node = _Node(name, str(dev["ip"]), str(dev["mac"]), stack, stack.ttl,
                         ipid=self.rng.getrandbits(16),
                         next_port=self.rng.randint(*stack.eph_ports))
            self.hosts[name] = node
        self.router = self.hosts["gateway"]
        self.by_ip = {n.ip: n for n in self.hosts.values()}
        self.remotes: dict[str, tuple[_Node, _Remote]] = {}
        for r in _REMOTES:
            node = _Node(r.fqdn, r.ip, None, _STACKS["internet"], r.ttl, rtt=r.rtt,
                         ipid=self.rng.getrandbits(16))
            self.remotes[r.fqdn] = (node, r)
        self.resolver_cache: dict[str, float] = {}

    def at(self, t: float, action: Callable[[float], object]) -> None:
        if t < DEMO_DURATION:
            self._event_no += 1
            heapq.heappush(self._events, (t, self._event_no, action))

    def run(self) -> None:
        while self._events:
            t, _, action = heapq.heappop(self._events)
            action(t)

    def emit(self, t: float, raw: bytes) -> float:
        if len(raw) < 60:
            raw += bytes(60 - len(raw))
        us = round(t * 1_000_000)
        if us < DEMO_DURATION * 1_000_000:
            self.frames.append((us, len(self.frames), raw))
        return t

    def local_delay(self) -> float:
        return self.rng.uniform(0.00006, 0.0004)

    def reply_delay(self, responder: _Node) -> float:
        if responder.local:
            return self.local_delay()
        return responder.rtt * self.rng.uniform(0.97, 1.12)

    def resolve(self, t: float, src: _Node, target_ip: str) -> float:
        entry = src.arp.get(target_ip)
        if entry is not None and entry[0] <= t < entry[1]:
            return t
        target = self.by_ip[target_ip]
        assert src.mac is not None and target.mac is not None
        refresh = entry is not None and entry[0] <= t
        self.emit(t, _ether(target.mac if refresh else _BROADCAST, src.mac, _ETH_ARP,
                            _arp(1, src.mac, src.ip, _ZERO_MAC, target_ip)))
        t += self.local_delay()
        self.emit(t, _ether(src.mac, target.mac, _ETH_ARP,
                            _arp(2, target.mac, target.ip, src.mac, src.ip)))
        src.arp[target_ip] = (t, t + src.stack.arp_life)
        target.arp[src.ip] = (t, t + target.stack.arp_life)
        return t + self.rng.uniform(0.00003, 0.00015)

    def send(self, t: float, src: _Node, dst: _Node, proto: int, segment: bytes, *,
             df: bool = True) -> float:
        if src.local:
            sender, hop = src, dst if dst.local else self.router
        else:
            sender, hop = self.router, dst
        t = self.resolve(t, sender, hop.ip)
        assert sender.mac is not None and hop.mac is not None
        packet = _ipv4(src.ip, dst.ip, proto, segment, ttl=src.ttl, ident=src.next_ipid(), df=df)
        return self.emit(t, _ether(hop.mac, sender.mac, _ETH_IPV4, packet))

    def garp(self, t: float, host: _Node) -> float:
        assert host.mac is not None
        return self.emit(t, _ether(_BROADCAST, host.mac, _ETH_ARP,
                                   _arp(1, host.mac, host.ip, _ZERO_MAC, host.ip)))

    def arp_probe(self, t: float, host: _Node) -> float:
        assert host.mac is not None
        return self.emit(t, _ether(_BROADCAST, host.mac, _ETH_ARP,
                                   _arp(1, host.mac, "0.0.0.0", _ZERO_MAC, host.ip)))

    def dhcp(self, t: float, host: _Node, *, hostname: str, vendor_class: str | None,
             params: Sequence[int], client_id: bool = True) -> float:
        assert host.mac is not None and self.router.mac is not None
        rng = self.rng
        mac_bytes = bytes.fromhex(host.mac.replace(":", ""))
        xid = rng.getrandbits(32)
        ident: list[tuple[str, object]] = []
        if client_id:
            ident.append(("client_id", b"\x01" + mac_bytes))
        ident.append(("hostname", hostname.encode()))
        if vendor_class:
            ident.append(("vendor_class_id", vendor_class.encode()))
        ident.append(("param_req_list", list(params)))
        lease = [("server_id", self.router.ip), ("lease_time", 86400), ("renewal_time", 43200),
                 ("rebinding_time", 75600), ("subnet_mask", "255.255.255.0"),
                 ("router", self.router.ip), ("name_server", self.router.ip),
                 ("domain", _DOMAIN.encode())]

        def client(msg: str, extra: list[tuple[str, object]], secs: int) -> bytes:
            assert host.mac is not None
            bootp = bytes(BOOTP(op=1, xid=xid, secs=secs, chaddr=mac_bytes + bytes(10))
                          / DHCP(options=_padded([("message-type", msg), *extra, *ident])))
            packet = _ipv4("0.0.0.0", "255.255.255.255", _PROTO_UDP, _udp(68, 67, bootp),
                           ttl=host.ttl, ident=host.next_ipid(), df=False)
            return _ether(_BROADCAST, host.mac, _ETH_IPV4, packet)

        def server(msg: str) -> bytes:
            assert host.mac is not None and self.router.mac is not None
            bootp = bytes(BOOTP(op=2, xid=xid, yiaddr=host.ip, siaddr=self.router.ip,
                                chaddr=mac_bytes + bytes(10))
                          / DHCP(options=_padded([("message-type", msg), *lease])))
            packet = _ipv4(self.router.ip, host.ip, _PROTO_UDP, _udp(67, 68, bootp),
                           ttl=self.router.ttl, ident=self.router.next_ipid(), df=False)
            return _ether(host.mac, self.router.mac, _ETH_IPV4, packet)

        self.emit(t, client("discover", [], 0))
        t += rng.uniform(0.0015, 0.004)
        self.emit(t, server("offer"))
        t += rng.uniform(0.0005, 0.003)
        self.emit(t, client("request", [("requested_addr", host.ip),
                                        ("server_id", self.router.ip)], 0))
        t += rng.uniform(0.0015, 0.004)
        self.emit(t, server("ack"))
        self.router.arp[host.ip] = (t, t + self.router.stack.arp_life)
        t += rng.uniform(0.02, 0.2)
        self.arp_probe(t, host)
        t += rng.uniform(1.0, 2.0)
        return self.garp(t, host) + rng.uniform(0.05, 0.3)

    def lookup(self, t: float, host: _Node, fqdn: str, *, aaaa: bool = False
               ) -> tuple[float, _Node]:
        remote, meta = self.remotes[fqdn]
        if host.dns.get(fqdn, -1.0) > t:
            return t, remote
        rng = self.rng
        fetched = self.resolver_cache.get(fqdn)
        if fetched is not None and fetched <= t < fetched + meta.dns_ttl:
            ttl = meta.dns_ttl - int(t - fetched)
            delay = rng.uniform(0.0003, 0.0009)
        else:
            self.resolver_cache[fqdn] = t
            ttl = meta.dns_ttl
            delay = rng.uniform(0.008, 0.045)
        queries: list[tuple[str, DNSRR | None]] = [
            ("A", DNSRR(rrname=fqdn, type="A", ttl=ttl, rdata=remote.ip))]
        if aaaa:
            queries.append(("AAAA", None))
        answered = t
        for qtype, answer in queries:
            sport = rng.randint(49152, 65535)
            qid = rng.getrandbits(16)
            question = DNSQR(qname=fqdn, qtype=qtype)
            self.send(t, host, self.router, _PROTO_UDP,
                      _udp(sport, 53, bytes(DNS(id=qid, rd=1, qd=[question]))), df=False)
            reply_t = t + delay + rng.uniform(0.00005, 0.0003)
            response = DNS(id=qid, qr=1, rd=1, ra=1, qd=[question],
                           an=[answer] if answer is not None else [])
            self.send(reply_t, self.router, host, _PROTO_UDP, _udp(53, sport, bytes(response)),
                      df=False)
            answered = max(answered, reply_t)
            t += rng.uniform(0.0001, 0.0006)
        host.dns[fqdn] = answered + ttl
        return answered + rng.uniform(0.0001, 0.001), remote

    def http(self, t: float, client: _Node, server: _Node,
             exchanges: Sequence[tuple[bytes, bytes]], *, server_closes: bool = False,
             linger: tuple[float, float] = (0.5, 6.0), work: tuple[float, float] = (0.001, 0.02),
             port: int = 80) -> float:
        conn = _Tcp(self, client, server, port)
        t = conn.open(t)
        for i, (request, response) in enumerate(exchanges):
            if i:
                t += self.rng.uniform(0.05, 1.2)
            t = conn.push(t + self.rng.uniform(0.0001, 0.002), True, request)
            t = conn.push(t + self.reply_delay(server) + self.rng.uniform(*work), False, response)
            t = conn.ack(t + self.rng.uniform(*client.stack.delayed_ack), True)
        return conn.close(t + self.rng.uniform(*linger), by_client=not server_closes)


def _padded(options: list[tuple[str, object]]) -> list[object]:
    base: list[object] = [*options, "end"]
    size = len(bytes(DHCP(options=base)))
    return base + ["pad"] * max(0, 300 - 240 - size)


class _Tcp:
    """One TCP connection with real sequence/acknowledgement bookkeeping."""

    def __init__(self, site: _Site, client: _Node, server: _Node, dport: int) -> None:
        self.site = site
        self.client = client
        self.server = server
        self.sport = client.port(site.rng)
        self.dport = dport
        self.seq = {True: site.rng.getrandbits(32), False: site.rng.getrandbits(32)}
        self.scaled = client.stack.scaled_win is not None and server.stack.scaled_win is not None

    def _segment(self, t: float, from_client: bool, flags: str, payload: bytes = b"") -> float:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        syn = "S" in flags
        if syn:
            window, options = src.stack.syn_win, src.stack.syn_opts
        else:
            scaled = src.stack.scaled_win if self.scaled else None
            window, options = scaled or src.stack.syn_win, b""
        sport, dport = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        segment = _tcp(sport, dport, self.seq[from_client],
                       self.seq[not from_client] if "A" in flags else 0, flags, window, options,
                       payload)
        t = self.site.send(t, src, dst, _PROTO_TCP, segment)
        grow = len(payload) + (1 if syn or "F" in flags else 0)
        self.seq[from_client] = (self.seq[from_client] + grow) & 0xFFFFFFFF
        return t

    def open(self, t: float) -> float:
        t = self._segment(t, True, "S")
        t = self._segment(t + self.site.reply_delay(self.server), False, "SA")
        return self._segment(t + self.site.reply_delay(self.client), True, "A")

    def push(self, t: float, from_client: bool, data: bytes) -> float:
        sender, receiver = (self.client, self.server) if from_client else (self.server, self.client)
        chunks = [data[i:i + _MSS] for i in range(0, len(data), _MSS)]
        gap = (0.00002, 0.00006) if sender.local else (0.0001, 0.0004)
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            t = self._segment(t, from_client, "PA" if last else "A", chunk)
            if i % 2 == 1 and not last:
                self._segment(t + self.site.reply_delay(receiver), not from_client, "A")
            if not last:
                t += self.site.rng.uniform(*gap)
        return t

    def ack(self, t: float, by_client: bool) -> float:
        return self._segment(t, by_client, "A")

    def close(self, t: float, by_client: bool) -> float:
        closer, other = (self.client, self.server) if by_client else (self.server, self.client)
        t = self._segment(t, by_client, "FA")
        t = self._segment(t + self.site.reply_delay(other), not by_client, "FA")
        return self._segment(t + self.site.reply_delay(closer), by_client, "A")


class _Scenario:
    """What each device does during the fifteen minutes."""

    def __init__(self, seed: int) -> None:
        self.site = _Site(seed)
        self.rng = self.site.rng
        self.h = self.site.hosts
        self.registers = [412, 655, 218, 1180, 1450, 0, 0, 0, 0, 0, 600, 250, 1500, 0, 0, 0,
                          0, 0, 0, 0]
        self.coils = 0b0000_0000_0010_1101
        self.setpoint_polls = set(self.rng.sample(range(20, 400), 3))
        self.modbus: _Tcp | None = None
        self.tid = 0
        self.poll_no = 0
        self.sip_cseq = 0
        self.sip_call_id = ""
        self.sip_tag = ""
        self.sip_nonce = ""
        self.first_visits: dict[str, list[str]] = {}
        self.phone_addressed = DEMO_DURATION
        self.s7_run_since = 0.0

    def build(self) -> list[tuple[int, int, bytes]]:
        site, rng = self.site, self.rng
        site.at(rng.uniform(0.05, 0.8), self.lldp)
        site.at(rng.uniform(0.1, 1.0), self.switch_lldp)
        site.at(rng.uniform(1.0, 5.0), self.switch_cdp)
        site.at(rng.uniform(3.0, 6.0), self.switch_ntp)
        site.at(rng.uniform(1.0, 2.0), self.plc_boot)
        site.at(rng.uniform(8.0, 10.0), self.hmi_boot)
        site.at(rng.uniform(12.0, 16.0), self.camera_boot)
        site.at(rng.uniform(22.0, 28.0), self.printer_boot)
        site.at(rng.uniform(30.0, 36.0), self.phone_boot)
        site.at(rng.uniform(60.0, 80.0), lambda t: self.workstation_boot(t, "eng-ws01"))
        site.at(rng.uniform(170.0, 210.0), lambda t: self.workstation_boot(t, "ops-lt02"))
        site.at(rng.uniform(280.0, 320.0), lambda t: self.workstation_boot(t, "eng-ubuntu03"))
        site.at(rng.uniform(1.5, 3.0), self.s7_boot)
        site.at(rng.uniform(3.0, 5.0), lambda t: self.static_boot(t, "drive"))
        site.at(rng.uniform(5.0, 7.0), self.bms_boot)
        site.at(rng.uniform(90.0, 120.0), self.tia_boot)
        site.at(DEMO_LEARNING + rng.uniform(60.0, 90.0), self.intrusion)
        site.run()
        return sorted(site.frames)

    def lldp(self, t: float) -> None:
        router = self.site.router
        assert router.mac is not None
        body = b"".join([
            _lldp_tlv(1, b"\x04" + _mac(router.mac)),
            _lldp_tlv(2, b"\x05Gi0/1/0"),
            _lldp_tlv(3, struct.pack(">H", 120)),
            _lldp_tlv(4, b"GigabitEthernet0/1/0"),
            _lldp_tlv(5, b"gw-plant01"),
            _lldp_tlv(6, _LLDP_SYSDESC),
            _lldp_tlv(7, struct.pack(">HH", 0x0014, 0x0010)),
            _lldp_tlv(8, bytes([5, 1]) + socket.inet_aton(router.ip) + b"\x02"
                      + struct.pack(">I", 9) + b"\x00"),
            _lldp_tlv(0, b""),
        ])
        self.site.emit(t, _ether("01:80:c2:00:00:0e", router.mac, _ETH_LLDP, body))
        self.site.at(t + 30.0 + self.rng.uniform(-0.02, 0.02), self.lldp)

    def switch_lldp(self, t: float) -> None:
        switch = self.h["switch"]
        assert switch.mac is not None
        port_id, port_desc = _SWITCH_UPLINK
        body = b"".join([
            _lldp_tlv(1, b"\x04" + _mac(switch.mac)),
            _lldp_tlv(2, b"\x05" + port_id.encode()),
            _lldp_tlv(3, struct.pack(">H", 120)),
            _lldp_tlv(4, port_desc.encode()),
            _lldp_tlv(5, b"sw-plant01"),
            _lldp_tlv(6, _SWITCH_BANNER.encode()),
            _lldp_tlv(7, struct.pack(">HH", 0x0014, 0x0004)),
            _lldp_mgmt_ipv4(switch.ip, 1),
            _lldp_org(_OUI_IEEE_8021, 1, struct.pack(">H", 1)),
            _lldp_org(_OUI_IEEE_8023, 1, bytes([0x03]) + struct.pack(">HH", 0x6C01, 30)),
            _lldp_tlv(0, b""),
        ])
        self.site.emit(t, _ether("01:80:c2:00:00:0e", switch.mac, _ETH_LLDP, body))
        self.site.at(t + 30.0 + self.rng.uniform(-0.02, 0.02), self.switch_lldp)

    def switch_cdp(self, t: float) -> None:
        switch = self.h["switch"]
        assert switch.mac is not None
        self.site.emit(t, _cdp(switch.mac, [
            _cdp_tlv(0x0001, _SWITCH_CDP_ID),
            _cdp_addresses(0x0002, switch.ip),
            _cdp_tlv(0x0003, _SWITCH_UPLINK[1]),
            _cdp_tlv(0x0004, struct.pack(">I", _CDP_SWITCH | _CDP_IGMP)),
            _cdp_tlv(0x0005, _SWITCH_SOFTWARE),
            _cdp_tlv(0x0006, _SWITCH_PLATFORM),
            _cdp_tlv(0x0009, "plant"),
            _cdp_tlv(0x000A, struct.pack(">H", 1)),
            _cdp_tlv(0x000B, b"\x01"),
            _cdp_addresses(0x0016, switch.ip),
        ]))
        self.site.at(t + 60.0 + self.rng.uniform(-0.02, 0.02), self.switch_cdp)

    def switch_ntp(self, t: float) -> None:
        """``ntp server 10.20.0.1``: the switch keeps its clock from the gateway (NTPv4)."""
        site, rng = self.site, self.rng
        switch, router = self.h["switch"], self.site.router
        request = bytes([0x23, 0, 6, 0xEC]) + bytes(36) + _ntp_stamp(t)
        site.send(t, switch, router, _PROTO_UDP, _udp(123, 123, request), df=False)
        back = t + site.local_delay()
        reply = (bytes([0x24, 3, 6, 0xE9]) + struct.pack(">II", 0x0000_0310, 0x0000_0A20)
                 + socket.inet_aton("162.159.200.123") + _ntp_stamp(back - 37.2)
                 + _ntp_stamp(t) + _ntp_stamp(t + 0.00011) + _ntp_stamp(back))
        site.send(back, router, switch, _PROTO_UDP, _udp(123, 123, reply), df=False)
        site.at(t + 64.0 + rng.uniform(-0.5, 0.5), self.switch_ntp)

    def switch_snmp_poll(self, t: float) -> None:
        """The engineering workstation's monitoring script reads the switch's system group
        (SNMPv2c, community ``public``) every five minutes."""
        site, rng = self.site, self.rng
        ws, switch = self.h["eng-ubuntu03"], self.h["switch"]
        system = "1.3.6.1.2.1.1."
        values = [(f"{system}1.0", ASN1_STRING(_SWITCH_SOFTWARE.encode())),
                  (f"{system}3.0", ASN1_TIME_TICKS(int((3 * 86400 + 4127.5 + t) * 100))),
                  (f"{system}5.0", ASN1_STRING(_SWITCH_CDP_ID.encode()))]
        request_id = rng.getrandbits(31)
        sport = ws.port(rng)
        get = SNMP(version=1, community=b"public", PDU=SNMPget(
            id=request_id, varbindlist=[SNMPvarbind(oid=ASN1_OID(oid)) for oid, _ in values]))
        t = site.send(t, ws, switch, _PROTO_UDP, _udp(sport, 161, bytes(get)))
        response = SNMP(version=1, community=b"public", PDU=SNMPresponse(
            id=request_id, varbindlist=[SNMPvarbind(oid=ASN1_OID(oid), value=value)
                                        for oid, value in values]))
        site.send(t + rng.uniform(0.001, 0.004), switch, ws, _PROTO_UDP,
                  _udp(161, sport, bytes(response)), df=False)
        site.at(t + 300.0 + rng.uniform(-1.0, 1.0), self.switch_snmp_poll)

    def plc_boot(self, t: float) -> None:
        plc = self.h["plc"]
        t = self.site.garp(t, plc) + self.rng.uniform(0.8, 1.2)
        self.site.garp(t, plc)

    def hmi_boot(self, t: float) -> None:
        site, hmi, plc = self.site, self.h["hmi"], self.h["plc"]
        t = site.garp(t, hmi) + self.rng.uniform(1.5, 3.0)
        self.modbus = _Tcp(site, hmi, plc, 502)
        self.tid = self.rng.randint(1, 200)
        t = self.modbus.open(t)
        site.at(t + self.rng.uniform(0.05, 0.3), self.hmi_poll)

    def _modbus_exchange(self, t: float, conn: _Tcp, tid: int, pdu: bytes,
                         reply: bytes, unit: int = 1) -> float:
        t = conn.push(t, True, _mbap(tid, unit, pdu))
        return conn.push(t + self.rng.uniform(0.002, 0.009), False, _mbap(tid, unit, reply))

    def _read_holding(self, start: int, count: int) -> bytes:
        values = self.registers[start:start + count]
        return struct.pack(">BB", 3, 2 * len(values)) + struct.pack(f">{len(values)}H", *values)

    def _drift(self) -> None:
        regs, rng = self.registers, self.rng
        regs[0] = min(950, max(150, regs[0] + rng.randint(-4, 5)))
        regs[1] = min(720, max(600, regs[1] + rng.randint(-2, 2)))
        regs[2] = min(260, max(180, regs[2] + rng.randint(-3, 3)))
        regs[3] = max(0, regs[3] + rng.randint(-15, 15))
        regs[4] = 1450 + rng.randint(-6, 6)
        regs[5] = (regs[5] + 1) & 0xFFFF
        if rng.random() < 0.02:
            self.coils ^= 1 << rng.randint(0, 5)

    def hmi_poll(self, t: float) -> None:
        site, rng, conn = self.site, self.rng, self.modbus
        assert conn is not None
        self._drift()
        self.tid = (self.tid + 1) & 0xFFFF
        t = self._modbus_exchange(t, conn, self.tid, struct.pack(">BHH", 3, 0, 20),
                                  self._read_holding(0, 20))
        self.tid = (self.tid + 1) & 0xFFFF
        coils = struct.pack(">BB", 1, 2) + struct.pack("<H", self.coils)
        t = self._modbus_exchange(t + rng.uniform(0.0002, 0.001), conn, self.tid,
                                  struct.pack(">BHH", 1, 0, 16), coils)
        if self.poll_no in self.setpoint_polls:
            value = rng.choice([550, 575, 600, 625, 650])
            self.registers[10] = value
            self.tid = (self.tid + 1) & 0xFFFF
            write = struct.pack(">BHH", 6, 10, value)
            t = self._modbus_exchange(t + rng.uniform(0.0002, 0.001), conn, self.tid,
                                      write, write)
        conn.ack(t + rng.uniform(*conn.client.stack.delayed_ack), True)
        self.poll_no += 1
        site.at(t + 2.0 + rng.uniform(-0.015, 0.015), self.hmi_poll)

    def camera_boot(self, t: float) -> None:
        site, rng, cam = self.site, self.rng, self.h["camera"]
        t = site.garp(t, cam) + rng.uniform(0.5, 1.0)
        t = site.garp(t, cam) + rng.uniform(2.0, 4.0)
        self.ssdp_notify(t)
        t += rng.uniform(0.5, 1.5)
        self.ntp_burst(t)
        site.at(t + rng.uniform(10.0, 20.0), self.camera_heartbeat)

    def ssdp_notify(self, t: float) -> None:
        site, cam = self.site, self.h["camera"]
        assert cam.mac is not None
        uuid = _CAMERA_UPNP_UUID
        for nt, usn in (("upnp:rootdevice", f"uuid:{uuid}::upnp:rootdevice"),
                        (f"uuid:{uuid}", f"uuid:{uuid}"),
                        ("urn:axis-com:service:BasicService:1",
                         f"uuid:{uuid}::urn:axis-com:service:BasicService:1")):
            body = ("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
                    "CACHE-CONTROL: max-age=1800\r\n"
                    f"LOCATION: http://{cam.ip}:49152/rootdesc1.xml\r\n"
                    "OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n"
                    f"NT: {nt}\r\nNTS: ssdp:alive\r\n"
                    f"SERVER: {_CAMERA_SERVER}\r\n"
                    f"USN: {usn}\r\n\r\n").encode()
            packet = _ipv4(cam.ip, "239.255.255.250", _PROTO_UDP, _udp(1900, 1900, body), ttl=2,
                           ident=cam.next_ipid(), df=False)
            site.emit(t, _ether("01:00:5e:7f:ff:fa", cam.mac, _ETH_IPV4, packet))
            t += self.rng.uniform(0.0005, 0.003)
        site.at(t + self.rng.uniform(280.0, 320.0), self.ssdp_notify)

    def ntp_burst(self, t: float, count: int = 4) -> None:
        for _ in range(count):
            t = self.ntp_query(t) + self.rng.uniform(1.9, 2.1)
        self.site.at(t + 128.0 + self.rng.uniform(-1.0, 1.0),
                     lambda t2: self.ntp_burst(t2, count=1))

    def ntp_query(self, t: float) -> float:
        site, rng, cam = self.site, self.rng, self.h["camera"]
        t, server = site.lookup(t, cam, "time.cloudflare.com")
        sport = rng.randint(32768, 60999)
        request = bytes([0x23, 0, 6, 0xE9]) + bytes(36) + _ntp_stamp(t)
        site.send(t, cam, server, _PROTO_UDP, _udp(sport, 123, request))
        back = t + site.reply_delay(server)
        received = t + server.rtt / 2
        reply = (bytes([0x24, 3, 6, 0xE7]) + struct.pack(">II", 0x0000_00A1, 0x0000_0120)
                 + bytes([10, 12, 8, 17]) + _ntp_stamp(received - 14.3) + _ntp_stamp(t)
                 + _ntp_stamp(received) + _ntp_stamp(received + 0.000021))
        return site.send(back, server, cam, _PROTO_UDP, _udp(123, sport, reply))

    def camera_heartbeat(self, t: float) -> None:
        site, rng, cam = self.site, self.rng, self.h["camera"]
        t, cloud = site.lookup(t, cam, "dispatcher.axis.com")
        body = (f'{{"serial":"ACCC8E2B41F7","model":"P3245-LV","firmware":"10.12.220",'
                f'"uptime":{int(t)},"streams":{rng.randint(0, 2)}}}').encode()
        request = _http_request("POST", "/api/v1/heartbeat", [
            ("Host", "dispatcher.axis.com"), ("User-Agent", _UA_CAMERA), ("Accept", "*/*"),
            ("Content-Type", "application/json"), ("Connection", "close")], body)
        reply = b'{"status":"ok","interval":60}'
        response = _http_response("200 OK", [
            ("Date", _http_date(t)), ("Server", "nginx"),
            ("Content-Type", "application/json"), ("Connection", "close")], reply)
        site.http(t, cam, cloud, [(request, response)], server_closes=True,
                  linger=(0.0001, 0.0005), work=(0.003, 0.015))
        site.at(t + 60.0 + rng.uniform(-0.5, 0.5), self.camera_heartbeat)

    def printer_boot(self, t: float) -> None:
        site, printer = self.site, self.h["printer"]
        t = site.dhcp(t, printer, hostname="HP-LaserJet-M404",
                      vendor_class="Hewlett-Packard JetDirect",
                      params=[1, 3, 6, 12, 15, 28, 44, 47, 51, 58, 59, 81, 119, 252])
        for _ in range(2):
            t = self.mdns_announce(t) + self.rng.uniform(1.0, 1.1)

    def mdns_announce(self, t: float) -> float:
        site, printer = self.site, self.h["printer"]
        assert printer.mac is not None
        instance = "HP LaserJet Pro M404dn [62183B]._ipp._tcp.local"
        target = "HP-LaserJet-M404.local"
        txt = [b"txtvers=1", b"qtotal=1", b"rp=ipp/print", b"ty=HP LaserJet Pro M404dn",
               b"product=(HP LaserJet Pro M404dn)", b"usb_MFG=HP",
               b"usb_MDL=LaserJet Pro M404dn", b"usb_CMD=PJL,PCL,PCLXL,PCLm,PWG,URF,PDF,POSTSCRIPT",
               b"note=", b"adminurl=http://HP-LaserJet-M404.local./#hId-pgAirPrint",
               b"priority=10",
               b"pdl=application/vnd.hp-PCL,application/vnd.hp-PCLXL,application/PCLm,"
               b"image/urf,image/pwg-raster,application/pdf,application/postscript,image/jpeg",
               b"URF=CP1,IS1,MT1-8-11,OB10,PQ4,RS600,SRGB24,V1.4,W8,DM1",
               b"Color=F", b"Duplex=T", b"Binary=T", b"Transparent=T", b"TLS=1.2",
               b"kind=document,envelope", b"PaperMax=legal-A4", b"mopria-certified=2.0",
               b"UUID=564e4333-3931-3033-3343-a08cfd62183b"]
        answers = [
            DNSRR(rrname="_ipp._tcp.local", type="PTR", ttl=4500, rdata=instance),
            DNSRRSRV(rrname=instance, cacheflush=1, ttl=120, priority=0, weight=0, port=631,
                     target=target),
            DNSRR(rrname=instance, type="TXT", cacheflush=1, ttl=4500, rdata=txt),
            DNSRR(rrname=target, type="A", cacheflush=1, ttl=120, rdata=printer.ip),
        ]
        message = bytes(DNS(id=0, qr=1, aa=1, rd=0, qd=[], an=answers))
        packet = _ipv4(printer.ip, "224.0.0.251", _PROTO_UDP, _udp(5353, 5353, message),
                       ttl=255, ident=printer.next_ipid(), df=False)
        return site.emit(t, _ether("01:00:5e:00:00:fb", printer.mac, _ETH_IPV4, packet))

    def phone_boot(self, t: float) -> None:
        """Link up: CDP and an LLDP-MED fast start (to learn the voice VLAN), then DHCP."""
        self.phone_cdp(t)
        self.phone_lldp(t + self.rng.uniform(0.001, 0.01), fast_start=2)
        self.site.at(t + self.rng.uniform(1.5, 2.5), self.phone_dhcp)

    def phone_cdp(self, t: float) -> None:
        phone = self.h["phone"]
        assert phone.mac is not None
        addresses = [_cdp_addresses(0x0002, phone.ip)] if t >= self.phone_addressed else []
        self.site.emit(t, _cdp(phone.mac, [
            _cdp_tlv(0x0001, _PHONE_CDP_ID),
            *addresses,
            _cdp_tlv(0x0003, "Port 1"),
            _cdp_tlv(0x0004, struct.pack(">I", _CDP_HOST | _CDP_PHONE)),
            _cdp_tlv(0x0005, _PHONE_SOFTWARE),
            _cdp_tlv(0x0006, _PHONE_PLATFORM),
            _cdp_tlv(0x000B, b"\x01"),
            _cdp_tlv(0x0010, struct.pack(">H", 5100)),
        ]))
        self.site.at(t + 60.0 + self.rng.uniform(-0.05, 0.05), self.phone_cdp)

    def phone_lldp(self, t: float, fast_start: int = 0) -> None:
        phone = self.h["phone"]
        assert phone.mac is not None
        addressed = t >= self.phone_addressed
        policy = (5 << 6) | 46  # voice: untagged, VLAN 0, priority 5, DSCP EF
        body = b"".join([
            _lldp_tlv(1, b"\x04" + _mac(phone.mac)),
            _lldp_tlv(2, b"\x03" + _mac(phone.mac)),
            _lldp_tlv(3, struct.pack(">H", 120)),
            _lldp_tlv(4, b"1"),
            _lldp_tlv(5, b"Polycom_0004f2a1b2c3"),
            _lldp_tlv(6, _PHONE_SYSDESC.encode()),
            _lldp_tlv(7, struct.pack(">HH", 0x0024, 0x0024)),
            _lldp_mgmt_ipv4(phone.ip, 1) if addressed else b"",
            _lldp_org(_OUI_IEEE_8023, 1, bytes([0x03]) + struct.pack(">HH", 0x6C01, 30)),
            _lldp_org(_OUI_TIA, 1, struct.pack(">HB", 0x0033, 3)),
            _lldp_org(_OUI_TIA, 2, bytes([1]) + policy.to_bytes(3, "big")),
            _lldp_org(_OUI_TIA, 4, struct.pack(">BH", 0x53, 65)),
            *(_lldp_org(_OUI_TIA, kind, text.encode()) for kind, text in _PHONE_INVENTORY),
            _lldp_tlv(0, b""),
        ])
        self.site.emit(t, _ether("01:80:c2:00:00:0e", phone.mac, _ETH_LLDP, body))
        if fast_start:
            self.site.at(t + 1.0, lambda t2: self.phone_lldp(t2, fast_start - 1))
        else:
            self.site.at(t + 30.0 + self.rng.uniform(-0.02, 0.02), self.phone_lldp)

    def phone_dhcp(self, t: float) -> None:
        site, phone = self.site, self.h["phone"]
        t = site.dhcp(t, phone, hostname="Polycom_0004f2a1b2c3", vendor_class="Polycom-VVX411",
                      params=[1, 3, 6, 12, 15, 28, 42, 43, 66, 150, 160])
        self.phone_addressed = t
        self.sip_call_id = f"{self.rng.getrandbits(64):016x}"
        self.sip_tag = f"{self.rng.getrandbits(32):08X}-{self.rng.getrandbits(16):04X}"
        self.sip_register(t + self.rng.uniform(3.0, 6.0))

    def sip_register(self, t: float) -> None:
        site, rng, phone = self.site, self.rng, self.h["phone"]
        t, pbx = site.lookup(t, phone, "pbx.example.net")
        if not self.sip_nonce:
            self.sip_nonce = f"{rng.getrandbits(96):024x}"
            t = self._sip_transaction(t, pbx, authorized=False) + rng.uniform(0.005, 0.02)
        t = self._sip_transaction(t, pbx, authorized=True)
        site.at(t + 300 * rng.uniform(0.88, 0.92), self.sip_register)

    def _sip_transaction(self, t: float, pbx: _Node, *, authorized: bool) -> float:
        site, phone = self.site, self.h["phone"]
        self.sip_cseq += 1
        request = self._sip_request(authorized)
        site.send(t, phone, pbx, _PROTO_UDP, _udp(5060, 5060, request), df=False)
        t += site.reply_delay(pbx) + self.rng.uniform(0.001, 0.004)
        status = "200 OK" if authorized else "401 Unauthorized"
        response = self._sip_response(status, t)
        return site.send(t, pbx, phone, _PROTO_UDP, _udp(5060, 5060, response), df=False)

    def _sip_headers(self, to_tag: str = "") -> list[str]:
        phone = self.h["phone"]
        return [
            f"Via: SIP/2.0/UDP {phone.ip}:5060;branch=z9hG4bK{self.sip_cseq:03d}"
            f"{self.sip_call_id[:8]};rport",
            f'From: "Reception" <sip:201@pbx.example.net>;tag={self.sip_tag}',
            "To: <sip:201@pbx.example.net>" + (f";tag={to_tag}" if to_tag else ""),
            f"CSeq: {self.sip_cseq} REGISTER",
            f"Call-ID: {self.sip_call_id}",
        ]

    def _sip_request(self, auth: bool) -> bytes:
        phone = self.h["phone"]
        lines = ["REGISTER sip:pbx.example.net SIP/2.0", *self._sip_headers(),
                 f"Contact: <sip:201@{phone.ip}:5060>;methods=\"INVITE, ACK, BYE, CANCEL, "
                 "OPTIONS, INFO, MESSAGE, SUBSCRIBE, NOTIFY, PRACK, UPDATE, REFER\"",
                 f"User-Agent: {_UA_PHONE}", "Accept-Language: en", "Max-Forwards: 70",
                 "Expires: 300"]
        if auth:
            digest = hashlib.md5(f"{self.sip_nonce}:{self.sip_cseq}".encode()).hexdigest()
            lines.append('Authorization: Digest username="201", realm="asterisk", '
                         f'nonce="{self.sip_nonce}", uri="sip:pbx.example.net", '
                         f'response="{digest}", algorithm=MD5')
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _sip_response(self, status: str, t: float) -> bytes:
        phone = self.h["phone"]
        lines = [f"SIP/2.0 {status}", *self._sip_headers(to_tag="as4f1c9e02"),
                 "Server: Asterisk PBX 20.6.0",
                 "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, "
                 "PUBLISH, MESSAGE",
                 "Supported: replaces, timer"]
        if status.startswith("401"):
            lines.append(f'WWW-Authenticate: Digest algorithm=MD5, realm="asterisk", '
                         f'nonce="{self.sip_nonce}"')
        else:
            lines += ["Expires: 300", f"Contact: <sip:201@{phone.ip}:5060>;expires=300",
                      f"Date: {_http_date(t)}"]
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def workstation_boot(self, t: float, name: str) -> None:
        site, rng, ws = self.site, self.rng, self.h[name]
        if name == "eng-ubuntu03":
            t = site.dhcp(t, ws, hostname="eng-ubuntu03",
                          vendor_class="dhcpcd-10.0.6:Linux-6.8.0-45-generic:x86_64:GenuineIntel",
                          params=[1, 121, 33, 3, 6, 12, 15, 26, 28, 51, 54, 58, 59, 119])
            t = self.ubuntu_check(t)
            site.at(t + rng.uniform(120.0, 200.0), self.engineering_session)
            site.at(t + rng.uniform(30.0, 90.0), self.switch_snmp_poll)
        else:
            t = site.dhcp(t, ws, hostname=name.upper(), vendor_class="MSFT 5.0",
                          params=[1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252])
            t = self.ncsi(t + rng.uniform(0.5, 2.0), ws)
            site.at(t + rng.uniform(2.0, 6.0), lambda t2: self.ssdp_search(t2, ws))
        site.at(t + rng.uniform(8.0, 30.0), lambda t2: self.browse(t2, name))

    def ssdp_search(self, t: float, ws: _Node) -> None:
        """Windows' SSDP discovery: M-SEARCH, the camera answers, the workstation fetches the
        UPnP device description the answer points at."""
        site, rng, cam = self.site, self.rng, self.h["camera"]
        assert ws.mac is not None
        sport = ws.port(rng)
        search = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
                  b"MAN: \"ssdp:discover\"\r\nMX: 1\r\nST: upnp:rootdevice\r\n\r\n")
        packet = _ipv4(ws.ip, "239.255.255.250", _PROTO_UDP, _udp(sport, 1900, search), ttl=2,
                       ident=ws.next_ipid(), df=False)
        site.emit(t, _ether("01:00:5e:7f:ff:fa", ws.mac, _ETH_IPV4, packet))
        t += rng.uniform(0.05, 0.9)
        location = f"http://{cam.ip}:49152/rootdesc1.xml"
        answer = ("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\n"
                  f"DATE: {_http_date(t)}\r\nEXT:\r\nLOCATION: {location}\r\n"
                  "OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n"
                  f"SERVER: {_CAMERA_SERVER}\r\nST: upnp:rootdevice\r\n"
                  f"USN: uuid:{_CAMERA_UPNP_UUID}::upnp:rootdevice\r\n\r\n").encode()
        t = site.send(t, cam, ws, _PROTO_UDP, _udp(1900, sport, answer), df=False)
        t += rng.uniform(0.002, 0.02)
        request = _http_request("GET", "/rootdesc1.xml", [
            ("Cache-Control", "no-cache"), ("Connection", "Close"), ("Pragma", "no-cache"),
            ("Accept", "text/xml, application/xml"),
            ("User-Agent", "Microsoft-Windows/10.0 UPnP/1.0"), ("Host", f"{cam.ip}:49152")])
        description = (
            '<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0">\n'
            "<specVersion><major>1</major><minor>0</minor></specVersion>\n"
            f"<URLBase>http://{cam.ip}:49152/</URLBase>\n<device>\n"
            "<deviceType>urn:schemas-upnp-org:device:Basic:1</deviceType>\n"
            "<friendlyName>AXIS P3245-LV - ACCC8E2B41F7</friendlyName>\n"
            "<manufacturer>AXIS</manufacturer>\n"
            "<manufacturerURL>http://www.axis.com/</manufacturerURL>\n"
            "<modelDescription>AXIS P3245-LV Network Camera</modelDescription>\n"
            "<modelName>AXIS P3245-LV</modelName>\n<modelNumber>P3245-LV</modelNumber>\n"
            "<modelURL>http://www.axis.com/</modelURL>\n"
            "<serialNumber>ACCC8E2B41F7</serialNumber>\n"
            f"<UDN>uuid:{_CAMERA_UPNP_UUID}</UDN>\n"
            "<serviceList>\n<service>\n"
            "<serviceType>urn:axis-com:service:BasicService:1</serviceType>\n"
            "<serviceId>urn:axis-com:serviceId:BasicServiceId</serviceId>\n"
            "<controlURL>/upnp/control/BasicServiceId</controlURL>\n"
            "<eventSubURL>/upnp/event/BasicServiceId</eventSubURL>\n"
            "<SCPDURL>/scpd_basic.xml</SCPDURL>\n</service>\n</serviceList>\n"
            f"<presentationURL>http://{cam.ip}:80/</presentationURL>\n"
            "</device>\n</root>\n").encode()
        response = _http_response("200 OK", [
            ("CONTENT-TYPE", 'text/xml; charset="utf-8"'), ("DATE", _http_date(t)),
            ("LAST-MODIFIED", "Wed, 06 Dec 2023 10:21:44 GMT"), ("SERVER", _CAMERA_SERVER),
            ("X-User-Agent", "redsonic"), ("CONNECTION", "close")], description)
        site.http(t, ws, cam, [(request, response)], server_closes=True,
                  linger=(0.0001, 0.0005), work=(0.002, 0.01), port=49152)

    def ncsi(self, t: float, ws: _Node) -> float:
        t, server = self.site.lookup(t, ws, "www.msftconnecttest.com", aaaa=True)
        request = _http_request("GET", "/connecttest.txt", [
            ("Connection", "Close"), ("User-Agent", "Microsoft NCSI"),
            ("Host", "www.msftconnecttest.com")])
        response = _http_response("200 OK", [
            ("Cache-Control", "max-age=30, must-revalidate"), ("Content-Type", "text/plain"),
            ("Last-Modified", "Fri, 04 Sep 2015 22:33:08 GMT"),
            ("ETag", '"0x8D2B4E7DA4C7B2D"'), ("Date", _http_date(t)),
            ("Connection", "close")], b"Microsoft Connect Test")
        return self.site.http(t, ws, server, [(request, response)], server_closes=True,
                              linger=(0.0001, 0.0004))

    def ubuntu_check(self, t: float) -> float:
        ws = self.h["eng-ubuntu03"]
        t, server = self.site.lookup(t, ws, "connectivity-check.ubuntu.com")
        request = _http_request("GET", "/", [
            ("Host", "connectivity-check.ubuntu.com"), ("Accept", "*/*"),
            ("Connection", "close")])
        response = _http_response("204 No Content", [
            ("Date", _http_date(t)), ("Server", "nginx"), ("Connection", "close"),
            ("X-NetworkManager-Status", "online")])
        t = self.site.http(t, ws, server, [(request, response)], server_closes=True,
                           linger=(0.0001, 0.0004))
        self.site.at(t + 300.0, self.ubuntu_check)
        return t

    def browse(self, t: float, name: str) -> None:
        rng, ws = self.rng, self.h[name]
        ua = {"eng-ws01": _UA_CHROME, "ops-lt02": _UA_EDGE}.get(name, _UA_FIREFOX)
        todo = self.first_visits.setdefault(name, rng.sample(["printer", "camera"], 2))
        if todo:
            choice = todo.pop()
        else:
            choice = rng.choices(["printer", "camera", "example", "stackoverflow"],
                                 weights=[2, 3, 3, 2])[0]
        if choice == "printer":
            self.visit_printer(t, ws, ua)
        elif choice == "camera":
            self.visit_camera(t, ws, ua)
        elif choice == "example":
            self.visit_example(t, ws, ua)
        else:
            self.visit_stackoverflow(t, ws, ua)
        self.site.at(t + rng.uniform(25.0, 95.0), lambda t2: self.browse(t2, name))

    def visit_printer(self, t: float, ws: _Node, ua: str) -> None:
        rng, printer = self.rng, self.h["printer"]
        black, pages = rng.randint(18, 64), rng.randint(10_200, 10_900)

        def table(title: str, rows: Sequence[tuple[str, object]]) -> str:
            cells = "\n".join(f'<tr><td class="label">{label}</td><td class="value">{value}</td>'
                              "</tr>" for label, value in rows)
            return f'<h2>{title}</h2>\n<table class="status">\n{cells}\n</table>\n'

        page = "".join([
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            "<title>HP LaserJet Pro M404dn - HP-LaserJet-M404</title>\n",
            '<link rel="stylesheet" href="/hp/device/css/ews.css">\n</head>\n<body>\n',
            '<div id="header"><h1>HP LaserJet Pro M404dn</h1>',
            '<span class="host">HP-LaserJet-M404</span></div>\n',
            '<div id="nav"><ul><li class="active">Home</li><li>Print</li><li>Supplies</li>',
            "<li>Network</li><li>Security</li><li>General</li></ul></div>\n",
            '<div id="content">\n',
            table("Device Status", [
                ("Status", "Ready"), ("Product Name", "HP LaserJet Pro M404dn"),
                ("Product Number", "W1A53A"), ("Serial Number", "PHBBL20817"),
                ("Firmware Datecode", "20240110"), ("Total Pages Printed", pages)]),
            table("Supplies", [
                ("Black Cartridge", f"{black}% (CF258A)"), ("Tray 1", "Letter, Plain"),
                ("Tray 2", "Letter, Plain"), ("Output Bin", "OK")]),
            table("Network Summary", [
                ("Host Name", "HP-LaserJet-M404"), ("IPv4 Address", printer.ip),
                ("Hardware Address", "A0:8C:FD:62:18:3B"), ("Config By", "DHCP"),
                ("Default Gateway", self.site.router.ip), ("Link Speed", "1000TX Full"),
                ("Bonjour Service Name", "HP LaserJet Pro M404dn [62183B]")]),
            '</div>\n<div id="footer">&copy; Copyright 2024 HP Development Company, L.P.'
            "</div>\n</body>\n</html>\n",
        ]).encode()
        request = _http_request("GET", "/", _browser_headers(printer.ip, ua))
        response = _http_response("200 OK", [
            ("Server", _PRINTER_SERVER), ("Content-Type", "text/html; charset=UTF-8"),
            ("Cache-Control", "no-cache"), ("Date", _http_date(t))], page)
        self.site.http(t, ws, printer, [(request, response)], work=(0.01, 0.06))

    def visit_camera(self, t: float, ws: _Node, ua: str) -> None:
        rng, cam = self.rng, self.h["camera"]
        nonce = f"{rng.getrandbits(128):032x}"
        cnonce = f"{rng.getrandbits(64):016x}"

        def authorization(uri: str, nc: int) -> str:
            digest = hashlib.md5(f"{nonce}:{uri}:{nc}:{cnonce}".encode()).hexdigest()
            return (f'Digest username="operator", realm="{_CAMERA_REALM}", nonce="{nonce}", '
                    f'uri="{uri}", algorithm=MD5, response="{digest}", qop=auth, '
                    f'nc={nc:08x}, cnonce="{cnonce}"')

        denied = (b"<html><head><title>401 Unauthorized</title></head>"
                  b"<body>Authorization required.</body></html>")
        index = (b"<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
                 b"<title>AXIS P3245-LV Network Camera</title>\n"
                 b"<script src=\"/camera/js/app.js\"></script>\n</head>\n<body>\n"
                 b"<div id=\"root\" data-model=\"P3245-LV\" data-serial=\"ACCC8E2B41F7\"></div>\n"
                 b"</body>\n</html>\n")
        params = (b"root.Brand.Brand=AXIS\nroot.Brand.ProdFullName=AXIS P3245-LV Network Camera\n"
                  b"root.Brand.ProdNbr=P3245-LV\nroot.Brand.ProdShortName=AXIS P3245-LV\n"
                  b"root.Brand.ProdType=Network Camera\nroot.Brand.WebURL=http://www.axis.com\n"
                  b"root.Properties.Firmware.Version=10.12.220\n"
                  b"root.Properties.Firmware.BuildDate=Dec 06 2023 10:21\n")
        param_uri = "/axis-cgi/param.cgi?action=list&group=root.Brand,root.Properties.Firmware"
        base = _browser_headers(cam.ip, ua)
        common = [("Date", _http_date(t)), ("Server", "Apache")]
        exchanges = [
            (_http_request("GET", "/", base),
             _http_response("401 Unauthorized", [
                 *common,
                 ("WWW-Authenticate", f'Digest realm="{_CAMERA_REALM}", nonce="{nonce}", '
                                      'algorithm=MD5, qop="auth"'),
                 ("Content-Type", "text/html; charset=iso-8859-1")], denied)),
            (_http_request("GET", "/", [*base, ("Authorization", authorization("/", 1))]),
             _http_response("200 OK", [*common, ("Content-Type", "text/html")], index)),
            (_http_request("GET", param_uri,
                           [*base, ("Authorization", authorization(param_uri, 2))]),
             _http_response("200 OK", [*common, ("Content-Type", "text/plain")], params)),
        ]
        self.site.http(t, ws, cam, exchanges, work=(0.004, 0.03))

    def visit_example(self, t: float, ws: _Node, ua: str) -> None:
        t, server = self.site.lookup(t, ws, "www.example.com", aaaa=True)
        page = (b"<!doctype html>\n<html>\n<head>\n<title>Example Domain</title>\n"
                b"<meta charset=\"utf-8\" />\n"
                b"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n"
                b"</head>\n<body>\n<div>\n<h1>Example Domain</h1>\n"
                b"<p>This domain is reserved for use in illustrative examples in documents.</p>\n"
                b"<p><a href=\"https://www.iana.org/domains/example\">More information</a></p>\n"
                b"</div>\n</body>\n</html>\n")
        request = _http_request("GET", "/", _browser_headers("www.example.com", ua))
        response = _http_response("200 OK", [
            ("Age", str(self.rng.randint(10_000, 600_000))),
            ("Cache-Control", "max-age=604800"), ("Content-Type", "text/html; charset=UTF-8"),
            ("Date", _http_date(t)), ("Etag", '"3147526947+ident"'),
            ("Expires", _http_date(t + 604800)),
            ("Last-Modified", "Thu, 17 Oct 2019 07:18:26 GMT"),
            ("Server", "ECS (nyd/D184)"), ("Vary", "Accept-Encoding"), ("X-Cache", "HIT")],
            page)
        self.site.http(t, ws, server, [(request, response)], linger=(4.0, 15.0))

    def visit_stackoverflow(self, t: float, ws: _Node, ua: str) -> None:
        t, server = self.site.lookup(t, ws, "stackoverflow.com", aaaa=True)
        path = self.rng.choice(["/questions/tagged/modbus", "/questions/tagged/plc",
                                "/questions/tagged/scapy"])
        request = _http_request("GET", path, _browser_headers("stackoverflow.com", ua))
        response = _http_response("301 Moved Permanently", [
            ("Connection", "keep-alive"), ("Location", f"https://stackoverflow.com{path}"),
            ("Server", "Varnish"), ("Accept-Ranges", "bytes"), ("Date", _http_date(t)),
            ("Via", "1.1 varnish"), ("X-Served-By", "cache-fra-eddf8230047-FRA"),
            ("X-Cache", "HIT")])
        self.site.http(t, ws, server, [(request, response)], linger=(0.05, 0.3))

    def engineering_session(self, t: float) -> None:
        site, rng = self.site, self.rng
        conn = _Tcp(site, self.h["eng-ubuntu03"], self.h["plc"], 502)
        t = conn.open(t)
        identity = b"".join(bytes([oid, len(value)]) + value for oid, value in _PLC_IDENTITY)
        reply = bytes([0x2B, 0x0E, 0x01, 0x81, 0x00, 0x00, len(_PLC_IDENTITY)]) + identity
        t = self._modbus_exchange(t + rng.uniform(0.001, 0.01), conn, 1,
                                  bytes([0x2B, 0x0E, 0x01, 0x00]), reply, unit=255)
        t = conn.ack(t + rng.uniform(0.04, 0.06), True)
        t = self._modbus_exchange(t + rng.uniform(0.2, 1.0), conn, 2,
                                  struct.pack(">BHH", 3, 0, 10), self._read_holding(0, 10),
                                  unit=255)
        conn.close(t + rng.uniform(0.001, 0.01), by_client=True)

    # ------------------------------------------------------------------ the OT cell

    def static_boot(self, t: float, name: str) -> float:
        """A statically addressed host comes up: two gratuitous ARPs."""
        host = self.h[name]
        t = self.site.garp(t, host) + self.rng.uniform(0.8, 1.2)
        return self.site.garp(t, host)

    def broadcast(self, t: float, host: _Node, sport: int, dport: int, payload: bytes) -> float:
        """A UDP datagram to the subnet broadcast address."""
        assert host.mac is not None
        packet = _ipv4(host.ip, _SUBNET_BROADCAST, _PROTO_UDP, _udp(sport, dport, payload),
                       ttl=host.ttl, ident=host.next_ipid(), df=False)
        return self.site.emit(t, _ether(_BROADCAST, host.mac, _ETH_IPV4, packet))

    def bms_boot(self, t: float) -> None:
        """The Metasys field controller announces itself with an I-Am once it is up."""
        t = self.static_boot(t, "bms")
        self.bacnet_i_am(t + self.rng.uniform(2.0, 4.0))

    def bacnet_i_am(self, t: float) -> float:
        body = (b"\x10\x00\xc4" + _bacnet_oid(8, _BMS_INSTANCE) + b"\x22\x05\xc4\x91\x00\x21"
                + bytes([_BMS_VENDOR_ID]))
        return self.broadcast(t, self.h["bms"], 47808, 47808, _bvlc(0x0B, b"\x01\x00" + body))

    def tia_boot(self, t: float) -> None:
        """The TIA Portal workstation (Windows, static address): gratuitous ARP, NetBIOS name
        registrations, then it browses the cell and at minute ten downloads to the S7 PLC."""
        rng = self.rng
        t = self.static_boot(t, "eng-tia01") + rng.uniform(0.5, 1.5)
        self.nbns_register(t)
        self.site.at(t + rng.uniform(15.0, 25.0), self.enip_browse)
        self.site.at(t + rng.uniform(30.0, 45.0), self.bacnet_browse)
        self.site.at(rng.uniform(240.0, 270.0), self.tia_session)

    def nbns_register(self, t: float) -> None:
        ws = self.h["eng-tia01"]
        names = (("ENG-TIA01", 0x00, 0x0000), ("PLANT", 0x00, 0x8000), ("ENG-TIA01", 0x20, 0x0000))
        tid = self.rng.getrandbits(15)
        for attempt in range(3):
            for i, (name, suffix, nb_flags) in enumerate(names):
                raw = name.ljust(15).encode() + bytes([suffix])
                label = bytes([32]) + bytes(0x41 + (b >> s & 0xF) for b in raw for s in (4, 0))
                message = (struct.pack(">HHHHHH", tid + i, 0x2910, 1, 0, 0, 1) + label + b"\x00"
                           + struct.pack(">HH", 0x20, 1) + b"\xc0\x0c"
                           + struct.pack(">HHIHH", 0x20, 1, 300_000, 6, nb_flags)
                           + socket.inet_aton(ws.ip))
                self.broadcast(t + 0.75 * attempt + 0.001 * i, ws, 137, 137, message)

    def enip_browse(self, t: float) -> None:
        """RSLinx-style EtherNet/IP browse: a broadcast List Identity, the drive answers."""
        site, rng, ws, drive = self.site, self.rng, self.h["eng-tia01"], self.h["drive"]
        sport = ws.port(rng)
        context = bytes(8)
        self.broadcast(t, ws, sport, 44818, _enip(0x63, context))
        vendor, dtype, code, (major, minor), status, serial, name = _DRIVE_IDENTITY
        item = (struct.pack("<H", 1) + struct.pack(">HH4s8s", 2, 44818, socket.inet_aton(drive.ip),
                                                   bytes(8))
                + struct.pack("<HHHBBHI", vendor, dtype, code, major, minor, status, serial)
                + bytes([len(name)]) + name.encode() + b"\x03")
        body = struct.pack("<HHH", 1, 0x0C, len(item)) + item
        site.send(t + rng.uniform(0.002, 0.03), drive, ws, _PROTO_UDP,
                  _udp(44818, sport, _enip(0x63, context, body)), df=False)
        site.at(t + 300.0 + rng.uniform(-5.0, 5.0), self.enip_browse)

    def bacnet_browse(self, t: float) -> None:
        """A BACnet browser on the workstation: Who-Is, the controller's I-Am, then
        ReadProperty of the device object's identity properties."""
        site, rng, ws, bms = self.site, self.rng, self.h["eng-tia01"], self.h["bms"]
        self.broadcast(t, ws, 47808, 47808, _bvlc(0x0B, b"\x01\x00\x10\x08"))
        t = self.bacnet_i_am(t + rng.uniform(0.005, 0.05)) + rng.uniform(0.05, 0.3)
        oid = b"\x0c" + _bacnet_oid(8, _BMS_INSTANCE)
        invoke = rng.randint(0, 200)
        for prop, value in _BMS_PROPERTIES:
            request = bytes([0x00, 0x05, invoke, 0x0C]) + oid + bytes([0x19, prop])
            t = site.send(t, ws, bms, _PROTO_UDP,
                          _udp(47808, 47808, _bvlc(0x0A, b"\x01\x04" + request)), df=False)
            ack = (bytes([0x30, invoke, 0x0C]) + oid + bytes([0x19, prop, 0x3E])
                   + _bacnet_string(value) + b"\x3f")
            t = site.send(t + rng.uniform(0.003, 0.02), bms, ws, _PROTO_UDP,
                          _udp(47808, 47808, _bvlc(0x0A, b"\x01\x00" + ack)), df=False)
            invoke = (invoke + 1) & 0xFF
            t += rng.uniform(0.001, 0.01)

    def s7_boot(self, t: float) -> None:
        self.s7_run_since = t + self.rng.uniform(2.0, 3.0)
        self.static_boot(t, "s7-plc")

    def tia_session(self, t: float) -> None:
        """TIA Portal goes online with the S7-1200: reads its identity and mode, then
        downloads OB1 (the PLC pulls the block)."""
        rng = self.rng
        s7 = _S7Link(self.site, rng, self.h["eng-tia01"], self.h["s7-plc"])
        t = s7.online(t)
        padded = _S7_ORDER_NUMBER.ljust(20).encode()
        major, minor, patch = _S7_FIRMWARE
        t = s7.szl(t, 0x0011, 28, [
            struct.pack(">H20sHHH", 1, padded, 0, 0, 1),
            struct.pack(">H20sHHH", 6, padded, 0, 0, 1),
            struct.pack(">H20sHBBBB", 7, b" " * 20, 0, ord("V"), major, minor, patch)])
        t = s7.szl(t, 0x001C, 34, [struct.pack(">H32s", index, text.encode())
                                   for index, text in _S7_COMPONENTS])
        t = s7.mode(t, _S7_RUN, self.s7_run_since)
        t = s7.conn.ack(t + rng.uniform(*s7.conn.client.stack.delayed_ack), True)

        # Download: the PG asks to load OB1, the PLC fetches it and says when it is done.
        block = b"pp\x01\x01\x01\x08" + struct.pack(">H", 1) + rng.randbytes(176)
        s7.ref += 1
        t = s7.exchange(t + rng.uniform(2.0, 6.0), True,
                        _s7(1, s7.ref, _s7_filename_param(0x1A, 0, _S7_BLOCK) + b"\x0d1"
                            + f"{len(block):06d}{96:06d}".encode()),
                        _s7(3, s7.ref, b"\x1a"))
        s7.plc_ref += 1
        t = s7.exchange(t, False, _s7(1, s7.plc_ref, _s7_filename_param(0x1B, 0, _S7_BLOCK)),
                        _s7(3, s7.plc_ref, b"\x1b\x00", struct.pack(">HH", len(block), 0x00FB) + block))
        s7.plc_ref += 1
        ended = bytes([0x1C, 0]) + bytes(6) + bytes([len(_S7_BLOCK)]) + _S7_BLOCK.encode()
        t = s7.exchange(t, False, _s7(1, s7.plc_ref, ended), _s7(3, s7.plc_ref, b"\x1c"),
                        work=(0.01, 0.05))
        t = s7.conn.ack(t + rng.uniform(*s7.conn.server.stack.delayed_ack), False)
        s7.conn.close(t + rng.uniform(5.0, 20.0), by_client=True)

    def intrusion(self, t: float) -> None:
        """The incident: an unknown laptop sweeps the subnet with ARP, scans the S7 PLC's
        ports, then connects to it and stops the CPU."""
        site, rng, intruder, plc = self.site, self.rng, self.h["intruder"], self.h["s7-plc"]
        assert intruder.mac is not None
        t = site.garp(t, intruder) + rng.uniform(5.0, 10.0)
        for last in range(1, 255):  # nmap -sn 10.20.0.0/24
            target_ip = f"10.20.0.{last}"
            if target_ip == intruder.ip:
                continue
            site.emit(t, _ether(_BROADCAST, intruder.mac, _ETH_ARP,
                                _arp(1, intruder.mac, intruder.ip, _ZERO_MAC, target_ip)))
            target = site.by_ip.get(target_ip)
            if target is not None and target.mac is not None:
                reply = t + site.local_delay()
                site.emit(reply, _ether(intruder.mac, target.mac, _ETH_ARP,
                                        _arp(2, target.mac, target.ip, intruder.mac, intruder.ip)))
                intruder.arp[target.ip] = (reply, reply + intruder.stack.arp_life)
                target.arp[intruder.ip] = (reply, reply + target.stack.arp_life)
            t += rng.uniform(0.004, 0.008)
        t += rng.uniform(3.0, 6.0)
        sport = rng.randint(40000, 60000)
        for port in rng.sample(_SCANNED_PORTS, len(_SCANNED_PORTS)):  # nmap -sS, closed ports reset
            seq = rng.getrandbits(32)
            t = site.send(t, intruder, plc, _PROTO_TCP, _tcp(sport, port, seq, 0, "S", 1024, _OPT_MSS))
            answer = "SA" if port == 102 else "RA"
            t = site.send(t + site.reply_delay(plc), plc, intruder, _PROTO_TCP,
                          _tcp(port, sport, rng.getrandbits(32) if port == 102 else 0,
                               (seq + 1) & 0xFFFFFFFF, answer, 8192 if port == 102 else 0,
                               _OPT_MSS if port == 102 else b""))
            if port == 102:
                t = site.send(t + site.local_delay(), intruder, plc, _PROTO_TCP,
                              _tcp(sport, port, (seq + 1) & 0xFFFFFFFF, 0, "R", 0, b""))
            t += rng.uniform(0.0005, 0.002)
        s7 = _S7Link(site, rng, intruder, plc)
        t = s7.online(t + rng.uniform(20.0, 40.0))
        t = s7.mode(t, _S7_RUN, self.s7_run_since)
        s7.ref += 1
        stopped = t + rng.uniform(1.0, 3.0)
        t = s7.exchange(stopped, True, _s7(1, s7.ref, b"\x29" + bytes(5) + b"\x09P_PROGRAM"),
                        _s7(3, s7.ref, b"\x29"), work=(0.02, 0.08))
        t = s7.mode(t + rng.uniform(0.3, 1.0), _S7_STOP, t)
        t = s7.conn.ack(t + rng.uniform(*s7.conn.client.stack.delayed_ack), True)
        s7.conn.close(t + rng.uniform(2.0, 5.0), by_client=True)


class _S7Link:
    """An S7comm session of a programming device (or anyone) with the S7-1200."""

    def __init__(self, site: _Site, rng: random.Random, client: _Node, plc: _Node) -> None:
        self.rng = rng
        self.conn = _Tcp(site, client, plc, 102)
        self.ref, self.plc_ref, self.seq = rng.randint(0x0100, 0x0800), rng.randint(0x0100, 0xF000), 0

    def exchange(self, t: float, from_pg: bool, request: bytes, reply: bytes,
                 work: tuple[float, float] = (0.002, 0.01)) -> float:
        t = self.conn.push(t + self.rng.uniform(0.0005, 0.003), from_pg, request)
        return self.conn.push(t + self.rng.uniform(*work), not from_pg, reply)

    def online(self, t: float) -> float:
        """TCP, COTP connection to rack 0 slot 1, S7 communication setup."""
        rng = self.rng
        t = self.conn.open(t)
        pg_cotp = rng.randint(1, 0xFFFF)
        t = self.exchange(t, True, _cotp_connect(0xE0, 0, pg_cotp),
                          _cotp_connect(0xD0, pg_cotp, rng.randint(1, 0xFFFF)))
        self.ref += 1
        return self.exchange(t, True, _s7(1, self.ref, b"\xf0\x00\x00\x01\x00\x01\x03\xc0"),
                             _s7(3, self.ref, b"\xf0\x00\x00\x01\x00\x01\x00\xf0"))

    def szl(self, t: float, szl_id: int, size: int, records: Sequence[bytes]) -> float:
        self.ref, self.seq = self.ref + 1, self.seq + 1
        return self.exchange(t, True, _s7_szl_request(self.ref, szl_id, 0),
                             _s7_szl_response(self.ref, self.seq, szl_id, size, records))

    def mode(self, t: float, state: tuple[int, int], since: float) -> float:
        event, bzu_id = state
        record = struct.pack(">HBB4s4s", event, 0xFF, bzu_id, bytes(4), bytes(4))
        return self.szl(t, 0x0424, 20, [record + _s7_time(since)])


def build_demo_capture(path: str | pathlib.Path, *, seed: int = 7) -> pathlib.Path:
    """Write the demo site's capture (classic pcap, Ethernet, µs) to ``path`` and return it."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = _Scenario(seed).build()
    writer = PcapWriter(str(out), linktype=1, endianness="<", sync=False)
    try:
        writer.write_header(None)
        for us, _, raw in frames:
            sec, usec = divmod(us, 1_000_000)
            writer.write_packet(raw, sec=_EPOCH + sec, usec=usec)
    finally:
        writer.close()
    return out
