"""BACnet (ASHRAE 135): building controllers announce their device instance and vendor.

BACnet/IP datagrams carry a BVLC header (Annex J), then the NPDU (clause 6), then the APDU
(clause 20); over 802.2 LLC (SAP 0x82) the NPDU starts right after the LLC header. Read:
I-Am / I-Have (device instance, vendor id, object names), Who-Is (a client looking for
devices), ReadProperty / ReadPropertyMultiple acknowledgements of the device's identity
properties, and the requests that change a device: writes, reinitialize, communication
control, file access and time synchronization. Messages that a router relays from another
BACnet network (NPDU source specifier) or a BBMD forwards describe a device behind the
sender: they are reported with low confidence and without identity attributes.
Segmented messages are not reassembled; only what their first segment holds is read.
"""

from __future__ import annotations

import codecs
import csv
import functools
import importlib.resources
import io
from typing import Any, TypeGuard

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_TAGS = 512  # per service body
MAX_RPM_OBJECTS = 64

# BVLC functions (Annex J.2) whose payload is an NPDU, and where it starts
BVLC_NPDU_AT = {0x04: 10, 0x09: 4, 0x0A: 4, 0x0B: 4}

DEVICE = 8  # object type
WILDCARD_INSTANCE = 0x3FFFFF

# application tag numbers (20.2.1.4)
APP_BOOLEAN, APP_UNSIGNED, APP_ENUMERATED, APP_CHARSTRING, APP_OBJECT_ID = 1, 2, 9, 7, 12
OPEN, CLOSE = 6, 7

# property identifiers (21) -> fact attribute
PROP_APPLICATION_SOFTWARE_VERSION, PROP_FIRMWARE_REVISION, PROP_MODEL_NAME = 12, 44, 70
PROP_OBJECT_IDENTIFIER, PROP_OBJECT_NAME, PROP_VENDOR_IDENTIFIER, PROP_VENDOR_NAME = 75, 77, 120, 121
PROP_SERIAL_NUMBER = 372
IDENTITY_PROPERTIES = {
    PROP_VENDOR_NAME: "vendor", PROP_MODEL_NAME: "model", PROP_FIRMWARE_REVISION: "firmware",
    PROP_APPLICATION_SOFTWARE_VERSION: "os_version", PROP_SERIAL_NUMBER: "serial",
}

# unconfirmed services (21)
I_AM, I_HAVE, TIME_SYNCHRONIZATION, WHO_HAS, WHO_IS, UTC_TIME_SYNCHRONIZATION, WRITE_GROUP = (
    0, 1, 6, 7, 8, 9, 10)
# confirmed services
READ_PROPERTY, READ_PROPERTY_MULTIPLE, REINITIALIZE_DEVICE = 12, 14, 20
CONFIG_SERVICES = {
    8: "add-list-element", 9: "remove-list-element", 10: "create-object", 11: "delete-object",
    15: "write-property", 16: "write-property-multiple", 17: "device-communication-control",
}
FILE_SERVICES = {6: "read", 7: "write"}  # atomicReadFile, atomicWriteFile
REINITIALIZED_STATES = {
    0: ("cold_restart", "coldstart"), 1: ("warm_restart", "warmstart"),
    2: ("file_transfer", "start-backup"), 3: ("file_transfer", "end-backup"),
    4: ("config_write", "start-restore"), 5: ("config_write", "end-restore"),
    6: ("config_write", "abort-restore"), 7: ("config_write", "activate-changes"),
}
COMMUNICATION_STATES = {0: "enable", 1: "disable", 2: "disable-initiation"}

# NPDU network layer message types (6.2.4)
I_AM_ROUTER_TO_NETWORK = 0x01

CONF_DIRECT, CONF_RELAYED = 0.9, 0.2

Tag = tuple[int, bool, int, int, int]  # number, is context, LVT, value start, value end


