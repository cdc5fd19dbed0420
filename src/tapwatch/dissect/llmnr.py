"""LLMNR (RFC 4795): a host answers name queries only for its own name, so a positive
answer tells the responder's host name (Windows machines answer even with NetBIOS off).

Queries say nothing about the sender (it asks for someone else, or checks its own name
for conflicts without saying so), so only answers are used, and only A/AAAA answers that
carry the responder's own address (or an address of the other family, which cannot be
compared: a dual-stack host answers an IPv6-carried query with its IPv4 address).
"""

from __future__ import annotations

import ipaddress

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.dns import ANSWER, T_A, T_AAAA, DNSError, incomplete, parse_message


@register
class LLMNR(Dissector):
    name = "llmnr"
    udp_ports = frozenset({5355})
    novelty_ignore = ((0, 2),)  # the message id of each query and answer

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        try:
            msg = parse_message(pkt.payload)
        except DNSError as e:
            if not incomplete(pkt):
                out.error(f"malformed LLMNR message: {e}")
            return
        if msg.error and not incomplete(pkt):
            out.error(f"malformed LLMNR message: {msg.error}")
        if not msg.response or msg.rcode != 0 or msg.opcode != 0:
            return
        try:
            sender = ipaddress.ip_address(pkt.src_ip) if pkt.src_ip else None
        except ValueError:
            sender = None
        names: dict[str, float] = {}
        for rec in msg.records:
            if rec.section != ANSWER or rec.rtype not in (T_A, T_AAAA):
                continue
            if len(rec.rdata) != (4 if rec.rtype == T_A else 16):
                out.error(f"LLMNR address record of {len(rec.rdata)} bytes")
                continue
            address = ipaddress.ip_address(rec.rdata)
            if sender is not None and address == sender:
                confidence = 0.8
            elif sender is None or address.version != sender.version:
                confidence = 0.6
            else:
                continue  # an answer about another address of the same family: not the sender
            name = rec.name
            if name:
                names[name] = max(confidence, names.get(name, 0.0))
        for name, confidence in names.items():
            out.fact("hostname", name, confidence=confidence)
