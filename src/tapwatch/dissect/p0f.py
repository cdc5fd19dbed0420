"""Passive OS fingerprinting of TCP SYN and SYN+ACK packets with p0f v3's signatures.

How a TCP stack opens a connection — initial TTL, window size, the options and their
order, IP and TCP header quirks — names its operating system without a single probe,
which matters for OT devices that must not be scanned. The observed signature is written
in p0f's own format and matched by p0f's rules against p0f's database, read at run time
from /etc/p0f/p0f.fp (Debian package `p0f`); the file is not shipped with tapwatch. Without
a database the dissector reports nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tapwatch.dissect import register
from tapwatch.dissect.base import Dissector, Evidence, Packet

DEFAULT_DATABASE = "/etc/p0f/p0f.fp"

MAX_DIST = 35  # largest TTL distance for a non-fuzzy match
MAX_TCP_OPT = 24  # options looked at per packet, as p0f
MIN_TCP4, MIN_TCP6 = 40, 60  # IPv4/IPv6 header plus a bare TCP header
SPECIAL_MSS = 1331  # p0f-sendsyn's MSS, echoed by some SYN+ACKs: printed as "*"
MAX_SIGNATURES = 5000
MAX_FLOWS = 4096  # SYN MSS remembered per flow, for the SYN+ACK's window
MAX_FINGERPRINTS = 4096  # signature texts and matches remembered per distinct fingerprint

# TCP flags
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

# option kinds
EOL, NOP, MSS, WS, SOK, SACK, TS = 0, 1, 2, 3, 4, 5, 8
OPTION_NAMES = {NOP: "nop", MSS: "mss", WS: "ws", SOK: "sok", SACK: "sack", TS: "ts"}

# quirks, in the order p0f prints them
QUIRKS = ("df", "id+", "id-", "ecn", "0+", "flow", "seq-", "ack+", "ack-", "uptr+", "urgf+",
          "pushf+", "ts1-", "ts2+", "opt+", "exws", "bad")
Q = {name: 1 << i for i, name in enumerate(QUIRKS)}
IPV4_ONLY = Q["df"] | Q["id+"] | Q["id-"]

# window forms
WIN_ANY, WIN_NORMAL, WIN_MOD, WIN_MSS, WIN_MTU = range(5)


@dataclass(frozen=True, slots=True)
class Signature:
    """One `sig` line of p0f.fp with its label."""

    ver: int  # 4, 6, or -1 for any
    ttl: int  # initial TTL
    bad_ttl: bool  # "64-": random TTLs, only an upper bound
    olen: int  # IPv4 options length
    mss: int  # -1 for any
    win_type: int
    win: int
    wscale: int  # -1 for any
    layout: tuple[int, ...]
    eol_pad: int
    quirks: int
    pclass: int  # -1 any, 0 none, 1 some payload
    generic: bool
    os_class: str  # "unix", "win", ... or "!" for applications
    name: str
    flavor: str
    line: int

    @property
    def label(self) -> str:
        return f"{self.name} {self.flavor}" if self.flavor else self.name


@dataclass(slots=True)
class Observed:
    """What a SYN or SYN+ACK shows, in p0f's terms."""

    ver: int
    ttl: int
    olen: int
    mss: int
    win: int
    wscale: int
    layout: tuple[int, ...]
    eol_pad: int
    quirks: int
    pay_len: int
    tot_hdr: int
    ts1: int
    synack: bool


# --- the database -------------------------------------------------------------------------

