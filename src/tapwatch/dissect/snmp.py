"""SNMP v1/v2c (RFC 1157, RFC 3416): community strings in use, and what agents say they are.

The community string travels in clear text in every v1/v2c message, so each sender's is
recorded (a manager's requests and an agent's answers and traps alike). Responses, traps and
informs that carry sysDescr.0, sysObjectID.0 or sysName.0 identify the agent. The BER
reader is flat and bounded (the message layout is fixed, so no recursion is needed).
SNMPv3 messages carry no community and, usually, encrypted PDUs: they are left alone.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_VARBINDS = 1024
MAX_OID_BYTES = 256

SEQUENCE, INTEGER, OCTET_STRING, OBJECT_IDENTIFIER = 0x30, 0x02, 0x04, 0x06
GET_RESPONSE, SET_REQUEST, TRAP_V1, INFORM, TRAP_V2 = 0xA2, 0xA3, 0xA4, 0xA6, 0xA7
PDU_TAGS = frozenset(range(0xA0, 0xA9))
FROM_AGENT = frozenset({GET_RESPONSE, TRAP_V1, INFORM, TRAP_V2})

# BER contents of the OBJECT IDENTIFIERs we read (1.3.6.1.2.1.1.{1,2,5}.0)
SYS_DESCR = bytes.fromhex("2b06010201010100")
SYS_OBJECT_ID = bytes.fromhex("2b06010201010200")
SYS_NAME = bytes.fromhex("2b06010201010500")


class Malformed(Exception):
    pass


def header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start, stop) of the BER element at pos, which must lie within [pos, end)."""
    if pos + 2 > end:
        raise Malformed("truncated BER header")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise Malformed("multi-byte BER tag")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise Malformed("indefinite or oversized BER length")
        if pos + count > end:
            raise Malformed("truncated BER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise Malformed("BER element longer than its container")
    return tag, pos, pos + length


def expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = header(data, pos, end)
    if got != tag:
        raise Malformed(f"expected {what}, found tag {got:#04x}")
    return start, stop


def integer(value: bytes) -> int:
    if not 1 <= len(value) <= 8:
        raise Malformed("bad INTEGER length")
    return int.from_bytes(value, "big", signed=True)


def oid_text(value: bytes) -> str:
    """Dotted form of BER OBJECT IDENTIFIER contents (X.690 8.19)."""
    if not value or len(value) > MAX_OID_BYTES or value[-1] & 0x80:
        raise Malformed("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = arcs[0]
    top = 0 if first < 40 else 1 if first < 80 else 2
    return ".".join(map(str, (top, first - 40 * top, *arcs[1:])))


@register
class SNMP(Dissector):
    name = "snmp"
    udp_ports = frozenset({161, 162})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if not data or data[0] != SEQUENCE:
            return  # not BER: not SNMP
        try:
            self._message(data, out)
        except Malformed as e:
            out.error(f"SNMP: {e}")

    def _message(self, data: bytes, out: Evidence) -> None:
        _, pos, end = header(data, 0, len(data))
        start, stop = expect(data, pos, end, INTEGER, "version")
        version = integer(data[start:stop])
        if version == 3:
            return  # SNMPv3: no community, PDU possibly encrypted
        if version not in (0, 1):
            raise Malformed(f"unknown version {version}")
        start, pos = expect(data, stop, end, OCTET_STRING, "community")
        out.fact("snmp_community", data[start:pos].decode("utf-8", "replace"), confidence=0.9)
        pdu, pos, end = header(data, pos, end)
        if pdu not in PDU_TAGS:
            raise Malformed(f"unknown PDU type {pdu:#04x}")
        if pdu not in FROM_AGENT and pdu != SET_REQUEST:
            return  # requests name objects but carry no values
        if pdu == TRAP_V1:  # enterprise, agent-addr, generic-trap, specific-trap, time-stamp
            for _ in range(5):
                _, _, pos = header(data, pos, end)
        else:  # request-id, error-status, error-index
            for _ in range(3):
                _, pos = expect(data, pos, end, INTEGER, "INTEGER")
        pos, end = expect(data, pos, end, SEQUENCE, "variable-bindings")
        for _ in range(MAX_VARBINDS):
            if pos >= end:
                return
            start, pos = expect(data, pos, end, SEQUENCE, "VarBind")
            name_start, name_stop = expect(data, start, pos, OBJECT_IDENTIFIER, "object name")
            tag, value_start, value_stop = header(data, name_stop, pos)
            name, value = data[name_start:name_stop], data[value_start:value_stop]
            if pdu == SET_REQUEST:
                # a manager setting the agent's name: a weak statement about the receiver
                if name == SYS_NAME and tag == OCTET_STRING:
                    out.fact("snmp_sysname", value.decode("utf-8", "replace"), confidence=0.3,
                             about="dst")
            elif name == SYS_DESCR and tag == OCTET_STRING:
                out.fact("snmp_sysdescr", value.decode("utf-8", "replace"), confidence=0.9)
            elif name == SYS_NAME and tag == OCTET_STRING:
                out.fact("snmp_sysname", value.decode("utf-8", "replace"), confidence=0.9)
            elif name == SYS_OBJECT_ID and tag == OBJECT_IDENTIFIER:
                out.fact("snmp_sysobjectid", oid_text(value), confidence=0.9)
        raise Malformed("too many variable bindings")
