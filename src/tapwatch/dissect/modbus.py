"""Modbus/TCP: who serves which unit ids, who writes, restarts or reprograms them.

Modbus has no authentication, so every write, diagnostics restart or (Schneider UMAS,
function 90) PLC start/stop seen on the wire is an operation someone performed on a
controller; the Read Device Identification answer (43/14) names vendor, product and
revision, and a UMAS Read ID answer the CPU model.

Direction: the server listens on 502, so a segment to 502 carries requests and one from
502 responses. Facts about the server (unit id, identification) are therefore about the
destination of requests and the source of responses. One segment may hold several ADUs,
and an ADU may run past its segment: the flow then remembers where the next ADU starts
(by TCP sequence number) so the continuation is not mistaken for a header.
"""

from __future__ import annotations

import struct
from typing import Any

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet, Side
from tapwatch.dissect.tcpstream import Resync

PORT = 502
MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
MAX_ADUS = 64  # per segment
MAX_LENGTH = 260  # MBAP length beyond any ADU, even vendor ones (UMAS uses up to 255)
MAX_PENDING = 4096

# Public function codes: name and what they do to the server.
FUNCTIONS: dict[int, tuple[str, str]] = {
    1: ("read_coils", "read"),
    2: ("read_discrete_inputs", "read"),
    3: ("read_holding_registers", "read"),
    4: ("read_input_registers", "read"),
    5: ("write_single_coil", "write"),
    6: ("write_single_register", "write"),
    7: ("read_exception_status", "read"),
    8: ("diagnostics", "diagnostic"),
    11: ("get_comm_event_counter", "diagnostic"),
    12: ("get_comm_event_log", "diagnostic"),
    15: ("write_multiple_coils", "write"),
    16: ("write_multiple_registers", "write"),
    17: ("report_server_id", "read"),
    20: ("read_file_record", "read"),
    21: ("write_file_record", "write"),
    22: ("mask_write_register", "write"),
    23: ("read_write_multiple_registers", "write"),
    24: ("read_fifo_queue", "read"),
    43: ("encapsulated_interface_transport", "read"),
    90: ("umas", "vendor"),  # Schneider Electric Unity/UMAS
}
# Reserved by the specification for legacy products, and the user-defined ranges:
# valid on the wire, just not public.
VENDOR_FUNCTIONS = frozenset({9, 10, 13, 14, 41, 42, 91, 125, 126, 127}
                             | set(range(65, 73)) | set(range(100, 111)))
WRITES = frozenset(code for code, (_, kind) in FUNCTIONS.items() if kind == "write")

# 43/14 Read Device Identification objects -> fact attributes (0x03 VendorUrl and
# 0x06 UserApplicationName have no attribute).
DEVICE_ID_OBJECTS = {0x00: "vendor", 0x01: "product_code", 0x02: "firmware",
                     0x04: "product_name", 0x05: "model"}
MEI_DEVICE_ID = 14

# UMAS (function 90) operations. In UMAS wording "upload" goes from the engineering
# station to the PLC, which is a program *download* in this project's vocabulary.
UMAS_READ_ID = 0x02
UMAS_OK = 0xFE
UMAS_EVENTS: dict[int, tuple[str, str]] = {
    0x23: ("register_write", "write_variables"),
    0x25: ("register_write", "write_coils_registers"),
    0x30: ("program_download", "initialize_upload"),
    0x33: ("program_upload", "initialize_download"),
    0x40: ("plc_start", "start_plc"),
    0x41: ("plc_stop", "stop_plc"),
}
UMAS_READ_ID_NAME_AT = 22  # bytes of READ_ID answer data before the CPU name's length

DIAG_RESTART = 1
DIAG_LISTEN_ONLY = 4


def pdus(payload: bytes) -> list[bytes]:
    """The PDUs (function code on) of the well-framed ADUs of a payload, for tests and tools."""
    return [pdu for _tid, _unit, pdu, _complete in _adus(payload)[0] if pdu]


