"""LLDP (IEEE 802.1AB): switches, routers, phones and PLCs announce their name, model and port.

The LLDPDU is a list of TLVs (7-bit type, 9-bit length). The mandatory Chassis ID, Port ID
and the optional System Name, System Description, System Capabilities and Management Address
TLVs identify the sender; of the organisationally specific TLVs only the LLDP-MED inventory
set (TIA, ANSI/TIA-1057) is read, because phones and cameras state vendor, model, serial and
firmware there.
"""

from __future__ import annotations

import socket

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_TLVS = 512

CHASSIS_MAC, CHASSIS_NETWORK = 4, 5
PORT_MAC, PORT_NETWORK = 3, 4

# System Capabilities bits (802.1AB-2016 Table 8-4), bit 0 first
CAPABILITIES = ("other", "repeater", "bridge", "wlan-ap", "router", "telephone", "docsis",
                "station", "c-vlan", "s-vlan", "tpmr")

OUI_TIA = b"\x00\x12\xbb"
# LLDP-MED inventory TLV subtypes (ANSI/TIA-1057 10.2.6) -> fact attribute
MED_INVENTORY = {6: "firmware", 7: "firmware", 8: "serial", 9: "vendor", 10: "model"}


def text(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip()


def network_address(value: bytes) -> str | None:
    """An IANA-family-prefixed address (RFC 3232 address family numbers): 1 IPv4, 2 IPv6."""
    family, addr = value[:1], value[1:]
    if family == b"\x01" and len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    if family == b"\x02" and len(addr) == 16:
        return socket.inet_ntop(socket.AF_INET6, addr)
    return None


def identifier(subtype: int, value: bytes, mac: int, network: int) -> str:
    if subtype == mac and len(value) == 6:
        return value.hex(":")
    if subtype == network:
        return network_address(value) or value.hex()
    return text(value)


@register
class LLDP(Dissector):
    name = "lldp"
    ethertypes = frozenset({0x88CC})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        end = len(data)
        pos = 0
        for index in range(MAX_TLVS):
            if pos == end:
                if index == 0:
                    out.error("empty LLDPDU")
                return  # no End TLV: tolerated
            if pos + 2 > end:
                out.error("truncated LLDP TLV header")
                return
            head = (data[pos] << 8) | data[pos + 1]
            kind, length = head >> 9, head & 0x1FF
            pos += 2
            if pos + length > end:
                out.error(f"LLDP TLV type {kind} longer than the frame")
                return
            value = data[pos : pos + length]
            pos += length
            if index == 0 and kind != 1:
                out.error("LLDPDU does not start with a Chassis ID TLV")
                return
            if kind == 0:
                return
            if kind == 1 or kind == 2:
                if length < 2:
                    out.error("LLDP ID TLV too short")
                    continue
                if kind == 1:
                    out.fact("lldp_chassis_id", identifier(value[0], value[1:], CHASSIS_MAC,
                                                           CHASSIS_NETWORK), confidence=0.9)
                else:
                    out.fact("lldp_port_id", identifier(value[0], value[1:], PORT_MAC, PORT_NETWORK),
                             confidence=0.9)
            elif kind == 5:
                out.fact("lldp_system_name", text(value), confidence=0.9)
            elif kind == 6:
                out.fact("lldp_system_description", text(value), confidence=0.9)
            elif kind == 7:
                if length != 4:
                    out.error("LLDP System Capabilities TLV length is not 4")
                    continue
                enabled = (value[2] << 8) | value[3]
                names = [n for bit, n in enumerate(CAPABILITIES) if enabled >> bit & 1]
                if names:
                    out.fact("lldp_capabilities", ",".join(names), confidence=0.9)
            elif kind == 8:
                self._management_address(value, out)
            elif kind == 127 and length >= 4 and value[:3] == OUI_TIA:
                attribute = MED_INVENTORY.get(value[3])
                if attribute:
                    out.fact(attribute, text(value[4:]), confidence=0.8)
        out.error("too many LLDP TLVs")

    @staticmethod
    def _management_address(value: bytes, out: Evidence) -> None:
        # address string length (subtype byte + address), subtype, address, interface fields, OID
        if len(value) < 2 or value[0] < 2 or 1 + value[0] > len(value):
            out.error("bad LLDP Management Address length")
            return
        shown = network_address(value[1 : 1 + value[0]])
        if shown:
            out.fact("lldp_management_ip", shown, confidence=0.8)
