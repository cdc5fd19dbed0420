"""IEC 60870-5-104 on TCP 2404: the controlled stations' common addresses, who controls whom,
and the commands, clock synchronisations, process resets and file transfers they receive.

IEC 104 carries telecontrol of power grids and has no authentication of its own: any
command (single/double/regulating step/set point) seen on the wire operated something.

The controlled station (outstation, RTU) is the TCP server on 2404, and every ASDU carries
*its* common address, whichever way it travels: so the common address is a fact about the
side on port 2404, and commands (cause "activation"/"deactivation") come from the other.
Bytes before an APDU start (0x68) are skipped, and an APDU cut by the end of its segment
makes the flow skip its continuation (see tcpstream.Resync).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet, Side
from tapwatch.dissect.tcpstream import Resync

PORT = 2404
START = 0x68
MAX_APDUS = 64  # per segment
ASDU_HEADER = 6  # type id, variable structure qualifier, cause (2), common address (2)
IOA_SIZE = 3

U_FUNCTIONS = {0x07: "startdt_act", 0x0B: "startdt_con", 0x13: "stopdt_act", 0x23: "stopdt_con",
               0x43: "testfr_act", 0x83: "testfr_con"}

# Type identification: name and the size of one information element (without its address);
# None: variable size.
TYPES: dict[int, tuple[str, int | None]] = {
    1: ("M_SP_NA_1", 1), 2: ("M_SP_TA_1", 4), 3: ("M_DP_NA_1", 1), 4: ("M_DP_TA_1", 4),
    5: ("M_ST_NA_1", 2), 6: ("M_ST_TA_1", 5), 7: ("M_BO_NA_1", 5), 8: ("M_BO_TA_1", 8),
    9: ("M_ME_NA_1", 3), 10: ("M_ME_TA_1", 6), 11: ("M_ME_NB_1", 3), 12: ("M_ME_TB_1", 6),
    13: ("M_ME_NC_1", 5), 14: ("M_ME_TC_1", 8), 15: ("M_IT_NA_1", 5), 16: ("M_IT_TA_1", 8),
    17: ("M_EP_TA_1", 6), 18: ("M_EP_TB_1", 7), 19: ("M_EP_TC_1", 7), 20: ("M_PS_NA_1", 5),
    21: ("M_ME_ND_1", 2),
    30: ("M_SP_TB_1", 8), 31: ("M_DP_TB_1", 8), 32: ("M_ST_TB_1", 9), 33: ("M_BO_TB_1", 12),
    34: ("M_ME_TD_1", 10), 35: ("M_ME_TE_1", 10), 36: ("M_ME_TF_1", 12), 37: ("M_IT_TB_1", 12),
    38: ("M_EP_TD_1", 10), 39: ("M_EP_TE_1", 11), 40: ("M_EP_TF_1", 11),
    45: ("C_SC_NA_1", 1), 46: ("C_DC_NA_1", 1), 47: ("C_RC_NA_1", 1), 48: ("C_SE_NA_1", 3),
    49: ("C_SE_NB_1", 3), 50: ("C_SE_NC_1", 5), 51: ("C_BO_NA_1", 4),
    58: ("C_SC_TA_1", 8), 59: ("C_DC_TA_1", 8), 60: ("C_RC_TA_1", 8), 61: ("C_SE_TA_1", 10),
    62: ("C_SE_TB_1", 10), 63: ("C_SE_TC_1", 12), 64: ("C_BO_TA_1", 11),
    70: ("M_EI_NA_1", 1),
    100: ("C_IC_NA_1", 1), 101: ("C_CI_NA_1", 1), 102: ("C_RD_NA_1", 0), 103: ("C_CS_NA_1", 7),
    104: ("C_TS_NA_1", 2), 105: ("C_RP_NA_1", 1), 106: ("C_CD_NA_1", 2), 107: ("C_TS_TA_1", 9),
    110: ("P_ME_NA_1", 3), 111: ("P_ME_NB_1", 3), 112: ("P_ME_NC_1", 5), 113: ("P_AC_NA_1", 1),
    120: ("F_FR_NA_1", 6), 121: ("F_SR_NA_1", 7), 122: ("F_SC_NA_1", 4), 123: ("F_LS_NA_1", 5),
    124: ("F_AF_NA_1", 4), 125: ("F_SG_NA_1", None), 126: ("F_DR_TA_1", 13), 127: ("F_SC_NB_1", 16),
}
PRIVATE_TYPES = range(136, 256)  # "special use": valid, not decoded
COMMANDS = frozenset(range(45, 52)) | frozenset(range(58, 65))
CLOCK_SYNC, RESET_PROCESS = 103, 105
PARAMETERS = frozenset({110, 111, 112, 113})
# file transfer: a file announced (ready), selected/called, or a log queried; the
# sections, segments and acknowledgements that follow are not events of their own
FILE_STARTS = frozenset({120, 122, 127})
ACTIVATION, DEACTIVATION = 6, 8
MAX_CAUSE = 47


class Apdu(NamedTuple):
    control: bytes  # the 4 control octets
    asdu: bytes  # I format only; cut when the APDU ran past the segment
    complete: bool
    trusted: bool  # found where an APDU must start (not by scanning)
    error: str | None

    @property
    def format(self) -> str:
        if not self.control:
            return ""
        c = self.control[0]
        return "I" if not c & 1 else ("S" if c & 3 == 1 else "U")

    @property
    def type_id(self) -> int | None:
        return self.asdu[0] if self.format == "I" and self.asdu else None


def apdus(data: bytes, off: int = 0) -> tuple[list[Apdu], int]:
    """The APDUs from `off`, and where the last one ends (beyond the data when cut)."""
    found: list[Apdu] = []
    end = len(data)
    trusted = True
    while off < end and len(found) < MAX_APDUS:
        if data[off] != START:
            off = data.find(START, off + 1)
            if off < 0:
                return found, end
            trusted = False
        if off + 6 > end:
            return found, (off + 2 + data[off + 1] if off + 1 < end and trusted else end)
        length = data[off + 1]
        stop = off + 2 + length
        if length < 4:
            if trusted:
                found.append(Apdu(data[off + 2 : off + 6], b"", True, trusted, f"APCI length {length}"))
            off, trusted = off + 1, False
            continue
        control = data[off + 2 : off + 6]
        apdu = Apdu(control, data[off + 6 : min(stop, end)], stop <= end, trusted, None)
        apdu = apdu._replace(error=_check(apdu, length))
        found.append(apdu)
        if apdu.error and not trusted:
            off += 1  # a false start found by scanning: look further
            continue
        if stop > end:
            return found, stop if trusted else end
        off, trusted = stop, True
    return found, off


def _check(apdu: Apdu, length: int) -> str | None:
    fmt = apdu.format
    if fmt != "I":
        if length != 4:
            return f"{fmt} format APDU of length {length}"
        if fmt == "U" and apdu.control[0] not in U_FUNCTIONS:
            return f"U format control {apdu.control[0]:#04x}"
        return None
    asdu = apdu.asdu
    if not apdu.complete:
        return None if len(asdu) >= ASDU_HEADER else "ASDU cut before its header"
    if len(asdu) < ASDU_HEADER:
        return f"ASDU of {len(asdu)} bytes"
    type_id, vsq, cause = asdu[0], asdu[1], asdu[2] & 0x3F
    if type_id not in TYPES:
        return None if type_id in PRIVATE_TYPES else f"undefined type id {type_id}"
    if not 1 <= cause <= MAX_CAUSE:
        return f"cause of transmission {cause}"
    count = vsq & 0x7F
    if count == 0:
        return "ASDU without information objects"
    size = TYPES[type_id][1]
    if size is not None:
        expected = ASDU_HEADER + (IOA_SIZE + count * size if vsq & 0x80 else count * (IOA_SIZE + size))
        if len(asdu) != expected:
            return f"ASDU length {len(asdu)} disagrees with {count} x {TYPES[type_id][0]}"
    return None


def controlled_side(pkt: Packet, cause: int | None) -> Side:
    """Which side of the packet is the controlled station (the one the ASDUs address)."""
    if pkt.sport == PORT and pkt.dport != PORT:
        return "src"
    if pkt.dport == PORT and pkt.sport != PORT:
        return "dst"
    return "dst" if cause in (ACTIVATION, DEACTIVATION) else "src"


def cp56time(b: bytes) -> str:
    """A CP56Time2a as ISO-like text (the year is 20xx, as IEC 104 gives two digits)."""
    if len(b) < 7:
        return ""
    ms = int.from_bytes(b[0:2], "little")
    return (f"{2000 + (b[6] & 0x7F):04d}-{b[5] & 0x0F:02d}-{b[4] & 0x1F:02d}T"
            f"{b[3] & 0x1F:02d}:{b[2] & 0x3F:02d}:{ms // 1000:02d}.{ms % 1000:03d}")


def _command(type_id: int, element: bytes) -> dict[str, Any]:
    """Value and select/execute of a command's information element."""
    base = type_id - 13 if type_id >= 58 else type_id  # the time-tagged forms share a layout
    if base in (45, 46, 47) and element:
        mask = 0x01 if base == 45 else 0x03
        return {"value": element[0] & mask, "select": bool(element[0] & 0x80)}
    if base in (48, 49) and len(element) >= 3:
        return {"value": struct.unpack_from("<h", element)[0], "select": bool(element[2] & 0x80)}
    if base == 50 and len(element) >= 5:
        return {"value": struct.unpack_from("<f", element)[0], "select": bool(element[4] & 0x80)}
    if base == 51 and len(element) >= 4:
        return {"value": int.from_bytes(element[:4], "little")}
    return {}


