"""EtherNet/IP + CIP (ODVA, TCP/UDP 44818): device identity and what is done to the devices.

Identity comes from List Identity responses (CPF item 0x0C) and from the Identity object's
Get Attributes All / Get Attribute List / Get Attribute Single replies. CIP replies do not
say which object they answer, so requests are remembered per connection (by sender context
for unconnected messages, by sequence count for connected ones) and matched with their
replies; Unconnected Send (the request is routed, e.g. to a module of the chassis behind the
adapter) and Multiple Service Packet are unwrapped. Operations: tag writes (Write Tag,
Write Tag Fragmented, Read-Modify-Write Tag) -> register_write; Set Attribute services on
standard objects -> config_write; Identity Reset -> device_reset; File object initiate
upload/download -> program_upload/program_download; Forward Open -> the originator/target
role of each side.
"""

from __future__ import annotations

import csv
import functools
import io
import struct
from dataclasses import dataclass, field
from importlib import resources

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

PORT = 44818
MAX_MESSAGES = 64  # encapsulation messages looked at in one segment
MAX_ITEMS = 16  # CPF items in one message
MAX_SERVICES = 256  # services in one Multiple Service Packet
MAX_DEPTH = 3  # nesting of Unconnected Send / Multiple Service Packet
MAX_SEGMENTS = 32  # path segments
MAX_PENDING = 8192  # remembered requests
MAX_TAGS = 64  # tag names listed in one register_write event
MAX_PARSED = 1024  # CIP requests remembered parsed…
PARSED_BYTES = 1024  # …when no longer than this

# encapsulation commands
NOP, LIST_SERVICES, LIST_IDENTITY, LIST_INTERFACES = 0x0000, 0x0004, 0x0063, 0x0064
REGISTER_SESSION, UNREGISTER_SESSION, SEND_RR_DATA, SEND_UNIT_DATA = 0x0065, 0x0066, 0x006F, 0x0070
COMMANDS = frozenset({NOP, 0x0001, LIST_SERVICES, LIST_IDENTITY, LIST_INTERFACES, REGISTER_SESSION,
                      UNREGISTER_SESSION, SEND_RR_DATA, SEND_UNIT_DATA, 0x0072, 0x0073})

# common packet format items
ITEM_IDENTITY, ITEM_CONNECTED_ADDRESS, ITEM_CONNECTED_DATA, ITEM_UNCONNECTED_DATA = 0x0C, 0xA1, 0xB1, 0xB2

# CIP services and objects
GET_ATTRIBUTES_ALL, SET_ATTRIBUTES_ALL, GET_ATTRIBUTE_LIST, SET_ATTRIBUTE_LIST = 0x01, 0x02, 0x03, 0x04
RESET, MULTIPLE_SERVICE, GET_ATTRIBUTE_SINGLE, SET_ATTRIBUTE_SINGLE = 0x05, 0x0A, 0x0E, 0x10
READ_MODIFY_WRITE_TAG, WRITE_TAG, WRITE_TAG_FRAGMENTED = 0x4E, 0x4D, 0x53
INITIATE_UPLOAD, INITIATE_DOWNLOAD = 0x4B, 0x4C  # File object
UNCONNECTED_SEND, FORWARD_OPEN, LARGE_FORWARD_OPEN = 0x52, 0x54, 0x5B
IDENTITY, MESSAGE_ROUTER, CONNECTION_MANAGER, FILE_OBJECT, SYMBOL_OBJECT = 0x01, 0x02, 0x06, 0x37, 0x6B
SET_SERVICES = {SET_ATTRIBUTES_ALL: "set_attributes_all", SET_ATTRIBUTE_LIST: "set_attribute_list",
                SET_ATTRIBUTE_SINGLE: "set_attribute_single"}
TAG_WRITES = {WRITE_TAG: "write_tag", WRITE_TAG_FRAGMENTED: "write_tag_fragmented",
              READ_MODIFY_WRITE_TAG: "read_modify_write_tag"}

