"""TLS handshakes: the client's SNI and JA3/JA4 fingerprints, the server's certificate subject.

Encrypted traffic still says a lot in its first packets. The ClientHello names the server
the client wants (SNI) and its offer — versions, cipher suites, extensions — fingerprints
the client's TLS stack (JA3 as tshark computes it, JA4 per FoxIO's specification). Before
TLS 1.3 the server's Certificate travels in the clear, and the leaf certificate's subject
names the server. A handshake message may span several TCP segments, so a small, bounded
per-flow buffer joins consecutive segments (by TCP sequence number) until it is complete.
"""

from __future__ import annotations

import hashlib
import struct

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet
from tapwatch.dissect.tcpstream import tcp_seq

HANDSHAKE = 22
CLIENT_HELLO = 1
CERTIFICATE = 11
MAX_RECORD = 16384 + 2048  # TLSCiphertext bound (RFC 5246 6.2.3)
MAX_RECORDS = 64  # records looked at per buffer
MAX_MESSAGES = 16  # handshake messages looked at per buffer
MAX_BUFFER = 24 * 1024  # bytes kept per flow direction while a message is incomplete
MAX_PENDING = 256  # flow directions with an incomplete message
MAX_EARLY = 4  # out-of-order segments kept per flow direction
MAX_LIST = 512  # entries read from any one list (ciphers, extensions, groups, ...)

# Record-layer versions SSL 3.0 .. TLS 1.2 (TLS 1.3 keeps 0x0301/0x0303 on the wire).
RECORD_VERSIONS = (0, 1, 2, 3)

# Selecting TLS on any port: 4-byte prefixes (content type 22, version 3.x, high byte of the
# record length). ClientHellos are below 2 KB even with post-quantum key shares, so the high
# byte is 0x00..0x07 for the versions clients use (3.1 and 3.3); 3.0 and 3.2 are rare and
# short. 20 prefixes keep the selector's per-packet scan cheap. A server flight longer than
# 2 KB on an undeclared port is missed unless the ServerHello has a record of its own.
TLS_PREFIXES = frozenset(
    {bytes((HANDSHAKE, 3, v, hi)) for v in (1, 3) for hi in range(8)}
    | {bytes((HANDSHAKE, 3, v, hi)) for v in (0, 2) for hi in range(2)}
)

VERSION_CODES = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                 0x0200: "s2", 0x0100: "s1"}

EXT_SNI = 0x0000
EXT_GROUPS = 0x000A
EXT_POINT_FORMATS = 0x000B
EXT_SIG_ALGS = 0x000D
EXT_ALPN = 0x0010
EXT_VERSIONS = 0x002B


class Malformed(Exception):
    """Raised inside this module only, caught in dissect()."""


