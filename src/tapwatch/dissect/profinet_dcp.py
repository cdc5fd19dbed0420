"""PROFINET DCP (IEC 61158-6-10): IO devices state their station name, type, vendor/device ID and role.

DCP rides in PROFINET RT frames (ethertype 0x8892) with frame IDs 0xFEFC (Hello),
0xFEFD (Get/Set), 0xFEFE (Identify request) and 0xFEFF (Identify response). After the
10-byte DCP header (service ID, service type, Xid, response delay, data length) come
blocks of option, suboption and length; in responses and Hello each block starts with a
2-byte BlockInfo, in Set requests with a 2-byte BlockQualifier, in Identify requests the
blocks are filters without either. Blocks are padded to an even length.

An Identify request filtered by NameOfStation names the station that is looked for: a
device checking that its own name is unique at start-up, or a controller looking for one
of its devices. It is reported about the sender with low confidence.
"""

from __future__ import annotations

from typing import Any

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_BLOCKS = 64

HELLO, GET_SET, IDENTIFY_REQUEST, IDENTIFY_RESPONSE = 0xFEFC, 0xFEFD, 0xFEFE, 0xFEFF
SERVICE_GET, SERVICE_SET, SERVICE_IDENTIFY, SERVICE_HELLO = 3, 4, 5, 6
REQUEST = 0

OPT_IP, OPT_DEVICE, OPT_DHCP, OPT_CONTROL = 1, 2, 3, 5
SUB_VENDOR_VALUE, SUB_NAME_OF_STATION, SUB_DEVICE_ID, SUB_DEVICE_ROLE = 1, 2, 3, 4
SUB_IP_PARAMETER, SUB_IP_SUITE = 2, 3
SUB_CONTROL_START, SUB_CONTROL_STOP, SUB_CONTROL_SIGNAL = 1, 2, 3
SUB_CONTROL_FACTORY_RESET, SUB_CONTROL_RESET_TO_FACTORY = 5, 6

ROLES = ((0x01, "IO-Device"), (0x02, "IO-Controller"), (0x04, "IO-Multidevice"), (0x08, "PN-Supervisor"))
SET_NAMES = {(OPT_IP, 1): "mac-address", (OPT_IP, SUB_IP_PARAMETER): "ip-parameter",
             (OPT_IP, SUB_IP_SUITE): "ip-suite", (OPT_DEVICE, SUB_NAME_OF_STATION): "name-of-station",
             (OPT_DEVICE, 6): "alias-name", (OPT_DHCP, 61): "dhcp-client-id"}


def text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def ip(value: bytes) -> str:
    return ".".join(str(b) for b in value[:4])


@register
class ProfinetDCP(Dissector):
    name = "profinet_dcp"
    ethertypes = frozenset({0x8892})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if len(data) < 2:
            out.error("PROFINET frame without a frame ID")
            return
        frame_id = int.from_bytes(data[:2], "big")
        if not HELLO <= frame_id <= IDENTIFY_RESPONSE:
            return  # cyclic data, alarms, PTCP: not DCP
        if len(data) < 12:
            out.error("truncated DCP header")
            return
        service, service_type = data[2], data[3]
        length = int.from_bytes(data[10:12], "big")
        if 12 + length > len(data):
            out.error(f"DCP data length {length} beyond the frame")
            return
        blocks = data[12 : 12 + length]
        if service == SERVICE_IDENTIFY and service_type == REQUEST:
            self._blocks(blocks, 0, out, identify_request=True)
        elif service == SERVICE_SET and service_type == REQUEST:
            self._set(blocks, out)
        elif (service in (SERVICE_IDENTIFY, SERVICE_GET) and service_type & 0x01) or (
                service == SERVICE_HELLO and service_type == REQUEST):
            self._blocks(blocks, 2, out)  # Identify/Get responses and Hello: BlockInfo first
        elif service not in (SERVICE_GET, SERVICE_SET, SERVICE_IDENTIFY, SERVICE_HELLO):
            out.error(f"unknown DCP service {service}")

    def _walk(self, blocks: bytes, out: Evidence) -> list[tuple[int, int, bytes]]:
        """(option, suboption, block data) of each block."""
        found = []
        pos, end = 0, len(blocks)
        for _ in range(MAX_BLOCKS):
            if pos + 4 > end:
                if pos < end and any(blocks[pos:]):
                    out.error("truncated DCP block header")
                break
            option, suboption = blocks[pos], blocks[pos + 1]
            length = int.from_bytes(blocks[pos + 2 : pos + 4], "big")
            if pos + 4 + length > end:
                out.error(f"DCP block {option}/{suboption} longer than the data")
                break
            found.append((option, suboption, blocks[pos + 4 : pos + 4 + length]))
            pos += 4 + length + (length & 1)
        return found

    def _blocks(self, blocks: bytes, skip: int, out: Evidence, identify_request: bool = False) -> None:
        for option, suboption, value in self._walk(blocks, out):
            value = value[skip:]
            if option != OPT_DEVICE:
                continue
            if suboption == SUB_NAME_OF_STATION:
                out.fact("profinet_station_name", text(value), confidence=0.3 if identify_request else 0.9)
            elif identify_request:
                continue  # other filters (type, IDs, alias) describe the device looked for
            elif suboption == SUB_VENDOR_VALUE:
                out.fact("model", text(value), confidence=0.8)  # "type of station", e.g. S7-1200
            elif suboption == SUB_DEVICE_ID and len(value) >= 4:
                out.fact("profinet_vendor_id", f"0x{int.from_bytes(value[:2], 'big'):04x}", confidence=0.9)
                out.fact("profinet_device_id", f"0x{int.from_bytes(value[2:4], 'big'):04x}", confidence=0.9)
            elif suboption == SUB_DEVICE_ROLE and value:
                roles = [name for bit, name in ROLES if value[0] & bit]
                if roles:
                    out.fact("profinet_role", ",".join(roles), confidence=0.8)

    def _set(self, blocks: bytes, out: Evidence) -> None:
        """A Set request (BlockQualifier first): the sender changes the device's parameters."""
        for option, suboption, value in self._walk(blocks, out):
            value = value[2:]
            if option == OPT_CONTROL:
                if suboption in (SUB_CONTROL_FACTORY_RESET, SUB_CONTROL_RESET_TO_FACTORY):
                    out.event("device_reset", service="dcp-set", what="factory-reset")
                continue  # start/stop of a transaction, signal (flash the LED)
            what = SET_NAMES.get((option, suboption), f"option-{option}.{suboption}")
            details: dict[str, Any] = {"service": "dcp-set", "what": what}
            if (option, suboption) == (OPT_DEVICE, SUB_NAME_OF_STATION):
                details["value"] = text(value)
            elif option == OPT_IP and suboption in (SUB_IP_PARAMETER, SUB_IP_SUITE) and len(value) >= 12:
                details.update(ip=ip(value), netmask=ip(value[4:]), gateway=ip(value[8:]))
            out.event("config_write", **details)
