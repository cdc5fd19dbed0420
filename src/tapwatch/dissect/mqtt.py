"""MQTT 3.1, 3.1.1 and 5 over plain TCP: client identifiers, credentials sent in clear, topics.

Each control packet has a fixed header (type and flags in one byte, then the remaining
length as a variable-length integer of at most 4 bytes); one TCP segment may hold several
packets, and a long PUBLISH may go on in later segments (its topic is at the start). A
CONNECT names the client identifier and says whether a user name and a password follow;
PUBLISH, SUBSCRIBE and UNSUBSCRIBE name topics, reported about the client: the sender,
or the receiver of a PUBLISH the broker (port 1883) delivers. SUBSCRIBE and UNSUBSCRIBE
do not say their protocol version (MQTT 5 adds properties): the layout that accounts for
the whole packet is used. Segments that do not start with a packet (the rest of a long
PUBLISH) are left alone.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet, Side

BROKER_PORTS = frozenset({1883})
MAX_PACKETS = 32  # per TCP segment
MAX_TOPICS = 16  # per packet

CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE = 1, 3, 8, 10
# required flag nibble of every type but PUBLISH
FIXED_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}
PROTOCOLS = {(b"MQTT", 4): "3.1.1", (b"MQTT", 5): "5", (b"MQIsdp", 3): "3.1"}


class Malformed(Exception):
    """Bytes that do not follow the packet layout."""


def varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A variable byte integer (at most 4 bytes) at pos: (value, position after it)."""
    value = 0
    for i in range(4):
        if pos >= end:
            raise Malformed("truncated variable-length integer")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    raise Malformed("variable-length integer longer than 4 bytes")


def utf8(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """A length-prefixed UTF-8 string; Malformed when it does not fit or is not UTF-8."""
    if pos + 2 > end:
        raise Malformed("truncated string length")
    n = (data[pos] << 8) | data[pos + 1]
    if pos + 2 + n > end:
        raise Malformed("string longer than the packet")
    try:
        text = data[pos + 2 : pos + 2 + n].decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed("string is not UTF-8") from e
    if "\x00" in text:
        raise Malformed("NUL in a string")
    return text, pos + 2 + n


def skip_binary(data: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise Malformed("truncated binary length")
    n = (data[pos] << 8) | data[pos + 1]
    if pos + 2 + n > end:
        raise Malformed("binary data longer than the packet")
    return pos + 2 + n


def filters(data: bytes, pos: int, end: int, with_options: bool, v5: bool) -> list[str]:
    """The topic filters of a SUBSCRIBE (with an options byte each) or UNSUBSCRIBE from pos."""
    if v5:
        length, pos = varint(data, pos, end)
        pos += length
    topics: list[str] = []
    while pos < end:
        topic, pos = utf8(data, pos, end)
        if not topic:
            raise Malformed("empty topic filter")
        if with_options:
            if pos >= end:
                raise Malformed("topic filter without options")
            options = data[pos]
            if options & 0x03 == 3 or options & (0xC0 if v5 else 0xFC):
                raise Malformed(f"subscription options {options:#04x}")
            pos += 1
        topics.append(topic)
    if not topics:
        raise Malformed("no topic filter")
    return topics


@register
class MQTT(Dissector):
    name = "mqtt"
    tcp_ports = BROKER_PORTS
    tcp_all_segments = True  # topics are named throughout the session

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        end = len(data)
        client: Side = "dst" if pkt.sport in BROKER_PORTS and pkt.dport not in BROKER_PORTS else "src"
        pos = 0
        for _ in range(MAX_PACKETS):
            if pos >= end:
                return
            kind, flags = data[pos] >> 4, data[pos] & 0x0F
            if kind == 0 or FIXED_FLAGS.get(kind, flags) != flags or (kind == PUBLISH and flags & 6 == 6):
                return  # not the start of a packet: the rest of one from an earlier segment
            try:
                length, body = varint(data, pos + 1, end)
            except Malformed:
                return
            stop = min(body + length, end)  # a long packet goes on in the next segments
            try:
                if kind == CONNECT:
                    self._connect(data, body, stop, out)
                elif kind == PUBLISH:
                    topic, _ = utf8(data, body, stop)
                    if "+" in topic or "#" in topic:
                        raise Malformed("wildcard in a PUBLISH topic")
                    out.fact("mqtt_topic", topic, about=client, confidence=0.6)
                elif kind in (SUBSCRIBE, UNSUBSCRIBE):
                    self._filters(data, body + 2, stop, kind == SUBSCRIBE, body + length <= end, out)
            except Malformed as e:
                # a PUBLISH that does not parse may be the rest of a long one: no error for it
                if kind != PUBLISH and body + length <= end:
                    out.error(f"malformed MQTT packet type {kind}: {e}")
                return
            pos = body + length

    def _connect(self, data: bytes, pos: int, end: int, out: Evidence) -> None:
        name, pos = utf8(data, pos, end)
        if pos + 4 > end:
            raise Malformed("truncated CONNECT header")
        level, flags = data[pos], data[pos + 1]
        version = PROTOCOLS.get((name.encode(), level))
        if version is None:
            raise Malformed(f"protocol {name!r} level {level}")
        pos += 4  # level, flags, keep alive
        if version == "5":
            length, pos = varint(data, pos, end)
            pos += length
        client_id, pos = utf8(data, pos, end)
        out.fact("mqtt_client_id", client_id, confidence=0.9)
        out.fact("role", "mqtt-broker", about="dst", confidence=0.5)
        if flags & 0x80:
            out.fact("mqtt_username_present", "true", confidence=0.9)
        if flags & 0x40:  # this dissector only sees MQTT over plain TCP
            out.fact("mqtt_password_cleartext", "true", confidence=0.9)
        if flags & 0x04:  # a will message: its topic is one the client publishes to
            if version == "5":
                length, pos = varint(data, pos, end)
                pos += length
            topic, pos = utf8(data, pos, end)
            out.fact("mqtt_topic", topic, confidence=0.5)

    def _filters(self, data: bytes, pos: int, end: int, subscribe: bool, whole: bool,
                 out: Evidence) -> None:
        """Topic filters of a SUBSCRIBE / UNSUBSCRIBE (after its packet id), version 3 or 5."""
        found: list[str] | None = None
        problem = "no topic filter"
        for v5 in (False, True):
            try:
                found = filters(data, pos, end, subscribe, v5)
                break
            except Malformed as e:
                problem = str(e)
        if found is None:
            if not whole:
                return  # cut by the segment: nothing certain to report
            raise Malformed(problem)
        for topic in list(dict.fromkeys(found))[:MAX_TOPICS]:
            out.fact("mqtt_topic", topic, confidence=0.6)