def is_grease(v: int) -> bool:
    """RFC 8701 GREASE values: 0x0a0a, 0x1a1a, ..., 0xfafa."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


def _u16_list(data: bytes) -> list[int]:
    n = min(len(data) // 2, MAX_LIST)
    return list(struct.unpack_from(f"!{n}H", data)) if n else []


class ClientHello:
    """The parts of a ClientHello that JA3, JA4 and the SNI need."""

    __slots__ = ("version", "ciphers", "extensions", "sni", "groups", "point_formats",
                 "sig_algs", "alpn", "supported_versions")

    def __init__(self, body: bytes) -> None:
        """Parse a ClientHello body (after the 4-byte handshake header); raises Malformed."""
        n = len(body)
        if n < 38:
            raise Malformed("ClientHello shorter than its fixed fields")
        self.version = (body[0] << 8) | body[1]
        off = 34
        sid_len = body[off]
        if sid_len > 32:
            raise Malformed("ClientHello session id longer than 32 bytes")
        off += 1 + sid_len
        if off + 2 > n:
            raise Malformed("ClientHello truncated before its cipher suites")
        cs_len = (body[off] << 8) | body[off + 1]
        off += 2
        if cs_len % 2 or off + cs_len > n:
            raise Malformed("ClientHello cipher suite list overruns the message")
        self.ciphers = _u16_list(body[off : off + cs_len])
        off += cs_len
        if off >= n:
            raise Malformed("ClientHello truncated before its compression methods")
        off += 1 + body[off]
        if off > n:
            raise Malformed("ClientHello compression methods overrun the message")
        self.extensions: list[int] = []
        self.sni: str | None = None
        self.groups: list[int] = []
        self.point_formats: list[int] = []
        self.sig_algs: list[int] = []
        self.alpn: bytes | None = None
        self.supported_versions: list[int] = []
        if off + 2 > n:
            return  # no extensions block (allowed before TLS 1.2)
        ext_len = (body[off] << 8) | body[off + 1]
        off += 2
        end = off + ext_len
        if end > n:
            raise Malformed("ClientHello extensions overrun the message")
        while off + 4 <= end and len(self.extensions) < MAX_LIST:
            etype, elen = struct.unpack_from("!HH", body, off)
            off += 4
            if off + elen > end:
                raise Malformed(f"ClientHello extension {etype:#06x} overruns the block")
            self._extension(etype, body[off : off + elen])
            self.extensions.append(etype)
            off += elen
        if off != end and len(self.extensions) < MAX_LIST:
            raise Malformed("ClientHello extensions block has trailing bytes")

    def _extension(self, etype: int, data: bytes) -> None:
        if etype == EXT_SNI and len(data) >= 5:
            # server_name_list: u16 length, then (u8 type, u16 length, name) entries
            off, end = 2, min(len(data), 2 + ((data[0] << 8) | data[1]))
            while off + 3 <= end and self.sni is None:
                kind, nlen = data[off], (data[off + 1] << 8) | data[off + 2]
                name = data[off + 3 : off + 3 + nlen]
                if kind == 0:
                    self.sni = name.decode("utf-8", "replace")
                off += 3 + nlen
        elif etype == EXT_GROUPS and len(data) >= 2:
            self.groups = _u16_list(data[2 : 2 + ((data[0] << 8) | data[1])])
        elif etype == EXT_POINT_FORMATS and data:
            self.point_formats = list(data[1 : 1 + data[0]][:MAX_LIST])
        elif etype == EXT_SIG_ALGS and len(data) >= 2:
            self.sig_algs = _u16_list(data[2 : 2 + ((data[0] << 8) | data[1])])
        elif etype == EXT_ALPN and len(data) >= 3:
            first = data[3 : 3 + data[2]]
            self.alpn = first
        elif etype == EXT_VERSIONS and data:
            self.supported_versions = _u16_list(data[1 : 1 + data[0]])

    def ja3_string(self) -> str:
        """SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats (no GREASE)."""
        def join(values: list[int]) -> str:
            return "-".join(str(v) for v in values if not is_grease(v))
        return ",".join((str(self.version), join(self.ciphers), join(self.extensions),
                         join(self.groups), "-".join(str(v) for v in self.point_formats)))

    def ja3(self) -> str:
        return hashlib.md5(self.ja3_string().encode(), usedforsecurity=False).hexdigest()

    def ja4(self, transport: str = "t") -> str:
        versions = [v for v in self.supported_versions if not is_grease(v)]
        version = VERSION_CODES.get(max(versions) if versions else self.version, "00")
        ciphers = [v for v in self.ciphers if not is_grease(v)]
        extensions = [v for v in self.extensions if not is_grease(v)]
        a = (f"{transport}{version}{'d' if EXT_SNI in extensions else 'i'}"
             f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn_code(self.alpn)}")
        b = _hash12(",".join(sorted(f"{v:04x}" for v in ciphers)))
        exts = ",".join(sorted(f"{v:04x}" for v in extensions if v not in (EXT_SNI, EXT_ALPN)))
        sig_algs = ",".join(f"{v:04x}" for v in self.sig_algs if not is_grease(v))
        c = _hash12(f"{exts}_{sig_algs}" if sig_algs else exts) if exts else "000000000000"
        return f"{a}_{b}_{c}"


def alpn_code(alpn: bytes | None) -> str:
    """JA4's two ALPN characters: first and last of the first value, hex when not alphanumeric."""
    if not alpn:
        return "00"
    first, last = chr(alpn[0]), chr(alpn[-1])
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    return f"{alpn[0]:02x}"[0] + f"{alpn[-1]:02x}"[1]


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


# --- X.509, just enough DER to read the subject of the leaf certificate -------------------

ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C",
    "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.12": "title", "2.5.4.15": "businessCategory", "2.5.4.17": "postalCode",
    "2.5.4.42": "GN", "2.5.4.46": "dnQualifier", "2.5.4.97": "organizationIdentifier",
    "0.9.2342.19200300.100.1.1": "UID", "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL", "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}
