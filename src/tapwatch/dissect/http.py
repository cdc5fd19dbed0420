"""HTTP/1.x: the client's User-Agent and the Host it asks for, the server's Server header."""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.eicar import EICAR

METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ")
MAX_HEADERS = 8192


def parse_headers(block: bytes) -> dict[str, str]:
    """Header fields of an HTTP-style message (first value wins), names lower-cased."""
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n")[1:]:
        if not line:
            break
        name, sep, value = line.partition(b":")
        if sep and name and not name[:1].isspace():
            headers.setdefault(name.strip().lower().decode("latin-1"),
                               value.strip().decode("utf-8", "replace"))
    return headers


@register
class HTTP(Dissector):
    name = "http"
    tcp_ports = frozenset({80, 8000, 8008, 8080, 8081, 8888, 631, 5985, 7547})
    tcp_prefixes = frozenset({m[:4] for m in METHODS} | {b"HTTP"})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload[:MAX_HEADERS]
        if data.startswith(METHODS):
            line = data.split(b"\r\n", 1)[0]
            if b" HTTP/" not in line:
                if b" SIP/" not in line and b" RTSP/" not in line:  # same methods, other protocols
                    out.error("request line without an HTTP version")
                return
            headers = parse_headers(data)
            if "user-agent" in headers:
                out.fact("http_user_agent", headers["user-agent"], confidence=0.7)
            if "host" in headers:
                out.fact("http_host", headers["host"], about="dst", confidence=0.5)
                out.signal("domain", name=headers["host"].rsplit(":", 1)[0].lower(), how="http")
            if EICAR in data:
                out.signal("eicar", how="http request")
        elif data.startswith(b"HTTP/1."):
            headers = parse_headers(data)
            if data[9:12] == b"401":  # the client (the receiver) failed to authenticate
                out.signal("login", about="dst", service="http", outcome="failure")
            if EICAR in pkt.payload:
                out.signal("eicar", how="http response")
            if "server" in headers:
                out.fact("http_server", headers["server"], confidence=0.7)
