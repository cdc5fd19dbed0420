"""CDP (Cisco Discovery Protocol): Cisco switches, routers and phones name their model and IOS.

After a 4-byte header (version, TTL, checksum) the PDU is a list of TLVs with 16-bit type
and 16-bit length (the length counts the 4-byte TLV header). Device ID, Port ID,
Capabilities, Software Version and Platform identify the sender; the other TLVs (addresses,
VTP domain, native VLAN, power, ...) have no fact attribute yet.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_TLVS = 256

DEVICE_ID, PORT_ID, CAPABILITIES, SOFTWARE_VERSION, PLATFORM = 0x0001, 0x0003, 0x0004, 0x0005, 0x0006
TEXT_TLVS = {DEVICE_ID: "cdp_device_id", PORT_ID: "cdp_port_id",
             SOFTWARE_VERSION: "cdp_software_version", PLATFORM: "cdp_platform"}

# Capabilities TLV bits, least significant first
CAPABILITY_NAMES = ("router", "trans-bridge", "source-route-bridge", "switch", "host", "igmp",
                    "repeater", "phone", "remote-managed", "cvta", "two-port-mac-relay")


@register
class CDP(Dissector):
    name = "cdp"
    protocols = frozenset({"cdp"})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        end = len(data)
        if end < 4:
            out.error("truncated CDP header")
            return
        if data[0] not in (1, 2):
            out.error(f"unknown CDP version {data[0]}")
            return
        pos = 4
        for _ in range(MAX_TLVS):
            if pos + 4 > end:
                if end - pos > 0 and any(data[pos:end]):
                    out.error("truncated CDP TLV header")
                return
            kind = (data[pos] << 8) | data[pos + 1]
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 4 or pos + length > end:
                if kind == 0 and length == 0:
                    return  # Ethernet padding after the last TLV
                out.error(f"bad CDP TLV length {length} (type {kind:#06x})")
                return
            value = data[pos + 4 : pos + length]
            pos += length
            attribute = TEXT_TLVS.get(kind)
            if attribute:
                out.fact(attribute, value.decode("utf-8", "replace").strip(), confidence=0.9)
            elif kind == CAPABILITIES:
                if len(value) != 4:
                    out.error("CDP Capabilities TLV length is not 8")
                    continue
                bits = int.from_bytes(value, "big")
                names = [n for bit, n in enumerate(CAPABILITY_NAMES) if bits >> bit & 1]
                if names:
                    out.fact("cdp_capabilities", ",".join(names), confidence=0.9)
        out.error("too many CDP TLVs")
