"""SSDP (UPnP Device Architecture 2.0 §1): devices announce themselves (NOTIFY) and answer
searches (HTTP/1.1 200) with a SERVER string (OS and UPnP stack), a unique service name,
the device/service types they offer and the URL of their description document.

NOTIFY messages and search answers describe their sender. An M-SEARCH describes what the
sender looks for, not what it is: only its USER-AGENT is a fact, its search target (ST)
is none. Answers come back from the device's port 1900 to the searcher's own port, so
declaring port 1900 selects them too.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.http import parse_headers

MAX_MESSAGE = 8192
ANNOUNCE_HEADERS = (("server", "ssdp_server"), ("usn", "ssdp_usn"), ("nt", "ssdp_nt"), ("st", "ssdp_nt"),
                    ("location", "ssdp_location"))


@register
class SSDP(Dissector):
    name = "ssdp"
    udp_ports = frozenset({1900})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload[:MAX_MESSAGE]
        start = data.split(b"\r\n", 1)[0]
        if data.startswith(b"HTTP/1."):
            announce = True
        elif data.startswith((b"NOTIFY ", b"M-SEARCH ")):
            if b" HTTP/1." not in start:
                out.error("SSDP request line without an HTTP version")
                return
            announce = data.startswith(b"NOTIFY ")
        else:
            return  # not SSDP (other traffic on port 1900)
        headers = parse_headers(data)
        if "user-agent" in headers:
            out.fact("http_user_agent", headers["user-agent"], confidence=0.7)
        if announce:
            for header, attribute in ANNOUNCE_HEADERS:
                if header in headers:
                    out.fact(attribute, headers[header], confidence=0.7)
