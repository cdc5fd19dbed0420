"""ARP (RFC 826): who asks for whom, and who claims which address, for the detection engines.

The decoder already couples every ARP sender's MAC and IP into the inventory; this module
only turns requests into `arp_request` signals (many targets from one sender in little time
is an ARP scan) and replies and announcements into `arp_claim` signals (one IP claimed by
several MACs is ARP spoofing).
"""

from __future__ import annotations

import ipaddress
import struct

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

ETHERTYPE_ARP = 0x0806
REQUEST, REPLY = 1, 2
_HEADER = struct.Struct("!HHBBH")


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@register
class Arp(Dissector):
    name = "arp"
    ethertypes = frozenset({ETHERTYPE_ARP})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if len(data) < _HEADER.size:
            out.error("ARP header truncated")
            return
        htype, ptype, hlen, plen, op = _HEADER.unpack_from(data)
        if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
            return  # not Ethernet/IPv4 ARP: nothing the engines use
        if len(data) < 28:
            out.error("ARP message truncated")
            return
        sha, spa, tpa = data[8:14], data[14:18], data[24:28]
        sender = str(ipaddress.IPv4Address(spa))
        target = str(ipaddress.IPv4Address(tpa))
        if op == REQUEST:
            if spa == tpa:  # a gratuitous request announces the sender's own address
                out.signal("arp_claim", ip=sender, mac=_mac(sha))
            elif spa != b"\0\0\0\0":  # probes (sender 0.0.0.0) check for conflicts, no scan
                out.signal("arp_request", target=target)
        elif op == REPLY and spa != b"\0\0\0\0":
            out.signal("arp_claim", ip=sender, mac=_mac(sha))
        else:
            out.error(f"ARP operation {op}")