@functools.cache
def vendor_names() -> dict[int, str]:
    """ASHRAE vendor identifier -> organisation (data/bacnet_vendors.csv), read once."""
    text = importlib.resources.files("tapwatch").joinpath("data/bacnet_vendors.csv").read_text("utf-8")
    rows = csv.reader(io.StringIO(text))
    return {int(r[0]): r[1] for r in rows if len(r) >= 2 and r[0].isdigit() and r[1]}


def read_tag(data: bytes, pos: int, end: int) -> Tag | None:
    """One BACnet tag at pos (20.2.1); None when it does not fit before end."""
    if pos >= end:
        return None
    b = data[pos]
    pos += 1
    number, context, lvt = b >> 4, bool(b & 0x08), b & 0x07
    if number == 15:
        if pos >= end:
            return None
        number = data[pos]
        pos += 1
    if context and lvt in (OPEN, CLOSE):
        return number, True, lvt, pos, pos
    if not context and number == APP_BOOLEAN:
        return number, False, lvt, pos, pos  # the value is the LVT itself
    length = lvt
    if lvt == 5:
        if pos >= end:
            return None
        length = data[pos]
        pos += 1
        if length in (254, 255):
            size = 2 if length == 254 else 4
            if pos + size > end:
                return None
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
    if pos + length > end:
        return None
    return number, context, lvt, pos, pos + length


def is_open(t: Tag | None, number: int) -> TypeGuard[Tag]:
    return t is not None and t[1] and t[2] == OPEN and t[0] == number


def is_close(t: Tag | None, number: int) -> TypeGuard[Tag]:
    return t is not None and t[1] and t[2] == CLOSE and t[0] == number


def is_context(t: Tag | None, number: int) -> TypeGuard[Tag]:
    """A primitive context-tagged value [number]."""
    return t is not None and t[1] and t[0] == number and t[2] not in (OPEN, CLOSE)


def skip_constructed(data: bytes, pos: int, end: int, number: int) -> int | None:
    """Position after the closing tag `number` matching an opening tag just read."""
    depth = 0
    for _ in range(MAX_TAGS):
        t = read_tag(data, pos, end)
        if t is None:
            return None
        pos = t[4]
        if t[1] and t[2] == OPEN:
            depth += 1
        elif t[1] and t[2] == CLOSE:
            if depth == 0:
                return pos if t[0] == number else None
            depth -= 1
    return None


def unsigned(data: bytes, t: Tag) -> int:
    return int.from_bytes(data[t[3] : t[4]], "big")


@functools.cache
def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def character_string(content: bytes) -> str | None:
    """A CharacterString value (20.2.9): character-set octet, then the characters."""
    if not content:
        return None
    charset, body = content[0], content[1:]
    if charset == 0:  # ISO 10646 UTF-8 (formerly ANSI X3.4)
        return body.decode("utf-8", "replace")
    if charset == 1:  # IBM/Microsoft DBCS: a two-octet code page comes first
        if len(body) < 2:
            return None
        codec = _codec(f"cp{int.from_bytes(body[:2], 'big')}")
        return body[2:].decode(codec or "latin-1", "replace")
    if charset == 2:  # JIS X 0208: the same code points as EUC-JP without the high bits
        return bytes(b | 0x80 for b in body).decode("euc_jp", "replace")
    if charset == 3:
        return body.decode("utf-32-be", "replace")
    if charset == 4:
        return body.decode("utf-16-be", "replace")
    if charset == 5:
        return body.decode("latin-1")
    return None


