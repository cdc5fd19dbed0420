"""Choosing, in compiled code, the few packets worth a Python dissector.

A row is selected when a dissector wants its port, ethertype or protocol, and when it
brings something new: a payload not seen before from the same sender (the DHCP request
repeated every minute is parsed once), and for TCP only the first segments of each
direction of a flow (headers are at the start). Both memories are fixed-size hash sets
that are simply cleared when full: they are caches, not state.

Three passes, each a tight loop of its own: `wanted` (which rows interest a dissector)
and `identities` (a hash of each) run inside the decoder every thousand rows, while
the packets are still in cache; `novel` (which hashes are new) runs once per batch, where
the seen-set probes of consecutive rows overlap in memory instead of waiting in line.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import as_strided

SEEN_SLOTS = 1 << 17
FLOW_SLOTS = 1 << 16
TCP_SEGMENTS_PER_DIRECTION = 4
HASH_BYTES = 1024  # a payload's identity: its length, first 1024 bytes and last 8 bytes
MAX_IGNORED = 6  # byte ranges a dissector may exclude from that identity…
MASKED_BYTES = 64  # …within the first bytes of the payload
MASKED_WORDS = MASKED_BYTES // 8
# a row of the masks table: MAX_IGNORED ranges (offset, length, at, value), then the framing
# of messages several of which may share a segment (offset of their big-endian 16-bit
# length, bytes beyond that length, offset of a 16-bit field that is zero; -1: none)
FRAME = 4 * MAX_IGNORED
MASK_COLUMNS = FRAME + 3
# rows the decoder writes before it picks from them: still in cache, and few calls (each
# passes some thirty arrays and updates their reference counts)
PICK_BATCH = 1024
# the Rows columns pick_rows reads, in the order of its `columns` tuple
PICK_COLUMNS = ("ipproto", "sport", "dport", "tcpflags", "ethertype", "l3", "l3id", "pay_off",
                "pay_len", "l3_off", "smac", "dmac", "shi", "slo", "dhi", "dlo")
# Picker.state: rows picked in this batch, flow-budget slots used, whether SYNs are wanted
PICKED, FLOWS_USED, WANT_SYN = 0, 1, 2


@njit(cache=True, inline="always")
def _mix(h, k):
    h = (h ^ k) * np.int64(-7046029254386353131)
    return h ^ ((h >> 31) & np.int64(0x1FFFFFFFF))


# a seen-set slot: payload hash, repeats since it was first seen, time of the last repeat
# (one row per slot, so a probe touches one cache line, not three arrays)
HASH, HITS, LAST = 0, 1, 2
SEEN_COLUMNS = 4


@njit(cache=True, inline="always")
def _remember(seen, used, h, ts):
    """Insert h into an open-addressing set; True when it was not there yet. A repeat is
    counted with its time, so folded duplicates keep their count."""
    mask = seen.shape[0] - 1
    s = h & mask
    while seen[s, 0] != 0:
        if seen[s, 0] == h:
            seen[s, 1] += 1
            seen[s, 2] = ts
            return False
        s = (s + 1) & mask
    seen[s, 0] = h
    seen[s, 1] = 0
    seen[s, 2] = ts
    used[0] += 1
    return True


@njit(cache=True)
def lookup(seen, h):
    """Slot of h in the seen set, or -1."""
    mask = seen.shape[0] - 1
    s = h & mask
    while seen[s, 0] != 0:
        if seen[s, 0] == h:
            return s
        s = (s + 1) & mask
    return -1


@njit(cache=True)
def _flow_budget(flows, state, h, budget):
    """Count one more segment for flow-direction h; True while within the budget.
    flows[0] are the keys of an open-addressing set, flows[1] their segment counts."""
    if h == 0:
        h = 1
    keys = flows[0]
    mask = keys.shape[0] - 1
    if state[FLOWS_USED] * 2 > keys.shape[0]:
        flows[:] = 0
        state[FLOWS_USED] = 0
    s = h & mask
    while keys[s] != 0 and keys[s] != h:
        s = (s + 1) & mask
    if keys[s] == 0:
        keys[s] = h
        state[FLOWS_USED] += 1
    flows[1, s] += 1
    return flows[1, s] <= budget


PREFIX_SLOTS = 256  # open-addressing set of the 4-byte message starts (a few dozen)


def prefix_set(prefixes: list[bytes]) -> np.ndarray:
    """The 4-byte prefixes as a hash set of little-endian words, which the selector probes
    once or twice per TCP payload."""
    table = np.zeros(PREFIX_SLOTS, dtype=np.int64)
    for prefix in prefixes:
        w = int.from_bytes(prefix, "little")
        s = _prefix_slot.py_func(w)  # the same slot, without compiling anything yet
        while table[s] != 0:
            s = (s + 1) & (PREFIX_SLOTS - 1)
        table[s] = w
    return table


@njit(cache=True, inline="always")
def _prefix_slot(w):
    return ((w * 0x9E3779B1) >> 16) & (PREFIX_SLOTS - 1)


@njit(cache=True, inline="always")
def _has_prefix(buf, words64, po, prefixes):
    """Whether the payload at po starts with one of the prefixes (as little-endian words)."""
    if po < words64.shape[0]:
        w = words64[po] & 0xFFFFFFFF  # one load; the buffer's last bytes take four
    else:
        w = ((np.int64(buf[po + 3]) << 24) | (np.int64(buf[po + 2]) << 16)
             | (np.int64(buf[po + 1]) << 8) | buf[po])
    s = _prefix_slot(w)
    while prefixes[s] != 0:
        if prefixes[s] == w:
            return True
        s = (s + 1) & (PREFIX_SLOTS - 1)
    return False


def word_view(buf: np.ndarray) -> np.ndarray:
    """buf as overlapping little-endian int64 words, one starting at every byte: element p
    is bytes p..p+7. The selector reads payload words with one load each, at any offset."""
    whole = buf[: len(buf) // 8 * 8].view(np.int64) if len(buf) >= 8 else np.zeros(1, np.int64)
    # (always a strided view, also of a short buffer: one type for compiled code)
    return as_strided(whole, shape=(max(len(buf) - 7, 0),), strides=(1,), writeable=False)


@njit(cache=True, inline="always")
def _low_bytes(n):
    """A word's mask of its first n bytes, 0 <= n <= 8 (never a shift by 64)."""
    return ((np.int64(1) << (4 * n)) << (4 * n)) - 1


