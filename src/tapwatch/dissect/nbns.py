"""NetBIOS Name Service (RFC 1001/1002): Windows hosts, printers and NAS boxes register and
defend their NetBIOS names (computer name, workgroup) by broadcast on every boot.

Only names the sender holds are reported: names in its registration/refresh/release
requests, in its positive query answers when the answer carries its own address (a WINS
server answers for others), and in its node status (NBSTAT) answers. A query names the host
the sender is looking for, so queries are ignored. Workgroup/domain names (group <00>,
<1C>, <1E>, and the browser names <1B>, <1D>) become `netbios_domain`; other unique names
`netbios_name`, except <03> (the messenger service, which also registers user names).
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.dns import ADDITIONAL, ANSWER, DNSError, incomplete, parse_message

OP_QUERY, OP_REGISTER, OP_RELEASE, OP_REFRESH, OP_REFRESH_ALT, OP_MULTIHOMED = 0, 5, 6, 8, 9, 15
OWNER_REQUESTS = frozenset({OP_REGISTER, OP_RELEASE, OP_REFRESH, OP_REFRESH_ALT, OP_MULTIHOMED})
T_NB, T_NBSTAT = 0x20, 0x21
GROUP = 0x8000  # NB_FLAGS / NAME_FLAGS G bit
NAME_CONFLICT, NAME_DEREGISTERING = 0x0800, 0x1000
DOMAIN_GROUP_SUFFIXES = frozenset({0x00, 0x1C, 0x1E})
DOMAIN_UNIQUE_SUFFIXES = frozenset({0x1B, 0x1D})
MSBROWSE = b"\x01\x02__MSBROWSE__\x02"


def decode_netbios_name(label: bytes) -> tuple[bytes, int] | None:
    """First-level decoding (RFC 1001 §14.1) of a 32-byte label: the 15-byte name with its
    padding removed, and the suffix byte; None when the label is not such an encoding."""
    if len(label) != 32:
        return None
    raw = bytearray(16)
    for i in range(16):
        hi, lo = label[2 * i] - 0x41, label[2 * i + 1] - 0x41
        if not (0 <= hi < 16 and 0 <= lo < 16):
            return None
        raw[i] = (hi << 4) | lo
    return bytes(raw[:15]).rstrip(b" \x00"), raw[15]


def name_attribute(name: bytes, suffix: int, group: bool) -> str | None:
    """Which fact a held NetBIOS name is (None: not an identity, e.g. __MSBROWSE__)."""
    if not name or name == MSBROWSE:
        return None
    if group:
        return "netbios_domain" if suffix in DOMAIN_GROUP_SUFFIXES else None
    if suffix in DOMAIN_UNIQUE_SUFFIXES:
        return "netbios_domain"
    if suffix == 0x03:
        return None
    return "netbios_name"


def report_name(out: Evidence, name: bytes, suffix: int, group: bool, confidence: float,
                seen: set[tuple[str, str]]) -> None:
    attribute = name_attribute(name, suffix, group)
    if attribute:
        value = name.decode("utf-8", "replace").strip()
        if (attribute, value) not in seen:
            seen.add((attribute, value))
            out.fact(attribute, value, confidence=confidence)


def ipv4_text(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


@register
class NBNS(Dissector):
    name = "nbns"
    udp_ports = frozenset({137})
    novelty_ignore = ((0, 2),)  # the transaction id of each query and announcement

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        try:
            msg = parse_message(pkt.payload)
        except DNSError as e:
            if not incomplete(pkt):
                out.error(f"malformed NBNS message: {e}")
            return
        if msg.error and not incomplete(pkt):
            out.error(f"malformed NBNS message: {msg.error}")
        seen: set[tuple[str, str]] = set()
        if not msg.response:
            if msg.opcode not in OWNER_REQUESTS:
                return  # a query names the host the sender looks for
            for rec in msg.records:
                if rec.section == ADDITIONAL and rec.rtype == T_NB:
                    self._nb_record(pkt, rec.labels, rec.rdata, out, 0.8, seen)
            return
        if msg.opcode != OP_QUERY or msg.rcode != 0:
            return  # registration answers come from a name server, about the registrant
        for rec in msg.records:
            if rec.section != ANSWER:
                continue
            if rec.rtype == T_NB:
                self._nb_record(pkt, rec.labels, rec.rdata, out, 0.7, seen)
            elif rec.rtype == T_NBSTAT:
                self._node_status(rec.rdata, out, seen)

    @staticmethod
    def _nb_record(pkt: Packet, labels: list[bytes], rdata: bytes, out: Evidence, confidence: float,
                   seen: set[tuple[str, str]]) -> None:
        """An NB record (name, then 6-byte NB_FLAGS + NB_ADDRESS entries): reported when one of
        its addresses is the sender's (or the sender's address is unknown)."""
        decoded = decode_netbios_name(labels[0]) if labels else None
        if decoded is None:
            out.error("NBNS name is not a 32-byte encoded NetBIOS name")
            return
        if len(rdata) < 6 or len(rdata) % 6:
            out.error(f"NB record data of {len(rdata)} bytes")
            return
        entries = [rdata[i : i + 6] for i in range(0, min(len(rdata), 6 * 64), 6)]
        if pkt.src_ip and pkt.src_ip not in {ipv4_text(e[2:6]) for e in entries}:
            return  # held by another address: answered or registered on its behalf
        group = bool(entries[0][0] & 0x80)
        report_name(out, decoded[0], decoded[1], group, confidence, seen)

    @staticmethod
    def _node_status(rdata: bytes, out: Evidence, seen: set[tuple[str, str]]) -> None:
        """NODE STATUS answer (RFC 1002 §4.2.18): the responder's own name table."""
        if not rdata:
            out.error("empty NBSTAT record")
            return
        count = rdata[0]
        if 1 + 18 * count > len(rdata):
            out.error(f"NBSTAT record lists {count} names but holds {len(rdata)} bytes")
            count = (len(rdata) - 1) // 18
        for i in range(count):
            entry = rdata[1 + 18 * i : 19 + 18 * i]
            flags = (entry[16] << 8) | entry[17]
            if flags & (NAME_CONFLICT | NAME_DEREGISTERING):
                continue
            report_name(out, entry[:15].rstrip(b" \x00"), entry[15], bool(flags & GROUP), 0.8, seen)
