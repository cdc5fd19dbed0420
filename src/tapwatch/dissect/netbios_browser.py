"""NetBIOS datagrams (RFC 1002 §4.4) carrying the Browser protocol (MS-BRWS): Windows and
Samba hosts broadcast host announcements every few minutes with their computer name and
OS version, and master browsers announce their workgroup.

Reported about the sender: the datagram's source NetBIOS name (when the datagram header
says it comes from the frame's own address, i.e. it was not relayed), the server name of
host / local master / master announcements and election requests, the OS version of
host and local master announcements, and the workgroup of domain announcements (whose
"comment" is the announcing master browser's own name).
"""

from __future__ import annotations

import struct

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.dns import DNSError, incomplete, read_labels
from tapwatch.dissect.nbns import decode_netbios_name, ipv4_text, report_name

DIRECT_UNIQUE, DIRECT_GROUP, BROADCAST = 0x10, 0x11, 0x12
SMB_TRANSACTION = 0x25
MAILSLOT_BROWSE = b"\\MAILSLOT\\BROWSE"
HOST_ANNOUNCEMENT, ELECTION, DOMAIN_ANNOUNCEMENT = 0x01, 0x08, 0x0C
MASTER_ANNOUNCEMENT, LOCAL_MASTER = 0x0D, 0x0F
_TRANS_COUNTS = struct.Struct("<HHHH")  # ParameterCount, ParameterOffset, DataCount, DataOffset


def cstring(data: bytes, limit: int = 256) -> str:
    """A NUL-terminated string (or the rest of the data) as text."""
    return data[:limit].split(b"\x00", 1)[0].decode("utf-8", "replace").strip()


def mailslot_data(smb: bytes) -> bytes | None:
    """The data of an SMB Transaction to \\MAILSLOT\\BROWSE; None for any other SMB
    message; raises ValueError when the transaction is malformed."""
    if len(smb) < 33 or smb[:4] != b"\xffSMB" or smb[4] != SMB_TRANSACTION:
        return None
    words = smb[32]
    if words < 14:
        raise ValueError(f"SMB transaction with {words} parameter words")
    params_end = 33 + 2 * words
    if params_end + 2 > len(smb):
        raise ValueError("truncated SMB transaction header")
    _, _, count, offset = _TRANS_COUNTS.unpack_from(smb, 33 + 18)
    name = smb[params_end + 2 : params_end + 2 + 64].split(b"\x00", 1)[0]
    if name.upper() != MAILSLOT_BROWSE:
        return None  # \MAILSLOT\LANMAN and others use other formats
    data = smb[offset : offset + count]
    if len(data) != count or offset < params_end:
        raise ValueError("SMB transaction data outside the message")
    return data


@register
class NetBIOSBrowser(Dissector):
    name = "netbios_browser"
    udp_ports = frozenset({138})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if len(data) < 14 or data[0] not in (DIRECT_UNIQUE, DIRECT_GROUP, BROADCAST):
            return  # error notices and name queries carry no names of the sender
        if len(data) < 82:  # header + two 34-byte encoded names
            if not incomplete(pkt):
                out.error(f"NetBIOS datagram of {len(data)} bytes")
            return
        first_fragment = data[12] == 0 and data[13] == 0  # packet offset 0: the SMB header is here
        try:
            source, off = read_labels(data, 14)
            _dest, off = read_labels(data, off)
        except DNSError as e:
            out.error(f"NetBIOS datagram name: {e}")
            return
        seen: set[tuple[str, str]] = set()
        decoded = decode_netbios_name(source[0]) if source else None
        if decoded is None:
            out.error("NetBIOS datagram source is not an encoded NetBIOS name")
            return
        if not pkt.src_ip or ipv4_text(data[4:8]) == pkt.src_ip:
            report_name(out, decoded[0], decoded[1], False, 0.7, seen)
        if not first_fragment:
            return
        try:
            browse = mailslot_data(data[off:])
        except ValueError as e:
            if not incomplete(pkt):
                out.error(str(e))
            return
        if browse:
            self._browser(browse, out, seen)

    @staticmethod
    def _browser(data: bytes, out: Evidence, seen: set[tuple[str, str]]) -> None:
        opcode = data[0]
        if opcode in (HOST_ANNOUNCEMENT, LOCAL_MASTER, DOMAIN_ANNOUNCEMENT):
            # opcode, update count, periodicity (4), name (16), version (2), server type (4),
            # browser version (2), signature (2), comment
            if len(data) < 32:
                out.error(f"browser announcement of {len(data)} bytes")
                return
            server = cstring(data[6:22], 16)
            if opcode == DOMAIN_ANNOUNCEMENT:  # name: the workgroup; comment: the master browser
                if server:
                    out.fact("netbios_domain", server, confidence=0.7)
                master = cstring(data[32:])
                if master:
                    out.fact("netbios_browser_server", master, confidence=0.6)
                return
            if server:
                out.fact("netbios_browser_server", server, confidence=0.8)
            out.fact("os_version", f"{data[22]}.{data[23]}", confidence=0.6)
        elif opcode == ELECTION:  # version, criteria (4), uptime (4), reserved (4), name
            if len(data) < 14:
                out.error(f"browser election request of {len(data)} bytes")
                return
            server = cstring(data[14:])
            if server:
                out.fact("netbios_browser_server", server, confidence=0.7)
        elif opcode == MASTER_ANNOUNCEMENT:
            server = cstring(data[1:])
            if server:
                out.fact("netbios_browser_server", server, confidence=0.7)