@njit(cache=True, inline="always")
def _payload_hash(words64, buf, po, pl, keep):
    """Hash of a payload's first HASH_BYTES and last 8 bytes, with the bytes
    cleared in `keep` (one 64-bit mask per word of the first MASKED_BYTES) left out. Four
    lanes run side by side so the multiplies overlap instead of waiting on each other."""
    hn = pl if pl < HASH_BYTES else HASH_BYTES
    words = hn >> 3
    a = np.int64(0x5BD1E995)
    b = np.int64(0x243F6A8885A308D3)
    c = np.int64(0x13198A2E03707344)
    d = np.int64(0x299F31D0082EFA98)
    k = 0
    while k + 4 <= words:
        p = po + 8 * k
        if k < MASKED_WORDS:
            a = _mix(a, words64[p] & keep[k])
            b = _mix(b, words64[p + 8] & keep[k + 1])
            c = _mix(c, words64[p + 16] & keep[k + 2])
            d = _mix(d, words64[p + 24] & keep[k + 3])
        else:
            a = _mix(a, words64[p])
            b = _mix(b, words64[p + 8])
            c = _mix(c, words64[p + 16])
            d = _mix(d, words64[p + 24])
        k += 4
    while k < words:
        w = words64[po + 8 * k]
        a = _mix(a, w & keep[k] if k < MASKED_WORDS else w)
        k += 1
    rest = hn - 8 * words
    if rest:  # the last partial word, little-endian like the others
        t = po + 8 * words
        if t < words64.shape[0]:  # one load, the bytes past the payload cleared
            w = words64[t] & _low_bytes(rest)
        else:
            w = np.int64(0)
            for j in range(rest):
                w |= np.int64(buf[t + j]) << (8 * j)
        if words < MASKED_WORDS:
            w &= keep[words]
        b = _mix(b, w)
    if words < 4 and pl <= HASH_BYTES:  # c and d were never fed: a short message
        return _mix(a, b)
    if pl > HASH_BYTES:
        c = _mix(c, words64[po + pl - 8])
    return _mix(_mix(_mix(a, b), c), d)


