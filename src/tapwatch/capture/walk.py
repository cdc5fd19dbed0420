"""Compiled record walkers: find every packet record in a window of capture bytes.

Records are variable-length and chained, so this is the one loop that cannot be
vectorized; numba compiles it. Each walker fills preallocated arrays (record data
offset, captured length, wire length, timestamp in ns, interface) and stops at the
first record that is incomplete, damaged, or needs Python's attention (pcapng section
and interface blocks).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Walker status codes.
MORE = 0  # ran out of complete records in the window (or out of output room)
CORRUPT = 1  # the record at `pos` is not plausible
BLOCK = 2  # pcapng block at `pos` must be handled by Python (SHB, IDB)

MAX_RECORD = 262144 * 4  # larger than any snaplen a real capturer writes

SHB = 0x0A0D0D0A
IDB = 1
PB_OBSOLETE = 2
SPB = 3
EPB = 6

# Per-interface timestamp conversion kinds (pcapng if_tsresol).
TS_MUL = 0  # ns = units * factor
TS_DIV = 1  # ns = units // factor
TS_POW2 = 2  # ns = units * 1e9 / 2**shift


@njit(cache=True, inline="always")
def rd32(buf, i, big):
    if big:
        return (
            (np.int64(buf[i]) << 24) | (np.int64(buf[i + 1]) << 16)
            | (np.int64(buf[i + 2]) << 8) | np.int64(buf[i + 3])
        )
    return (
        (np.int64(buf[i + 3]) << 24) | (np.int64(buf[i + 2]) << 16)
        | (np.int64(buf[i + 1]) << 8) | np.int64(buf[i])
    )


@njit(cache=True, inline="always")
def _pcap_header_ok(buf, p, big, frac_limit, limit):
    incl = rd32(buf, p + 8, big)
    frac = rd32(buf, p + 4, big)
    return incl <= limit and frac < frac_limit


@njit(cache=True)
def walk_pcap(buf, pos, end, big, nsec, limit,
              out_off, out_cap, out_wire, out_ts):
    """Walk classic pcap records from `pos`. Returns (count, pos, status)."""
    n = 0
    room = out_off.shape[0]
    frac_limit = 1000000000 if nsec else 1000000
    while n < room:
        if pos + 16 > end:
            return n, pos, MORE
        if not _pcap_header_ok(buf, pos, big, frac_limit, limit):
            return n, pos, CORRUPT
        sec = rd32(buf, pos, big)
        frac = rd32(buf, pos + 4, big)
        incl = rd32(buf, pos + 8, big)
        orig = rd32(buf, pos + 12, big)
        if pos + 16 + incl > end:
            return n, pos, MORE
        out_off[n] = pos + 16
        out_cap[n] = incl
        out_wire[n] = orig if orig >= incl else incl
        out_ts[n] = sec * 1000000000 + (frac if nsec else frac * 1000)
        n += 1
        pos += 16 + incl
    return n, pos, MORE


@njit(cache=True)
def resync_pcap(buf, pos, end, big, nsec, limit, eof):
    """First offset after `pos` where three chained plausible record headers start.

    Returns -1 when none is found in the window (the caller then drops the window).
    A chain that runs off the window end counts as plausible only when more data may
    follow (not at end of file) or when it ends exactly at the end of the file.
    """
    frac_limit = 1000000000 if nsec else 1000000
    c = pos + 1
    while c + 16 <= end:
        p = c
        good = 0
        while good < 3:
            if p == end and eof:
                good = 3
                break
            if p + 16 > end:
                if not eof:
                    good = 3
                break
            if not _pcap_header_ok(buf, p, big, frac_limit, limit):
                break
            if rd32(buf, p + 12, big) == 0 and rd32(buf, p + 8, big) == 0:
                break
            p += 16 + rd32(buf, p + 8, big)
            if p > end and eof:
                break
            good += 1
        if good >= 3:
            return c
        c += 1
    return -1


@njit(cache=True, inline="always")
def _ts_to_ns(units, kind, factor, offset_ns):
    if kind == TS_MUL:
        return units * factor + offset_ns
    if kind == TS_DIV:
        return units // factor + offset_ns
    mask = (np.int64(1) << factor) - 1
    return (units >> factor) * 1000000000 + (((units & mask) * 1000000000) >> factor) + offset_ns


@njit(cache=True)
def walk_pcapng(buf, pos, end, big, n_if, if_snap, if_kind, if_factor, if_offset, last_ts,
                out_off, out_cap, out_wire, out_ts, out_if):
    """Walk pcapng blocks from `pos`. Returns (count, pos, status, last_ts).

    Packet blocks (EPB, SPB, obsolete PB) are emitted; statistics, name resolution,
    decryption-secret and custom blocks are skipped; SHB and IDB hand back to Python.
    """
    n = 0
    room = out_off.shape[0]
    while n < room:
        if pos + 12 > end:
            return n, pos, MORE, last_ts
        btype = rd32(buf, pos, big)
        blen = rd32(buf, pos + 4, big)
        if btype == SHB:
            return n, pos, BLOCK, last_ts
        if blen < 12 or (blen & 3) != 0 or blen > MAX_RECORD + 64:
            return n, pos, CORRUPT, last_ts
        if pos + blen > end:
            return n, pos, MORE, last_ts
        if rd32(buf, pos + blen - 4, big) != blen:
            return n, pos, CORRUPT, last_ts
        if btype == IDB:
            return n, pos, BLOCK, last_ts
        if btype == EPB or btype == PB_OBSOLETE:
            if blen < 32:
                return n, pos, CORRUPT, last_ts
            if btype == EPB:
                iface = rd32(buf, pos + 8, big)
            else:
                iface = rd32(buf, pos + 8, big) & 0xFFFF if not big else rd32(buf, pos + 8, big) >> 16
            cap = rd32(buf, pos + 20, big)
            orig = rd32(buf, pos + 24, big)
            if iface >= n_if or 28 + cap > blen - 4:
                return n, pos, CORRUPT, last_ts
            units = (rd32(buf, pos + 12, big) << 32) | rd32(buf, pos + 16, big)
            last_ts = _ts_to_ns(units, if_kind[iface], if_factor[iface], if_offset[iface])
            out_off[n] = pos + 28
            out_cap[n] = cap
            out_wire[n] = orig if orig >= cap else cap
            out_ts[n] = last_ts
            out_if[n] = iface
            n += 1
        elif btype == SPB:
            if n_if == 0 or blen < 16:
                return n, pos, CORRUPT, last_ts
            orig = rd32(buf, pos + 8, big)
            cap = blen - 16
            if orig < cap:
                cap = orig
            if if_snap[0] > 0 and cap > if_snap[0]:
                cap = if_snap[0]
            out_off[n] = pos + 12
            out_cap[n] = cap
            out_wire[n] = orig if orig >= cap else cap
            out_ts[n] = last_ts
            out_if[n] = 0
            n += 1
        pos += blen
    return n, pos, MORE, last_ts


@njit(cache=True)
def resync_pcapng(buf, pos, end, big):
    """First offset after `pos` where a self-consistent packet or section block starts."""
    c = pos + 1
    while c + 12 <= end:
        btype = rd32(buf, c, big)
        if btype == EPB or btype == SPB or btype == SHB or btype == IDB:
            blen = rd32(buf, c + 4, big)
            if 12 <= blen <= MAX_RECORD + 64 and (blen & 3) == 0 and c + blen <= end:
                if rd32(buf, c + blen - 4, big) == blen:
                    return c
        c += 1
    return -1
