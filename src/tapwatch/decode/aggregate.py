"""Aggregate decoded rows into address and connection tables, batch after batch.

An *address* is one observed (MAC, IP) coupling, or a MAC alone for frames without a
usable IP sender; a *connection* is (client address, server address, transport, server
port). Both live in open-addressing hash tables made of numpy arrays and updated by a
compiled loop, so memory grows with the number of addresses and connections, never with
the number of packets. Which addresses form a device is decided later (inventory.py),
once everything about a MAC is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from tapwatch.decode.kernel import (
    F_ARP,
    F_DST_GROUP,
    F_FRAG_LATER,
    F_SERVER_DST,
    NO_MAC,
    V4_MAPPED,
    Rows,
)

EMPTY = np.int64(-1)
BROADCAST = np.int64(0xFFFFFFFFFFFF)
MAX_VLANS = 8
LOAD = 0.6

# address flags
A_ARP = 1  # the IP was announced by this MAC in ARP: it is configured on the MAC's host
A_GROUP = 2  # the coupling sent to a broadcast/multicast MAC: it lives on this link

# address value columns
FIRST, LAST, PK_S, BY_S, PK_R, BY_R = range(6)
# connection value columns
C_FIRST, C_LAST, PK_CS, BY_CS, PK_SC, BY_SC = range(6)


@njit(cache=True, inline="always")
def _mix(h, k):
    h = (h ^ k) * np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15
    return h ^ ((h >> 29) & np.int64(0x7FFFFFFFF))


@njit(cache=True, inline="always")
def _slot(keys, k):
    """Find or claim the slot of key tuple k (a 1-D array); returns (slot, inserted)."""
    width = keys.shape[1]
    mask = keys.shape[0] - 1
    h = np.int64(0x27D4EB2F165667C5)
    for j in range(width):
        h = _mix(h, k[j])
    s = h & mask
    while True:
        if keys[s, 0] == EMPTY:
            for j in range(width):
                keys[s, j] = k[j]
            return s, True
        same = True
        for j in range(width):
            if keys[s, j] != k[j]:
                same = False
                break
        if same:
            return s, False
        s = (s + 1) & mask


@njit(cache=True, inline="always")
def _is_group_ip(hi, lo):
    if hi == 0 and (lo & np.int64(-4294967296)) == V4_MAPPED:
        v4 = lo & 0xFFFFFFFF
        return (v4 >> 28) == 0xE or v4 == 0xFFFFFFFF or v4 == 0
    return ((hi >> 56) & 0xFF) == 0xFF


@njit(cache=True, inline="always")
def _touch_address(keys, vals, aflags, protos, vlans, k, ts, sent, nbytes, flag, vlan, pids,
                   counts):
    s, inserted = _slot(keys, k)
    if inserted:
        counts[0] += 1
        vals[s, FIRST] = ts
        vals[s, LAST] = ts
        for j in range(2, 6):
            vals[s, j] = 0
        aflags[s] = 0
        for j in range(4):
            protos[s, j] = 0
        for j in range(vlans.shape[1]):
            vlans[s, j] = -1
    else:
        if ts < vals[s, FIRST]:
            vals[s, FIRST] = ts
        if ts > vals[s, LAST]:
            vals[s, LAST] = ts
    if sent:
        vals[s, PK_S] += 1
        vals[s, BY_S] += nbytes
    else:
        vals[s, PK_R] += 1
        vals[s, BY_R] += nbytes
    aflags[s] |= flag
    for j in range(pids.shape[0]):
        pid = pids[j]
        if pid > 0:
            protos[s, pid >> 6] |= np.int64(1) << (pid & 63)
    if vlan >= 0:
        for j in range(vlans.shape[1]):
            if vlans[s, j] == vlan:
                break
            if vlans[s, j] == -1:
                vlans[s, j] = vlan
                break


@njit(cache=True)
def aggregate(start, n, ts, wlen, smac, dmac, vlan, l3, shi, slo, dhi, dlo, ipproto, sport,
              dport, flags, l3id, l4id, appid, pay_len,
              akeys, avals, aflags, aprotos, avlans, ckeys, cvals, capp, counts):
    """Fold rows [start, n) into the tables. Returns the next row to process.

    A TCP port names an application only once a segment carries data: a scan's SYNs and
    RSTs make connection attempts, not telnet or Modbus on the devices they touch.

    Stops early (returning a row index < n) when a table passes its load limit; the
    caller grows the table and calls again from there. counts = [addresses, connections].
    """
    k = np.empty(3, dtype=np.int64)
    ck = np.empty(7, dtype=np.int64)
    pids = np.empty(3, dtype=np.int64)
    alimit = np.int64(akeys.shape[0] * LOAD)
    climit = np.int64(ckeys.shape[0] * LOAD)
    for i in range(start, n):
        if counts[0] + 2 > alimit or counts[1] + 1 > climit:
            return i
        f = flags[i]
        pids[0] = l3id[i]
        pids[1] = l4id[i]
        app = appid[i]
        if ipproto[i] == 6 and pay_len[i] <= 0:
            app = 0
        pids[2] = app
        src_ip = (shi[i] != 0 or slo[i] != 0) and not _is_group_ip(shi[i], slo[i])
        dst_ip = (dhi[i] != 0 or dlo[i] != 0) and not _is_group_ip(dhi[i], dlo[i])
        sm = smac[i]
        if sm != BROADCAST and (sm != NO_MAC or src_ip):
            k[0] = sm
            k[1] = shi[i] if src_ip else 0
            k[2] = slo[i] if src_ip else 0
            flag = 0
            if src_ip and (f & F_ARP):
                flag |= A_ARP
            if src_ip and (f & F_DST_GROUP):
                flag |= A_GROUP
            _touch_address(akeys, avals, aflags, aprotos, avlans, k, ts[i], True, wlen[i],
                           flag, vlan[i], pids, counts)
        dm = dmac[i]
        if (f & F_DST_GROUP) == 0 and ((dm >> 40) & 1) == 0 and (dm != NO_MAC or dst_ip) and not (
            dm == NO_MAC and dhi[i] == 0 and dlo[i] == 0
        ):
            k[0] = dm
            k[1] = dhi[i] if dst_ip else 0
            k[2] = dlo[i] if dst_ip else 0
            if dm != NO_MAC or dst_ip:
                _touch_address(akeys, avals, aflags, aprotos, avlans, k, ts[i], False, wlen[i],
                               0, vlan[i], pids, counts)
        if (l3[i] == 4 or l3[i] == 6) and (f & F_FRAG_LATER) == 0 and src_ip and (
            dhi[i] != 0 or dlo[i] != 0
        ):
            proto = ipproto[i]
            port = 0
            if proto == 6 or proto == 17 or proto == 132:
                port = dport[i] if (f & F_SERVER_DST) else sport[i]
            if f & F_SERVER_DST:
                ck[0] = sm
                ck[1] = shi[i]
                ck[2] = slo[i]
                ck[3] = dm
                ck[4] = dhi[i]
                ck[5] = dlo[i]
            else:
                ck[0] = dm
                ck[1] = dhi[i]
                ck[2] = dlo[i]
                ck[3] = sm
                ck[4] = shi[i]
                ck[5] = slo[i]
            ck[6] = (proto << 16) | port
            s, inserted = _slot(ckeys, ck)
            if inserted:
                counts[1] += 1
                cvals[s, C_FIRST] = ts[i]
                cvals[s, C_LAST] = ts[i]
                for j in range(2, 6):
                    cvals[s, j] = 0
                capp[s] = app if app > 0 else l4id[i]
            else:
                if app > 0 and capp[s] == l4id[i]:
                    capp[s] = app
                if ts[i] < cvals[s, C_FIRST]:
                    cvals[s, C_FIRST] = ts[i]
                if ts[i] > cvals[s, C_LAST]:
                    cvals[s, C_LAST] = ts[i]
            if f & F_SERVER_DST:
                cvals[s, PK_CS] += 1
                cvals[s, BY_CS] += wlen[i]
            else:
                cvals[s, PK_SC] += 1
                cvals[s, BY_SC] += wlen[i]
    return n


@njit(cache=True)
def _reinsert(old_keys, new_keys, order):
    """Rehash every used key of old_keys into new_keys; order[new_slot] = old_slot."""
    for s in range(old_keys.shape[0]):
        if old_keys[s, 0] != EMPTY:
            t, _ = _slot(new_keys, old_keys[s])
            order[t] = s


@dataclass
class AddressRecord:
    mac: int  # NO_MAC when none
    ip_hi: int
    ip_lo: int
    first_ns: int
    last_ns: int
    packets_sent: int
    bytes_sent: int
    packets_received: int
    bytes_received: int
    flags: int
    protocols: list[int]  # 4 words of a bitmask of protocol ids
    vlans: list[int]


@dataclass
class ConnectionRecord:
    client_mac: int
    client_hi: int
    client_lo: int
    server_mac: int
    server_hi: int
    server_lo: int
    ipproto: int
    server_port: int
    app: int
    first_ns: int
    last_ns: int
    packets_c2s: int
    bytes_c2s: int
    packets_s2c: int
    bytes_s2c: int


class Aggregator:
    """Address and connection tables for one analysis run."""

    def __init__(self, addr_capacity: int = 1 << 12, conn_capacity: int = 1 << 14) -> None:
        self.counts = np.zeros(2, dtype=np.int64)
        self._alloc_addresses(addr_capacity)
        self._alloc_connections(conn_capacity)

    def _alloc_addresses(self, cap: int) -> None:
        self.akeys = np.full((cap, 3), EMPTY, dtype=np.int64)
        self.avals = np.zeros((cap, 6), dtype=np.int64)
        self.aflags = np.zeros(cap, dtype=np.int64)
        self.aprotos = np.zeros((cap, 4), dtype=np.int64)
        self.avlans = np.full((cap, MAX_VLANS), -1, dtype=np.int64)

    def _alloc_connections(self, cap: int) -> None:
        self.ckeys = np.full((cap, 7), EMPTY, dtype=np.int64)
        self.cvals = np.zeros((cap, 6), dtype=np.int64)
        self.capp = np.zeros(cap, dtype=np.int64)

    def _grow_addresses(self) -> None:
        old = (self.akeys, self.avals, self.aflags, self.aprotos, self.avlans)
        self._alloc_addresses(self.akeys.shape[0] * 2)
        order = np.full(self.akeys.shape[0], -1, dtype=np.int64)
        _reinsert(old[0], self.akeys, order)
        used = order >= 0
        for new, prev in zip((self.avals, self.aflags, self.aprotos, self.avlans), old[1:],
                             strict=True):
            new[used] = prev[order[used]]

    def _grow_connections(self) -> None:
        old = (self.ckeys, self.cvals, self.capp)
        self._alloc_connections(self.ckeys.shape[0] * 2)
        order = np.full(self.ckeys.shape[0], -1, dtype=np.int64)
        _reinsert(old[0], self.ckeys, order)
        used = order >= 0
        self.cvals[used] = old[1][order[used]]
        self.capp[used] = old[2][order[used]]

    def update(self, rows: Rows) -> None:
        """Fold the first rows.n decoded rows into the tables."""
        i = 0
        while i < rows.n:
            i = aggregate(
                i, rows.n, rows.ts, rows.wlen, rows.smac, rows.dmac, rows.vlan, rows.l3,
                rows.shi, rows.slo, rows.dhi, rows.dlo, rows.ipproto, rows.sport, rows.dport,
                rows.flags, rows.l3id, rows.l4id, rows.appid, rows.pay_len,
                self.akeys, self.avals, self.aflags, self.aprotos, self.avlans,
                self.ckeys, self.cvals, self.capp, self.counts,
            )
            if i < rows.n:
                if self.counts[0] + 2 > self.akeys.shape[0] * LOAD:
                    self._grow_addresses()
                if self.counts[1] + 1 > self.ckeys.shape[0] * LOAD:
                    self._grow_connections()

    def addresses(self) -> list[AddressRecord]:
        used = np.nonzero(self.akeys[:, 0] != EMPTY)[0]
        out = []
        for s in used.tolist():
            mac, hi, lo = self.akeys[s].tolist()
            v = self.avals[s].tolist()
            out.append(AddressRecord(
                mac, hi, lo, v[FIRST], v[LAST], v[PK_S], v[BY_S], v[PK_R], v[BY_R],
                int(self.aflags[s]), self.aprotos[s].tolist(),
                [x for x in self.avlans[s].tolist() if x >= 0],
            ))
        return out

    def connections(self) -> list[ConnectionRecord]:
        used = np.nonzero(self.ckeys[:, 0] != EMPTY)[0]
        out = []
        for s in used.tolist():
            cm, chi, clo, sm, shi, slo, pp = self.ckeys[s].tolist()
            v = self.cvals[s].tolist()
            out.append(ConnectionRecord(
                cm, chi, clo, sm, shi, slo, pp >> 16, pp & 0xFFFF, int(self.capp[s]),
                v[C_FIRST], v[C_LAST], v[PK_CS], v[BY_CS], v[PK_SC], v[BY_SC],
            ))
        return out


def fill_missing_macs(
    addresses: list[AddressRecord], connections: list[ConnectionRecord]
) -> tuple[list[AddressRecord], list[ConnectionRecord]]:
    """Give MAC-less destinations the MAC their IP uses as a source.

    Linux cooked captures name only the sender's MAC, so traffic *to* a host arrives
    without one. When exactly one MAC sources that IP, the received traffic is that
    coupling's; the MAC-less duplicate is folded into it.
    """
    macs: dict[tuple[int, int], set[int]] = {}
    for a in addresses:
        if a.mac != int(NO_MAC) and (a.ip_hi or a.ip_lo) and a.packets_sent:
            macs.setdefault((a.ip_hi, a.ip_lo), set()).add(a.mac)

    def owner(mac: int, hi: int, lo: int) -> int:
        found = macs.get((hi, lo), ())
        return next(iter(found)) if mac == int(NO_MAC) and len(found) == 1 else mac

    by_key = {(a.mac, a.ip_hi, a.ip_lo): a for a in addresses}
    kept = []
    for a in addresses:
        mac = owner(a.mac, a.ip_hi, a.ip_lo)
        target = by_key.get((mac, a.ip_hi, a.ip_lo))
        if mac == a.mac or target is None or a.packets_sent:
            kept.append(a)
            continue
        target.first_ns = min(target.first_ns, a.first_ns)
        target.last_ns = max(target.last_ns, a.last_ns)
        target.packets_received += a.packets_received
        target.bytes_received += a.bytes_received
        target.protocols = [x | y for x, y in zip(target.protocols, a.protocols, strict=True)]
        target.vlans = sorted(set(target.vlans) | set(a.vlans))
    merged: dict[tuple[int, ...], ConnectionRecord] = {}
    for c in connections:
        c.client_mac = owner(c.client_mac, c.client_hi, c.client_lo)
        c.server_mac = owner(c.server_mac, c.server_hi, c.server_lo)
        key = (c.client_mac, c.client_hi, c.client_lo, c.server_mac, c.server_hi, c.server_lo,
               c.ipproto, c.server_port)
        prev = merged.get(key)
        if prev is None:
            merged[key] = c
            continue
        prev.first_ns = min(prev.first_ns, c.first_ns)
        prev.last_ns = max(prev.last_ns, c.last_ns)
        prev.packets_c2s += c.packets_c2s
        prev.bytes_c2s += c.bytes_c2s
        prev.packets_s2c += c.packets_s2c
        prev.bytes_s2c += c.bytes_s2c
    return kept, list(merged.values())