@njit(cache=True, inline="always")
def _blank(masks, row, buf, po, pl, keep):
    """Set `keep` to leave out the ranges of masks[row] from the first MASKED_BYTES of the
    payload: once, or in each framed message that starts there."""
    for k in range(MASKED_WORDS):
        keep[k] = -1
    size_at, extra, zero_at = masks[row, FRAME], masks[row, FRAME + 1], masks[row, FRAME + 2]
    start = 0
    for _ in range(MASKED_BYTES):
        end = pl
        if size_at >= 0:
            if start + size_at + 2 > pl or (zero_at >= 0 and (
                    start + zero_at + 2 > pl or buf[po + start + zero_at] != 0
                    or buf[po + start + zero_at + 1] != 0)):
                return  # not (or no longer) a message: the rest counts as it is
            end = start + ((np.int64(buf[po + start + size_at]) << 8)
                           | buf[po + start + size_at + 1]) + extra
        stop = min(end, pl)
        for r in range(MAX_IGNORED):
            at = masks[row, 4 * r + 2]  # a range may apply only when a byte says so
            if at >= 0 and (start + at >= stop or buf[po + start + at] != masks[row, 4 * r + 3]):
                continue
            a = start + masks[row, 4 * r]
            b = stop if masks[row, 4 * r + 1] < 0 else min(a + masks[row, 4 * r + 1], stop)
            b = min(b, MASKED_BYTES)
            if a < b:
                for k in range(a >> 3, ((b - 1) >> 3) + 1):
                    lo = max(a - 8 * k, 0)
                    hi = min(b - 8 * k, 8)
                    keep[k] &= ~(_low_bytes(hi) ^ _low_bytes(lo))
        if size_at < 0 or end <= start or end >= min(pl, MASKED_BYTES):
            return
        start = end


@njit(cache=True)
def wanted(start, n, m, buf, words64, ipproto, sport, dport, tcpflags, ethertype, l3, l3id,
           pay_off, pay_len, l3_off, shi, slo, dhi, dlo, tcp_int, tcp_all, udp_int, eth_int,
           proto_int, prefixes, flows, state, out):
    """Rows of [start, n) that some dissector wants, written to `out` from index m on; a
    TCP SYN wanted only for its header fingerprint is written as -1 - row. Returns the
    index after the last one written."""
    for i in range(start, n):
        proto = ipproto[i]
        po = pay_off[i]
        pl = pay_len[i]
        if proto == 6:
            if pl > 0 and (tcp_all[sport[i]] or tcp_all[dport[i]]):
                hit = True
            elif pl >= 4 and _has_prefix(buf, words64, po, prefixes):
                hit = True  # a message start (e.g. each request of a persistent HTTP flow)
            elif pl > 0 and (tcp_int[sport[i]] or tcp_int[dport[i]]):
                h = _mix(_mix(_mix(_mix(np.int64(6), slo[i]), dlo[i] ^ shi[i]), dhi[i]),
                         (sport[i] << 16) | dport[i])
                hit = _flow_budget(flows, state, h, TCP_SEGMENTS_PER_DIRECTION)
            elif state[WANT_SYN] and (tcpflags[i] & 0x02) and l3_off[i] >= 0 and po >= 0:
                out[m] = -1 - i
                m += 1
                continue
            else:
                hit = False
        elif proto == 17:
            hit = pl > 0 and (udp_int[sport[i]] or udp_int[dport[i]])
        else:
            hit = l3[i] != 4 and l3[i] != 6 and po >= 0 and (eth_int[ethertype[i]] or proto_int[l3id[i]])
        if hit:
            out[m] = i
            m += 1
    return m


@njit(cache=True)
def identities(c0, c, rows, buf, words64, ipproto, sport, dport, pay_off, pay_len, l3_off, smac,
               dmac, shi, slo, dhi, dlo, tcp_mask, udp_mask, masks, keep, no_mask, out_hash):
    """The identity hash of each wanted row of rows[c0:c]: who said it to whom, and what.
    Rows given up (a SYN too short for its options) are dropped; the rest are compacted in
    place from c0 on (a SYN back to its row number). Returns the index after the last."""
    m = c0
    for j in range(c0, c):
        i = rows[j]
        syn = i < 0
        if syn:
            i = -1 - i
        proto = ipproto[i]
        po = pay_off[i]
        pl = pay_len[i]
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
            for k in range(t + 20, po):
                h = _mix(h, np.int64(buf[k]))
        else:
            mask = -1
            if proto == 6:
                mask = tcp_mask[dport[i]] if tcp_mask[dport[i]] >= 0 else tcp_mask[sport[i]]
            elif proto == 17:
                mask = udp_mask[dport[i]] if udp_mask[dport[i]] >= 0 else udp_mask[sport[i]]
            if mask >= 0:  # blank what changes in every message (transaction ids, sequences)
                _blank(masks, mask, buf, po, pl, keep)
            h = _mix(h, _payload_hash(words64, buf, po, pl, keep if mask >= 0 else no_mask))
        rows[m] = i
        out_hash[m] = h if h != 0 else 1
        m += 1
    return m


