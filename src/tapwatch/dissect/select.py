"""Choosing, in compiled code, the few packets worth a Python dissector.

A row is selected when a dissector wants its port, ethertype or protocol, and when it
brings something new: a payload not seen before from the same sender (the DHCP request
repeated every minute is parsed once), and for TCP only the first segments of each
direction of a flow (headers are at the start). Both memories are fixed-size hash sets
that are simply cleared when full: they are caches, not state.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SEEN_SLOTS = 1 << 20
FLOW_SLOTS = 1 << 16
TCP_SEGMENTS_PER_DIRECTION = 4
HASH_BYTES = 512


@njit(cache=True, inline="always")
def _mix(h, k):
    h = (h ^ k) * np.int64(-7046029254386353131)
    return h ^ ((h >> 31) & np.int64(0x1FFFFFFFF))


@njit(cache=True)
def _remember(table, used, h):
    """Insert h into an open-addressing set; True when it was not there yet."""
    if h == 0:
        h = 1
    mask = table.shape[0] - 1
    if used[0] * 2 > table.shape[0]:
        table[:] = 0
        used[0] = 0
    s = h & mask
    while table[s] != 0:
        if table[s] == h:
            return False
        s = (s + 1) & mask
    table[s] = h
    used[0] += 1
    return True


@njit(cache=True)
def _flow_budget(keys, counts, used, h, budget):
    """Count one more segment for flow-direction h; True while within the budget."""
    if h == 0:
        h = 1
    mask = keys.shape[0] - 1
    if used[0] * 2 > keys.shape[0]:
        keys[:] = 0
        counts[:] = 0
        used[0] = 0
    s = h & mask
    while keys[s] != 0 and keys[s] != h:
        s = (s + 1) & mask
    if keys[s] == 0:
        keys[s] = h
        used[0] += 1
    counts[s] += 1
    return counts[s] <= budget


@njit(cache=True, inline="always")
def _has_prefix(buf, po, prefixes):
    w = (np.int64(buf[po]) << 24) | (np.int64(buf[po + 1]) << 16) | (np.int64(buf[po + 2]) << 8) | buf[po + 3]
    for j in range(prefixes.shape[0]):
        if prefixes[j] == w:
            return True
    return False


@njit(cache=True)
def select(n, buf, ipproto, sport, dport, tcpflags, ethertype, l3, l3id, pay_off, pay_len,
           l3_off, smac, shi, slo, dhi, dlo, tcp_int, tcp_all, udp_int, eth_int, proto_int,
           want_syn, prefixes, seen, seen_used, flow_keys, flow_counts, flow_used, out):
    """Indices of rows [0, n) to dissect, written to `out`; returns how many."""
    m = 0
    for i in range(n):
        proto = ipproto[i]
        po = pay_off[i]
        pl = pay_len[i]
        hit = False
        syn = False
        if proto == 6:
            if pl > 0 and (tcp_all[sport[i]] or tcp_all[dport[i]]):
                hit = True
            elif pl >= 4 and _has_prefix(buf, po, prefixes):
                hit = True  # a message start (e.g. each request of a persistent HTTP flow)
            elif pl > 0 and (tcp_int[sport[i]] or tcp_int[dport[i]]):
                h = _mix(_mix(_mix(_mix(np.int64(6), slo[i]), dlo[i] ^ shi[i]), dhi[i]),
                         (sport[i] << 16) | dport[i])
                hit = _flow_budget(flow_keys, flow_counts, flow_used, h,
                                   TCP_SEGMENTS_PER_DIRECTION)
            elif want_syn and (tcpflags[i] & 0x02) and l3_off[i] >= 0 and po >= 0:
                hit = True
                syn = True
        elif proto == 17:
            hit = pl > 0 and (udp_int[sport[i]] or udp_int[dport[i]])
        elif l3[i] != 4 and l3[i] != 6:
            hit = po >= 0 and (eth_int[ethertype[i]] or proto_int[l3id[i]])
        if not hit:
            continue
        h = _mix(_mix(_mix(np.int64(0x5BD1E995), smac[i]), slo[i]), shi[i] ^ (pl << 8) ^ proto)
        if syn:  # a fingerprint depends on TTL, window, options: hash the headers, not ids
            a = l3_off[i]
            h = _mix(h, np.int64(buf[a + 8]) if (buf[a] >> 4) == 4 else np.int64(buf[a + 7]))
            ihl = (np.int64(buf[a]) & 15) * 4 if (buf[a] >> 4) == 4 else 40
            t = a + ihl
            if t + 20 > po:
                continue
            h = _mix(h, (np.int64(buf[t + 13]) << 16) | (np.int64(buf[t + 14]) << 8) | buf[t + 15])
            for j in range(t + 20, po):
                h = _mix(h, np.int64(buf[j]))
        else:
            end = po + (pl if pl < HASH_BYTES else HASH_BYTES)
            j = po
            while j + 8 <= end:
                w = np.int64(0)
                for k in range(8):
                    w = (w << 8) | buf[j + k]
                h = _mix(h, w)
                j += 8
            while j < end:
                h = _mix(h, np.int64(buf[j]))
                j += 1
        if _remember(seen, seen_used, h):
            out[m] = i
            m += 1
    return m
