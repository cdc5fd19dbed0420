"""DHCPv6 (RFC 8415): a client's DUID (often embedding its MAC), vendor class and FQDN
(RFC 4704), which identify hosts that never use DHCPv4 or whose IPv6 address rotates.

Client messages describe their sender. Of a server's messages only its own DUID (Server
Identifier) is used; the client's options it echoes are the client's words, already seen.
Relay messages are sent by a relay agent on a client's behalf, so they are skipped.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.dns import DNSError, incomplete, plain_name

CLIENT_MESSAGES = frozenset({1, 3, 4, 5, 6, 8, 9, 11})  # SOLICIT … INFORMATION-REQUEST
SERVER_MESSAGES = frozenset({2, 7, 10})  # ADVERTISE, REPLY, RECONFIGURE
OPT_CLIENTID, OPT_SERVERID, OPT_USER_CLASS, OPT_VENDOR_CLASS, OPT_FQDN = 1, 2, 15, 16, 39
MAX_OPTIONS = 128
MAX_ITEMS = 16


def opaque_items(data: bytes) -> list[bytes] | None:
    """A list of 2-byte-length-prefixed opaque strings (user and vendor class data)."""
    items: list[bytes] = []
    off = 0
    while off < len(data) and len(items) < MAX_ITEMS:
        length = (data[off] << 8) | data[off + 1] if off + 1 < len(data) else -1
        if length < 0 or off + 2 + length > len(data):
            return None
        items.append(data[off + 2 : off + 2 + length])
        off += 2 + length
    return items


def text(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip()


@register
class DHCPv6(Dissector):
    name = "dhcpv6"
    udp_ports = frozenset({546, 547})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if len(data) < 4:
            if not incomplete(pkt):
                out.error(f"DHCPv6 message of {len(data)} bytes")
            return
        kind = data[0]
        if kind not in CLIENT_MESSAGES and kind not in SERVER_MESSAGES:
            return  # relay or lease-query messages: not the sender's own identity
        options: list[tuple[int, bytes]] = []
        problem = ""
        off = 4
        while off < len(data) and len(options) < MAX_OPTIONS:
            if off + 4 > len(data):
                problem = "truncated DHCPv6 option header"
                break
            code = (data[off] << 8) | data[off + 1]
            length = (data[off + 2] << 8) | data[off + 3]
            value = data[off + 4 : off + 4 + length]
            if len(value) != length:
                problem = f"DHCPv6 option {code} runs past the end of the message"
                break
            options.append((code, value))
            off += 4 + length
        if problem and not incomplete(pkt):
            out.error(problem)
        if kind in SERVER_MESSAGES:
            for code, value in options:
                if code == OPT_SERVERID and value:
                    out.fact("dhcpv6_duid", value.hex(), confidence=0.7)
            return
        for code, value in options:
            if code == OPT_CLIENTID and value:
                out.fact("dhcpv6_duid", value.hex(), confidence=0.8)
            elif code == OPT_VENDOR_CLASS:
                items = opaque_items(value[4:]) if len(value) >= 4 else None
                if items is None:
                    out.error("malformed DHCPv6 vendor class option")
                    continue
                for item in items:
                    out.fact("dhcpv6_vendor_class", text(item), confidence=0.8)
            elif code == OPT_USER_CLASS:
                items = opaque_items(value)
                if items is None:
                    out.error("malformed DHCPv6 user class option")
                    continue
                for item in items:
                    out.fact("dhcp_user_class", text(item), confidence=0.7)
            elif code == OPT_FQDN:
                if not value:
                    out.error("empty DHCPv6 client FQDN option")
                    continue
                try:
                    name = plain_name(value[1:])
                except DNSError as e:
                    out.error(f"DHCPv6 client FQDN: {e}")
                    continue
                out.fact("fqdn", name, confidence=0.8)
