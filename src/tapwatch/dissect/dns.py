"""DNS message parsing (RFC 1035) shared by mDNS, LLMNR and NBNS, plus a unicast DNS checker.

Unicast DNS (port 53) says little about the devices themselves, so its dissector only
reports malformed messages; the parser here is what the multicast name protocols reuse.
Names may be compressed (RFC 1035 §4.1.4): pointer chains are bounded, so a loop or a
pointer out of the message is an error, never a hang.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_NAME = 255  # octets in one name (RFC 1035 §3.1); a longer one is an error
MAX_JUMPS = 64  # compression pointers followed while reading one name
MAX_ENTRIES = 512  # questions + records read from one message

T_A, T_PTR, T_TXT, T_AAAA, T_SRV = 1, 12, 16, 28, 33
ANSWER, AUTHORITY, ADDITIONAL = 1, 2, 3

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_Q = struct.Struct("!HH")


class DNSError(ValueError):
    """The bytes are not a well-formed DNS message (truncated, bad pointer, bad length)."""


def read_labels(msg: bytes, off: int) -> tuple[list[bytes], int]:
    """The labels of the (possibly compressed) name at `off`, and the offset just after it."""
    labels: list[bytes] = []
    size = 0
    end = -1  # where the name ends in the original position (set at the first pointer)
    jumps = 0
    n = len(msg)
    while True:
        if off >= n:
            raise DNSError("name runs past the end of the message")
        length = msg[off]
        if length == 0:
            return labels, (end if end >= 0 else off + 1)
        kind = length & 0xC0
        if kind == 0xC0:
            if off + 1 >= n:
                raise DNSError("truncated compression pointer")
            jumps += 1
            if jumps > MAX_JUMPS:
                raise DNSError("compression pointer loop")
            if end < 0:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            continue
        if kind:
            raise DNSError(f"unsupported label type 0x{length:02x}")
        label = msg[off + 1 : off + 1 + length]
        if len(label) != length:
            raise DNSError("label runs past the end of the message")
        size += length + 1
        if size > MAX_NAME:
            raise DNSError("name longer than 255 octets")
        labels.append(label)
        off += 1 + length


def labels_text(labels: list[bytes] | tuple[bytes, ...]) -> str:
    """A name as text: labels decoded as UTF-8 and joined with dots ('' for the root)."""
    return ".".join(label.decode("utf-8", "replace") for label in labels)


def read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, after = read_labels(msg, off)
    return labels_text(labels), after


def plain_name(data: bytes) -> str:
    """An uncompressed wire-format name filling `data` (DHCP FQDN options); a missing final
    root label (a partial name) is accepted. Raises DNSError on a bad length."""
    labels: list[str] = []
    off = 0
    while off < len(data):
        length = data[off]
        if length == 0:
            break
        if length & 0xC0 or off + 1 + length > len(data):
            raise DNSError("bad label length in a wire-format name")
        labels.append(data[off + 1 : off + 1 + length].decode("utf-8", "replace"))
        off += 1 + length
    return ".".join(labels)


@dataclass(slots=True)
class Record:
    section: int  # ANSWER, AUTHORITY or ADDITIONAL
    labels: list[bytes]
    rtype: int
    rclass: int
    ttl: int
    rdata_off: int  # offset of the rdata in the message (names in rdata may point back)
    rdata: bytes

    @property
    def name(self) -> str:
        return labels_text(self.labels)


@dataclass(slots=True)
class Message:
    ident: int
    flags: int
    questions: list[tuple[list[bytes], int, int]]  # (labels, qtype, qclass)
    records: list[Record]
    error: str = ""  # why parsing stopped early (the entries before it are kept)

    @property
    def response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def parse_message(msg: bytes) -> Message:
    """Header, questions and resource records of one DNS-format message. Raises DNSError
    without a header; a later problem stops parsing and is kept in `Message.error`."""
    if len(msg) < 12:
        raise DNSError("message shorter than the 12-byte header")
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
    questions: list[tuple[list[bytes], int, int]] = []
    records: list[Record] = []
    parsed = Message(ident, flags, questions, records)
    if qd + an + ns + ar > MAX_ENTRIES:
        parsed.error = f"implausible record counts {qd}/{an}/{ns}/{ar}"
        return parsed
    off = 12
    try:
        for _ in range(qd):
            labels, off = read_labels(msg, off)
            if off + 4 > len(msg):
                raise DNSError("truncated question")
            qtype, qclass = _Q.unpack_from(msg, off)
            off += 4
            questions.append((labels, qtype, qclass))
        for section, count in ((ANSWER, an), (AUTHORITY, ns), (ADDITIONAL, ar)):
            for _ in range(count):
                labels, off = read_labels(msg, off)
                if off + 10 > len(msg):
                    raise DNSError("truncated resource record")
                rtype, rclass, ttl, rdlength = _RR.unpack_from(msg, off)
                off += 10
                if off + rdlength > len(msg):
                    raise DNSError("record data runs past the end of the message")
                records.append(Record(section, labels, rtype, rclass, ttl, off, msg[off : off + rdlength]))
                off += rdlength
    except DNSError as e:
        parsed.error = str(e)
    return parsed


def incomplete(pkt: Packet) -> bool:
    """True when the packet does not hold its whole payload (an IP fragment, or a frame cut
    by the capture's snap length): a message that ends early is then no protocol error."""
    l3 = pkt.l3
    if len(l3) < 20:
        return False
    version = l3[0] >> 4
    if version == 4:
        if (l3[6] & 0x3F) or l3[7]:  # more-fragments flag or a fragment offset
            return True
        return ((l3[2] << 8) | l3[3]) > len(l3)
    if version == 6 and len(l3) >= 40:
        return l3[6] == 44 or ((l3[4] << 8) | l3[5]) + 40 > len(l3)
    return False


def rdata_name(msg: bytes, rec: Record) -> str:
    """The domain name a PTR / CNAME / NS record points to."""
    name, after = read_name(msg, rec.rdata_off)
    if after > rec.rdata_off + len(rec.rdata):
        raise DNSError("name runs past its record data")
    return name


def srv_target(msg: bytes, rec: Record) -> str:
    """The target host of an SRV record (RFC 2782: priority, weight, port, target)."""
    if len(rec.rdata) < 7:
        raise DNSError("SRV record shorter than 7 bytes")
    name, after = read_name(msg, rec.rdata_off + 6)
    if after > rec.rdata_off + len(rec.rdata):
        raise DNSError("SRV target runs past its record data")
    return name


def txt_strings(rec: Record) -> list[bytes]:
    """The character-strings of a TXT record."""
    out: list[bytes] = []
    data = rec.rdata
    off = 0
    while off < len(data):
        length = data[off]
        if off + 1 + length > len(data):
            raise DNSError("TXT string runs past its record data")
        out.append(data[off + 1 : off + 1 + length])
        off += 1 + length
    return out


def split_tcp(payload: bytes) -> list[bytes] | None:
    """The messages of a DNS-over-TCP segment (2-byte length prefixes, RFC 1035 §4.2.2), or
    None unless the segment holds only whole messages (a continuation or a partial message)."""
    out: list[bytes] = []
    off = 0
    while off + 2 <= len(payload) and len(out) < 64:
        length = (payload[off] << 8) | payload[off + 1]
        if length == 0 or off + 2 + length > len(payload):
            return None
        out.append(payload[off + 2 : off + 2 + length])
        off += 2 + length
    return out if out and off == len(payload) else None


@register
class DNS(Dissector):
    """Unicast DNS: no identity facts (queries name other hosts), only malformed messages."""

    name = "dns"
    udp_ports = frozenset({53})
    tcp_ports = frozenset({53})
    # a client asks again for the same name with a new message id (over TCP a length
    # comes first, and only the first segments of a connection are read anyway)
    novelty_ignore = ((0, 2),)
    novelty_udp_only = True

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        if pkt.transport == "tcp":
            messages = split_tcp(pkt.payload)
            if messages is None:
                return
        else:
            messages = [pkt.payload]
        for msg in messages:
            try:
                parsed = parse_message(msg)
                problem = parsed.error
            except DNSError as e:
                problem = str(e)
            else:
                if not parsed.response:  # what the sender wants to reach (indicators)
                    for labels, _qtype, _qclass in parsed.questions[:4]:
                        if labels:
                            out.signal("domain", name=labels_text(labels).lower(), how="dns")
            if problem and not incomplete(pkt):
                out.error(f"malformed DNS message: {problem}")
                return
