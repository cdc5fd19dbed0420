"""S7comm over ISO-on-TCP (TPKT RFC 1006 + COTP ISO 8073, port 102): Siemens PLC identity and operations.

The PLC is the side on port 102. From the COTP connection request/confirm its called TSAP
gives the rack and slot (once S7 traffic confirms the connection is S7, since IEC 61850 MMS
uses the same port). Classic S7comm (protocol id 0x32) PDUs give the operations — write var,
block download/upload, PI services (insert/delete block, start), PLC stop, set clock — and,
from userdata SZL read responses (reassembled when the PLC splits them), the module order
number and firmware (SZL 0x0011), the component identification (SZL 0x001C) and the CPU
mode (SZL 0x0424/0x0124). S7comm-plus (protocol id 0x72) is only recognised.
"""

from __future__ import annotations

import struct
from typing import Any

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet, Side

PORT = 102
MAX_TPKTS = 64  # TPKTs looked at in one TCP segment
MAX_ITEMS = 32  # write-var items described in an event
MAX_RECORDS = 256  # SZL records looked at in one response
MAX_STATE = 4096  # remembered connections / fragments / modes, each
MAX_FRAGMENT = 65536  # bytes kept while reassembling a COTP or SZL fragment sequence

S7_CLASSIC, S7_PLUS = 0x32, 0x72
JOB, ACK, ACK_DATA, USERDATA = 1, 2, 3, 7
ROSCTRS = frozenset({JOB, ACK, ACK_DATA, USERDATA})

# COTP TPDU codes (upper nibble of the second byte)
COTP_CR, COTP_CC, COTP_DT = 0xE, 0xD, 0xF
TSAP_CALLING, TSAP_CALLED = 0xC1, 0xC2
S7_CONNECTION_TYPES = frozenset({1, 2, 3})  # PG, OP, S7 basic: first byte of an S7 TSAP

# job functions
WRITE_VAR, REQUEST_DOWNLOAD, START_UPLOAD, PI_SERVICE, PLC_STOP = 0x05, 0x1A, 0x1D, 0x28, 0x29
BLOCK_TYPES = {"08": "OB", "0A": "DB", "0B": "SDB", "0C": "FC", "0D": "SFC", "0E": "FB", "0F": "SFB"}
AREAS = {0x80: "P", 0x81: "I", 0x82: "Q", 0x83: "M", 0x84: "DB", 0x85: "DI", 0x86: "L",
         0x1C: "C", 0x1D: "T", 0x1E: "IEC_C", 0x1F: "IEC_T"}
# PI services: block handling changes the program (config_write), P_PROGRAM starts the CPU
PI_CONFIG = frozenset({"_INSE", "_DELE", "_MODU", "_GARB"})
PI_START = "P_PROGRAM"

# userdata
UD_REQUEST, UD_RESPONSE = 0x4, 0x8
GROUP_CPU, GROUP_TIME = 0x4, 0x7
SUB_READ_SZL = 0x01
SUB_SET_CLOCK = frozenset({0x02, 0x04})

# SZL (System Status List) partial lists
SZL_MODULE_ID, SZL_COMPONENT_ID, SZL_MODE = 0x11, 0x1C, 0x24
MODE_SZL_IDS = frozenset({0x0424, 0x0124})  # current mode, last mode transition
# requested-mode nibble of the xy24 record's bzu-id byte
MODES = {1: "stop", 2: "stop", 3: "stop", 4: "stop", 5: "startup", 6: "startup", 7: "startup",
         8: "run", 0xA: "hold", 0xD: "defect"}
# SZL 0x001C record index -> fact attribute (1 PLC name, 2 module name, 5 serial, 7 type name)
COMPONENT_FACTS = {1: "hostname", 2: "module", 5: "serial", 7: "model"}

U16 = struct.Struct(">H")


def _text(raw: bytes) -> str:
    """A fixed-size, NUL-padded ASCII field."""
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def _block_name(filename: bytes) -> str:
    """'_0A00001P' -> 'DB1' (file id, block type, number, destination file system)."""
    text = filename.decode("ascii", "replace")
    if text.startswith("_"):
        text = text[1:]
    kind = BLOCK_TYPES.get(text[:2].upper())
    number = text[2:7]
    if kind and number.isdigit():
        return f"{kind}{int(number)}"
    return text