@register
class IEC104(Dissector):
    name = "iec104"
    tcp_ports = frozenset({PORT})
    tcp_all_segments = True

    def __init__(self) -> None:
        self._resync = Resync()

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        start = self._resync.start(pkt)
        if start is None:
            return
        found, end = apdus(pkt.payload, start)
        if end > len(pkt.payload):
            self._resync.expect(pkt, end)
        addresses: set[int] = set()
        controlled: Side | None = None
        for apdu in found:
            if apdu.error:
                if apdu.trusted:
                    out.error(apdu.error)
                continue
            if not (apdu.trusted or apdu.complete):
                continue  # found by scanning and cut: too little to trust
            asdu = apdu.asdu
            if apdu.format != "I":
                controlled = controlled or controlled_side(pkt, None)
                continue
            cause = asdu[2] & 0x3F
            side = controlled_side(pkt, cause)
            out.signal("function", protocol="iec104", code=asdu[0],
                       name=TYPES[asdu[0]][0] if asdu[0] in TYPES else f"type {asdu[0]}")
            controlled = controlled or side
            address = int.from_bytes(asdu[4:6], "little")
            if address not in (0, 0xFFFF):
                addresses.add(address)
            if apdu.complete and asdu[0] in TYPES:
                self._asdu(out, asdu, side)
        if controlled is None:
            return
        controlling: Side = "dst" if controlled == "src" else "src"
        for address in sorted(addresses):
            out.fact("iec104_common_address", address, confidence=0.8, about=controlled)
        out.fact("role", "iec104_controlled", confidence=0.7, about=controlled)
        out.fact("role", "iec104_controlling", confidence=0.7, about=controlling)

    def _asdu(self, out: Evidence, asdu: bytes, controlled: Side) -> None:
        type_id, cot = asdu[0], asdu[2]
        cause = cot & 0x3F
        element = asdu[ASDU_HEADER + IOA_SIZE :]
        details: dict[str, Any] = {
            "type_id": type_id, "type": TYPES[type_id][0], "cause": cause,
            "common_address": int.from_bytes(asdu[4:6], "little"),
            "ioa": int.from_bytes(asdu[ASDU_HEADER : ASDU_HEADER + IOA_SIZE], "little"),
        }
        if cot & 0x80:
            details["test"] = True
        if cot & 0x40:
            details["negative"] = True
        if type_id in FILE_STARTS:
            if len(element) >= 2:
                details["file"] = int.from_bytes(element[:2], "little")
            actor: Side = "dst" if controlled == "src" else "src"  # the controlling station
            out.event("file_transfer", about=actor, **details)
            return
        if cause not in (ACTIVATION, DEACTIVATION):
            return  # confirmations, terminations and monitoring data: nothing done here
        if type_id in COMMANDS:
            out.event("point_operate", **details, **_command(type_id, element))
        elif type_id == CLOCK_SYNC:
            out.event("time_set", **details, time=cp56time(element))
        elif type_id == RESET_PROCESS and element:
            out.event("device_reset", **details, qualifier=element[0])
        elif type_id in PARAMETERS:
            out.event("config_write", **details)
