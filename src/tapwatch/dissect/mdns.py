"""Multicast DNS (RFC 6762) and DNS-SD (RFC 6763): the names and services a device announces.

A responder only answers with its own records, so every name in an mDNS response (any
section) describes the sender: host names (A/AAAA owners, SRV targets, reverse-lookup
targets) become `mdns_name`, service types and instances `mdns_service`, and TXT
key=value pairs `mdns_txt`, with the well-known model/vendor/OS keys lifted out. Queries
carry other devices' records (known answers) and are ignored, except the authority section
of a probe, which holds the records the sender is about to claim.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.dns import (
    AUTHORITY,
    T_PTR,
    T_SRV,
    T_TXT,
    DNSError,
    incomplete,
    parse_message,
    rdata_name,
    srv_target,
    txt_strings,
)

# TXT keys (compared case-insensitively, RFC 6763 §6.4) that state identity values
TXT_IDENTITY = {
    b"md": "model", b"model": "model", b"ty": "model", b"product": "model",
    b"manufacturer": "vendor", b"usb_mfg": "vendor",
    b"osxvers": "os_version",
}
MAX_TXT = 64  # TXT strings reported per message
REVERSE_ZONES = (".in-addr.arpa", ".ip6.arpa")


def name_attribute(name: str) -> str | None:
    """Which fact a DNS-SD name is: a service (type or instance: has a '_label'), a host
    name, or nothing (the root, and reverse-mapping names, which only restate an address)."""
    if not name or name.lower().endswith(REVERSE_ZONES):
        return None
    for label in name.split("."):
        if label.startswith("_"):
            return "mdns_service"
    return "mdns_name"


class Facts:
    """Reports each (attribute, value) once per message."""

    __slots__ = ("out", "seen", "confidence")

    def __init__(self, out: Evidence, confidence: float) -> None:
        self.out = out
        self.seen: set[tuple[str, str]] = set()
        self.confidence = confidence

    def add(self, attribute: str, value: str, confidence: float | None = None) -> None:
        if (attribute, value) not in self.seen:
            self.seen.add((attribute, value))
            self.out.fact(attribute, value, confidence=self.confidence if confidence is None else confidence)


def txt_facts(raw: bytes, facts: Facts) -> None:
    """One TXT character-string: the pair itself, and an identity value for known keys."""
    text = raw.decode("utf-8", "replace").strip()
    if not text or text.startswith("="):
        return  # RFC 6763 §6.4: strings without a key are ignored
    facts.add("mdns_txt", text, 0.6)
    key, sep, value = raw.partition(b"=")
    attribute = TXT_IDENTITY.get(key.strip().lower())
    if sep and attribute:
        facts.add(attribute, value.decode("utf-8", "replace").strip(), 0.6)


@register
class MDNS(Dissector):
    name = "mdns"
    udp_ports = frozenset({5353})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        msg = pkt.payload
        try:
            parsed = parse_message(msg)
        except DNSError as e:
            if not incomplete(pkt):
                out.error(f"malformed mDNS message: {e}")
            return
        if parsed.error and not incomplete(pkt):
            out.error(f"malformed mDNS message: {parsed.error}")
        if parsed.response:
            records = parsed.records
            facts = Facts(out, 0.7)
        else:  # a probe's proposed records (RFC 6762 §8.1); known answers are others' records
            records = [r for r in parsed.records if r.section == AUTHORITY]
            facts = Facts(out, 0.5)
        txt_budget = MAX_TXT
        for rec in records:
            try:
                owner = rec.name
                attribute = name_attribute(owner)
                if attribute:
                    facts.add(attribute, owner)
                if rec.rtype == T_PTR:
                    target = rdata_name(msg, rec)
                elif rec.rtype == T_SRV:
                    target = srv_target(msg, rec)
                elif rec.rtype == T_TXT:
                    for raw in txt_strings(rec)[: max(txt_budget, 0)]:
                        txt_budget -= 1
                        txt_facts(raw, facts)
                    continue
                else:
                    continue
            except DNSError as e:
                out.error(f"malformed mDNS record: {e}")
                continue
            attribute = name_attribute(target)
            if attribute:
                facts.add(attribute, target)