def _item_address(item: bytes) -> str | None:
    """Address of one S7ANY request item (var spec 0x12, syntax id 0x10), e.g. 'DB1.4.0'."""
    if len(item) < 12 or item[0] != 0x12 or item[2] != 0x10:
        return None
    db = U16.unpack_from(item, 6)[0]
    area = AREAS.get(item[8], f"area{item[8]:#04x}")
    addr = int.from_bytes(item[9:12], "big")
    where = f"{addr >> 3}.{addr & 7}"
    return f"DB{db}.{where}" if area in ("DB", "DI") else f"{area}{where}"


@register
class S7Comm(Dissector):
    name = "s7comm"
    tcp_ports = frozenset({PORT})
    tcp_all_segments = True  # every operation of a session matters, not only its first segments
    # the PDU reference (after TPKT and a 3-byte COTP DT header) changes with every job:
    # repeats of the same job are folded into one event with a count
    novelty_ignore = ((11, 2),)

    def __init__(self) -> None:
        # (client ip, client port, plc ip, plc port) -> "rack/slot" awaiting S7 confirmation
        self._tsaps: dict[tuple[str, int, str, int], str] = {}
        # (src ip, src port, dst ip, dst port) -> COTP DT data without end-of-TSDU yet
        self._cotp: dict[tuple[str, int, str, int], bytes] = {}
        # (src ip, src port, dst ip, dst port, data unit reference) -> SZL bytes so far
        self._szl: dict[tuple[str, int, str, int, int], bytes] = {}
        # (mac, ip) of a PLC -> CPU mode last reported
        self._modes: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ TPKT / COTP

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        off = 0
        for _ in range(MAX_TPKTS):
            if off + 4 > len(data):
                break
            if data[off] != 3:
                if off:  # trailing bytes after a TPKT; at offset 0 it is a continuation segment
                    out.error("bytes after a TPKT that are not a TPKT")
                return
            if data[off + 1] != 0:
                out.error("TPKT reserved byte is not zero")
                return
            length = U16.unpack_from(data, off + 2)[0]
            if length < 7:
                out.error("TPKT length shorter than a COTP header")
                return
            if off + length > len(data):
                return  # the rest of this TPKT is in the next TCP segment
            self._cotp_tpdu(pkt, data[off + 4 : off + length], out)
            off += length

    def _cotp_tpdu(self, pkt: Packet, tpdu: bytes, out: Evidence) -> None:
        if len(tpdu) < 2:
            return  # TPKT cut by the end of the segment
        li = tpdu[0]
        if li == 0 or li == 255:
            out.error("bad COTP length indicator")
            return
        code = tpdu[1] >> 4
        if code in (COTP_CR, COTP_CC):
            if li < 6 or len(tpdu) < li + 1:
                out.error("COTP connection TPDU too short")
                return
            self._connection(pkt, code, tpdu[7 : li + 1])
        elif code == COTP_DT:
            if li < 2 or len(tpdu) < 3:
                out.error("COTP data TPDU too short")
                return
            eot = bool(tpdu[2] & 0x80)
            user = tpdu[li + 1 :]
            key = (pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)
            if not eot:
                if user:
                    if len(self._cotp) >= MAX_STATE:
                        self._cotp.clear()
                    self._cotp[key] = (self._cotp.get(key, b"") + user)[:MAX_FRAGMENT]
                return
            earlier = self._cotp.pop(key, None)
            if earlier:
                user = earlier + user
            if user:
                self._s7(pkt, user, out)

    def _connection(self, pkt: Packet, code: int, params: bytes) -> None:
        """CR / CC: remember the PLC's rack and slot from the called TSAP."""
        called = None
        pos = 0
        while pos + 2 <= len(params):
            pcode, plen = params[pos], params[pos + 1]
            value = params[pos + 2 : pos + 2 + plen]
            if pcode == TSAP_CALLED:
                called = value
            pos += 2 + plen
        if called is None or len(called) != 2 or called[0] not in S7_CONNECTION_TYPES:
            return
        rack_slot = f"{called[1] >> 5}/{called[1] & 0x1F}"
        if code == COTP_CR:
            key = (pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)
        else:
            key = (pkt.dst_ip, pkt.dport, pkt.src_ip, pkt.sport)
        if len(self._tsaps) >= MAX_STATE:
            self._tsaps.clear()
        self._tsaps[key] = rack_slot

    # ------------------------------------------------------------------ S7 PDUs

    def _plc_side(self, pkt: Packet) -> Side | None:
        if pkt.sport == PORT:
            return "src"
        if pkt.dport == PORT:
            return "dst"
        return None

    def _plc_facts(self, pkt: Packet, protocol: str, out: Evidence) -> None:
        """The port-102 side answered in S7: it is a Siemens PLC speaking `protocol`."""
        out.fact("s7_protocol", protocol, confidence=0.9)
        out.fact("vendor", "Siemens", confidence=0.8)
        out.fact("device_type", "plc", confidence=0.7)
        rack_slot = self._tsaps.pop((pkt.dst_ip, pkt.dport, pkt.src_ip, pkt.sport), None)
        if rack_slot:
            out.fact("rack_slot", rack_slot, confidence=0.6)

    def _s7(self, pkt: Packet, pdu: bytes, out: Evidence) -> None:
        side = self._plc_side(pkt)
        if pdu[0] == S7_PLUS:
            if len(pdu) < 4:
                out.error("S7comm-plus header too short")
            elif side == "src":
                self._plc_facts(pkt, "s7comm-plus", out)
            return
        if pdu[0] != S7_CLASSIC:
            return  # another protocol over COTP (e.g. MMS)
        if len(pdu) < 10:
            out.error("S7 header too short")
            return
        rosctr = pdu[1]
        if rosctr not in ROSCTRS:
            out.error(f"unknown S7 ROSCTR {rosctr}")
            return
        head = 12 if rosctr in (ACK, ACK_DATA) else 10
        plen, dlen = U16.unpack_from(pdu, 6)[0], U16.unpack_from(pdu, 8)[0]
        if len(pdu) < head + plen + dlen:
            out.error("S7 PDU shorter than its header says")
            return
        param = pdu[head : head + plen]
        data = pdu[head + plen : head + plen + dlen]
        if side == "src" and rosctr in (ACK, ACK_DATA, USERDATA):
            self._plc_facts(pkt, "s7comm", out)
        if rosctr == JOB and param:
            self._job(param, data, out)
        elif rosctr == USERDATA:
            self._userdata(pkt, param, data, out)

    def _job(self, param: bytes, data: bytes, out: Evidence) -> None:
        func = param[0]
        out.signal("function", protocol="s7comm", code=func, name=f"job {func:#04x}")
        if func == WRITE_VAR:
            count = param[1] if len(param) > 1 else 0
            addresses = []
            pos = 2
            for _ in range(min(count, MAX_ITEMS)):
                if pos + 2 > len(param):
                    break
                item = param[pos : pos + 2 + param[pos + 1]]
                address = _item_address(item)
                if address:
                    addresses.append(address)
                pos += 2 + param[pos + 1]
            out.event("register_write", service="write_var", items=count, addresses=addresses)
        elif func in (REQUEST_DOWNLOAD, START_UPLOAD):
            # function, status, 2 + 4 unknown bytes, filename length, filename
            name = param[9 : 9 + param[8]] if len(param) > 9 else b""
            kind = "program_download" if func == REQUEST_DOWNLOAD else "program_upload"
            out.event(kind, block=_block_name(name) if name else "")
        elif func == PI_SERVICE:
            self._pi_service(param, out)
        elif func == PLC_STOP:
            # function, 5 unknown bytes, length of the PI service name, the name
            service = param[7 : 7 + param[6]].decode("ascii", "replace") if len(param) > 7 else ""
            out.event("plc_stop", service=service)

    def _pi_service(self, param: bytes, out: Evidence) -> None:
        # function, 7 unknown bytes, parameter block length (2), parameter block, name length, name
        if len(param) < 10:
            out.error("PI service parameter too short")
            return
        block_len = U16.unpack_from(param, 8)[0]
        block = param[10 : 10 + block_len]
        pos = 10 + block_len
        if pos >= len(param):
            out.error("PI service without a service name")
            return
        service = param[pos + 1 : pos + 1 + param[pos]].decode("ascii", "replace")
        if service in PI_CONFIG:
            blocks = []
            if len(block) >= 2:  # number of blocks, unknown byte, then 8-byte file names
                for i in range(min(block[0], MAX_ITEMS)):
                    name = block[2 + 8 * i : 10 + 8 * i]
                    if len(name) < 8:
                        break
                    blocks.append(_block_name(name))
            out.event("config_write", service=service, blocks=blocks)
        elif service == PI_START:
            out.event("plc_start", service=service, argument=block.decode("ascii", "replace"))

    # ------------------------------------------------------------------ userdata / SZL

    def _userdata(self, pkt: Packet, param: bytes, data: bytes, out: Evidence) -> None:
        if len(param) < 8 or param[:3] != b"\x00\x01\x12":
            return
        kind, group, sub = param[5] >> 4, param[5] & 0x0F, param[6]
        if kind == UD_REQUEST:
            if group == GROUP_TIME and sub in SUB_SET_CLOCK:
                out.event("time_set", service="set_clock")
            return
        if kind != UD_RESPONSE or group != GROUP_CPU or sub != SUB_READ_SZL:
            return
        extended = param[3] >= 8 and len(param) >= 12
        dur = param[8] if extended else 0
        last = param[9] == 0 if extended else True
        if len(data) < 4 or data[0] != 0xFF:
            return  # an error answer
        chunk = data[4 : 4 + U16.unpack_from(data, 2)[0]]
        key = (pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport, dur)
        earlier = self._szl.pop(key, None)
        if earlier is not None:
            chunk = earlier + chunk
        if not last:
            if len(self._szl) >= MAX_STATE:
                self._szl.clear()
            self._szl[key] = chunk[:MAX_FRAGMENT]
            return
        self._szl_list(pkt, chunk, out)

    def _szl_list(self, pkt: Packet, szl: bytes, out: Evidence) -> None:
        if len(szl) < 8:
            out.error("SZL answer shorter than its header")
            return
        szl_id, _index, size, count = struct.unpack_from(">HHHH", szl)
        if size == 0:
            return
        records = [szl[8 + i * size : 8 + (i + 1) * size]
                   for i in range(min(count, (len(szl) - 8) // size, MAX_RECORDS))]
        part = szl_id & 0xFF
        if part == SZL_MODULE_ID and size >= 28:
            for rec in records:
                self._module_id(rec, out)
        elif part == SZL_COMPONENT_ID and size >= 4:
            for rec in records:
                attribute = COMPONENT_FACTS.get(U16.unpack_from(rec, 0)[0])
                if attribute:
                    out.fact(attribute, _text(rec[2:]),
                             confidence=0.6 if attribute == "hostname" else 0.9)
        elif szl_id in MODE_SZL_IDS and size >= 4:
            for rec in records[:1]:
                mode = MODES.get(rec[3] & 0x0F)
                if mode:
                    self._mode(pkt, mode, out)

    def _module_id(self, rec: bytes, out: Evidence) -> None:
        """One SZL 0x0011 record: index, MlfB (order number), BGTyp, Ausbg, Ausbe."""
        index = U16.unpack_from(rec, 0)[0]
        if index in (1, 6):
            out.fact("order_number", _text(rec[2:22]), confidence=0.9)
        version = rec[24:28]
        if version[0] == ord("V"):
            text = f"V{version[1]}.{version[2]}.{version[3]}"
            if index == 7:
                out.fact("firmware", text, confidence=0.9)
            elif index in (1, 6):
                out.fact("hardware_version", text, confidence=0.7)

    def _mode(self, pkt: Packet, mode: str, out: Evidence) -> None:
        out.fact("plc_mode", mode, confidence=0.9)
        who = (pkt.src_mac, pkt.src_ip)
        before = self._modes.get(who)
        if before is not None and before != mode:
            details: dict[str, Any] = {"from": before, "to": mode}
            out.event("mode_change", **details)
        if before is None and len(self._modes) >= MAX_STATE:
            self._modes.clear()
        self._modes[who] = mode
