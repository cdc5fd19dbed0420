"""OPC UA binary (UA TCP, OPC 10000-6): servers named by their endpoint URL and application description.

Each UA TCP message starts with a 3-letter type, a chunk flag and a 32-bit size. A client's
Hello names the endpoint URL it connects to; an OpenSecureChannel request names the
security policy (in clear even when the body is encrypted) and, with policy None, the
security mode. Session and discovery services, when the channel is not encrypted, carry
ApplicationDescriptions: GetEndpoints, CreateSession and FindServers responses describe
the server, a CreateSession request describes the client, RegisterServer(2) requests the
registering server. Fields are read with the binary encoding of Part 6 clause 5.2.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet, Side

SERVER_PORTS = frozenset({4840, 4843})
MESSAGE_TYPES = (b"HEL", b"ACK", b"OPN", b"MSG", b"CLO", b"ERR", b"RHE")
MAX_MESSAGES = 32  # per TCP segment
MAX_DEPTH = 4  # nested DiagnosticInfo
MAX_ENDPOINTS = 64

# binary encoding ids of the services read here (namespace 0)
OPEN_SECURE_CHANNEL_REQUEST, OPEN_SECURE_CHANNEL_RESPONSE = 446, 449
FIND_SERVERS_REQUEST, FIND_SERVERS_RESPONSE = 422, 425
GET_ENDPOINTS_REQUEST, GET_ENDPOINTS_RESPONSE = 428, 431
REGISTER_SERVER_REQUEST, REGISTER_SERVER2_REQUEST = 437, 12211
CREATE_SESSION_REQUEST, CREATE_SESSION_RESPONSE = 461, 464

SECURITY_MODES = {1: "None", 2: "Sign", 3: "SignAndEncrypt"}
POLICY_NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"


class Truncated(Exception):
    """The message goes on past the captured bytes (next TCP segment or chunk)."""


class Malformed(Exception):
    """Bytes that cannot be this encoding."""


class Reader:
    """Sequential reader of the OPC UA binary encoding (little-endian)."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos, self.end = data, pos, len(data)

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise Truncated
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise Truncated
        self.pos += n

    def u8(self) -> int:
        if self.pos >= self.end:
            raise Truncated
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def i32(self) -> int:
        return int.from_bytes(self.take(4), "little", signed=True)

    def _length(self) -> int:
        n = self.i32()
        if n < -1:
            raise Malformed(f"negative length {n}")
        return n

    def string(self) -> str | None:
        n = self._length()
        return None if n == -1 else self.take(n).decode("utf-8", "replace")

    def bytestring(self) -> None:
        n = self._length()
        if n > 0:
            self.skip(n)

    def array(self) -> int:
        """An array's element count (-1, null, is 0); each element takes at least one byte."""
        n = self._length()
        if n > self.end - self.pos:
            if n > 1 << 24:
                raise Malformed(f"array of {n} elements")
            raise Truncated
        return max(n, 0)

    def strings(self) -> list[str]:
        return [s for s in (self.string() for _ in range(self.array())) if s]

    def node_id(self) -> tuple[int, int | None]:
        """(namespace, numeric id or None), with ExpandedNodeId flags honoured."""
        mask = self.u8()
        kind = mask & 0x3F
        ident: int | None = None
        if kind == 0:
            ns, ident = 0, self.u8()
        elif kind == 1:
            ns = self.u8()
            ident = int.from_bytes(self.take(2), "little")
        elif kind == 2:
            ns = int.from_bytes(self.take(2), "little")
            ident = self.u32()
        elif kind in (3, 5):
            ns = int.from_bytes(self.take(2), "little")
            self.bytestring()
        elif kind == 4:
            ns = int.from_bytes(self.take(2), "little")
            self.skip(16)
        else:
            raise Malformed(f"NodeId encoding {kind}")
        if mask & 0x80:
            self.string()  # namespace URI
        if mask & 0x40:
            self.skip(4)  # server index
        return ns, ident

    def localized_text(self) -> str | None:
        mask = self.u8()
        if mask & 0x01:
            self.string()  # locale
        return self.string() if mask & 0x02 else None

    def extension_object(self) -> None:
        self.node_id()
        encoding = self.u8()
        if encoding in (1, 2):
            self.bytestring()
        elif encoding != 0:
            raise Malformed(f"ExtensionObject encoding {encoding}")

    def diagnostic_info(self, depth: int = 0) -> None:
        mask = self.u8()
        self.skip(4 * bin(mask & 0x0F).count("1"))  # symbolic id, namespace, localized text, locale
        if mask & 0x10:
            self.string()  # additional info
        if mask & 0x20:
            self.skip(4)  # inner status code
        if mask & 0x40:
            if depth >= MAX_DEPTH:
                raise Malformed("DiagnosticInfo nested too deep")
            self.diagnostic_info(depth + 1)

    def request_header(self) -> None:
        self.node_id()  # authentication token
        self.skip(8 + 4 + 4)  # timestamp, request handle, return diagnostics
        self.string()  # audit entry id
        self.skip(4)  # timeout hint
        self.extension_object()

    def response_header(self) -> None:
        self.skip(8 + 4 + 4)  # timestamp, request handle, service result
        self.diagnostic_info()
        self.strings()  # string table
        self.extension_object()


