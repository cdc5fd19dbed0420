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

SEEN_SLOTS = 1 << 17
FLOW_SLOTS = 1 << 16
TCP_SEGMENTS_PER_DIRECTION = 4
HASH_BYTES = 1024  # a payload's identity: its length, first 1024 bytes and last 8 bytes
MAX_IGNORED = 4  # byte ranges a dissector may exclude from that identity…
MASKED_BYTES = 64  # …within the first bytes of the payload


@njit(cache=True, inline="always")
def _mix(h, k):
    h = (h ^ k) * np.int64(-7046029254386353131)
    return h ^ ((h >> 31) & np.int64(0x1FFFFFFFF))


@njit(cache=True, inline="always")
def _remember(table, hits, last, used, h, ts):
    """Insert h into an open-addressing set; True when it was not there yet. A repeat is
    counted in `hits` with its time in `last`, so folded duplicates keep their count."""
    mask = table.shape[0] - 1
    s = h & mask
    while table[s] != 0:
        if table[s] == h:
            hits[s] += 1
            last[s] = ts
            return False
        s = (s + 1) & mask
    table[s] = h
    hits[s] = 0
    last[s] = ts
    used[0] += 1
    return True


@njit(cache=True)
def lookup(table, h):
    """Slot of h in the seen set, or -1."""
    mask = table.shape[0] - 1
    s = h & mask
    while table[s] != 0:
        if table[s] == h:
            return s
        s = (s + 1) & mask
    return -1


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
def select(start, n, ts, buf, ipproto, sport, dport, tcpflags, ethertype, l3, l3id, pay_off, pay_len,
           l3_off, smac, dmac, shi, slo, dhi, dlo, tcp_int, tcp_all, udp_int, eth_int, proto_int,
           want_syn, prefixes, tcp_mask, udp_mask, masks, scratch, seen, seen_hits, seen_last,
           seen_used, flow_keys, flow_counts, flow_used, out, out_hash):
    """Indices of rows [start, n) to dissect, written to `out` with their payload hashes.

    Returns (selected, next row): it stops early when the seen set is half full, so the
    caller can collect the repeat counts of what it dissected before clearing the set.
    """
    m = 0
    for i in range(start, n):
        if seen_used[0] * 2 > seen.shape[0]:
            return m, i
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
        # who said it to whom: the same bytes to another receiver are another operation
        h = _mix(_mix(_mix(_mix(_mix(np.int64(0x5BD1E995), smac[i]), slo[i]), shi[i] ^ (pl << 8) ^ proto),
                      dlo[i]), dhi[i] ^ dmac[i])
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
            mask = -1
            if proto == 6:
                mask = tcp_mask[dport[i]] if tcp_mask[dport[i]] >= 0 else tcp_mask[sport[i]]
            elif proto == 17:
                mask = udp_mask[dport[i]] if udp_mask[dport[i]] >= 0 else udp_mask[sport[i]]
            hn = pl if pl < HASH_BYTES else HASH_BYTES
            head = 0  # bytes hashed from the blanked copy
            if mask >= 0:  # blank what changes in every message (transaction ids, sequences)
                head = hn if hn < MASKED_BYTES else MASKED_BYTES
                for j in range(head):
                    scratch[j] = buf[po + j]
                for r in range(MAX_IGNORED):
                    c = masks[mask, 4 * r + 2]  # a range may apply only when a byte says so
                    if c >= 0 and (c >= pl or buf[po + c] != masks[mask, 4 * r + 3]):
                        continue
                    a = masks[mask, 4 * r]
                    b = a + masks[mask, 4 * r + 1]
                    for j in range(a, b if b < head else head):
                        scratch[j] = 0
                j = 0
                while j + 8 <= head:
                    w = np.int64(0)
                    for k in range(8):
                        w = (w << 8) | scratch[j + k]
                    h = _mix(h, w)
                    j += 8
                while j < head:
                    h = _mix(h, np.int64(scratch[j]))
                    j += 1
            j = po + head
            words = (hn - head) >> 3
            if words:  # whole 8-byte words straight from the buffer
                view = buf[j : j + 8 * words].view(np.int64)
                for k in range(words):
                    h = _mix(h, view[k])
                j += 8 * words
            while j < po + hn:
                h = _mix(h, np.int64(buf[j]))
                j += 1
            if pl > HASH_BYTES:
                for j in range(po + pl - 8, po + pl):
                    h = _mix(h, np.int64(buf[j]))
        if h == 0:
            h = 1
        if _remember(seen, seen_hits, seen_last, seen_used, h, ts[i]):
            out[m] = i
            out_hash[m] = h
            m += 1
    return m, n