STRING_CODECS = {0x0C: "utf-8", 0x12: "ascii", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii",
                 0x1A: "ascii", 0x1C: "utf-32-be", 0x1E: "utf-16-be"}
MAX_RDNS = 64
MAX_AVAS = 16


def der_tlv(data: bytes, off: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at off; raises Malformed."""
    if off + 2 > end:
        raise Malformed("DER element truncated")
    tag, first = data[off], data[off + 1]
    off += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or off + count > end:
            raise Malformed("DER length invalid")
        length = int.from_bytes(data[off : off + count], "big")
        off += count
    if off + length > end:
        raise Malformed("DER element overruns its parent")
    return tag, off, off + length


def der_children(data: bytes, start: int, end: int, limit: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    off = start
    while off < end and len(out) < limit:
        tag, s, e = der_tlv(data, off, end)
        out.append((tag, s, e))
        off = e
    return out


def oid_text(raw: bytes) -> str:
    parts: list[int] = []
    value = 0
    for byte in raw[:64]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        return ""
    first = parts[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(p) for p in head + parts[1:])


def _escape(value: str) -> str:
    """RFC 4514 escaping of an attribute value."""
    out = "".join("\\" + ch if ch in ',+"\\<>;' else ch for ch in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and len(out) > 1:
        out = out[:-1] + "\\ "
    return out


def certificate_subject(der: bytes) -> str:
    """The subject of a DER certificate as an RFC 4514 string with ', ' separators."""
    end = len(der)
    tag, s, e = der_tlv(der, 0, end)
    if tag != 0x30:
        raise Malformed("certificate is not a SEQUENCE")
    tag, s, e = der_tlv(der, s, e)  # tbsCertificate
    if tag != 0x30:
        raise Malformed("tbsCertificate is not a SEQUENCE")
    fields = der_children(der, s, e, 8)
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    if len(fields) < 5 or fields[4][0] != 0x30:
        raise Malformed("tbsCertificate has no subject")
    _, s, e = fields[4]
    rdns: list[str] = []
    for rtag, rs, re_ in der_children(der, s, e, MAX_RDNS):
        if rtag != 0x31:
            raise Malformed("subject RDN is not a SET")
        avas: list[str] = []
        for atag, as_, ae in der_children(der, rs, re_, MAX_AVAS):
            if atag != 0x30:
                raise Malformed("subject attribute is not a SEQUENCE")
            parts = der_children(der, as_, ae, 2)
            if len(parts) < 2 or parts[0][0] != 0x06:
                raise Malformed("subject attribute without an OID and a value")
            oid = oid_text(der[parts[0][1] : parts[0][2]])
            vtag, vs, ve = parts[1]
            codec = STRING_CODECS.get(vtag)
            if codec:
                value = _escape(der[vs:ve].decode(codec, "replace"))
            else:
                value = "#" + der[parts[0][2] : ve].hex()  # the whole element, RFC 4514 2.4
            avas.append(f"{ATTRIBUTE_NAMES.get(oid, oid)}={value}")
        if avas:
            rdns.append("+".join(avas))
    return ", ".join(reversed(rdns))


# --- records and handshake messages ---------------------------------------------------------

def handshake_bytes(data: bytes) -> tuple[bytes, bool]:
    """Concatenated bodies of the leading handshake records, and whether the last one is cut."""
    out = bytearray()
    off, n = 0, len(data)
    for _ in range(MAX_RECORDS):
        if off + 5 > n:
            return bytes(out), off < n
        ctype, major, minor, length = data[off], data[off + 1], data[off + 2], (
            (data[off + 3] << 8) | data[off + 4])
        if ctype != HANDSHAKE or major != 3 or minor > 4:
            return bytes(out), False
        if length > MAX_RECORD:
            raise Malformed(f"TLS record length {length} exceeds the maximum")
        out += data[off + 5 : off + 5 + length]
        off += 5 + length
        if off > n:
            return bytes(out), True
    return bytes(out), False


def is_tls_start(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == HANDSHAKE and data[1] == 3 and data[2] <= 4


@register
class TLS(Dissector):
    name = "tls"
    tcp_ports = frozenset({443, 8443, 993, 995, 636, 5061, 4843, 8883})
    tcp_prefixes = TLS_PREFIXES

    def __init__(self) -> None:
        # (src ip, src port, dst ip, dst port) -> (TCP seq of the first byte held, the bytes
        # held from there, segments that arrived early keyed by their seq)
        self._pending: dict[tuple[str, int, str, int], tuple[int, bytes, dict[int, bytes]]] = {}

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        if pkt.transport != "tcp" or not pkt.payload:
            return
        key = (pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)
        seq = tcp_seq(pkt.l3)
        data, start = pkt.payload, seq
        held = self._pending.pop(key, None)
        if held is not None and seq is not None and not is_tls_start(data):
            start, data, early = held
            nxt = (start + len(data)) & 0xFFFFFFFF
            ahead = (seq - nxt) & 0xFFFFFFFF
            if ahead and ahead < MAX_BUFFER and len(early) < MAX_EARLY:
                early[seq] = pkt.payload  # out of order: keep it until the gap is filled
                self._pending[key] = held
                return
            if ahead:
                return  # a retransmission or a gap we cannot fill: give up on this flow
            data += pkt.payload
            for _ in range(MAX_EARLY):
                more = early.pop((start + len(data)) & 0xFFFFFFFF, None)
                if more is None:
                    break
                data += more
        if not is_tls_start(data):
            return  # application data, a continuation we did not hold, or another protocol
        try:
            complete = self._handshake(pkt, data, out)
        except Malformed as e:
            out.error(str(e))
            return
        if not complete and start is not None and len(data) <= MAX_BUFFER:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
            self._pending[key] = (start, data, {})

    def _handshake(self, pkt: Packet, data: bytes, out: Evidence) -> bool:
        """Report what the handshake messages say; False when one we want is still incomplete."""
        stream, cut = handshake_bytes(data)
        off, n = 0, len(stream)
        for _ in range(MAX_MESSAGES):
            if off + 4 > n:
                return not cut
            mtype = stream[off]
            length = int.from_bytes(stream[off + 1 : off + 4], "big")
            body = stream[off + 4 : off + 4 + length]
            if len(body) < length and not cut:
                # Longer than every record here: an encrypted handshake message (Finished
                # after ChangeCipherSpec starts a segment of its own), opaque to us.
                return True
            if mtype == CLIENT_HELLO:
                if len(body) < length:
                    return False
                self._client_hello(pkt, ClientHello(body), out)
                return True
            if mtype == CERTIFICATE:
                return self._certificate(body, len(body) == length, out)
            if len(body) < length:
                return False
            off += 4 + length
        return True

    def _client_hello(self, pkt: Packet, hello: ClientHello, out: Evidence) -> None:
        if hello.sni:
            out.fact("tls_sni", hello.sni, confidence=0.6)
            out.signal("domain", name=hello.sni.lower(), how="tls")
            if looks_like_hostname(hello.sni):
                out.fact("dns_name", hello.sni, about="dst", confidence=0.5)
        out.fact("ja3", hello.ja3(), confidence=0.7)
        out.fact("ja4", hello.ja4(), confidence=0.7)

    def _certificate(self, body: bytes, final: bool, out: Evidence) -> bool:
        """Subject of the first (leaf) certificate; False when it is not all here yet."""
        if len(body) < 6:
            if final:
                raise Malformed("Certificate message too short")
            return False
        total = int.from_bytes(body[0:3], "big")
        if total == 0:
            return True  # empty chain (e.g. a client without a certificate)
        cert_len = int.from_bytes(body[3:6], "big")
        if cert_len + 3 > total:
            raise Malformed("certificate longer than the certificate list")
        der = body[6 : 6 + cert_len]
        if len(der) < cert_len:
            if final:
                raise Malformed("certificate longer than its message")
            return False
        try:
            subject = certificate_subject(der)
        except Malformed as e:
            raise Malformed(f"leaf certificate: {e}") from None
        out.fact("tls_certificate_subject", subject, confidence=0.7)
        return True


def looks_like_hostname(name: str) -> bool:
    """A DNS name rather than an IP literal (some clients put addresses in the SNI)."""
    if not name or len(name) > 253 or any(c.isspace() for c in name):
        return False
    if ":" in name:
        return False
    return not all(part.isdigit() for part in name.split("."))
