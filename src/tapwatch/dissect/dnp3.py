"""DNP3 (IEEE 1815) on TCP and UDP 20000: station addresses, master/outstation roles, and
the operations a master performs on an outstation.

DNP3 runs substations and water plants; apart from its optional Secure Authentication it
trusts whoever speaks, so a SELECT/OPERATE, a restart, a STOP_APPL, a time write or a file
opened on an outstation is worth knowing about. The link layer gives each station's own
address (the source of its frames), and protects the 10-byte header and every 16-byte data
block with a CRC, which is checked: a frame with a bad CRC is counted as an error.

Only the first transport segment of an application fragment starts with the application
header; later segments carry object data only and are not decoded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

PORT = 20000
START = b"\x05\x64"
HEADER = 10  # start, length, control, destination, source, CRC
BLOCK = 16
MAX_FRAMES = 32  # per segment or datagram
MAX_OBJECTS = 16  # object headers decoded per request
MAX_POINTS = 16  # point indices kept in event details


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1  # 0x3D65, bit-reversed
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """The DNP3 link-layer CRC of `data` (sent little-endian after it)."""
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return ~crc & 0xFFFF


FUNCTIONS = {
    0: "confirm", 1: "read", 2: "write", 3: "select", 4: "operate", 5: "direct_operate",
    6: "direct_operate_nr", 7: "immed_freeze", 8: "immed_freeze_nr", 9: "freeze_clear",
    10: "freeze_clear_nr", 11: "freeze_at_time", 12: "freeze_at_time_nr", 13: "cold_restart",
    14: "warm_restart", 15: "initialize_data", 16: "initialize_appl", 17: "start_appl",
    18: "stop_appl", 19: "save_config", 20: "enable_unsolicited", 21: "disable_unsolicited",
    22: "assign_class", 23: "delay_measure", 24: "record_current_time", 25: "open_file",
    26: "close_file", 27: "delete_file", 28: "get_file_info", 29: "authenticate_file",
    30: "abort_file", 31: "activate_config", 32: "authenticate_req", 33: "auth_req_no_ack",
    129: "response", 130: "unsolicited_response", 131: "authenticate_resp",
}
RESPONSES = frozenset({129, 130, 131})
WRITE = 2
EVENTS = {
    3: "point_operate", 4: "point_operate", 5: "point_operate", 6: "point_operate",
    13: "cold_restart", 14: "warm_restart", 17: "plc_start", 18: "plc_stop",
    19: "config_write", 31: "config_write",
    25: "file_transfer", 26: "file_transfer", 27: "file_transfer", 28: "file_transfer",
    29: "file_transfer", 30: "file_transfer",
}
GROUP_TIME, GROUP_FILE, GROUP_IIN = 50, 70, 80
TIME_WRITES = frozenset({(50, 1), (50, 3)})  # absolute time; last recorded time (LAN sync)

# Fixed object sizes in requests (bytes); bit-packed objects; the rest is unknown and
# stops the decoding of further object headers.
OBJECT_SIZES = {
    (12, 1): 11, (12, 2): 11, (41, 1): 5, (41, 2): 3, (41, 3): 5, (41, 4): 9,
    (50, 1): 6, (50, 2): 10, (50, 3): 6, (50, 4): 11, (34, 1): 2, (34, 2): 4, (34, 3): 4,
    (20, 1): 5, (20, 2): 3, (20, 5): 4, (20, 6): 2, (40, 1): 5, (40, 2): 3, (40, 3): 5, (40, 4): 9,
}
BIT_OBJECTS = frozenset({(1, 1), (10, 1), (12, 3), (80, 1)})
RANGE_SIZES = {0: 1, 1: 2, 2: 4, 3: 1, 4: 2, 5: 4}  # start/stop pairs
COUNT_SIZES = {7: 1, 8: 2, 9: 4, 0xB: 1}
PREFIX_SIZES = {0: 0, 1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4}  # 1-3 index, 4-6 object size


class Frame(NamedTuple):
    control: int
    destination: int
    source: int
    data: bytes  # user data with the block CRCs removed (complete, CRC-checked blocks only)
    complete: bool  # every data block was present


class ObjectHeader(NamedTuple):
    group: int
    variation: int
    qualifier: int
    points: tuple[int, ...]  # indices (prefix) or start..stop (range), at most MAX_POINTS
    first: bytes  # the first object's bytes, when the request carries data


def frames(data: bytes) -> tuple[list[Frame], list[str]]:
    """The link frames in a payload and the errors found. Bytes before a frame start (a
    TCP segment continuing an earlier frame) are skipped; a frame is trusted where one must
    begin (offset 0, or right after a frame), elsewhere only when its header CRC holds."""
    found: list[Frame] = []
    errors: list[str] = []
    off, end, trusted = 0, len(data), True
    while len(found) < MAX_FRAMES:
        if not data.startswith(START, off):
            off = data.find(START, off + 1)
            if off < 0:
                break
            trusted = False
        if off + HEADER > end:
            break
        header = data[off : off + HEADER]
        if crc16(header[:8]) != int.from_bytes(header[8:10], "little"):
            if trusted:
                errors.append("link header CRC mismatch")
            off, trusted = off + 1, False
            continue
        length = header[2]
        if length < 5:
            errors.append(f"link length {length} below 5")
            off, trusted = off + HEADER, False
            continue
        size = length - 5
        stop = off + HEADER + size + 2 * ((size + BLOCK - 1) // BLOCK)
        user, bad = _blocks(data, off + HEADER, min(stop, end), size)
        if bad:
            errors.append("data block CRC mismatch")
        found.append(Frame(header[3], int.from_bytes(header[4:6], "little"),
                           int.from_bytes(header[6:8], "little"), user, not bad and len(user) == size))
        off, trusted = stop, True
        if off >= end:
            break
    return found, errors


def _blocks(data: bytes, off: int, stop: int, size: int) -> tuple[bytes, bool]:
    """User data from the CRC-protected blocks in data[off:stop]; True when a CRC failed."""
    parts: list[bytes] = []
    left = size
    while left > 0 and off < stop:
        n = min(BLOCK, left)
        if off + n + 2 > stop:
            break  # the segment ends inside this block
        block = data[off : off + n]
        if crc16(block) != int.from_bytes(data[off + n : off + n + 2], "little"):
            return b"".join(parts), True
        parts.append(block)
        off += n + 2
        left -= n
    return b"".join(parts), False


def object_headers(data: bytes, with_data: bool) -> tuple[list[ObjectHeader], str | None]:
    """The object headers of a request (after the function code), and a format error.
    Decoding stops quietly at the end of the data or at an object of unknown size."""
    headers: list[ObjectHeader] = []
    off, end = 0, len(data)
    while off + 3 <= end and len(headers) < MAX_OBJECTS:
        group, variation, qualifier = data[off], data[off + 1], data[off + 2]
        off += 3
        prefix, code = (qualifier >> 4) & 0x07, qualifier & 0x0F
        if qualifier & 0x80 or prefix not in PREFIX_SIZES:
            return headers, f"object qualifier {qualifier:#04x} reserved"
        points: list[int] = []
        if code in RANGE_SIZES:
            n = RANGE_SIZES[code]
            if off + 2 * n > end:
                break
            first = int.from_bytes(data[off : off + n], "little")
            last = int.from_bytes(data[off + n : off + 2 * n], "little")
            off += 2 * n
            if last < first:
                return headers, f"object range {first}..{last} reversed"
            count = last - first + 1
            if prefix == 0:
                points = list(range(first, first + min(count, MAX_POINTS)))
        elif code in COUNT_SIZES:
            n = COUNT_SIZES[code]
            if off + n > end:
                break
            count = int.from_bytes(data[off : off + n], "little")
            off += n
        elif code == 6:
            count = 0  # all objects, no data
        else:
            return headers, f"object qualifier {qualifier:#04x} reserved"
        first_object = b""
        p = PREFIX_SIZES[prefix]
        sized = prefix in (4, 5, 6)
        if with_data and prefix == 0 and (group, variation) in BIT_OBJECTS:
            first_object = data[off : off + 1]
            off += (count + 7) // 8
        elif p or with_data:
            size = 0 if sized or not with_data else (
                variation if group == 110 else OBJECT_SIZES.get((group, variation), -1))
            if size < 0:  # unknown size: the next header cannot be found
                headers.append(ObjectHeader(group, variation, qualifier, tuple(points), b""))
                return headers, None
            for i in range(count):
                if off + p > end:
                    off = end
                    break
                value = int.from_bytes(data[off : off + p], "little")
                off += p
                if prefix in (1, 2, 3) and len(points) < MAX_POINTS:
                    points.append(value)
                n = value if sized else size
                if i == 0:
                    first_object = data[off : off + n]
                off += n
                if off >= end or (p == 0 and n == 0):
                    break
        headers.append(ObjectHeader(group, variation, qualifier, tuple(points), first_object))
    return headers, None


def _file_name(obj: bytes) -> str:
    """The name in a file command (g70v3) or file descriptor (g70v7) object."""
    if len(obj) < 4:
        return ""
    at, size = int.from_bytes(obj[0:2], "little"), int.from_bytes(obj[2:4], "little")
    name = obj[at : at + size]
    return name.decode("utf-8", "replace") if size and len(name) == size else ""


@register
class DNP3(Dissector):
    name = "dnp3"
    tcp_ports = frozenset({PORT})
    udp_ports = frozenset({PORT})
    tcp_all_segments = True

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        found, errors = frames(pkt.payload)
        for reason in errors:
            out.error(reason)
        addresses: set[int] = set()
        master: bool | None = None
        for frame in found:
            addresses.add(frame.source)
            sender = self._frame(out, frame)
            if sender is None:
                sender = bool(frame.control & 0x80)  # DIR: set on frames from the master
            master = sender if master is None else master
        for address in sorted(addresses):
            out.fact("dnp3_address", address, confidence=0.8)
        if master is not None:
            me, peer = ("dnp3_master", "dnp3_outstation") if master else ("dnp3_outstation", "dnp3_master")
            out.fact("role", me, confidence=0.7)
            out.fact("role", peer, confidence=0.6, about="dst")

    def _frame(self, out: Evidence, frame: Frame) -> bool | None:
        """Decode the application layer of a frame; True/False: sent by a master/outstation."""
        control, data = frame.control, frame.data
        if not (control & 0x40) or (control & 0x0F) not in (3, 4) or not data:
            return None  # link-layer service, or no user data
        if not data[0] & 0x40:
            return None  # not the first transport segment: no application header here
        app = data[1:]
        if len(app) < 2:
            if frame.complete:
                out.error("application header truncated")
            return None
        fc = app[1]
        if fc not in FUNCTIONS:
            out.error(f"undefined application function code {fc}")
            return None
        if fc in RESPONSES:
            if len(app) < 4 and frame.complete:
                out.error("response without internal indications")
            return False
        self._request(out, frame, fc, app[2:])
        return True

    def _request(self, out: Evidence, frame: Frame, fc: int, body: bytes) -> None:
        out.signal("function", protocol="dnp3", code=fc, name=FUNCTIONS[fc])
        headers, error = object_headers(body, with_data=fc != 1)
        if error and frame.complete:
            out.error(error)
        groups = {(h.group, h.variation) for h in headers}
        details: dict[str, Any] = {"function_code": fc, "function": FUNCTIONS[fc],
                                   "link_destination": frame.destination}
        if headers:
            details["objects"] = [f"g{h.group}v{h.variation}" for h in headers]
        points = [p for h in headers for p in h.points][:MAX_POINTS]
        if points:
            details["points"] = points
        kinds: list[str] = []
        if fc == WRITE:
            if groups & TIME_WRITES:
                kinds.append("time_set")
                h = next(h for h in headers if (h.group, h.variation) in TIME_WRITES)
                if len(h.first) >= 6:
                    details["time_ms"] = int.from_bytes(h.first[:6], "little")
            # writing only g80 clears the outstation's restart indication: routine, not config
            if any(h.group not in (GROUP_TIME, GROUP_IIN, GROUP_FILE) for h in headers):
                kinds.append("config_write")
        elif fc in EVENTS:
            kinds.append(EVENTS[fc])
            crob = next((h for h in headers if (h.group, h.variation) == (12, 1)), None)
            if crob is not None and crob.first:
                details["control_code"] = crob.first[0]
        if any(h.group == GROUP_FILE for h in headers):
            name = next((_file_name(h.first) for h in headers
                         if h.group == GROUP_FILE and h.variation in (3, 7)), "")
            if name:
                details["file"] = name
            if "file_transfer" not in kinds:
                kinds.append("file_transfer")
        for kind in kinds:
            out.event(kind, **details)
