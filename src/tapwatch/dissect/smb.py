"""SMB session setup and NTLMSSP: Windows and Samba hosts name themselves, their domain and OS.

On TCP 445 and 139 SMB messages are framed by a 4-byte NetBIOS session header (RFC 1002;
[MS-SMB2] 2.1). Read from the first segments of each connection:
* the NetBIOS Session Request (port 139): the client's and server's NetBIOS names;
* SMB1 Session Setup AndX ([MS-CIFS] 2.2.4.53, [MS-SMB] 2.2.4.6): Native OS / Native LAN
  Manager strings of client and server;
* NTLMSSP messages ([MS-NLMP] 2.2.1) inside SMB1/SMB2 session setup security blobs, found by
  their "NTLMSSP\\0" signature rather than by parsing SPNEGO: NEGOTIATE and AUTHENTICATE name
  the client's workstation and domain, CHALLENGE (and the copy of its AV pairs inside an
  NTLMv2 response) the server's NetBIOS name, domain and DNS name; all three may carry the
  sender's Windows version.
Messages cut short by the end of a TCP segment are parsed as far as they go, silently;
only complete messages that contradict their own lengths are reported as errors.
"""

from __future__ import annotations

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet, Side
from tapwatch.dissect.nbns import decode_netbios_name

MAX_MESSAGES = 16  # NetBIOS session messages per segment
MAX_COMPOUND = 16  # SMB2 compounded requests per message
MAX_AV_PAIRS = 64
MAX_NAME_LABELS = 64
COMPUTER_NAME_SUFFIXES = (0x00, 0x20)

SMB1, SMB2 = b"\xffSMB", b"\xfeSMB"
SMB1_SESSION_SETUP_ANDX = 0x73
SMB1_FLAGS_REPLY = 0x80
SMB1_FLAGS2_UNICODE = 0x8000
SMB2_SESSION_SETUP = 0x0001
SMB2_FLAGS_SERVER_TO_REDIR = 0x00000001

NTLMSSP = b"NTLMSSP\x00"
NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM_DOMAIN_SUPPLIED = 0x00001000
NEGOTIATE_OEM_WORKSTATION_SUPPLIED = 0x00002000
TARGET_TYPE_DOMAIN = 0x00010000
TARGET_TYPE_SERVER = 0x00020000
NEGOTIATE_VERSION = 0x02000000
# AV_PAIR ids ([MS-NLMP] 2.2.2.1) -> fact attribute
AV_ATTRIBUTES = {1: "ntlm_host", 2: "ntlm_domain", 3: "fqdn"}


class Malformed(Exception):
    pass


def u16(data: bytes, at: int) -> int:
    if at + 2 > len(data):
        raise Malformed("truncated")
    return data[at] | data[at + 1] << 8


def u32(data: bytes, at: int) -> int:
    if at + 4 > len(data):
        raise Malformed("truncated")
    return int.from_bytes(data[at : at + 4], "little")


def decode(raw: bytes, unicode: bool) -> str:
    return raw.decode("utf-16-le" if unicode else "utf-8", "replace").strip()


def netbios_name(data: bytes, pos: int) -> tuple[str, int, int]:
    """A first-level encoded NetBIOS name (RFC 1001 14.1) at pos: (name, suffix, end position)."""
    if pos >= len(data) or data[pos] != 32 or pos + 33 > len(data):
        raise Malformed("bad NetBIOS name")
    decoded = decode_netbios_name(data[pos + 1 : pos + 33])
    if decoded is None:
        raise Malformed("bad NetBIOS name encoding")
    pos += 33
    for _ in range(MAX_NAME_LABELS):  # NetBIOS scope labels, up to the root label
        if pos >= len(data):
            raise Malformed("truncated NetBIOS scope")
        if data[pos] == 0:
            return decoded[0].decode("utf-8", "replace").strip(), decoded[1], pos + 1
        pos += 1 + data[pos]
    raise Malformed("too many NetBIOS scope labels")