class SignatureDatabase:
    """The [tcp:request] and [tcp:response] sections of a p0f.fp file."""

    def __init__(self, request: list[Signature], response: list[Signature], skipped: int = 0) -> None:
        self.request = _by_layout(request)
        self.response = _by_layout(response)
        self.count = len(request) + len(response)
        self.skipped = skipped  # lines that did not parse

    @classmethod
    def parse(cls, text: str) -> SignatureDatabase:
        sections: dict[str, list[Signature]] = {"request": [], "response": []}
        section: str | None = None
        label: tuple[bool, str, str, str] | None = None
        names: dict[str, str] = {}  # p0f matches names case-insensitively, first spelling wins
        skipped = 0
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith("["):
                section = {"[tcp:request]": "request", "[tcp:response]": "response"}.get(line)
                label = None
                continue
            if section is None:
                continue
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not sep:
                skipped += 1
            elif key == "label":
                label = _parse_label(value, names)
                skipped += label is None
            elif key == "sys":
                for entry in value.split(","):
                    entry = entry.strip()
                    if entry and not entry.startswith("@"):
                        names.setdefault(entry.lower(), entry)
            elif key == "sig" and label is not None:
                sig = parse_signature(value, label, number)
                if sig is None or sum(map(len, sections.values())) >= MAX_SIGNATURES:
                    skipped += 1
                else:
                    sections[section].append(sig)
        return cls(sections["request"], sections["response"], skipped)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SignatureDatabase | None:
        try:
            return cls.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None


def _by_layout(sigs: list[Signature]) -> dict[tuple[int, ...], list[Signature]]:
    out: dict[tuple[int, ...], list[Signature]] = {}
    for sig in sigs:
        out.setdefault(sig.layout, []).append(sig)
    return out


def _parse_label(value: str, names: dict[str, str]) -> tuple[bool, str, str, str] | None:
    """`type:class:name:flavor` -> (generic, class, name, flavor)."""
    parts = value.split(":", 3)
    if len(parts) < 3 or parts[0] not in ("s", "g") or not parts[1] or not parts[2]:
        return None
    name = names.setdefault(parts[2].lower(), parts[2])
    return parts[0] == "g", parts[1], name, parts[3].strip() if len(parts) > 3 else ""


def _int(text: str, low: int, high: int) -> int:
    if not text.isdigit() or len(text) > 6:
        raise ValueError(text)
    value = int(text)
    if not low <= value <= high:
        raise ValueError(text)
    return value


def parse_signature(value: str, label: tuple[bool, str, str, str], line: int) -> Signature | None:
    """`ver:ittl:olen:mss:wsize,scale:olayout:quirks:pclass`, or None when malformed."""
    fields = value.split(":")
    if len(fields) != 8:
        return None
    ver_s, ttl_s, olen_s, mss_s, win_s, layout_s, quirks_s, pclass_s = (f.strip() for f in fields)
    try:
        ver = {"4": 4, "6": 6, "*": -1}[ver_s]
        bad_ttl = ttl_s.endswith("-")
        if bad_ttl:
            ttl = _int(ttl_s[:-1], 1, 255)
        elif "+" in ttl_s:
            base, _, add = ttl_s.partition("+")
            ttl = _int(base, 1, 255) + _int(add, 0, 255)
            if ttl > 255:
                return None
        else:
            ttl = _int(ttl_s, 1, 255)
        olen = _int(olen_s, 0, 255)
        mss = -1 if mss_s == "*" else _int(mss_s, 0, 65535)
        wsize, _, scale_s = win_s.partition(",")
        if wsize == "*":
            win_type, win = WIN_ANY, 0
        elif wsize.startswith("%"):
            win_type, win = WIN_MOD, _int(wsize[1:], 2, 65535)
        elif wsize.startswith(("mss*", "mtu*")):
            win_type = WIN_MSS if wsize[1] == "s" else WIN_MTU
            win = _int(wsize[4:], 1, 1000)
        else:
            win_type, win = WIN_NORMAL, _int(wsize, 0, 65535)
        wscale = -1 if scale_s == "*" else _int(scale_s, 0, 255)
        layout: list[int] = []
        eol_pad = 0
        items = layout_s.split(",") if layout_s else []
        for i, item in enumerate(items):
            if item.startswith("eol+"):
                if i != len(items) - 1:
                    return None  # EOL must be the last option
                layout.append(EOL)
                eol_pad = _int(item[4:], 0, 255)
            elif item.startswith("?"):
                layout.append(_int(item[1:], 0, 255))
            else:
                layout.append({v: k for k, v in OPTION_NAMES.items()}[item])
        if len(layout) > MAX_TCP_OPT:
            return None
        quirks = 0
        for item in quirks_s.split(",") if quirks_s else []:
            quirks |= Q[item]
        pclass = {"*": -1, "0": 0, "+": 1}[pclass_s]
    except (KeyError, ValueError):
        return None
    generic, os_class, name, flavor = label
    return Signature(ver, ttl, bad_ttl, olen, mss, win_type, win, wscale, tuple(layout), eol_pad,
                     quirks, pclass, generic, os_class, name, flavor, line)


