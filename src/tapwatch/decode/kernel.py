"""The compiled L2–L4 decoder: one pass over a chunk of records, one row per network layer.

Every packet becomes one row (its outermost addresses). A tunnel (GRE, ERSPAN II/III,
VXLAN, Geneve, IP-in-IP) adds one row per inner layer, so tunnel endpoints and the hosts
inside the tunnel are both seen. Addresses are int64 bit patterns: MACs in the low
48 bits (NO_MAC when the link type has none); IP addresses as two words (hi, lo) of
the 128-bit IPv6 form, IPv4 mapped as ::ffff:a.b.c.d, and (0, 0) for none.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tapwatch.decode.select import PICK_BATCH, pick_rows

NO_MAC = np.int64(1 << 48)
V4_MAPPED = np.int64(0xFFFF << 32)

# packet status
OK = 0
UNSUPPORTED_LINK = 1
MALFORMED = 2
ENCRYPTED = 3

# row flags
F_FRAG_LATER = 1  # non-first IP fragment: no ports
F_TRUNCATED = 2  # headers cut short or inconsistent
F_TUNNEL = 4  # this layer carries a tunnel
F_INNER = 8  # this row is a decapsulated inner layer
F_ARP = 16  # addresses come from an ARP sender/target
F_DST_GROUP = 32  # destination MAC is broadcast or multicast
F_SERVER_DST = 64  # the destination is the server side of the exchange

MAX_DEPTH = 4

# layer kinds for the decode loop
_ETH = 1
_IP = 2
_WLAN = 3
_DONE = 0


@njit(cache=True, inline="always")
def _u16(buf, i):
    return (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])


@njit(cache=True, inline="always")
def _u32(buf, i):
    return (np.int64(buf[i]) << 24) | (np.int64(buf[i + 1]) << 16) | (np.int64(buf[i + 2]) << 8) | np.int64(buf[i + 3])


@njit(cache=True, inline="always")
def _u64(buf, i):
    return (_u32(buf, i) << 32) | _u32(buf, i + 4)


@njit(cache=True, inline="always")
def _mac(buf, i):
    return (_u16(buf, i) << 32) | _u32(buf, i + 2)


@njit(cache=True, inline="always")
def _is_group_mac(mac):
    return mac != NO_MAC and ((mac >> 40) & 1) == 1


class Rows:
    """Column arrays (all int64) for decoded rows, reused between batches."""

    COLUMNS = (
        "pkt", "ts", "wlen", "smac", "dmac", "vlan", "ethertype", "l3", "shi", "slo", "dhi",
        "dlo", "ipproto", "sport", "dport", "tcpflags", "ttl", "l3id", "l4id", "appid",
        "pay_off", "pay_len", "flags", "l3_off",
    )
    pkt: np.ndarray
    ts: np.ndarray
    wlen: np.ndarray
    smac: np.ndarray
    dmac: np.ndarray
    vlan: np.ndarray
    ethertype: np.ndarray
    l3: np.ndarray
    shi: np.ndarray
    slo: np.ndarray
    dhi: np.ndarray
    dlo: np.ndarray
    ipproto: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcpflags: np.ndarray
    ttl: np.ndarray
    l3id: np.ndarray
    l4id: np.ndarray
    appid: np.ndarray
    pay_off: np.ndarray
    pay_len: np.ndarray
    flags: np.ndarray
    l3_off: np.ndarray

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.n = 0
        self.picker: object = None  # the dissectors' selector that picked from these rows
        for name in self.COLUMNS:
            setattr(self, name, np.empty(capacity, dtype=np.int64))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in self.COLUMNS)


@njit(cache=True)
def _snap_lookup(keys, ids, key):
    lo, hi = 0, keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < keys.shape[0] and keys[lo] == key:
        return ids[lo]
    return 0


@njit(cache=True)
def decode(start, stop, buf, rec_off, rec_cap, rec_wire, rec_ts, rec_link,
           t_ether, t_ipproto, t_tcp, t_udp, t_llc, t_snap_keys, t_snap_ids,
           id_llc, id_ipv4, id_ipv6,
           pkt, ts, wlen, smac, dmac, vlan, ethertype, l3, shi, slo, dhi, dlo, ipproto,
           sport, dport, tcpflags, ttl, l3id, l4id, appid, pay_off, pay_len, flags, l3_off,
           status, picking, pick_args):
    """Decode records [start, stop); returns the number of rows written. When `picking`,
    the dissectors' selector (select.pick_rows, with `pick_args`) goes over the rows every
    PICK_BATCH of them, while their packets are still in cache."""
    cap_rows = pkt.shape[0]
    r = 0
    picked = 0
    columns = (ipproto, sport, dport, tcpflags, ethertype, l3, l3id, pay_off, pay_len, l3_off,
               smac, dmac, shi, slo, dhi, dlo)  # as select.PICK_COLUMNS names them
    for i in range(start, stop):
        if picking and r - picked >= PICK_BATCH:
            pick_rows(picked, r, buf, columns, pick_args)
            picked = r
        if r >= cap_rows:
            break
        p = rec_off[i]
        end = p + rec_cap[i]
        lt = rec_link[i]
        status[i] = OK
        depth = 0
        kind = _DONE
        et = 0
        # start the outer row
        pkt[r] = i
        ts[r] = rec_ts[i]
        wlen[r] = rec_wire[i]
        smac[r] = NO_MAC
        dmac[r] = NO_MAC
        vlan[r] = -1
        ethertype[r] = 0
        l3[r] = 0
        shi[r] = 0
        slo[r] = 0
        dhi[r] = 0
        dlo[r] = 0
        ipproto[r] = -1
        sport[r] = 0
        dport[r] = 0
        tcpflags[r] = 0
        ttl[r] = 0
        l3id[r] = 0
        l4id[r] = 0
        appid[r] = 0
        pay_off[r] = -1
        pay_len[r] = 0
        flags[r] = 0
        l3_off[r] = -1
        # link layer
        if lt == 1:
            kind = _ETH
        elif lt == 113 or lt == 276:
            h = 16 if lt == 113 else 20
            if end - p < h:
                status[i] = MALFORMED
                continue
            if lt == 113:
                ptype = _u16(buf, p)
                hatype = _u16(buf, p + 2)
                alen = _u16(buf, p + 4)
                addr = p + 6
                et = _u16(buf, p + 14)
            else:
                et = _u16(buf, p)
                hatype = _u16(buf, p + 8)
                ptype = np.int64(buf[p + 10])
                alen = np.int64(buf[p + 11])
                addr = p + 12
            if hatype == 1 and alen == 6:
                smac[r] = _mac(buf, addr)
            if ptype == 1:
                dmac[r] = 0xFFFFFFFFFFFF
                flags[r] |= F_DST_GROUP
            elif ptype == 2:
                flags[r] |= F_DST_GROUP
            p += h
            kind = _ETH  # no Ethernet header: dispatch on the cooked protocol field
        elif lt == 0 or lt == 108:
            if end - p < 4:
                status[i] = MALFORMED
                continue
            p += 4
            kind = _IP
        elif lt == 101 or lt == 12 or lt == 14 or lt == 228 or lt == 229:
            kind = _IP
        elif lt == 105 or lt == 127:
            if lt == 127:
                if end - p < 8:
                    status[i] = MALFORMED
                    continue
                rtlen = np.int64(buf[p + 2]) | (np.int64(buf[p + 3]) << 8)
                present = np.int64(buf[p + 4]) | (np.int64(buf[p + 5]) << 8) | (np.int64(buf[p + 6]) << 16) | (np.int64(buf[p + 7]) << 24)
                q = p + 8
                word = present
                while (word >> 31) & 1 and q + 4 <= p + rtlen:
                    word = np.int64(buf[q]) | (np.int64(buf[q + 1]) << 8) | (np.int64(buf[q + 2]) << 16) | (np.int64(buf[q + 3]) << 24)
                    q += 4
                if present & 1:  # TSFT, 8-byte aligned
                    q = p + ((q - p + 7) & ~7) + 8
                if present & 2 and q < p + rtlen and (buf[q] & 0x10) and rec_cap[i] >= rec_wire[i]:
                    end -= 4  # frame carries an FCS (only present when nothing was cut)
                p += rtlen
            kind = _WLAN
        else:
            status[i] = UNSUPPORTED_LINK
            continue

        # layers, possibly nested through tunnels
        while kind != _DONE:
            if kind == _WLAN:
                kind = _DONE
                if end - p < 24:
                    status[i] = MALFORMED
                    break
                fc0 = np.int64(buf[p])
                fc1 = np.int64(buf[p + 1])
                ftype = (fc0 >> 2) & 3
                sub = (fc0 >> 4) & 15
                if ftype != 2:
                    break  # management/control: no data frame
                tods = fc1 & 1
                fromds = (fc1 >> 1) & 1
                a1 = _mac(buf, p + 4)
                a2 = _mac(buf, p + 10)
                a3 = _mac(buf, p + 16)
                h = 24
                if tods and fromds:
                    if end - p < 30:
                        status[i] = MALFORMED
                        break
                    smac[r] = _mac(buf, p + 24)
                    dmac[r] = a3
                    h = 30
                elif tods:
                    smac[r] = a2
                    dmac[r] = a3
                elif fromds:
                    smac[r] = a3
                    dmac[r] = a1
                else:
                    smac[r] = a2
                    dmac[r] = a1
                if _is_group_mac(dmac[r]):
                    flags[r] |= F_DST_GROUP
                if sub & 8:  # QoS data
                    h += 2
                    if fc1 & 0x80:
                        h += 4
                if fc1 & 0x40:
                    status[i] = ENCRYPTED
                    break
                if sub & 4:  # null function: no body
                    break
                p += h
                if end - p >= 8 and buf[p] == 0xAA and buf[p + 1] == 0xAA and buf[p + 2] == 3:
                    et = _u16(buf, p + 6)
                    p += 8
                    kind = _ETH  # no Ethernet header: dispatch on the SNAP ethertype
                continue

            if kind == _ETH:
                kind = _DONE
                if lt == 1 or depth > 0:
                    if end - p < 14:
                        status[i] = MALFORMED
                        break
                    dmac[r] = _mac(buf, p)
                    smac[r] = _mac(buf, p + 6)
                    if _is_group_mac(dmac[r]):
                        flags[r] |= F_DST_GROUP
                    et = _u16(buf, p + 12)
                    p += 14
                    while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and end - p >= 4:
                        vid = _u16(buf, p) & 0xFFF
                        if vid != 0:  # VLAN 0 is a priority tag, not a VLAN
                            vlan[r] = vid
                        et = _u16(buf, p + 2)
                        p += 4
                    if et <= 1500:
                        if end - p >= 3:
                            dsap = np.int64(buf[p])
                            if dsap == 0xAA and buf[p + 1] == 0xAA and end - p >= 8:
                                oui = (np.int64(buf[p + 3]) << 16) | _u16(buf, p + 4)
                                pid = _u16(buf, p + 6)
                                p += 8
                                if oui == 0:
                                    et = pid
                                else:
                                    l3id[r] = _snap_lookup(t_snap_keys, t_snap_ids, (oui << 16) | pid)
                                    if l3id[r] == 0:
                                        l3id[r] = id_llc
                                    pay_off[r] = p
                                    pay_len[r] = end - p
                                    break
                            else:
                                l3id[r] = t_llc[dsap] if t_llc[dsap] != 0 else id_llc
                                pay_off[r] = p + 3
                                pay_len[r] = end - p - 3
                                break
                        else:
                            break
                    if et == 0x8847 or et == 0x8848:  # MPLS: pop to the bottom of stack
                        while end - p >= 4:
                            bos = buf[p + 2] & 1
                            p += 4
                            if bos:
                                break
                        if end - p >= 1:
                            v = buf[p] >> 4
                            et = 0x0800 if v == 4 else (0x86DD if v == 6 else et)
                    elif et == 0x8864 and end - p >= 8:  # PPPoE session
                        pp = _u16(buf, p + 6)
                        p += 8
                        et = 0x0800 if pp == 0x21 else (0x86DD if pp == 0x57 else et)
                ethertype[r] = et
                if et == 0x0800 or et == 0x86DD:
                    kind = _IP
                    continue
                if et == 0x0806 or et == 0x8035:
                    l3id[r] = t_ether[et]
                    if end - p >= 28 and _u16(buf, p + 2) == 0x0800 and buf[p + 4] == 6 and buf[p + 5] == 4:
                        l3[r] = 1
                        flags[r] |= F_ARP
                        sport[r] = _u16(buf, p + 6)
                        spa = _u32(buf, p + 14)
                        tpa = _u32(buf, p + 24)
                        if spa != 0:
                            slo[r] = V4_MAPPED | spa
                        if tpa != 0:
                            dlo[r] = V4_MAPPED | tpa
                    elif end - p < 8:
                        flags[r] |= F_TRUNCATED
                    pay_off[r] = p  # the ARP message, for the detection signals
                    pay_len[r] = end - p
                    break
                l3id[r] = t_ether[et]
                pay_off[r] = p
                pay_len[r] = end - p
                break

            # kind == _IP
            kind = _DONE
            if end - p < 1:
                status[i] = MALFORMED
                break
            ver = buf[p] >> 4
            l3_off[r] = p
            l4 = -1
            l3end = end
            frag_later = False
            if ver == 4:
                if end - p < 20:
                    status[i] = MALFORMED
                    break
                ihl = (np.int64(buf[p]) & 15) * 4
                total = _u16(buf, p + 2)
                l3[r] = 4
                l3id[r] = id_ipv4
                ttl[r] = buf[p + 8]
                proto = np.int64(buf[p + 9])
                s = _u32(buf, p + 12)
                d = _u32(buf, p + 16)
                if s != 0:
                    slo[r] = V4_MAPPED | s
                dlo[r] = V4_MAPPED | d
                if total >= ihl and p + total < end:
                    l3end = p + total
                if (_u16(buf, p + 6) & 0x1FFF) != 0:
                    frag_later = True
                if ihl < 20 or p + ihl > l3end:
                    flags[r] |= F_TRUNCATED
                    ipproto[r] = proto
                    l4id[r] = t_ipproto[proto]
                    break
                l4 = p + ihl
            elif ver == 6:
                if end - p < 40:
                    status[i] = MALFORMED
                    break
                l3[r] = 6
                l3id[r] = id_ipv6
                plen = _u16(buf, p + 4)
                proto = np.int64(buf[p + 6])
                ttl[r] = buf[p + 7]
                shi[r] = _u64(buf, p + 8)
                slo[r] = _u64(buf, p + 16)
                dhi[r] = _u64(buf, p + 24)
                dlo[r] = _u64(buf, p + 32)
                if plen and p + 40 + plen < end:
                    l3end = p + 40 + plen
                q = p + 40
                hops = 0
                while hops < 8 and (proto == 0 or proto == 43 or proto == 60 or proto == 44 or proto == 51 or proto == 135 or proto == 139 or proto == 140):
                    hops += 1
                    if l3end - q < 8:
                        flags[r] |= F_TRUNCATED
                        break
                    nh = np.int64(buf[q])
                    if proto == 44:
                        if (_u16(buf, q + 2) >> 3) != 0:
                            frag_later = True
                        q += 8
                    elif proto == 51:
                        q += (np.int64(buf[q + 1]) + 2) * 4
                    else:
                        q += (np.int64(buf[q + 1]) + 1) * 8
                    proto = nh
                if q > l3end:
                    flags[r] |= F_TRUNCATED
                    ipproto[r] = proto
                    break
                l4 = q
            else:
                status[i] = MALFORMED
                break
            ipproto[r] = proto
            l4id[r] = t_ipproto[proto]
            if frag_later:
                flags[r] |= F_FRAG_LATER
                break
            avail = l3end - l4
            if proto == 6 or proto == 17 or proto == 132:
                if avail < 4:
                    flags[r] |= F_TRUNCATED
                    break
                sp = _u16(buf, l4)
                dp = _u16(buf, l4 + 2)
                sport[r] = sp
                dport[r] = dp
                tbl = t_tcp if proto == 6 else t_udp
                a = tbl[dp] if proto != 132 else 0
                b = tbl[sp] if proto != 132 else 0
                if a != 0 and b == 0:
                    server_dst = True
                elif b != 0 and a == 0:
                    server_dst = False
                elif dp < 1024 and sp >= 1024:
                    server_dst = True
                elif sp < 1024 and dp >= 1024:
                    server_dst = False
                else:
                    server_dst = dp <= sp
                if server_dst:
                    flags[r] |= F_SERVER_DST
                    appid[r] = a
                else:
                    appid[r] = b
                if proto == 6:
                    if avail < 20:
                        flags[r] |= F_TRUNCATED
                        if avail >= 14:
                            tcpflags[r] = buf[l4 + 13]
                        break
                    tcpflags[r] = buf[l4 + 13]
                    doff = (np.int64(buf[l4 + 12]) >> 4) * 4
                    if doff < 20 or doff > avail:
                        flags[r] |= F_TRUNCATED
                        break
                    pay_off[r] = l4 + doff
                    pay_len[r] = avail - doff
                elif proto == 17:
                    if avail < 8:
                        flags[r] |= F_TRUNCATED
                        break
                    pay_off[r] = l4 + 8
                    pay_len[r] = avail - 8
                    # VXLAN / Geneve: Ethernet inside UDP
                    inner = -1
                    if dp == 4789 and avail >= 16 and (buf[l4 + 8] & 0x08):
                        inner = l4 + 16
                    elif dp == 6081 and avail >= 16 and _u16(buf, l4 + 10) == 0x6558:
                        inner = l4 + 16 + (np.int64(buf[l4 + 8]) & 0x3F) * 4
                    if inner >= 0 and depth < MAX_DEPTH and r + 1 < cap_rows:
                        flags[r] |= F_TUNNEL
                        r = _open_inner(r, i, inner, ts, wlen, pkt, smac, dmac, vlan, ethertype, l3, shi, slo, dhi, dlo, ipproto, sport, dport, tcpflags, ttl, l3id, l4id, appid, pay_off, pay_len, flags, l3_off, rec_off[i])
                        depth += 1
                        p = inner
                        kind = _ETH
                        continue
                else:
                    pay_off[r] = l4 + 4
                    pay_len[r] = avail - 4
                break
            if proto == 1 or proto == 58:
                if avail < 4:
                    flags[r] |= F_TRUNCATED
                    break
                itype = np.int64(buf[l4])
                sport[r] = itype
                dport[r] = buf[l4 + 1]
                if proto == 1:
                    reply = itype == 0 or itype == 14 or itype == 16 or itype == 18
                else:
                    reply = itype == 129
                if not reply:
                    flags[r] |= F_SERVER_DST
                pay_off[r] = l4 + 4
                pay_len[r] = avail - 4
                break
            if proto == 47 and avail >= 4:  # GRE
                gf = _u16(buf, l4)
                gp = _u16(buf, l4 + 2)
                h = 4
                if gf & 0xC000:
                    h += 4
                if gf & 0x2000:
                    h += 4
                if gf & 0x1000:
                    h += 4
                inner = -1
                inner_kind = _ETH
                if (gf & 7) == 0:
                    if gp == 0x6558:
                        inner = l4 + h
                    elif gp == 0x0800 or gp == 0x86DD:
                        inner = l4 + h
                        inner_kind = _IP
                    elif gp == 0x88BE:
                        inner = l4 + h + (8 if gf & 0x1000 else 0)
                    elif gp == 0x22EB:
                        inner = l4 + h + 12
                        if avail >= h + 12 and (buf[l4 + h + 11] & 1):
                            inner += 8
                if inner >= 0 and inner < l3end and depth < MAX_DEPTH and r + 1 < cap_rows:
                    flags[r] |= F_TUNNEL
                    r = _open_inner(r, i, inner, ts, wlen, pkt, smac, dmac, vlan, ethertype, l3, shi, slo, dhi, dlo, ipproto, sport, dport, tcpflags, ttl, l3id, l4id, appid, pay_off, pay_len, flags, l3_off, rec_off[i])
                    depth += 1
                    p = inner
                    kind = inner_kind
                    continue
                pay_off[r] = l4 + h
                pay_len[r] = avail - h
                break
            if (proto == 4 or proto == 41) and depth < MAX_DEPTH and r + 1 < cap_rows and avail > 0:
                flags[r] |= F_TUNNEL
                r = _open_inner(r, i, l4, ts, wlen, pkt, smac, dmac, vlan, ethertype, l3, shi, slo, dhi, dlo, ipproto, sport, dport, tcpflags, ttl, l3id, l4id, appid, pay_off, pay_len, flags, l3_off, rec_off[i])
                depth += 1
                p = l4
                kind = _IP
                continue
            pay_off[r] = l4
            pay_len[r] = avail
            break
        if l3[r] != 0 or smac[r] != NO_MAC or dmac[r] != NO_MAC:
            r += 1
    if picking:
        pick_rows(picked, r, buf, columns, pick_args)
    return r


@njit(cache=True)
def _open_inner(r, i, inner, ts, wlen, pkt, smac, dmac, vlan, ethertype, l3, shi, slo,
                dhi, dlo, ipproto, sport, dport, tcpflags, ttl, l3id, l4id, appid, pay_off,
                pay_len, flags, l3_off, frame_start):
    """Close row r and start row r+1 for the layer inside a tunnel; returns r+1."""
    n = r + 1
    pkt[n] = i
    ts[n] = ts[r]
    wlen[n] = wlen[r] - (inner - frame_start)
    if wlen[n] < 0:
        wlen[n] = 0
    smac[n] = NO_MAC
    dmac[n] = NO_MAC
    vlan[n] = -1
    ethertype[n] = 0
    l3[n] = 0
    shi[n] = 0
    slo[n] = 0
    dhi[n] = 0
    dlo[n] = 0
    ipproto[n] = -1
    sport[n] = 0
    dport[n] = 0
    tcpflags[n] = 0
    ttl[n] = 0
    l3id[n] = 0
    l4id[n] = 0
    appid[n] = 0
    pay_off[n] = -1
    pay_len[n] = 0
    flags[n] = F_INNER
    l3_off[n] = -1
    return n