def smb_strings(msg: bytes, pos: int, end: int, unicode: bool, count: int) -> list[str]:
    """Up to `count` consecutive NUL-terminated SMB1 strings; Unicode ones start 2-aligned."""
    found: list[str] = []
    if unicode and pos & 1:
        pos += 1
    for _ in range(count):
        if pos >= end:
            break
        if unicode:
            stop = msg.find(b"\x00\x00", pos, end)
            while stop != -1 and (stop - pos) & 1:
                stop = msg.find(b"\x00\x00", stop + 1, end)
            stop = end - ((end - pos) & 1) if stop == -1 else stop  # unterminated: whole chars
            found.append(decode(msg[pos:stop], True))
            pos = stop + 2
        else:
            stop = msg.find(b"\x00", pos, end)
            stop = end if stop == -1 else stop
            found.append(decode(msg[pos:stop], False))
            pos = stop + 1
    return found


def version(data: bytes, at: int) -> str | None:
    """The NTLM VERSION structure ([MS-NLMP] 2.2.2.10) as "major.minor.build"."""
    if at + 8 > len(data) or data[at] == 0:
        return None
    return f"{data[at]}.{data[at + 1]}.{data[at + 2] | data[at + 3] << 8}"


# NT status codes of a session setup reply that end an authentication attempt
STATUS_SUCCESS = 0
LOGON_FAILURES = frozenset({
    0xC000006D,  # STATUS_LOGON_FAILURE
    0xC000006A,  # STATUS_WRONG_PASSWORD
    0xC0000064,  # STATUS_NO_SUCH_USER
    0xC0000234,  # STATUS_ACCOUNT_LOCKED_OUT
    0xC0000072,  # STATUS_ACCOUNT_DISABLED
})


def _login_outcome(status: int, out: Evidence) -> None:
    """A session setup reply: the client (the reply's receiver) logged in, or failed to."""
    if status == STATUS_SUCCESS:
        out.signal("login", about="dst", service="smb", outcome="success")
    elif status in LOGON_FAILURES:
        out.signal("login", about="dst", service="smb", outcome="failure", status=f"{status:#010x}")