# --- the packet -----------------------------------------------------------------------------

def observe(l3: bytes) -> Observed | None:
    """The fingerprint of a SYN or SYN+ACK from its IP header on, or None (other packets too)."""
    n = len(l3)
    if n < MIN_TCP4:
        return None
    quirks = 0
    version = l3[0] >> 4
    if version == 4:
        hlen = (l3[0] & 0x0F) * 4
        total = (l3[2] << 8) | l3[3]
        if hlen < 20 or total > n or hlen + 20 > total or l3[9] != 6:
            return None
        n = total  # trailing Ethernet padding is not payload
        flags_off = (l3[6] << 8) | l3[7]
        if flags_off & 0x3FFF:  # a fragment (MF or an offset)
            return None
        if l3[1] & 0x03:
            quirks |= Q["ecn"]
        if flags_off & 0x8000:
            quirks |= Q["0+"]
        ip_id = (l3[4] << 8) | l3[5]
        if flags_off & 0x4000:
            quirks |= Q["df"]
            if ip_id:
                quirks |= Q["id+"]
        elif not ip_id:
            quirks |= Q["id-"]
        ttl, olen, tcp = l3[8], hlen - 20, hlen
    elif version == 6:
        total = 40 + ((l3[4] << 8) | l3[5])
        if n < MIN_TCP6 or total > n or total < MIN_TCP6 or l3[6] != 6:
            return None  # like p0f, no IPv6 extension headers
        n = total
        ver_tc_flow = int.from_bytes(l3[0:4], "big")
        if ver_tc_flow & 0xFFFFF:
            quirks |= Q["flow"]
        if (ver_tc_flow >> 20) & 0x03:
            quirks |= Q["ecn"]
        ttl, olen, tcp = l3[7], 0, 40
    else:
        return None
    doff = (l3[tcp + 12] >> 4) * 4
    if doff < 20 or tcp + doff > n:
        return None
    flags = l3[tcp + 13]
    kind = flags & (SYN | ACK | FIN | RST)
    if kind not in (SYN, SYN | ACK):
        return None
    if flags & (ECE | CWR) or l3[tcp + 12] & 0x01:
        quirks |= Q["ecn"]
    seq = int.from_bytes(l3[tcp + 4 : tcp + 8], "big")
    ack = int.from_bytes(l3[tcp + 8 : tcp + 12], "big")
    if not seq:
        quirks |= Q["seq-"]
    if flags & ACK:
        if not ack:
            quirks |= Q["ack-"]
    elif ack:
        # p0f 3.09b tests one bit of the raw field here (a byte-order slip); this follows
        # the documented meaning: "ACK number is non-zero, but ACK flag not set".
        quirks |= Q["ack+"]
    if flags & URG:
        quirks |= Q["urgf+"]
    elif l3[tcp + 18] or l3[tcp + 19]:
        quirks |= Q["uptr+"]
    if flags & PSH:
        quirks |= Q["pushf+"]
    win = (l3[tcp + 14] << 8) | l3[tcp + 15]
    layout: list[int] = []
    mss = wscale = ts1 = eol_pad = 0
    off, end = tcp + 20, tcp + doff
    bad = False
    while off < end and len(layout) < MAX_TCP_OPT:
        opt = l3[off]
        layout.append(opt)
        off += 1
        if opt == EOL:
            eol_pad = end - off
            if any(l3[off:end]):
                quirks |= Q["opt+"]
            off = end
        elif opt == NOP:
            continue
        elif opt in (MSS, WS, SOK, TS):
            size = {MSS: 4, WS: 3, SOK: 2, TS: 10}[opt]
            if off + size - 1 > end:
                bad = True
                break
            if l3[off] != size:
                quirks |= Q["bad"]
            if opt == MSS:
                mss = (l3[off + 1] << 8) | l3[off + 2]
            elif opt == WS:
                wscale = l3[off + 1]
                if wscale > 14:
                    quirks |= Q["exws"]
            elif opt == TS:
                ts1 = int.from_bytes(l3[off + 1 : off + 5], "big")
                if not ts1:
                    quirks |= Q["ts1-"]
                if kind == SYN and any(l3[off + 5 : off + 9]):
                    quirks |= Q["ts2+"]
            off += size - 1
        else:  # SACK or an unknown option, with a length byte
            low, high = (10, 34) if opt == SACK else (2, 40)
            if off >= end or not low <= l3[off] <= high or off - 1 + l3[off] > end:
                bad = True
                break
            off += l3[off] - 1
    if bad or off != end:
        quirks |= Q["bad"]
    return Observed(version, ttl, olen, mss, win, wscale, tuple(layout), eol_pad, quirks,
                    n - tcp - doff, tcp + doff, ts1, kind == SYN | ACK)