# ODVA device profiles (CIP Vol. 1, device type numbers) -> device_type fact
DEVICE_TYPES = {
    0x02: "drive", 0x03: "motor overload", 0x04: "limit switch", 0x05: "inductive proximity switch",
    0x06: "photoelectric sensor", 0x07: "general purpose discrete i/o", 0x09: "resolver",
    0x0C: "communications adapter", 0x0E: "plc", 0x10: "position controller", 0x13: "drive",
    0x15: "contactor", 0x16: "motor starter", 0x17: "soft start", 0x18: "hmi",
    0x1A: "mass flow controller", 0x1B: "pneumatic valve", 0x1C: "vacuum pressure gauge",
    0x1D: "process control valve", 0x1E: "residual gas analyzer", 0x1F: "dc power generator",
    0x20: "rf power generator", 0x21: "turbomolecular vacuum pump", 0x22: "encoder",
    0x23: "safety discrete i/o device", 0x24: "fluid flow controller", 0x25: "drive",
    0x26: "componet repeater", 0x27: "mass flow controller", 0x28: "cip modbus device",
    0x29: "cip modbus translator", 0x2A: "safety analog i/o device", 0x2C: "managed switch",
    0x2D: "drive", 0x2E: "drive", 0x2F: "encoder", 0x31: "cip motion i/o",
    0x32: "controlnet physical layer component",
}

# confidence of identity facts by how they were learnt
LIST_IDENTITY_CONFIDENCE, DIRECT_CONFIDENCE, ROUTED_CONFIDENCE = 0.9, 0.8, 0.5

HEADER = struct.Struct("<HHII8sI")
U16 = struct.Struct("<H")