def server_side(pkt: Packet) -> Side:
    """Which end is the server when the message itself does not say (encrypted OPN)."""
    if pkt.sport in SERVER_PORTS:
        return "src"
    if pkt.dport in SERVER_PORTS:
        return "dst"
    return "src" if pkt.sport < pkt.dport else "dst"


@register
class OPCUA(Dissector):
    name = "opcua"
    tcp_ports = SERVER_PORTS
    tcp_prefixes = frozenset({b"HELF", b"ACKF", b"OPNF", b"MSGF", b"MSGC", b"MSGA", b"CLOF", b"ERRF",
                              b"RHEF"})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        pos = 0
        for _ in range(MAX_MESSAGES):
            if pos + 8 > len(data):
                return
            kind, chunk = data[pos : pos + 3], data[pos + 3 : pos + 4]
            if kind not in MESSAGE_TYPES or chunk not in (b"F", b"C", b"A"):
                return  # the rest of a message that began in an earlier segment
            size = int.from_bytes(data[pos + 4 : pos + 8], "little")
            if size < 8:
                out.error(f"UA TCP message size {size}")
                return
            message = data[pos : pos + size]
            try:
                self._message(kind, chunk, message, pkt, out)
            except Truncated:
                if len(message) == size:
                    out.error(f"{kind.decode()} message shorter than its fields")
            except Malformed as e:
                out.error(f"malformed {kind.decode()} message: {e}")
            pos += size

    def _message(self, kind: bytes, chunk: bytes, message: bytes, pkt: Packet, out: Evidence) -> None:
        r = Reader(message, 8)
        if kind == b"HEL":
            r.skip(20)  # protocol version, buffer sizes, max message size, max chunk count
            url = r.string()
            if url:
                out.fact("opcua_endpoint_url", url, about="dst", confidence=0.7)
        elif kind == b"RHE":  # ReverseHello: the server calls the client
            uri, url = r.string(), r.string()
            if uri:
                out.fact("opcua_application_uri", uri, confidence=0.7)
            if url:
                out.fact("opcua_endpoint_url", url, confidence=0.7)
        elif kind == b"OPN":
            r.skip(4)  # secure channel id
            policy = r.string()
            r.bytestring()  # sender certificate
            r.bytestring()  # receiver certificate thumbprint
            if policy != POLICY_NONE:  # the rest is signed and encrypted
                if policy:
                    out.fact("opcua_security_policy", policy, about=server_side(pkt), confidence=0.9)
                return
            r.skip(8)  # sequence header
            ns, ident = r.node_id()
            if ns == 0 and ident == OPEN_SECURE_CHANNEL_REQUEST:
                out.fact("opcua_security_policy", policy, about="dst", confidence=0.9)
                r.request_header()
                r.skip(8)  # client protocol version, request type
                mode = r.u32()
                if mode in SECURITY_MODES:
                    out.fact("opcua_security_mode", SECURITY_MODES[mode], about="dst", confidence=0.9)
            elif ns == 0 and ident == OPEN_SECURE_CHANNEL_RESPONSE:
                out.fact("opcua_security_policy", policy, about="src", confidence=0.9)
        elif kind == b"MSG" and chunk != b"A":
            r.skip(16)  # secure channel id, token id, sequence number, request id
            try:
                ns, ident = r.node_id()
            except (Malformed, Truncated):
                return  # an encrypted body, or a chunk that continues a message
            if ns == 0 and ident is not None:  # (an encrypted body matches none of the ids)
                self._service(ident, r, out)

    def _service(self, ident: int, r: Reader, out: Evidence) -> None:
        if ident in (GET_ENDPOINTS_REQUEST, FIND_SERVERS_REQUEST):
            r.request_header()
            url = r.string()
            if url:
                out.fact("opcua_endpoint_url", url, about="dst", confidence=0.7)
        elif ident == GET_ENDPOINTS_RESPONSE:
            r.response_header()
            for _ in range(min(r.array(), MAX_ENDPOINTS)):
                self._endpoint(r, out)
        elif ident == CREATE_SESSION_REQUEST:
            r.request_header()
            self._application(r, "src", 0.8, out)  # the client's own description
            server_uri, url = r.string(), r.string()
            if server_uri:
                out.fact("opcua_application_uri", server_uri, about="dst", confidence=0.5)
            if url:
                out.fact("opcua_endpoint_url", url, about="dst", confidence=0.7)
        elif ident == CREATE_SESSION_RESPONSE:
            r.response_header()
            r.node_id()  # session id
            r.node_id()  # authentication token
            r.skip(8)  # revised session timeout
            r.bytestring()  # server nonce
            r.bytestring()  # server certificate
            for _ in range(min(r.array(), MAX_ENDPOINTS)):
                self._endpoint(r, out)
        elif ident == FIND_SERVERS_RESPONSE:
            r.response_header()
            count = r.array()
            # a discovery server lists the servers registered with it too
            confidence = 0.7 if count == 1 else 0.4
            for _ in range(min(count, MAX_ENDPOINTS)):
                self._application(r, "src", confidence, out)
        elif ident in (REGISTER_SERVER_REQUEST, REGISTER_SERVER2_REQUEST):
            r.request_header()
            uri, product = r.string(), r.string()
            if uri:
                out.fact("opcua_application_uri", uri, confidence=0.8)
            if product:
                out.fact("opcua_product_uri", product, confidence=0.8)
            for _ in range(r.array()):
                name = r.localized_text()
                if name:
                    out.fact("opcua_application_name", name, confidence=0.8)
            r.skip(4)  # server type
            r.string()  # gateway server URI
            for url in r.strings()[:MAX_ENDPOINTS]:
                out.fact("opcua_endpoint_url", url, confidence=0.6)

    def _endpoint(self, r: Reader, out: Evidence) -> None:
        """An EndpointDescription the server offers (about the sender of the response)."""
        url = r.string()
        if url:
            out.fact("opcua_endpoint_url", url, confidence=0.8)
        self._application(r, "src", 0.8, out)
        r.bytestring()  # server certificate
        mode = r.u32()
        policy = r.string()
        if mode in SECURITY_MODES:  # offered, not necessarily used
            out.fact("opcua_security_mode", SECURITY_MODES[mode], confidence=0.5)
        if policy:
            out.fact("opcua_security_policy", policy, confidence=0.5)
        for _ in range(r.array()):  # UserTokenPolicy
            r.string()
            r.skip(4)
            r.string()
            r.string()
            r.string()
        r.string()  # transport profile URI
        r.skip(1)  # security level

    def _application(self, r: Reader, about: Side, confidence: float, out: Evidence) -> None:
        """An ApplicationDescription: URI, product URI, name, type, gateway, discovery profile and URLs."""
        uri, product, name = r.string(), r.string(), r.localized_text()
        if uri:
            out.fact("opcua_application_uri", uri, about=about, confidence=confidence)
        if product:
            out.fact("opcua_product_uri", product, about=about, confidence=confidence)
        if name:
            out.fact("opcua_application_name", name, about=about, confidence=confidence)
        r.skip(4)  # application type
        r.string()  # gateway server URI
        r.string()  # discovery profile URI
        r.strings()  # discovery URLs
