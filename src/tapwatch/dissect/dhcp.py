"""DHCPv4 (RFC 2131, options RFC 2132): what a client says about itself when it asks for an
address — host name, vendor class, the option list it requests (a strong OS fingerprint),
client id, FQDN and user class. Seen from 0.0.0.0 before it has an address, so these
facts often land on the MAC alone.

A client's own message speaks about the frame's sender. A message relayed or forwarded on
its behalf (giaddr set, or chaddr not the sender) and the server's replies speak about the
host named by chaddr, so those facts are filed under that MAC, never under the relay or
the server. From replies only what the server assigns to the client (host name, FQDN) is
kept.
"""

from __future__ import annotations

from collections.abc import Callable

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.dns import DNSError, incomplete, plain_name

BOOTREQUEST, BOOTREPLY = 1, 2
HEADER = 236  # fixed BOOTP header, then the magic cookie and the options
MAGIC = b"\x63\x82\x53\x63"
SNAME, FILE = slice(44, 108), slice(108, 236)
OPT_PAD, OPT_END, OPT_OVERLOAD = 0, 255, 52
HOSTNAME, PARAMS, VENDOR_CLASS, CLIENT_ID, USER_CLASS, FQDN = 12, 55, 60, 61, 77, 81


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def read_options(area: bytes, into: dict[int, bytes]) -> str | None:
    """Adds the options of one area to `into` (values of a repeated code are concatenated,
    RFC 3396); returns an error reason when an option runs past the area."""
    off = 0
    n = len(area)
    while off < n:
        code = area[off]
        if code == OPT_PAD:
            off += 1
            continue
        if code == OPT_END:
            return None
        if off + 1 >= n:
            return f"option {code} has no length"
        length = area[off + 1]
        value = area[off + 2 : off + 2 + length]
        if len(value) != length:
            return f"option {code} runs past the end of the message"
        into[code] = into.get(code, b"") + value
        off += 2 + length
    return None


def text(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip()


def user_classes(value: bytes) -> list[str]:
    """Option 77: RFC 3004 length-prefixed instances when the value is exactly that, else
    the value as one string (Windows sends a bare string)."""
    items: list[str] = []
    off = 0
    while off < len(value):
        length = value[off]
        if length == 0 or off + 1 + length > len(value):
            return [text(value)]
        items.append(text(value[off + 1 : off + 1 + length]))
        off += 1 + length
    return items


Say = Callable[[str, str, float], None]


@register
class DHCP(Dissector):
    name = "dhcp"
    udp_ports = frozenset({67, 68})
    # a client's transaction id and seconds-elapsed change with each try and each renewal
    novelty_ignore = ((4, 6),)

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if len(data) < HEADER:
            if not incomplete(pkt):
                out.error(f"BOOTP message of {len(data)} bytes, shorter than its {HEADER}-byte header")
            return
        op, hlen = data[0], data[2]
        if op not in (BOOTREQUEST, BOOTREPLY):
            out.error(f"BOOTP op {op}")
            return
        if data[HEADER : HEADER + 4] != MAGIC:
            return  # plain BOOTP (no options): nothing to say
        options: dict[int, bytes] = {}
        problem = read_options(data[HEADER + 4 :], options)
        overload = options.get(OPT_OVERLOAD, b"\x00")[:1]
        if not problem and overload in (b"\x01", b"\x03"):
            problem = read_options(data[FILE], options)
        if not problem and overload in (b"\x02", b"\x03"):
            problem = read_options(data[SNAME], options)
        if problem and not incomplete(pkt):
            out.error(problem)
        relayed = data[24:28] != b"\x00\x00\x00\x00"  # giaddr
        chaddr = mac_text(data[28 : 28 + hlen]) if hlen == 6 else ""
        own = op == BOOTREQUEST and not relayed and (not pkt.src_mac or chaddr == pkt.src_mac)
        if not own and not chaddr:
            return  # on someone's behalf, but we cannot tell whose

        def say(attribute: str, value: str, confidence: float) -> None:
            if own:
                out.fact(attribute, value, confidence=confidence)
            else:
                out.fact_for_mac(chaddr, attribute, value, confidence=round(confidence - 0.1, 2))

        if op == BOOTREQUEST:
            self._client(options, say, out)
        else:
            self._server(options, say, out)

    @staticmethod
    def _client(options: dict[int, bytes], say: Say, out: Evidence) -> None:
        if HOSTNAME in options:
            say("hostname", text(options[HOSTNAME]), 0.8)
        if VENDOR_CLASS in options:
            say("dhcp_vendor_class", text(options[VENDOR_CLASS]), 0.8)
        if PARAMS in options:
            say("dhcp_parameter_list", ",".join(str(b) for b in options[PARAMS]), 0.8)
        if CLIENT_ID in options:
            say("dhcp_client_id", options[CLIENT_ID].hex(), 0.8)
        if USER_CLASS in options:
            for item in user_classes(options[USER_CLASS])[:16]:
                say("dhcp_user_class", item, 0.7)
        if FQDN in options:
            DHCP._fqdn(options[FQDN], say, out, 0.8)

    @staticmethod
    def _server(options: dict[int, bytes], say: Say, out: Evidence) -> None:
        if HOSTNAME in options:
            say("hostname", text(options[HOSTNAME]), 0.6)
        if FQDN in options:
            DHCP._fqdn(options[FQDN], say, out, 0.6)

    @staticmethod
    def _fqdn(value: bytes, say: Say, out: Evidence, confidence: float) -> None:
        """Option 81 (RFC 4702): flags, two obsolete rcodes, then the name — wire format
        when the E flag is set, else ASCII."""
        if len(value) < 3:
            out.error("client FQDN option shorter than 3 bytes")
            return
        if value[0] & 0x04:
            try:
                name = plain_name(value[3:])
            except DNSError as e:
                out.error(f"client FQDN: {e}")
                return
        else:
            name = text(value[3:])
        say("fqdn", name.rstrip("."), confidence)