@functools.cache
def vendor_names() -> dict[int, str]:
    """ODVA vendor ids -> names, from tapwatch/data/odva_vendors.csv (read once)."""
    text = resources.files("tapwatch").joinpath("data/odva_vendors.csv").read_text(encoding="utf-8")
    names: dict[int, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        try:
            names[int(row["id"])] = row["name"]
        except (KeyError, TypeError, ValueError):
            continue
    return names


@dataclass(frozen=True, slots=True)
class Path:
    class_id: int | None = None
    instance: int | None = None
    attribute: int | None = None
    symbol: str | None = None  # Logix tag name ("Tag.Member[3]") when the path is symbolic
    has_port: bool = False


@dataclass(slots=True)
class Request:
    service: int
    path: Path
    routed: bool = False
    attributes: list[int] = field(default_factory=list)  # Get Attribute List ids
    embedded: list[Request] = field(default_factory=list)  # Multiple Service Packet parts


def _reply_tells(req: Request) -> bool:
    """Whether the reply to this request identifies a device or a connection role."""
    if req.service in (FORWARD_OPEN, LARGE_FORWARD_OPEN) or req.path.class_id == IDENTITY:
        return True
    return any(_reply_tells(inner) for inner in req.embedded)


@functools.lru_cache(maxsize=4096)
def parse_path(raw: bytes) -> Path:
    """The logical, symbolic and port segments of an EPATH (CIP Vol. 1, C-1). Remembered:
    a controller's clients read the same objects and tags over and over."""
    class_id = instance = attribute = None
    symbol: str | None = None
    has_port = False
    symbols: list[str] = []
    pos = 0
    for _ in range(MAX_SEGMENTS):
        if pos >= len(raw):
            break
        seg = raw[pos]
        if seg >> 5 == 0:  # port segment
            has_port = True
            size = 1 if not seg & 0x10 else (raw[pos + 1] if pos + 1 < len(raw) else 0)
            head = 2 if seg & 0x10 else 1
            if seg & 0x0F == 0x0F:
                head += 2
            pos += head + size + ((head + size) & 1)
        elif seg >> 5 == 1:  # logical segment
            kind, fmt = (seg >> 2) & 0x07, seg & 0x03
            if fmt == 0:
                value, pos = (raw[pos + 1] if pos + 1 < len(raw) else 0), pos + 2
            elif fmt == 1:
                value, pos = int.from_bytes(raw[pos + 2 : pos + 4], "little"), pos + 4
            elif fmt == 2:
                value, pos = int.from_bytes(raw[pos + 2 : pos + 6], "little"), pos + 6
            else:
                break
            if kind == 0:
                class_id = value
            elif kind == 1:
                instance = value
            elif kind == 2:  # member id: an array index after a symbol
                if symbols:
                    symbols[-1] += f"[{value}]"
            elif kind == 4:
                attribute = value
            elif kind == 5 and fmt == 0 and seg == 0x34:  # electronic key: format + 8 bytes
                pos += 8
        elif seg == 0x91:  # ANSI extended symbol
            size = raw[pos + 1] if pos + 1 < len(raw) else 0
            symbols.append(raw[pos + 2 : pos + 2 + size].decode("latin-1"))
            pos += 2 + size + (size & 1)
        elif seg == 0x80:  # simple data segment
            size = raw[pos + 1] if pos + 1 < len(raw) else 0
            pos += 2 + 2 * size
        else:
            break
    if symbols:
        symbol = ".".join(symbols)
    return Path(class_id, instance, attribute, symbol, has_port)


def _short_string(raw: bytes, pos: int) -> tuple[str, int] | None:
    if pos >= len(raw) or pos + 1 + raw[pos] > len(raw):
        return None
    return raw[pos + 1 : pos + 1 + raw[pos]].decode("latin-1"), pos + 1 + raw[pos]


def identity_struct(raw: bytes) -> dict[int, object] | None:
    """Identity attributes 1-7 in their Get Attributes All / List Identity order."""
    if len(raw) < 15:
        return None
    vendor, dtype, code, major, minor, _status, serial = struct.unpack_from("<HHHBBHI", raw)
    name = _short_string(raw, 14)
    attrs: dict[int, object] = {1: vendor, 2: dtype, 3: code, 4: (major, minor), 6: serial}
    if name is not None:
        attrs[7] = name[0]
    return attrs


def identity_attribute(attr: int, raw: bytes) -> tuple[object, int] | None:
    """(value, size) of one Identity attribute at the start of raw."""
    if attr in (1, 2, 3, 5):
        return (U16.unpack_from(raw)[0], 2) if len(raw) >= 2 else None
    if attr == 4:
        return ((raw[0], raw[1]), 2) if len(raw) >= 2 else None
    if attr == 6:
        return (struct.unpack_from("<I", raw)[0], 4) if len(raw) >= 4 else None
    if attr == 7:
        return _short_string(raw, 0)
    if attr in (8, 10):
        return (raw[0], 1) if raw else None
    if attr == 9:
        return (U16.unpack_from(raw)[0], 2) if len(raw) >= 2 else None
    return None


@register
class EtherNetIP(Dissector):
    name = "enip"
    tcp_ports = frozenset({PORT})
    udp_ports = frozenset({PORT})
    tcp_all_segments = True  # tag writes and identity reads run through the whole session
    # the sender context changes with every request, and so does a connected message's
    # sequence count (SendUnitData: 24-byte header, handle, timeout, count, connected
    # address item, then the data item whose first 2 bytes it is); repeats fold into events
    novelty_ignore = ((12, 8), (44, 2, 0, SEND_UNIT_DATA))

    def __init__(self) -> None:
        # (originator ip, port, target ip, port, sender context or sequence count) -> request
        self._pending: dict[tuple[str, int, str, int, bytes | int], Request] = {}
        self._parsed: dict[bytes, tuple[Request | None, set[int], list[tuple[str, str]], Evidence]] = {}

    # ------------------------------------------------------------------ encapsulation

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        self._services: set[int] = set()  # CIP services requested in this payload
        self._messages(pkt, out)
        for service in sorted(self._services):  # once each, however many tags a packet reads
            out.signal("function", protocol="cip", code=service)

    def _messages(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        off = 0
        for _ in range(MAX_MESSAGES):
            if off + HEADER.size > len(data):
                if off == 0 and pkt.transport == "udp" and data:
                    out.error("EtherNet/IP datagram shorter than its header")
                break
            command, length, _session, status, context, _options = HEADER.unpack_from(data, off)
            if command not in COMMANDS:
                if off:  # at offset 0 a TCP segment may continue a long message
                    out.error(f"unknown encapsulation command {command:#06x}")
                return
            body = data[off + HEADER.size : off + HEADER.size + length]
            if len(body) < length:
                return  # the rest is in the next TCP segment
            if status == 0:
                if command == LIST_IDENTITY and body:
                    self._list_identity(body, out)
                elif command in (SEND_RR_DATA, SEND_UNIT_DATA):
                    self._send_data(pkt, body, context, out)
            off += HEADER.size + length

    def _items(self, body: bytes, pos: int, out: Evidence) -> list[tuple[int, bytes]]:
        """Common packet format: item count, then (type, length, data) items."""
        if pos + 2 > len(body):
            out.error("CPF item count missing")
            return []
        count = U16.unpack_from(body, pos)[0]
        pos += 2
        items = []
        for _ in range(min(count, MAX_ITEMS)):
            if pos + 4 > len(body):
                out.error("CPF item header truncated")
                break
            kind, size = struct.unpack_from("<HH", body, pos)
            if pos + 4 + size > len(body):
                out.error("CPF item longer than the message")
                break
            items.append((kind, body[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        return items

    def _list_identity(self, body: bytes, out: Evidence) -> None:
        for kind, item in self._items(body, 0, out):
            if kind != ITEM_IDENTITY:
                continue
            # encapsulation version (2), socket address (16), then the identity attributes
            attrs = identity_struct(item[18:])
            if attrs is None:
                out.error("List Identity item too short")
                continue
            self._identity(attrs, LIST_IDENTITY_CONFIDENCE, out)

    def _send_data(self, pkt: Packet, body: bytes, context: bytes, out: Evidence) -> None:
        # interface handle (4), timeout (2), CPF
        key_part: bytes | int = context
        cip = b""
        for kind, item in self._items(body, 6, out):
            if kind == ITEM_UNCONNECTED_DATA:
                cip = item
            elif kind == ITEM_CONNECTED_DATA and len(item) >= 2:
                key_part, cip = U16.unpack_from(item)[0], item[2:]
        if len(cip) < 2:
            return
        if cip[0] & 0x80:
            key = (pkt.dst_ip, pkt.dport, pkt.src_ip, pkt.sport, key_part)
            self._reply(cip, self._pending.get(key), 0, out)
        else:
            req, services, writes = self._parsed_request(cip, out)
            self._services |= services
            if writes:  # one event per message, however many tags it writes
                out.event("register_write", services=list(dict.fromkeys(s for s, _ in writes)),
                          tags=[t for _, t in writes[:MAX_TAGS]], items=len(writes))
            key = (pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport, key_part)
            if req is not None and _reply_tells(req):
                if len(self._pending) >= MAX_PENDING:
                    self._pending.clear()
                self._pending[key] = req
            else:  # its reply says nothing the request did not (tag reads and their values)
                self._pending.pop(key, None)

    # ------------------------------------------------------------------ CIP requests

    def _parsed_request(self, cip: bytes, out: Evidence) -> tuple[Request | None, set[int],
                                                                   list[tuple[str, str]]]:
        """The request, its services and tag writes, its evidence reported to `out`. A client
        sends the same reads in every session and every poll: each distinct message is parsed
        once and its evidence replayed (Request objects are never changed once parsed)."""
        known = self._parsed.get(cip)
        if known is None:
            heard, services, writes = Evidence(), set[int](), list[tuple[str, str]]()
            req = self._request(cip, 0, heard, services, writes)
            known = (req, services, writes, heard)
            if len(cip) <= PARSED_BYTES:
                if len(self._parsed) >= MAX_PARSED:
                    self._parsed.clear()
                self._parsed[cip] = known
        req, services, writes, heard = known
        out.replay(heard)
        return req, services, writes

    def _request(self, cip: bytes, depth: int, out: Evidence, services: set[int],
                 writes: list[tuple[str, str]]) -> Request | None:
        if len(cip) < 2 or 2 + 2 * cip[1] > len(cip):
            out.error("CIP request path longer than the message")
            return None
        service = cip[0]
        path = parse_path(cip[2 : 2 + 2 * cip[1]])
        if service not in (UNCONNECTED_SEND, MULTIPLE_SERVICE):  # wrappers: their parts count
            services.add(service)
        body = cip[2 + 2 * cip[1] :]
        req = Request(service, path)
        cls = path.class_id
        if service == UNCONNECTED_SEND and cls == CONNECTION_MANAGER and depth < MAX_DEPTH:
            # priority/tick, timeout ticks, message size, message, pad, route path size, reserved, route
            if len(body) < 4:
                out.error("Unconnected Send too short")
                return None
            size = U16.unpack_from(body, 2)[0]
            message = body[4 : 4 + size]
            route = 4 + size + (size & 1)
            inner = self._request(message, depth + 1, out, services, writes)
            if inner is not None:
                inner.routed = route < len(body) and body[route] > 0
            return inner
        if service == MULTIPLE_SERVICE and depth < MAX_DEPTH:
            for part in self._parts(body, out):
                inner = self._request(part, depth + 1, out, services, writes)
                req.embedded.append(inner if inner is not None else Request(0, Path()))
            return req
        if service in TAG_WRITES and (path.symbol is not None or cls == SYMBOL_OBJECT):
            writes.append((TAG_WRITES[service],
                           path.symbol if path.symbol is not None else f"symbol#{path.instance}"))
        elif service in SET_SERVICES and cls is not None and not 0x64 <= cls <= 0xC7 \
                and not 0x300 <= cls <= 0x4FF:  # standard objects, not vendor-specific ones
            out.event("config_write", service=SET_SERVICES[service], object_class=cls,
                      instance=path.instance, attribute=path.attribute)
        elif service == RESET and cls == IDENTITY:
            out.event("device_reset", service="reset", reset_type=body[0] if body else 0)
        elif cls == FILE_OBJECT and service in (INITIATE_UPLOAD, INITIATE_DOWNLOAD):
            kind = "program_upload" if service == INITIATE_UPLOAD else "program_download"
            out.event(kind, object="file", instance=path.instance)
        elif service in (FORWARD_OPEN, LARGE_FORWARD_OPEN) and cls == CONNECTION_MANAGER:
            out.fact("role", "cip_originator", confidence=0.6)
            out.fact("role", "cip_target", confidence=0.6, about="dst")
        elif service == GET_ATTRIBUTE_LIST and len(body) >= 2:
            count = U16.unpack_from(body)[0]
            req.attributes = [U16.unpack_from(body, 2 + 2 * i)[0]
                              for i in range(min(count, (len(body) - 2) // 2, MAX_SERVICES))]
        return req

    def _parts(self, body: bytes, out: Evidence) -> list[bytes]:
        """The embedded messages of a Multiple Service Packet (request or reply data)."""
        if len(body) < 2:
            out.error("Multiple Service Packet without a count")
            return []
        count = min(U16.unpack_from(body)[0], MAX_SERVICES)
        if 2 + 2 * count > len(body):
            out.error("Multiple Service Packet offsets truncated")
            return []
        offsets = [U16.unpack_from(body, 2 + 2 * i)[0] for i in range(count)]
        parts = []
        for i, start in enumerate(offsets):
            end = offsets[i + 1] if i + 1 < count else len(body)
            if not 2 + 2 * count <= start <= end <= len(body):
                out.error("Multiple Service Packet offset out of range")
                break
            parts.append(body[start:end])
        return parts

    # ------------------------------------------------------------------ CIP replies

    def _reply(self, cip: bytes, req: Request | None, depth: int, out: Evidence) -> None:
        if len(cip) < 4 or 4 + 2 * cip[3] > len(cip):
            out.error("CIP reply shorter than its status")
            return
        service, status = cip[0] & 0x7F, cip[2]
        body = cip[4 + 2 * cip[3] :]
        if service in (FORWARD_OPEN, LARGE_FORWARD_OPEN) and status == 0:
            out.fact("role", "cip_target", confidence=0.6)
            out.fact("role", "cip_originator", confidence=0.6, about="dst")
        if req is not None and req.service != service:
            return
        if service == MULTIPLE_SERVICE:  # its parts are checked even when nobody waits for them
            if depth < MAX_DEPTH:
                parts = self._parts(body, out)
                inners = req.embedded if req is not None else []
                for i, part in enumerate(parts):
                    self._reply(part, inners[i] if i < len(inners) else None, depth + 1, out)
            return
        if req is None:
            return
        if status != 0 or req.path.class_id != IDENTITY:
            return
        confidence = ROUTED_CONFIDENCE if req.routed else DIRECT_CONFIDENCE
        if service == GET_ATTRIBUTES_ALL:
            everything = identity_struct(body)
            if everything is None:
                out.error("Identity Get Attributes All reply too short")
                return
            self._identity(everything, confidence, out)
        elif service == GET_ATTRIBUTE_SINGLE and req.path.attribute is not None:
            found = identity_attribute(req.path.attribute, body)
            if found is not None:
                self._identity({req.path.attribute: found[0]}, confidence, out)
        elif service == GET_ATTRIBUTE_LIST and len(body) >= 2:
            # count, then (attribute id, status, value) for each
            attrs: dict[int, object] = {}
            pos = 2
            for _ in range(min(U16.unpack_from(body)[0], MAX_SERVICES)):
                if pos + 4 > len(body):
                    break
                attr, attr_status = struct.unpack_from("<HH", body, pos)
                pos += 4
                if attr_status != 0:
                    continue  # no value follows a failed attribute
                found = identity_attribute(attr, body[pos:])
                if found is None:
                    break  # unknown size: the rest cannot be read
                attrs[attr] = found[0]
                pos += found[1]
            self._identity(attrs, confidence, out)

    def _identity(self, attrs: dict[int, object], confidence: float, out: Evidence) -> None:
        """Facts about the sender from Identity attributes (1 vendor, 2 type, 3 product code,
        4 revision, 6 serial number, 7 product name)."""
        vendor = attrs.get(1)
        if isinstance(vendor, int):
            out.fact("enip_vendor_id", vendor, confidence=confidence)
            name = vendor_names().get(vendor)
            if name:
                out.fact("vendor", name, confidence=confidence)
        dtype = attrs.get(2)
        if isinstance(dtype, int):
            out.fact("enip_device_type", dtype, confidence=confidence)
            kind = DEVICE_TYPES.get(dtype)
            if kind:
                out.fact("device_type", kind, confidence=confidence)
        code = attrs.get(3)
        if isinstance(code, int):
            out.fact("product_code", code, confidence=confidence)
        revision = attrs.get(4)
        if isinstance(revision, tuple):
            out.fact("firmware", f"{revision[0]}.{revision[1]:02d}", confidence=confidence)
        serial = attrs.get(6)
        if isinstance(serial, int):
            out.fact("serial", f"0x{serial:08x}", confidence=confidence)
        product = attrs.get(7)
        if isinstance(product, str):
            out.fact("cip_product_name", product, confidence=confidence)
            out.fact("model", product, confidence=confidence)