def _adus(data: bytes, off: int = 0) -> tuple[list[tuple[int, int, bytes, bool]], str | None, int]:
    """(transaction id, unit id, PDU, complete) of each ADU from `off`, the framing error if
    any, and where the last ADU ends (beyond the data when it was cut)."""
    adus: list[tuple[int, int, bytes, bool]] = []
    end = len(data)
    while off + 4 <= end and len(adus) < MAX_ADUS:
        if data[off + 2 : off + 4] != b"\x00\x00":  # protocol id: not Modbus
            return adus, "bytes after an ADU are not an MBAP header" if adus else None, off
        if off + 6 > end:
            break
        length = int.from_bytes(data[off + 4 : off + 6], "big")
        if length < 2 or length > MAX_LENGTH:
            return adus, f"MBAP length {length}", off
        stop = off + 6 + length
        if off + 8 > end:  # the segment ends inside the header
            return adus, None, stop
        tid, _pid, _length, unit = MBAP.unpack_from(data, off)
        adus.append((tid, unit, data[off + 7 : min(stop, end)], stop <= end))
        off = stop
    return adus, None, off


@register
class Modbus(Dissector):
    name = "modbus"
    tcp_ports = frozenset({PORT})
    tcp_all_segments = True
    # the MBAP transaction id changes with every poll, and so do the values of a read (the
    # addresses and counts of a read request say nothing the dissector reports either);
    # clients pipeline requests, several ADUs to a segment
    novelty_ignore = ((0, 2), *((9, -1, 7, code) for code in (1, 2, 3, 4)))
    novelty_frames = (4, 6, 2)  # MBAP length (bytes after it), protocol id 0

    def __init__(self) -> None:
        # UMAS answers do not repeat the request's code: (client, port, server, tid) -> code
        self._umas_pending: dict[tuple[str, int, str, int], int] = {}
        self._resync = Resync()

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        start = self._resync.start(pkt)
        if start is None:
            return
        adus, error, end = _adus(pkt.payload, start)
        if end > len(pkt.payload):
            self._resync.expect(pkt, end)
        request = pkt.dport == PORT
        server: Side = "dst" if request else "src"
        units: set[int] = set()
        for tid, unit, pdu, complete in adus:
            if not pdu:
                continue
            if self._pdu(pkt, out, request, tid, unit, pdu, complete):
                units.add(unit)
        if error:
            out.error(error)
        if units:
            client: Side = "src" if request else "dst"
            for unit in sorted(units):
                out.fact("modbus_unit_id", unit, confidence=0.8, about=server)
            out.fact("role", "modbus_server", confidence=0.7, about=server)
            out.fact("role", "modbus_client", confidence=0.7, about=client)

    def _pdu(self, pkt: Packet, out: Evidence, request: bool, tid: int, unit: int, pdu: bytes,
             complete: bool) -> bool:
        """Report one PDU; False when its function code is not Modbus."""
        fc = pdu[0]
        code = fc & 0x7F
        if code == 0:
            out.error("function code 0")
            out.signal("illegal_function", about="src" if request else "dst", protocol="modbus",
                       code=0)
            return False
        if code not in FUNCTIONS and code not in VENDOR_FUNCTIONS:
            out.error(f"undefined function code {code}")
            out.signal("illegal_function", about="src" if request else "dst", protocol="modbus",
                       code=code)
            return False
        if fc & 0x80:  # exception response: the code says why, nothing was done
            if request:
                out.error(f"exception function code {fc:#04x} in a request")
                return False
            if complete and len(pdu) < 2:
                out.error("exception response without an exception code")
        elif request:
            self._request(pkt, out, tid, unit, pdu, complete)
        else:
            self._response(pkt, out, tid, pdu, complete)
        return True

    # ------------------------------------------------------------------ requests

    def _request(self, pkt: Packet, out: Evidence, tid: int, unit: int, pdu: bytes,
                 complete: bool) -> None:
        fc = pdu[0]
        n = len(pdu)
        out.signal("function", protocol="modbus",
                   code=fc, name=FUNCTIONS[fc][0] if fc in FUNCTIONS else f"vendor {fc}")
        if fc in WRITES:
            write = _write(fc, pdu)
            if write is None:
                if complete:
                    out.error(f"function {fc} request fields disagree with its length")
                return
            address, quantity, extra = write
            out.event("register_write", function_code=fc, function=FUNCTIONS[fc][0], unit_id=unit,
                      address=address, quantity=quantity, **extra)
        elif fc == 8 and n >= 3:
            sub = int.from_bytes(pdu[1:3], "big")
            data = pdu[3:5]
            if sub == DIAG_RESTART:
                out.event("device_reset", function_code=8, function="diagnostics", unit_id=unit,
                          sub_function=sub, clear_event_log=data == b"\xff\x00")
            elif sub == DIAG_LISTEN_ONLY:
                out.event("mode_change", function_code=8, function="diagnostics", unit_id=unit,
                          sub_function=sub, mode="listen_only")
        elif fc == 90 and n >= 3:
            umas = pdu[2]
            key = (pkt.src_ip, pkt.sport, pkt.dst_ip, tid)
            if len(self._umas_pending) >= MAX_PENDING:
                self._umas_pending.clear()
            self._umas_pending[key] = umas
            if umas in UMAS_EVENTS:
                kind, name = UMAS_EVENTS[umas]
                out.event(kind, function_code=90, function="umas", unit_id=unit, umas_function=name,
                          umas_code=umas)
        elif complete and fc in (1, 2, 3, 4) and n < 5:
            out.error(f"function {fc} request shorter than 5 bytes")

    # ------------------------------------------------------------------ responses

    def _response(self, pkt: Packet, out: Evidence, tid: int, pdu: bytes, complete: bool) -> None:
        fc = pdu[0]
        if fc == 43 and len(pdu) >= 2 and pdu[1] == MEI_DEVICE_ID:
            for object_id, value in device_id_objects(pdu):
                attribute = DEVICE_ID_OBJECTS.get(object_id)
                if attribute:
                    out.fact(attribute, value, confidence=0.9)
        elif fc == 90:
            umas = self._umas_pending.pop((pkt.dst_ip, pkt.dport, pkt.src_ip, tid), None)
            if len(pdu) >= 3 and pdu[2] == UMAS_OK:
                out.fact("device_type", "plc", confidence=0.6)  # a UMAS server is a Modicon PLC
                if umas == UMAS_READ_ID:
                    name = _umas_cpu_name(pdu[3:])
                    if name:
                        out.fact("model", name, confidence=0.8)
        elif fc in (1, 2, 3, 4, 23) and complete and len(pdu) >= 2 and len(pdu) != 2 + pdu[1]:
            out.error(f"function {fc} response byte count {pdu[1]} disagrees with its length")


