"""The protocol catalog: names, and the ethertypes, IP protocols and ports that imply them.

The decoder labels every packet with one protocol id from lookup tables built here,
so naming a protocol costs one array read on the hot path. The most specific label
wins: an application protocol by its server port, else the transport, else the
network or link-layer protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Protocol:
    name: str
    ethertypes: tuple[int, ...] = ()
    ip_protos: tuple[int, ...] = ()
    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    llc_saps: tuple[int, ...] = ()
    snap_pids: tuple[int, ...] = field(default=())  # (OUI << 16) | PID


CATALOG: tuple[Protocol, ...] = (
    Protocol("unknown"),
    # link layer
    Protocol("ethernet"),
    Protocol("arp", ethertypes=(0x0806,)),
    Protocol("rarp", ethertypes=(0x8035,)),
    Protocol("ipv4", ethertypes=(0x0800,)),
    Protocol("ipv6", ethertypes=(0x86DD,)),
    Protocol("lldp", ethertypes=(0x88CC,)),
    Protocol("stp", llc_saps=(0x42,)),
    Protocol("cdp", snap_pids=(0x00000C2000,)),
    Protocol("vtp", snap_pids=(0x00000C2003,)),
    Protocol("dtp", snap_pids=(0x00000C2004,)),
    Protocol("pvst", snap_pids=(0x00000C010B,)),
    Protocol("eapol", ethertypes=(0x888E,)),
    Protocol("lacp", ethertypes=(0x8809,)),
    Protocol("ptp", ethertypes=(0x88F7,), udp=(319, 320)),
    Protocol("profinet", ethertypes=(0x8892,)),
    Protocol("goose", ethertypes=(0x88B8,)),
    Protocol("gse", ethertypes=(0x88B9,)),
    Protocol("sv", ethertypes=(0x88BA,)),
    Protocol("ethercat", ethertypes=(0x88A4,)),
    Protocol("powerlink", ethertypes=(0x88AB,)),
    Protocol("sercos3", ethertypes=(0x88CD,)),
    Protocol("mrp", ethertypes=(0x88E3,)),
    Protocol("hsr", ethertypes=(0x892F,)),
    Protocol("prp", ethertypes=(0x88FB,)),
    Protocol("cfm", ethertypes=(0x8902,)),
    Protocol("loopback", ethertypes=(0x9000,)),
    Protocol("macsec", ethertypes=(0x88E5,)),
    Protocol("wol", ethertypes=(0x0842,)),
    Protocol("homeplug", ethertypes=(0x88E1,)),
    Protocol("ipx", ethertypes=(0x8137,), llc_saps=(0xE0,)),
    Protocol("netbios-llc", llc_saps=(0xF0,)),
    Protocol("isis", llc_saps=(0xFE,)),
    Protocol("mpls", ethertypes=(0x8847, 0x8848)),
    Protocol("pppoe", ethertypes=(0x8863, 0x8864)),
    Protocol("llc"),
    # network layer
    Protocol("icmp", ip_protos=(1,)),
    Protocol("igmp", ip_protos=(2,)),
    Protocol("icmpv6", ip_protos=(58,)),
    Protocol("tcp", ip_protos=(6,)),
    Protocol("udp", ip_protos=(17,)),
    Protocol("sctp", ip_protos=(132,)),
    Protocol("gre", ip_protos=(47,)),
    Protocol("esp", ip_protos=(50,)),
    Protocol("ah", ip_protos=(51,)),
    Protocol("ospf", ip_protos=(89,)),
    Protocol("eigrp", ip_protos=(88,)),
    Protocol("vrrp", ip_protos=(112,)),
    Protocol("pim", ip_protos=(103,)),
    Protocol("ip-in-ip", ip_protos=(4, 41)),
    # IT applications
    Protocol("ftp-data", tcp=(20,)),
    Protocol("ftp", tcp=(21,)),
    Protocol("ssh", tcp=(22,)),
    Protocol("telnet", tcp=(23,)),
    Protocol("smtp", tcp=(25, 587)),
    Protocol("dns", tcp=(53,), udp=(53,)),
    Protocol("dhcp", udp=(67, 68)),
    Protocol("tftp", udp=(69,)),
    Protocol("http", tcp=(80, 8000, 8008, 8080, 8081, 8888)),
    Protocol("kerberos", tcp=(88,), udp=(88,)),
    Protocol("pop3", tcp=(110,)),
    Protocol("ntp", udp=(123,)),
    Protocol("dcerpc", tcp=(135,), udp=(135,)),
    Protocol("netbios-ns", udp=(137,)),
    Protocol("netbios-dgm", udp=(138,)),
    Protocol("netbios-ssn", tcp=(139,)),
    Protocol("imap", tcp=(143,)),
    Protocol("snmp", udp=(161,)),
    Protocol("snmp-trap", udp=(162,)),
    Protocol("ldap", tcp=(389,), udp=(389,)),
    Protocol("https", tcp=(443, 8443)),
    Protocol("smb", tcp=(445,)),
    Protocol("isakmp", udp=(500, 4500)),
    Protocol("syslog", udp=(514,), tcp=(6514,)),
    Protocol("rtsp", tcp=(554,)),
    Protocol("ipp", tcp=(631,)),
    Protocol("ldaps", tcp=(636,)),
    Protocol("imaps", tcp=(993,)),
    Protocol("pop3s", tcp=(995,)),
    Protocol("socks", tcp=(1080,)),
    Protocol("mssql", tcp=(1433,)),
    Protocol("oracle", tcp=(1521,)),
    Protocol("radius", udp=(1812, 1813)),
    Protocol("ssdp", udp=(1900,)),
    Protocol("nfs", tcp=(2049,), udp=(2049,)),
    Protocol("mysql", tcp=(3306,)),
    Protocol("rdp", tcp=(3389,)),
    Protocol("stun", udp=(3478,)),
    Protocol("sip", tcp=(5060,), udp=(5060,)),
    Protocol("sips", tcp=(5061,)),
    Protocol("mdns", udp=(5353,)),
    Protocol("llmnr", udp=(5355,)),
    Protocol("postgresql", tcp=(5432,)),
    Protocol("vnc", tcp=(5900,)),
    Protocol("coap", udp=(5683,)),
    Protocol("amqp", tcp=(5672,)),
    Protocol("redis", tcp=(6379,)),
    Protocol("xmpp", tcp=(5222,)),
    Protocol("rtp", udp=(5004,)),
    Protocol("jetdirect", tcp=(9100,)),
    Protocol("mqtt", tcp=(1883,)),
    Protocol("mqtts", tcp=(8883,)),
    Protocol("ws-discovery", udp=(3702,)),
    Protocol("dhcpv6", udp=(546, 547)),
    Protocol("netflow", udp=(2055,)),
    Protocol("vxlan", udp=(4789,)),
    Protocol("dropbox-lsp", udp=(17500,)),
    Protocol("tplink-shp", tcp=(9999,)),
    Protocol("tuya", udp=(6666, 6667)),
    Protocol("rmi", tcp=(1099,)),
    # OT / ICS applications
    Protocol("modbus", tcp=(502,)),
    Protocol("s7comm", tcp=(102,)),
    Protocol("enip", tcp=(44818,), udp=(44818,)),
    Protocol("cip-io", udp=(2222,)),
    Protocol("dnp3", tcp=(20000,), udp=(20000,)),
    Protocol("bacnet", udp=(47808,), llc_saps=(0x82,)),
    Protocol("iec104", tcp=(2404,)),
    Protocol("opcua", tcp=(4840,)),
    Protocol("profinet-cm", udp=(34964,)),
    Protocol("melsec", tcp=(5007,), udp=(5006, 5007)),
    Protocol("fins", udp=(9600,), tcp=(9600,)),
    Protocol("hart-ip", tcp=(5094,), udp=(5094,)),
    Protocol("ads", tcp=(48898,), udp=(48899,)),
    Protocol("bsap", udp=(1234,)),
    Protocol("synchrophasor", tcp=(4712,), udp=(4713,)),
    Protocol("codesys", tcp=(2455, 1217)),
    Protocol("ge-srtp", tcp=(18245,)),
    Protocol("omron-fins", tcp=(9601,)),
    Protocol("knxnet-ip", udp=(3671,)),
    Protocol("iccp", tcp=(2403,)),
    Protocol("foundation-fieldbus", tcp=(1089, 1090, 1091), udp=(1089, 1090, 1091)),
    Protocol("emerson-roc", tcp=(4000,)),
)

assert len(CATALOG) <= 256, "protocol ids must fit in one byte (device bitmasks)"

NAMES: tuple[str, ...] = tuple(p.name for p in CATALOG)
ID: dict[str, int] = {name: i for i, name in enumerate(NAMES)}


def _tables() -> dict[str, np.ndarray]:
    ethertype = np.zeros(65536, dtype=np.int64)
    ip_proto = np.zeros(256, dtype=np.int64)
    tcp = np.zeros(65536, dtype=np.int64)
    udp = np.zeros(65536, dtype=np.int64)
    llc = np.zeros(256, dtype=np.int64)
    snap: dict[int, int] = {}
    for pid, proto in enumerate(CATALOG):
        for v in proto.ethertypes:
            ethertype[v] = pid
        for v in proto.ip_protos:
            ip_proto[v] = pid
        for v in proto.tcp:
            tcp[v] = pid
        for v in proto.udp:
            udp[v] = pid
        for v in proto.llc_saps:
            llc[v] = pid
        for v in proto.snap_pids:
            snap[v] = pid
    snap_keys = np.array(sorted(snap), dtype=np.int64)
    snap_ids = np.array([snap[k] for k in sorted(snap)], dtype=np.int64)
    return {
        "ethertype": ethertype, "ip_proto": ip_proto, "tcp": tcp, "udp": udp,
        "llc": llc, "snap_keys": snap_keys, "snap_ids": snap_ids,
    }


TABLES = _tables()


def names_from_mask(mask: list[int] | np.ndarray) -> list[str]:
    """Protocol names whose bits are set in a 4×64-bit mask, alphabetically."""
    out = []
    for word, bits in enumerate(mask):
        bits = int(bits) & 0xFFFFFFFFFFFFFFFF
        while bits:
            low = bits & -bits
            pid = word * 64 + low.bit_length() - 1
            if pid:
                out.append(NAMES[pid])
            bits ^= low
    return sorted(out)
