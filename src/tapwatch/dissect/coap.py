"""CoAP (RFC 7252) over UDP: the resources a client asks a constrained device for.

A 4-byte header (version 1, type, token length, code, message ID), the token, then options
coded as deltas from the previous option number, then optionally 0xFF and the payload. A
request's Uri-Host, Uri-Port and Uri-Path options form the URI it asks the server (the
receiver) for: "/a/b", or "coap://host:port/a/b" when the client names the host. A
response's Location-Path (the resource a POST created) is the server's (the sender's).
Uri-Query is left out: it is per request, not per resource.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

MAX_OPTIONS = 64
URI_HOST, LOCATION_PATH, URI_PORT, URI_PATH = 3, 8, 7, 11


def options(data: bytes, pos: int) -> list[tuple[int, bytes]] | str:
    """(number, value) of each option from pos, or a reason when they are malformed."""
    found: list[tuple[int, bytes]] = []
    end = len(data)
    number = 0
    for _ in range(MAX_OPTIONS):
        if pos >= end or data[pos] == 0xFF:
            return found
        delta, length = data[pos] >> 4, data[pos] & 0x0F
        pos += 1
        values = []
        for nibble in (delta, length):
            if nibble == 13:
                if pos >= end:
                    return "truncated option"
                nibble = 13 + data[pos]
                pos += 1
            elif nibble == 14:
                if pos + 2 > end:
                    return "truncated option"
                nibble = 269 + int.from_bytes(data[pos : pos + 2], "big")
                pos += 2
            elif nibble == 15:
                return "reserved option nibble 15"
            values.append(nibble)
        number += values[0]
        if pos + values[1] > end:
            return f"option {number} longer than the message"
        found.append((number, data[pos : pos + values[1]]))
        pos += values[1]
    return found


def text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


@register
class CoAP(Dissector):
    name = "coap"
    udp_ports = frozenset({5683})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        if len(data) < 4:
            out.error("CoAP message shorter than its header")
            return
        if data[0] >> 6 != 1:
            out.error(f"CoAP version {data[0] >> 6}")
            return
        token_length, code = data[0] & 0x0F, data[1]
        if token_length > 8:
            out.error(f"CoAP token length {token_length}")
            return
        found = options(data, 4 + token_length)
        if isinstance(found, str):
            out.error(found)
            return
        if 1 <= code <= 31:  # a request
            path = [text(v) for n, v in found if n == URI_PATH]
            host = next((text(v) for n, v in found if n == URI_HOST), "")
            port = next((int.from_bytes(v, "big") for n, v in found if n == URI_PORT), None)
            if host:
                authority = host if port is None else f"{host}:{port}"
                out.fact("coap_uri", f"coap://{authority}/" + "/".join(path), about="dst", confidence=0.6)
            elif path:
                out.fact("coap_uri", "/" + "/".join(path), about="dst", confidence=0.6)
        elif code >= 64:  # a response
            location = [text(v) for n, v in found if n == LOCATION_PATH]
            if location:
                out.fact("coap_uri", "/" + "/".join(location), confidence=0.5)
