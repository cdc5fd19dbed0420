"""The EICAR anti-virus test file sent in cleartext: a harmless string every security tool
is expected to flag, so people can check the whole alert chain end to end.

This module finds it at the start of any TCP payload (a raw transfer, FTP data); the HTTP
dissector also looks inside bodies.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

# the 68-byte test string (published by EICAR for exactly this use)
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@register
class Eicar(Dissector):
    name = "eicar"
    tcp_prefixes = frozenset({EICAR[:4]})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        if EICAR in pkt.payload:
            out.signal("eicar", how=pkt.transport or "payload")