def guess_distance(ttl: int) -> int:
    for initial in (32, 64, 128):
        if ttl <= initial:
            return initial - ttl
    return 255 - ttl


def window_multiple(obs: Observed, syn_mss: int) -> tuple[int, bool]:
    """(N, uses MTU) when the window is N times the MSS or MTU, as p0f guesses it; N = -1 if not."""
    win, mss = obs.win, obs.mss
    if not win or mss < 100:
        return -1, False
    tries = [(mss, False)]
    if obs.ts1:
        tries.append((mss - 12, False))
    tries += [(1500 - MIN_TCP4, False), (1500 - MIN_TCP4 - 12, False)]
    if obs.ver == 6:
        tries += [(1500 - MIN_TCP6, False), (1500 - MIN_TCP6 - 12, False)]
    tries += [(mss + MIN_TCP4, True), (mss + obs.tot_hdr, True)]
    if obs.ver == 6:
        tries.append((mss + MIN_TCP6, True))
    tries.append((1500, True))
    if syn_mss:
        tries += [(syn_mss, False), (syn_mss - 12, False)]
    for div, mtu in tries:
        if div > 0 and win % div == 0:
            return win // div, mtu
    return -1, False


def signature_text(obs: Observed, syn_mss: int = 0) -> str:
    """The observed signature as p0f prints it (raw_sig)."""
    dist = guess_distance(obs.ttl)
    ttl = f"{obs.ttl}+{dist}" if dist <= MAX_DIST else f"{obs.ttl}+?"
    mss = "*" if obs.synack and obs.mss == SPECIAL_MSS else str(obs.mss)
    multi, mtu = window_multiple(obs, syn_mss)
    win = f"{'mtu' if mtu else 'mss'}*{multi}" if multi > 0 else str(obs.win)
    layout = ",".join(f"eol+{obs.eol_pad}" if o == EOL else OPTION_NAMES.get(o, f"?{o}")
                      for o in obs.layout)
    quirks = ",".join(name for name in QUIRKS if obs.quirks & Q[name])
    return (f"{obs.ver}:{ttl}:{obs.olen}:{mss}:{win},{obs.wscale}:{layout}:{quirks}:"
            f"{'+' if obs.pay_len else '0'}")


