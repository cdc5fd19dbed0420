"""The dissection stage of the pipeline: select rows, run dissectors, gather their evidence.

Evidence is folded per address — (MAC, IP) exactly as the aggregator keys addresses —
so the store can attach it to whichever device that address belongs to.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tapwatch.capture.reader import Chunk
from tapwatch.decode import protocols
from tapwatch.decode import select as sel
from tapwatch.decode.devices import ip_str, mac_str
from tapwatch.decode.kernel import F_DST_GROUP, Rows
from tapwatch.dissect import Dissector, Evidence, Packet, dissectors

TRANSPORT = {6: "tcp", 17: "udp"}
# protocol errors that say a length disagrees (detection tells them from other damage)
LENGTH_WORDS = re.compile(r"length|shorter|longer|truncated|cut short|beyond|too short|too long")
CANDIDATE_KEYS = 4096  # (transport, ports) whose dissectors are remembered
_PACKET_COLUMNS = ("pkt", "ts", "smac", "dmac", "shi", "slo", "dhi", "dlo", "ipproto", "sport",
                   "dport", "tcpflags", "ttl", "ethertype", "l3id", "l4id", "appid", "pay_off",
                   "pay_len", "l3_off", "flags")


@dataclass
class FactStat:
    first_ns: int
    last_ns: int
    count: int
    confidence: float


def _count_fact(facts: dict[tuple[str, str, str, str, str], FactStat], key: tuple[str, str, str, str, str],
                ts: int, confidence: float) -> None:
    st = facts.get(key)
    if st is None:
        facts[key] = FactStat(ts, ts, 1, confidence)
        return
    if ts < st.first_ns:
        st.first_ns = ts
    if ts > st.last_ns:
        st.last_ns = ts
    st.count += 1
    if confidence > st.confidence:
        st.confidence = confidence


@dataclass
class EventRecord:
    ts_ns: int
    packet: int
    src: tuple[str, str]
    dst: tuple[str, str]
    protocol: str
    kind: str
    details: dict[str, Any]
    count: int = 1  # identical operations (same sender, same bytes) folded into this one
    last_ns: int = 0


@dataclass
class DissectResults:
    # (mac, ip, attribute, value, source) -> stats
    facts: dict[tuple[str, str, str, str, str], FactStat] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    # (mac, ip, source) -> [count, last reason, how many were about lengths]
    errors: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    signals: list[EventRecord] = field(default_factory=list)  # for detection, not stored
    packets: int = 0  # packets handed to dissectors


class DissectStage:
    """Runs the registered dissectors over the packets the selector picks."""

    def __init__(self, only: list[Dissector] | None = None, signals: bool = True) -> None:
        self.dissectors = only if only is not None else dissectors()
        self.keep_signals = signals  # only detection reads them
        self.by_tcp: dict[int, list[Dissector]] = defaultdict(list)
        self.by_udp: dict[int, list[Dissector]] = defaultdict(list)
        self.by_eth: dict[int, list[Dissector]] = defaultdict(list)
        self.by_proto: dict[int, list[Dissector]] = defaultdict(list)
        self.syn: list[Dissector] = []
        self.by_prefix: dict[bytes, list[Dissector]] = defaultdict(list)
        tcp = np.zeros(65536, dtype=np.bool_)
        tcp_all = np.zeros(65536, dtype=np.bool_)
        udp = np.zeros(65536, dtype=np.bool_)
        eth = np.zeros(65536, dtype=np.bool_)
        proto = np.zeros(256, dtype=np.bool_)
        for d in self.dissectors:
            for p in d.tcp_ports:
                tcp[p] = True
                tcp_all[p] |= d.tcp_all_segments
                self.by_tcp[p].append(d)
            for p in d.udp_ports:
                udp[p] = True
                self.by_udp[p].append(d)
            for e in d.ethertypes:
                eth[e] = True
                self.by_eth[e].append(d)
            for name in d.protocols:
                proto[protocols.ID[name]] = True
                self.by_proto[protocols.ID[name]].append(d)
            if d.tcp_syn:
                self.syn.append(d)
            for prefix in d.tcp_prefixes:
                self.by_prefix[prefix].append(d)
        self.picker = sel.Picker(tcp, tcp_all, udp, eth, proto, bool(self.syn),
                                 sel.prefix_set(list(self.by_prefix)), *self._novelty_masks())
        self.seen = np.zeros((sel.SEEN_SLOTS, sel.SEEN_COLUMNS), dtype=np.int64)
        self.seen_used = np.zeros(1, dtype=np.int64)
        self._pending: dict[int, list[EventRecord]] = {}  # payload hash -> its events
        self.results = DissectResults()
        self._macs: dict[int, str] = {}
        self._ips: dict[tuple[int, int], str] = {}
        self._by_key: dict[tuple[int, int, int], list[Dissector]] = {}  # see _candidates
        self._evidence = Evidence()

    def _novelty_masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-port index into the table of what the selector leaves out of a payload's
        identity (select.MASK_COLUMNS: the ranges, then the framing of messages)."""
        tcp = np.full(65536, -1, dtype=np.int64)
        udp = np.full(65536, -1, dtype=np.int64)
        unused = [0, 0, -1, 0]
        rows = [unused * sel.MAX_IGNORED + [-1, 0, -1]]
        for d in self.dissectors:
            if not d.novelty_ignore:
                continue
            if len(d.novelty_ignore) > sel.MAX_IGNORED:
                raise ValueError(f"{d.name}: more than {sel.MAX_IGNORED} novelty_ignore ranges")
            # (offset, length[, only when the byte at this offset, equals this value])
            flat = [x for rng in d.novelty_ignore for x in (tuple(rng) + (-1, 0))[:4]]
            rows.append(flat + unused * (sel.MAX_IGNORED - len(d.novelty_ignore))
                        + list(d.novelty_frames or (-1, 0, -1)))
            for p in () if d.novelty_udp_only else d.tcp_ports:
                tcp[p] = len(rows) - 1
            for p in d.udp_ports:
                udp[p] = len(rows) - 1
        return tcp, udp, np.array(rows, dtype=np.int64)

    def batch(self, chunk: Chunk, rows: Rows) -> None:
        if not self.dissectors or rows.n == 0:
            return
        picker = self.picker
        if rows.picker is not picker:  # decoded without this stage's picker: pick now
            columns = tuple(getattr(rows, name) for name in sel.PICK_COLUMNS)
            sel.pick_rows(0, rows.n, chunk.buf, columns, picker.start(chunk.buf, rows.capacity))
        c = picker.picked
        j = 0
        while j < c:
            m, j = sel.novel(j, c, picker.rows, picker.hashes, rows.ts, self.seen, self.seen_used)
            if m:
                self._dissect_rows(chunk, rows, picker.rows[:m], picker.hashes[:m].tolist())
            if j < c:  # the seen set is full
                self.forget()

    def forget(self) -> None:
        """Settle the repeat counts, then forget the payloads seen (a repeat is new again)."""
        self.finish()
        self.seen[:] = 0
        self.seen_used[0] = 0

    def finish(self) -> None:
        """Credit each event with the repeats of its payload folded by the selector."""
        for h, events in self._pending.items():
            slot = sel.lookup(self.seen, h)
            if slot >= 0 and self.seen[slot, sel.HITS]:
                for e in events:
                    e.count += int(self.seen[slot, sel.HITS])
                    e.last_ns = max(e.last_ns, int(self.seen[slot, sel.LAST]))
                self.seen[slot, sel.HITS] = 0
        self._pending.clear()

    def _mac(self, v: int) -> str:
        s = self._macs.get(v)
        if s is None:
            s = self._macs[v] = mac_str(v)
        return s

    def _ip(self, hi: int, lo: int) -> str:
        s = self._ips.get((hi, lo))
        if s is None:
            s = self._ips[(hi, lo)] = ip_str(hi, lo)
        return s

    def _candidates(self, proto: int, sport: int, dport: int, ethertype: int, l3id: int,
                    tcp_flags: int, payload: bytes) -> list[Dissector]:
        key = (proto, sport, dport) if proto == 6 or proto == 17 else (proto, ethertype, l3id)
        found = self._by_key.get(key)
        if found is None:
            if len(self._by_key) >= CANDIDATE_KEYS:
                self._by_key.clear()
            if proto == 6:
                found = self.by_tcp.get(dport, []) + self.by_tcp.get(sport, [])
            elif proto == 17:
                found = self.by_udp.get(dport, []) + self.by_udp.get(sport, [])
            else:
                found = self.by_eth.get(ethertype, []) + self.by_proto.get(l3id, [])
            found = self._by_key[key] = list(dict.fromkeys(found))
        if proto == 6:
            if payload:  # a recognisable message start wins even on another protocol's port
                extra = self.by_prefix.get(payload[:4])
                if extra:
                    found = list(dict.fromkeys(found + extra))
            elif tcp_flags & 0x02:
                found = self.syn  # a SYN or SYN-ACK: only header fingerprints apply
        return found

    def _dissect_rows(self, chunk: Chunk, rows: Rows, idx: np.ndarray, hashes: list[int]) -> None:
        """Dissect the selected rows; their columns are gathered once, as Python tuples."""
        records = rows.pkt[idx]
        frame_end = (chunk.off[records] + chunk.cap[records]).tolist()
        columns = [getattr(rows, name)[idx].tolist() for name in _PACKET_COLUMNS]
        buf = chunk.buf
        first = chunk.first_number
        ev = self._evidence
        macs, ips, names = self._macs, self._ips, protocols.NAMES
        candidates_of = self._candidates
        selected = zip(zip(*columns, strict=True), frame_end, hashes, strict=True)
        dissected = 0
        for (number, ts, smac, dmac, shi, slo, dhi, dlo, proto, sport, dport, tcp_flags, ttl, ethertype,
             l3id, l4id, appid, po, pl, l3o, flags), end, payload_hash in selected:
            payload = buf[po : po + pl].tobytes() if po >= 0 else b""
            candidates = candidates_of(proto, sport, dport, ethertype, l3id, tcp_flags, payload)
            if not candidates:
                continue
            src = (macs.get(smac) or self._mac(smac), ips.get((shi, slo)) or self._ip(shi, slo))
            dst = (macs.get(dmac) or self._mac(dmac), ips.get((dhi, dlo)) or self._ip(dhi, dlo))
            pkt = Packet(first + number, ts, src[0], dst[0], src[1], dst[1], TRANSPORT.get(proto, ""),
                         sport, dport, tcp_flags, ttl, ethertype, names[appid or l4id or l3id],
                         payload, buf[l3o:end].tobytes() if l3o >= 0 else b"")
            receiver = None if flags & F_DST_GROUP else dst
            dissected += 1
            for d in candidates:
                try:
                    d.dissect(pkt, ev)
                except Exception as e:  # a dissector bug must not stop the capture
                    ev.error(f"{type(e).__name__}: {e}")
                if ev.facts or ev.mac_facts or ev.events or ev.errors or ev.signals:
                    self._fold(d.name, pkt, src, receiver, ev, payload_hash)
                    ev.clear()
        self.results.packets += dissected

    def _fold(self, source: str, pkt: Packet, src: tuple[str, str], dst: tuple[str, str] | None,
              ev: Evidence, payload_hash: int) -> None:
        res = self.results
        ts = pkt.ts_ns
        facts = res.facts
        for about, attribute, value, confidence in ev.facts:
            who = src if about == "src" else dst
            if who is not None and (who[0] or who[1]):
                _count_fact(facts, (who[0], who[1], attribute, value, source), ts, confidence)
        for mac, attribute, value, confidence in ev.mac_facts:
            if mac:
                _count_fact(facts, (mac, "", attribute, value, source), ts, confidence)
        kinds = ((res.events, ev.events), (res.signals, ev.signals)) if self.keep_signals \
            else ((res.events, ev.events),)
        for records, happenings in kinds:
            for about, kind, details in happenings:
                s, d = (src, dst or ("", pkt.dst_ip)) if about == "src" else (dst or ("", ""), src)
                record = EventRecord(pkt.ts_ns, pkt.number, s, d, source, kind, details,
                                     last_ns=pkt.ts_ns)
                records.append(record)
                self._pending.setdefault(payload_hash, []).append(record)
        for about, reason in ev.errors:
            who = src if about == "src" else (dst or src)
            entry = res.errors.setdefault((who[0], who[1], source), [0, "", 0])
            entry[0] += 1
            entry[1] = reason
            entry[2] += LENGTH_WORDS.search(reason) is not None