@register
class SMB(Dissector):
    name = "smb"
    tcp_ports = frozenset({139, 445})

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        data = pkt.payload
        pos = 0
        for _ in range(MAX_MESSAGES):
            if pos + 4 > len(data):
                return
            kind = data[pos]
            length = int.from_bytes(data[pos + 1 : pos + 4], "big")
            msg = data[pos + 4 : pos + 4 + length]
            complete = len(msg) == length
            if kind == 0x00:
                framed = length == 0 or msg[:4] in (SMB1, SMB2, b"\xfdSMB")
            else:
                framed = kind in (0x82, 0x83, 0x84, 0x85) or kind == 0x81 and msg[:1] == b"\x20"
            if not framed:
                return  # the middle of a longer message, or not SMB at all
            try:
                if kind == 0x81:
                    self._session_request(msg, out)
                elif msg[:4] == SMB1:
                    self._smb1(msg, complete, out)
                elif msg[:4] == SMB2:
                    self._smb2(msg, complete, out)
            except Malformed as e:
                if complete:
                    out.error(f"SMB: {e}")
                return
            pos += 4 + length

    @staticmethod
    def _session_request(msg: bytes, out: Evidence) -> None:
        called, called_suffix, pos = netbios_name(msg, 0)
        calling, calling_suffix, _ = netbios_name(msg, pos)
        # names of the workstation (<00>) and server (<20>) services are computer names;
        # "*SMBSERVER" is a wildcard, not the server's name
        if calling_suffix in COMPUTER_NAME_SUFFIXES:
            out.fact("netbios_name", calling, confidence=0.7)
        if called_suffix in COMPUTER_NAME_SUFFIXES and not called.startswith("*"):
            out.fact("netbios_name", called, confidence=0.6, about="dst")

    def _smb1(self, msg: bytes, complete: bool, out: Evidence) -> None:
        if len(msg) < 35:
            raise Malformed("SMB1 header cut short")
        if msg[4] != SMB1_SESSION_SETUP_ANDX:
            return
        reply = msg[9] & SMB1_FLAGS_REPLY
        if reply:
            _login_outcome(u32(msg, 5), out)
        unicode = bool(u16(msg, 10) & SMB1_FLAGS2_UNICODE)
        words, count = 33, msg[32]
        data_at = words + 2 * count + 2
        byte_count = u16(msg, data_at - 2)
        end = data_at + byte_count
        if end > len(msg):
            if complete:
                raise Malformed("SMB1 ByteCount beyond the message")
            end = len(msg)
        blob = b""
        names = 0  # strings before Native OS
        if not reply and count == 12:  # extended security: SecurityBlobLength
            skip = u16(msg, words + 14)
            blob = msg[data_at : data_at + skip]
        elif not reply and count == 13:  # OEM + Unicode passwords, AccountName, PrimaryDomain
            skip = u16(msg, words + 14) + u16(msg, words + 16)
            names = 2
        elif not reply and count == 10:  # LAN Manager password, AccountName, PrimaryDomain
            skip = u16(msg, words + 14)
            names = 2
        elif reply and count == 4:  # extended security: SecurityBlobLength
            skip = u16(msg, words + 6)
            blob = msg[data_at : data_at + skip]
        elif reply and count == 3:
            skip = 0
        else:
            return  # an error response (WordCount 0) or an unknown form
        if data_at + skip > end:
            if complete:
                raise Malformed("SMB1 security blob beyond the message")
            skip = end - data_at
        if blob:
            self._ntlmssp(blob, out)
        strings = smb_strings(msg, data_at + skip, end, unicode, names + 2)[names:]
        if strings:
            out.fact("smb_os", strings[0], confidence=0.8)
        if len(strings) > 1:
            out.fact("smb_native_lanman", strings[1], confidence=0.8)

    def _smb2(self, msg: bytes, complete: bool, out: Evidence) -> None:
        start = 0
        for _ in range(MAX_COMPOUND):
            if start + 64 > len(msg):
                raise Malformed("SMB2 header shorter than 64 bytes")
            if u16(msg, start + 4) != 64:
                raise Malformed("SMB2 header StructureSize is not 64")
            if u16(msg, start + 12) == SMB2_SESSION_SETUP:
                body = start + 64
                if u32(msg, start + 16) & SMB2_FLAGS_SERVER_TO_REDIR:
                    _login_outcome(u32(msg, start + 8), out)
                    offset, length = u16(msg, body + 4), u16(msg, body + 6)
                else:
                    offset, length = u16(msg, body + 12), u16(msg, body + 14)
                if length:
                    if offset < 64 or start + offset + length > len(msg) and complete:
                        raise Malformed("SMB2 security buffer beyond the message")
                    self._ntlmssp(msg[start + offset : start + offset + length], out)
            following = u32(msg, start + 20)
            if not following:
                return
            if following < 64:
                raise Malformed("SMB2 NextCommand inside the header")
            start += following
        raise Malformed("too many compounded SMB2 requests")

    def _ntlmssp(self, blob: bytes, out: Evidence) -> None:
        at = blob.find(NTLMSSP)
        if at < 0:
            return
        m = blob[at:]
        kind = u32(m, 8)
        if kind == 1:
            self._negotiate(m, out)
        elif kind == 2:
            self._challenge(m, out)
        elif kind == 3:
            self._authenticate(m, out)

    @staticmethod
    def _field(m: bytes, at: int) -> tuple[bytes, int]:
        """A (Len, MaxLen, BufferOffset) payload field: its bytes and its offset."""
        length, offset = u16(m, at), u32(m, at + 4)
        if not length:
            return b"", 0
        if offset + length > len(m):
            raise Malformed("NTLMSSP field beyond the message")
        return m[offset : offset + length], offset

    def _version(self, m: bytes, flags: int, at: int, payload: list[int], out: Evidence) -> None:
        """The VERSION field sits at `at` when negotiated and when no payload starts there."""
        if flags & NEGOTIATE_VERSION and all(o == 0 or o >= at + 8 for o in payload):
            shown = version(m, at)
            if shown:
                out.fact("os_version", shown, confidence=0.7)

    def _negotiate(self, m: bytes, out: Evidence) -> None:
        flags = u32(m, 12)
        if len(m) < 32:  # the oldest form stops after the flags
            return
        domain, d_off = self._field(m, 16)
        workstation, w_off = self._field(m, 24)
        if flags & NEGOTIATE_OEM_DOMAIN_SUPPLIED:
            out.fact("ntlm_domain", decode(domain, False), confidence=0.7)
        if flags & NEGOTIATE_OEM_WORKSTATION_SUPPLIED:
            out.fact("ntlm_host", decode(workstation, False), confidence=0.8)
        self._version(m, flags, 32, [d_off, w_off], out)

    def _challenge(self, m: bytes, out: Evidence) -> None:
        if len(m) < 48:
            raise Malformed("NTLMSSP CHALLENGE shorter than 48 bytes")
        flags = u32(m, 20)
        target, t_off = self._field(m, 12)
        if target:
            name = decode(target, bool(flags & NEGOTIATE_UNICODE))
            if flags & TARGET_TYPE_SERVER:
                out.fact("ntlm_host", name, confidence=0.8)
            elif flags & TARGET_TYPE_DOMAIN:
                out.fact("ntlm_domain", name, confidence=0.7)
        info, i_off = self._field(m, 40)
        self._av_pairs(info, "src", out)
        self._version(m, flags, 48, [t_off, i_off], out)

    def _authenticate(self, m: bytes, out: Evidence) -> None:
        if len(m) < 64:
            raise Malformed("NTLMSSP AUTHENTICATE shorter than 64 bytes")
        flags = u32(m, 60)
        unicode = bool(flags & NEGOTIATE_UNICODE)
        # LmChallengeResponse, NtChallengeResponse, DomainName, UserName, Workstation, SessionKey
        fields = [self._field(m, at) for at in (12, 20, 28, 36, 44, 52)]
        nt_response, domain, workstation = fields[1][0], fields[2][0], fields[4][0]
        out.fact("ntlm_domain", decode(domain, unicode), confidence=0.7)
        out.fact("ntlm_host", decode(workstation, unicode), confidence=0.8)
        # NTLMv2: NTProofStr (16) + NTLMv2_CLIENT_CHALLENGE, whose AV pairs start at 28 into it
        # and repeat the server's CHALLENGE target info ([MS-NLMP] 2.2.2.7): about the server
        if len(nt_response) > 24 and nt_response[16:18] == b"\x01\x01":
            self._av_pairs(nt_response[44:], "dst", out)
        self._version(m, flags, 64, [off for _, off in fields], out)

    @staticmethod
    def _av_pairs(info: bytes, about: Side, out: Evidence) -> None:
        pos = 0
        for _ in range(MAX_AV_PAIRS):
            if pos + 4 > len(info):
                return  # no MsvAvEOL: tolerated
            av_id, av_len = u16(info, pos), u16(info, pos + 2)
            pos += 4
            if av_id == 0:
                return
            if pos + av_len > len(info):
                raise Malformed("NTLMSSP AV pair beyond the target info")
            attribute = AV_ATTRIBUTES.get(av_id)
            if attribute:
                out.fact(attribute, decode(info[pos : pos + av_len], True),
                         confidence=0.8 if attribute == "ntlm_host" else 0.7, about=about)
            pos += av_len