@register
class BACnet(Dissector):
    name = "bacnet"
    udp_ports = frozenset({47808})
    protocols = frozenset({"bacnet"})  # BACnet over 802.2 LLC, once the catalog maps SAP 0x82

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        relayed = False
        if pkt.transport == "udp":
            if len(data) < 4 or data[0] != 0x81:
                if data[:1] != b"\x82":  # BACnet/IPv6 (Annex U) is not read
                    out.error("not a BACnet/IP BVLC header")
                return
            length = int.from_bytes(data[2:4], "big")
            if length < 4 or length > len(data):
                out.error(f"BVLC length {length} does not fit the {len(data)}-byte datagram")
                return
            start = BVLC_NPDU_AT.get(data[1])
            if start is None:
                return  # BVLL management (results, BDT/FDT): no NPDU
            if start > length:
                out.error("truncated Forwarded-NPDU")
                return
            relayed = data[1] == 0x04  # a BBMD forwards another node's broadcast
            self._npdu(data[start:length], relayed, out)
        elif pkt.transport == "":
            self._npdu(data, relayed, out)

    def _npdu(self, npdu: bytes, relayed: bool, out: Evidence) -> None:
        end = len(npdu)
        if end < 2:
            out.error("truncated NPDU")
            return
        if npdu[0] != 1:
            out.error(f"NPDU protocol version {npdu[0]}")
            return
        control = npdu[1]
        pos = 2
        if control & 0x20:  # DNET, DLEN, DADR
            if pos + 3 > end:
                out.error("truncated NPDU destination")
                return
            pos += 3 + npdu[pos + 2]
        if control & 0x08:  # SNET, SLEN, SADR: relayed by a router from another network
            if pos + 3 > end:
                out.error("truncated NPDU source")
                return
            pos += 3 + npdu[pos + 2]
            relayed = True
        if control & 0x20:
            pos += 1  # hop count
        if pos >= end:
            out.error("NPDU without a message")
            return
        if control & 0x80:  # network layer message
            if npdu[pos] == I_AM_ROUTER_TO_NETWORK and not relayed:
                out.fact("role", "bacnet-router", confidence=0.6)
            return
        self._apdu(npdu[pos:], relayed, out)

    def _apdu(self, apdu: bytes, relayed: bool, out: Evidence) -> None:
        end = len(apdu)
        kind = apdu[0] >> 4
        segmented = bool(apdu[0] & 0x08)
        if kind == 0:  # Confirmed-Request
            at = 5 if segmented else 3
            if at >= end:
                out.error("truncated BACnet confirmed request")
                return
            if segmented and apdu[3] != 0:
                return  # a later segment: its service body is a continuation
            self._confirmed(apdu[at], apdu[at + 1 :], segmented, relayed, out)
        elif kind == 1:  # Unconfirmed-Request
            if end < 2:
                out.error("truncated BACnet unconfirmed request")
                return
            self._unconfirmed(apdu[1], apdu[2:], relayed, out)
        elif kind == 3:  # Complex-ACK
            at = 4 if segmented else 2
            if at >= end:
                out.error("truncated BACnet Complex-ACK")
                return
            if segmented and apdu[2] != 0:
                return
            body = apdu[at + 1 :]
            if apdu[at] == READ_PROPERTY:
                self._read_property_ack(body, segmented, relayed, out)
            elif apdu[at] == READ_PROPERTY_MULTIPLE:
                self._read_property_multiple_ack(body, segmented, relayed, out)
        elif kind > 7:
            out.error(f"unknown BACnet APDU type {kind}")

    # --- unconfirmed services -------------------------------------------------------------

    def _unconfirmed(self, service: int, body: bytes, relayed: bool, out: Evidence) -> None:
        conf = CONF_RELAYED if relayed else CONF_DIRECT
        end = len(body)
        if service == I_AM:
            t = read_tag(body, 0, end)
            if t is None or t[1] or t[0] != APP_OBJECT_ID or t[4] - t[3] != 4:
                out.error("I-Am without an object identifier")
                return
            oid = unsigned(body, t)
            if oid >> 22 == DEVICE:
                out.fact("bacnet_device_instance", oid & WILDCARD_INSTANCE, confidence=conf)
            pos = t[4]
            for _ in range(2):  # max APDU length accepted, segmentation supported
                t = read_tag(body, pos, end)
                if t is None:
                    out.error("truncated I-Am")
                    return
                pos = t[4]
            t = read_tag(body, pos, end)
            if t is None or t[1] or t[0] != APP_UNSIGNED:
                out.error("I-Am without a vendor identifier")
                return
            self._vendor_id(unsigned(body, t), relayed, out)
        elif service == I_HAVE:
            device = read_tag(body, 0, end)
            obj = read_tag(body, device[4], end) if device else None
            name = read_tag(body, obj[4], end) if obj else None
            if (device is None or obj is None or name is None or name[1] or name[0] != APP_CHARSTRING
                    or obj[4] - obj[3] != 4):
                out.error("malformed I-Have")
                return
            if device[4] - device[3] == 4 and unsigned(body, device) >> 22 == DEVICE:
                out.fact("bacnet_device_instance", unsigned(body, device) & WILDCARD_INSTANCE,
                         confidence=conf)
            self._object_name(unsigned(body, obj) >> 22, body[name[3] : name[4]], relayed, out)
        elif service == WHO_IS:
            if not relayed:
                out.fact("role", "bacnet-client", confidence=0.3)
        elif service in (TIME_SYNCHRONIZATION, UTC_TIME_SYNCHRONIZATION):
            out.event("time_set", service="utc-time-synchronization" if service == UTC_TIME_SYNCHRONIZATION
                      else "time-synchronization", relayed=relayed)
        elif service == WRITE_GROUP:
            out.event("point_operate", service="write-group", relayed=relayed)
        # WHO_HAS names an object the sender is looking for, not one of its own: not a fact

    # --- confirmed services ---------------------------------------------------------------

    def _confirmed(self, service: int, body: bytes, segmented: bool, relayed: bool,
                   out: Evidence) -> None:
        end = len(body)
        if service in CONFIG_SERVICES:
            details: dict[str, Any] = {"service": CONFIG_SERVICES[service], "relayed": relayed}
            t = read_tag(body, 0, end)
            if service == 17:  # DeviceCommunicationControl: [0] duration?, [1] enable-disable
                for _ in range(3):
                    if t is None or not t[1] or t[2] in (OPEN, CLOSE):
                        break
                    if t[0] == 0:
                        details["duration_minutes"] = unsigned(body, t)
                    elif t[0] == 1:
                        state = unsigned(body, t)
                        details["state"] = COMMUNICATION_STATES.get(state, str(state))
                    t = read_tag(body, t[4], end)
            elif t is not None and t[1] and t[0] == 0 and t[4] - t[3] == 4:  # [0] object identifier
                oid = unsigned(body, t)
                details["object_type"], details["instance"] = oid >> 22, oid & WILDCARD_INSTANCE
                p = read_tag(body, t[4], end)
                if service == 15 and p is not None and p[1] and p[0] == 1 and p[2] not in (OPEN, CLOSE):
                    details["property"] = unsigned(body, p)
            out.event("config_write", **details)
        elif service in FILE_SERVICES:
            details = {"direction": FILE_SERVICES[service], "relayed": relayed}
            t = read_tag(body, 0, end)
            if t is not None and not t[1] and t[0] == APP_OBJECT_ID and t[4] - t[3] == 4:
                details["file_instance"] = unsigned(body, t) & WILDCARD_INSTANCE
            out.event("file_transfer", **details)
        elif service == REINITIALIZE_DEVICE:
            t = read_tag(body, 0, end)
            if t is None or not t[1] or t[0] != 0 or t[2] in (OPEN, CLOSE):
                if not segmented:
                    out.error("ReinitializeDevice without a reinitialized state")
                out.event("device_reset", state="unknown", relayed=relayed)
                return
            state = unsigned(body, t)
            kind, state_name = REINITIALIZED_STATES.get(state, ("device_reset", str(state)))
            pw = read_tag(body, t[4], end)
            out.event(kind, service="reinitialize-device", state=state_name,
                      password=is_context(pw, 1), relayed=relayed)

    # --- acknowledgements -----------------------------------------------------------------

    def _read_property_ack(self, body: bytes, partial: bool, relayed: bool, out: Evidence) -> None:
        end = len(body)
        oid = read_tag(body, 0, end)
        prop = read_tag(body, oid[4], end) if oid else None
        if (oid is None or prop is None or not oid[1] or oid[0] != 0 or oid[4] - oid[3] != 4
                or not prop[1] or prop[0] != 1 or prop[2] in (OPEN, CLOSE)):
            if not partial:
                out.error("malformed ReadProperty-ACK")
            return
        t = read_tag(body, prop[4], end)
        if t is not None and t[1] and t[0] == 2 and t[2] not in (OPEN, CLOSE):  # array index
            t = read_tag(body, t[4], end)
        if not is_open(t, 3):
            if not partial:
                out.error("ReadProperty-ACK without a property value")
            return
        value = read_tag(body, t[4], end)
        self._property(unsigned(body, oid), unsigned(body, prop), body, value, relayed, out)

    def _read_property_multiple_ack(self, body: bytes, partial: bool, relayed: bool,
                                    out: Evidence) -> None:
        pos: int | None = 0
        for _ in range(MAX_RPM_OBJECTS):
            if pos is None:
                if not partial:
                    out.error("malformed ReadPropertyMultiple-ACK")
                return
            if not any(body[pos:]):  # the end, or Ethernet padding after an LLC frame
                return
            pos = self._rpm_object(body, pos, relayed, out)

    def _rpm_object(self, body: bytes, pos: int, relayed: bool, out: Evidence) -> int | None:
        """One ReadAccessResult: [0] object identifier, [1] { [2] property, [3] index?,
        [4] { value } or [5] { error } ... }; the position after it, None when malformed."""
        end = len(body)
        oid = read_tag(body, pos, end)
        if oid is None or not is_context(oid, 0) or oid[4] - oid[3] != 4:
            return None
        t = read_tag(body, oid[4], end)
        if not is_open(t, 1):
            return None
        pos = t[4]
        prop = -1
        for _ in range(MAX_TAGS):
            t = read_tag(body, pos, end)
            if t is None:
                return None
            pos = t[4]
            if is_close(t, 1):
                return pos
            if is_context(t, 2):
                prop = unsigned(body, t)
            elif is_open(t, 4) or is_open(t, 5):
                if t[0] == 4:
                    self._property(unsigned(body, oid), prop, body, read_tag(body, pos, end), relayed, out)
                after = skip_constructed(body, pos, end, t[0])
                if after is None:
                    return None
                pos = after
        return None

    def _property(self, oid: int, prop: int, body: bytes, value: Tag | None, relayed: bool,
                  out: Evidence) -> None:
        if value is None or value[1]:
            return
        otype = oid >> 22
        content = body[value[3] : value[4]]
        conf = CONF_RELAYED if relayed else 0.8
        if value[0] == APP_CHARSTRING:
            if prop == PROP_OBJECT_NAME:
                self._object_name(otype, content, relayed, out)
            elif prop in IDENTITY_PROPERTIES and not relayed:
                text = character_string(content)
                if text is not None:
                    out.fact(IDENTITY_PROPERTIES[prop], text, confidence=0.8)
        elif value[0] == APP_UNSIGNED and prop == PROP_VENDOR_IDENTIFIER and otype == DEVICE:
            self._vendor_id(unsigned(body, value), relayed, out)
        elif (value[0] == APP_OBJECT_ID and prop == PROP_OBJECT_IDENTIFIER and len(content) == 4
              and int.from_bytes(content, "big") >> 22 == DEVICE):
            out.fact("bacnet_device_instance", int.from_bytes(content, "big") & WILDCARD_INSTANCE,
                     confidence=conf)

    def _object_name(self, otype: int, content: bytes, relayed: bool, out: Evidence) -> None:
        text = character_string(content)
        if text is None:
            out.error(f"object name in unknown character set {content[:1].hex()}")
            return
        # the device object's name names the device; other objects' names describe its points
        conf = CONF_RELAYED if relayed else 0.8 if otype == DEVICE else 0.3
        out.fact("bacnet_object_name", text, confidence=conf)

    def _vendor_id(self, vendor_id: int, relayed: bool, out: Evidence) -> None:
        out.fact("bacnet_vendor_id", vendor_id, confidence=CONF_RELAYED if relayed else CONF_DIRECT)
        name = vendor_names().get(vendor_id)
        if name and not relayed:
            out.fact("vendor", name, confidence=0.7)
