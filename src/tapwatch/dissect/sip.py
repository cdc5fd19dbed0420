"""SIP (RFC 3261): IP phones, door stations and PBXs name their software in User-Agent/Server.

A SIP message is a start line and HTTP-style header fields. Any message (request or
response) may carry User-Agent, the software of the user agent that sent it; responses may
carry Server. Neither has a compact form. Header parsing is shared with the HTTP dissector.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.http import parse_headers

MAX_HEADERS = 8192

# RFC 3261, 3262, 3265, 3311, 3428, 3515, 3903, 6086
METHODS = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"REGISTER ", b"OPTIONS ", b"PRACK ",
           b"SUBSCRIBE ", b"NOTIFY ", b"PUBLISH ", b"INFO ", b"REFER ", b"MESSAGE ", b"UPDATE ")
STATUS = b"SIP/2.0 "


@register
class SIP(Dissector):
    name = "sip"
    tcp_ports = frozenset({5060})
    udp_ports = frozenset({5060})
    # SIP over TCP on other ports: messages that open a dialog or stand alone, and responses
    # (in-dialog requests such as ACK, BYE or INFO repeat the same User-Agent)
    tcp_prefixes = frozenset({b"REGI", b"INVI", b"OPTI", b"SUBS", b"NOTI", b"PUBL", b"MESS", b"SIP/"})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload[:MAX_HEADERS]
        if data.startswith(METHODS):
            line = data.split(b"\n", 1)[0].rstrip(b"\r")
            if not line.endswith(b" SIP/2.0"):
                if 5060 in (pkt.sport, pkt.dport) and b" HTTP/" not in line:
                    out.error("SIP request line without SIP/2.0")
                return  # e.g. an HTTP OPTIONS request found by the shared prefix
            response = False
        elif data.startswith(STATUS):
            code = data[8:11]
            if not (code.isdigit() and data[11:12] in (b" ", b"\r", b"\n")):
                out.error("malformed SIP status line")
                return
            response = True
        else:
            return  # keep-alive CRLFs, STUN, or another protocol on the port
        if b"\r\n" not in data:
            data = data.replace(b"\n", b"\r\n")  # tolerate bare-LF line ends
        headers = parse_headers(data)
        agent = headers.get("user-agent")
        if agent:
            out.fact("sip_user_agent", agent, confidence=0.8)
        server = headers.get("server")
        if server and response:
            out.fact("sip_server", server, confidence=0.8)