def find_match(obs: Observed, db: SignatureDatabase, syn_mss: int = 0) -> tuple[Signature | None, bool]:
    """p0f's choice: the first exact specific signature, else the first exact generic one,
    else the first fuzzy one (quirks df/id+ gone or id-/ecn new, or TTL out of range)."""
    candidates = (db.response if obs.synack else db.request).get(obs.layout, ())
    multi, mtu = window_multiple(obs, syn_mss)
    fuzzy_match: Signature | None = None
    generic_match: Signature | None = None
    for sig in candidates:
        if sig.ver != -1 and sig.ver != obs.ver:
            continue  # p0f 3.09b ignores `ver` when matching; the README scopes it
        fuzzy = False
        quirks = sig.quirks
        if sig.ver == -1:
            quirks &= ~Q["flow"] if obs.ver == 4 else ~IPV4_ONLY
        if quirks != obs.quirks:
            deleted = (quirks ^ obs.quirks) & quirks
            added = (quirks ^ obs.quirks) & obs.quirks
            if (fuzzy_match or deleted & ~(Q["df"] | Q["id+"])
                    or added & ~(Q["id-"] | Q["ecn"])):
                continue
            fuzzy = True
        if sig.eol_pad != obs.eol_pad or sig.olen != obs.olen:
            continue
        if sig.bad_ttl:
            if sig.ttl < obs.ttl:
                continue
        elif sig.ttl < obs.ttl or sig.ttl - obs.ttl > MAX_DIST:
            fuzzy = True
        if sig.mss != -1 and sig.mss != obs.mss:
            continue
        if sig.wscale != -1 and sig.wscale != obs.wscale:
            continue
        if sig.pclass != -1 and sig.pclass != (1 if obs.pay_len else 0):
            continue
        if sig.win_type == WIN_NORMAL and sig.win != obs.win:
            continue
        if sig.win_type == WIN_MOD and obs.win % sig.win:
            continue
        if sig.win_type == WIN_MSS and (mtu or sig.win != multi):
            continue
        if sig.win_type == WIN_MTU and (not mtu or sig.win != multi):
            continue
        if not fuzzy:
            if not sig.generic:
                return sig, False
            generic_match = generic_match or sig
        elif fuzzy_match is None:
            fuzzy_match = sig
    if generic_match is not None:
        return generic_match, False
    if fuzzy_match is not None and fuzzy_match.os_class != "!":  # no fuzzy match for tools
        return fuzzy_match, True
    return None, False


_DATABASES: dict[str, SignatureDatabase | None] = {}


def database(path: str | os.PathLike[str]) -> SignatureDatabase | None:
    """The parsed database at path, read once per process (None when it cannot be read)."""
    key = os.fspath(path)
    if key not in _DATABASES:
        _DATABASES[key] = SignatureDatabase.load(key)
    return _DATABASES[key]


@register
class P0f(Dissector):
    name = "p0f"
    tcp_syn = True

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.db = database(path if path is not None else DEFAULT_DATABASE)
        # (client ip, client port, server ip, server port) -> the MSS of the client's SYN
        self._syn_mss: dict[tuple[str, int, str, int], int] = {}
        self._matched: dict[tuple[object, ...], tuple[str, Signature | None, bool]] = {}

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        if self.db is None or pkt.transport != "tcp" or not pkt.tcp_flags & SYN:
            return
        obs = observe(pkt.l3)
        if obs is None:
            return
        syn_mss = 0
        if obs.synack:
            syn_mss = self._syn_mss.pop((pkt.dst_ip, pkt.dport, pkt.src_ip, pkt.sport), 0)
        # what the text and the match depend on (the timestamp and payload only as present
        # or not): many hosts share a stack, and one host opens many connections
        key = (obs.ver, obs.ttl, obs.olen, obs.mss, obs.win, obs.wscale, obs.layout, obs.eol_pad,
               obs.quirks, obs.pay_len > 0, obs.tot_hdr, obs.ts1 != 0, obs.synack, syn_mss)
        known = self._matched.get(key)
        if known is None:
            if len(self._matched) >= MAX_FINGERPRINTS:
                self._matched.clear()
            known = self._matched[key] = (signature_text(obs, syn_mss),
                                          *find_match(obs, self.db, syn_mss))
        text, sig, fuzzy = known
        out.fact("p0f_signature", text, confidence=0.8)
        if sig is not None and sig.os_class != "!":
            confidence = 0.25 if fuzzy else 0.35 if sig.generic else 0.5
            out.fact("p0f_os", sig.label, confidence=confidence)
        if not obs.synack:
            if len(self._syn_mss) >= MAX_FLOWS:
                self._syn_mss.pop(next(iter(self._syn_mss)))
            self._syn_mss[(pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)] = obs.mss