def _write(fc: int, pdu: bytes) -> tuple[int, int, dict[str, Any]] | None:
    """(start address, quantity, extra details) of a write request; None when malformed."""
    n = len(pdu)
    if fc in (5, 6):
        if n < 5:
            return None
        address, value = struct.unpack_from(">HH", pdu, 1)
        return address, 1, {"value": value}
    if fc in (15, 16):
        if n < 6:
            return None
        address, quantity, count = struct.unpack_from(">HHB", pdu, 1)
        expected = (quantity + 7) // 8 if fc == 15 else quantity * 2
        if count != expected or n < 6 + count:
            return None
        return address, quantity, {}
    if fc == 22:
        if n < 7:
            return None
        address, and_mask, or_mask = struct.unpack_from(">HHH", pdu, 1)
        return address, 1, {"and_mask": and_mask, "or_mask": or_mask}
    if fc == 23:
        if n < 10:
            return None
        read_address, read_quantity, address, quantity, count = struct.unpack_from(">HHHHB", pdu, 1)
        if count != quantity * 2 or n < 10 + count:
            return None
        return address, quantity, {"read_address": read_address, "read_quantity": read_quantity}
    if fc == 21:  # first sub-request: reference type 6, file, record, record length
        if n < 9 or pdu[2] != 6 or pdu[1] + 2 != n:
            return None
        file_number, record, length = struct.unpack_from(">HHH", pdu, 3)
        return record, length, {"file": file_number}
    return None


def device_id_objects(pdu: bytes) -> list[tuple[int, str]]:
    """(object id, text) pairs of a Read Device Identification (43/14) response PDU."""
    # 0x2B 0x0E, read code, conformity level, more follows, next object id, object count
    if len(pdu) < 7:
        return []
    objects: list[tuple[int, str]] = []
    off, end = 7, len(pdu)
    for _ in range(pdu[6]):
        if off + 2 > end:
            break
        object_id, size = pdu[off], pdu[off + 1]
        if off + 2 + size > end:
            break
        objects.append((object_id, pdu[off + 2 : off + 2 + size].decode("utf-8", "replace")))
        off += 2 + size
    return objects


def _umas_cpu_name(data: bytes) -> str:
    """The CPU module name of a UMAS READ_ID answer (the bytes after the 0xFE status)."""
    at = UMAS_READ_ID_NAME_AT
    if len(data) <= at:
        return ""
    size = data[at]
    name = data[at + 1 : at + 1 + size]
    if len(name) != size or not name.isascii() or not name.strip():
        return ""
    text = name.decode("ascii")
    return text if text.isprintable() else ""