@njit(cache=True)
def pick_rows(first, stop, buf, columns, args):
    """Append the wanted rows of [first, stop), with their identities, to the picker's
    `out` (the decoder calls this every PICK_BATCH rows, while they are in cache).
    `columns` are the Rows arrays named in PICK_COLUMNS, `args` a Picker's."""
    (ipproto, sport, dport, tcpflags, ethertype, l3, l3id, pay_off, pay_len, l3_off, smac, dmac,
     shi, slo, dhi, dlo) = columns
    (tcp_int, tcp_all, udp_int, eth_int, proto_int, prefixes, tcp_mask, udp_mask, masks, keep,
     no_mask, flows, state, out, words64) = args
    c0 = state[PICKED]
    c = wanted(first, stop, c0, buf, words64, ipproto, sport, dport, tcpflags, ethertype, l3, l3id,
               pay_off, pay_len, l3_off, shi, slo, dhi, dlo, tcp_int, tcp_all, udp_int, eth_int,
               proto_int, prefixes, flows, state, out[0])
    state[PICKED] = identities(c0, c, out[0], buf, words64, ipproto, sport, dport, pay_off,
                               pay_len, l3_off, smac, dmac, shi, slo, dhi, dlo, tcp_mask, udp_mask,
                               masks, keep, no_mask, out[1])


class Picker:
    """The dissectors' wishes as compiled code reads them, and the rows picked so far.

    The decoder picks as it goes (`start` before each batch, then `args` to its kernel);
    `rows` and `hashes` then hold the `picked` rows of the batch and their identities.
    """

    def __init__(self, tcp: np.ndarray, tcp_all: np.ndarray, udp: np.ndarray, eth: np.ndarray,
                 proto: np.ndarray, syn: bool, prefixes: np.ndarray, tcp_mask: np.ndarray,
                 udp_mask: np.ndarray, masks: np.ndarray) -> None:
        self.tables = (tcp, tcp_all, udp, eth, proto, prefixes, tcp_mask, udp_mask, masks,
                       np.zeros(MASKED_WORDS, dtype=np.int64),  # one payload's byte masks
                       np.full(MASKED_WORDS, -1, dtype=np.int64),  # no mask
                       np.zeros((2, FLOW_SLOTS), dtype=np.int64))  # flow keys, segments seen
        self.state = np.array([0, 0, syn], dtype=np.int64)
        self.out = np.empty((2, 0), dtype=np.int64)  # picked rows, their identity hashes
        self._words_of: np.ndarray | None = None  # the buffer `args` were made for
        self.args: tuple = ()  # type: ignore[type-arg]

    @property
    def picked(self) -> int:
        return int(self.state[PICKED])

    @property
    def rows(self) -> np.ndarray:
        return self.out[0]

    @property
    def hashes(self) -> np.ndarray:
        return self.out[1]

    def start(self, buf: np.ndarray, capacity: int) -> tuple:  # type: ignore[type-arg]
        """Ready to pick from up to `capacity` rows of `buf`; returns `args`."""
        self.state[PICKED] = 0
        if self.out.shape[1] < capacity:
            self.out = np.empty((2, capacity), dtype=np.int64)
            self._words_of = None
        if self._words_of is not buf:
            self._words_of = buf
            self.args = (*self.tables, self.state, self.out, word_view(buf))
        return self.args


def idle_args() -> tuple:  # type: ignore[type-arg]
    """`args` for a decoder without dissectors: the types of a real picker's, so the
    decoder is compiled once."""
    nothing = np.zeros(65536, dtype=np.bool_)
    no_mask = np.full(65536, -1, dtype=np.int64)
    idle = Picker(nothing, nothing, nothing, nothing, np.zeros(256, dtype=np.bool_), False,
                  prefix_set([]), no_mask, no_mask, np.zeros((1, MASK_COLUMNS), dtype=np.int64))
    return idle.start(np.zeros(8, dtype=np.uint8), 0)


@njit(cache=True)
def novel(start, c, rows, hashes, ts, seen, seen_used):
    """Keep, of rows[start:c], those whose identity is not in the seen set yet (adding it),
    compacted to the front of rows/hashes; repeats are counted in the set instead.

    Returns (kept, next): it stops early when the seen set is half full, so the caller can
    collect the repeat counts of what it dissected before clearing the set and going on
    from `next`.
    """
    m = 0
    for j in range(start, c):
        if seen_used[0] * 2 > seen.shape[0]:
            return m, j
        h = hashes[j]
        if _remember(seen, seen_used, h, ts[rows[j]]):
            rows[m] = rows[j]
            hashes[m] = h
            m += 1
    return m, c
