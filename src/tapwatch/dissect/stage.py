"""The dissection stage of the pipeline: select rows, run dissectors, gather their evidence.

Evidence is folded per address — (MAC, IP) exactly as the aggregator keys addresses —
so the store can attach it to whichever device that address belongs to.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tapwatch.capture.reader import Chunk
from tapwatch.decode import protocols
from tapwatch.decode.devices import ip_str, mac_str
from tapwatch.decode.kernel import F_DST_GROUP, Rows
from tapwatch.dissect import Dissector, Evidence, Packet, dissectors
from tapwatch.dissect import select as sel

TRANSPORT = {6: "tcp", 17: "udp"}


@dataclass
class FactStat:
    first_ns: int
    last_ns: int
    count: int
    confidence: float


@dataclass
class EventRecord:
    ts_ns: int
    packet: int
    src: tuple[str, str]
    dst: tuple[str, str]
    protocol: str
    kind: str
    details: dict[str, Any]


@dataclass
class DissectResults:
    # (mac, ip, attribute, value, source) -> stats
    facts: dict[tuple[str, str, str, str, str], FactStat] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    # (mac, ip, source) -> [count, last reason]
    errors: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    packets: int = 0  # packets handed to dissectors


class DissectStage:
    """Runs the registered dissectors over the packets the selector picks."""

    def __init__(self, only: list[Dissector] | None = None) -> None:
        self.dissectors = only if only is not None else dissectors()
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
        prefixes = np.array([int.from_bytes(p, "big") for p in self.by_prefix], dtype=np.int64)
        self.tables = (tcp, tcp_all, udp, eth, proto, bool(self.syn), prefixes)
        self.seen = np.zeros(sel.SEEN_SLOTS, dtype=np.int64)
        self.flow_keys = np.zeros(sel.FLOW_SLOTS, dtype=np.int64)
        self.flow_counts = np.zeros(sel.FLOW_SLOTS, dtype=np.int64)
        self.used = np.zeros(2, dtype=np.int64)
        self.out = np.empty(0, dtype=np.int64)
        self.results = DissectResults()
        self._macs: dict[int, str] = {}
        self._ips: dict[tuple[int, int], str] = {}
        self._evidence = Evidence()

    def batch(self, chunk: Chunk, rows: Rows) -> None:
        if not self.dissectors or rows.n == 0:
            return
        if self.out.shape[0] < rows.n:
            self.out = np.empty(rows.capacity, dtype=np.int64)
        m = sel.select(
            rows.n, chunk.buf, rows.ipproto, rows.sport, rows.dport, rows.tcpflags,
            rows.ethertype, rows.l3, rows.l3id, rows.pay_off, rows.pay_len, rows.l3_off,
            rows.smac, rows.shi, rows.slo, rows.dhi, rows.dlo, *self.tables,
            self.seen, self.used[0:1], self.flow_keys, self.flow_counts, self.used[1:2], self.out,
        )
        for i in self.out[:m].tolist():
            self._dissect_row(chunk, rows, i)

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

    def _candidates(self, rows: Rows, i: int, payload: bytes) -> list[Dissector]:
        proto = int(rows.ipproto[i])
        if proto == 6:
            found = self.by_tcp.get(int(rows.dport[i]), []) + self.by_tcp.get(int(rows.sport[i]), [])
            if payload:  # a recognisable message start wins even on another protocol's port
                found = found + self.by_prefix.get(payload[:4], [])
            elif rows.tcpflags[i] & 0x02:
                found = self.syn  # a SYN or SYN-ACK: only header fingerprints apply
            return list(dict.fromkeys(found))
        if proto == 17:
            found = self.by_udp.get(int(rows.dport[i]), []) + self.by_udp.get(int(rows.sport[i]), [])
            return list(dict.fromkeys(found))
        found = self.by_eth.get(int(rows.ethertype[i]), []) + self.by_proto.get(int(rows.l3id[i]), [])
        return list(dict.fromkeys(found))

    def _dissect_row(self, chunk: Chunk, rows: Rows, i: int) -> None:
        buf = chunk.buf
        r = int(rows.pkt[i])
        po, pl, l3o = int(rows.pay_off[i]), int(rows.pay_len[i]), int(rows.l3_off[i])
        frame_end = int(chunk.off[r] + chunk.cap[r])
        src = (self._mac(int(rows.smac[i])), self._ip(int(rows.shi[i]), int(rows.slo[i])))
        dst = (self._mac(int(rows.dmac[i])), self._ip(int(rows.dhi[i]), int(rows.dlo[i])))
        pkt = Packet(
            number=chunk.first_number + r, ts_ns=int(rows.ts[i]), src_mac=src[0], dst_mac=dst[0],
            src_ip=src[1], dst_ip=dst[1], transport=TRANSPORT.get(int(rows.ipproto[i]), ""),
            sport=int(rows.sport[i]), dport=int(rows.dport[i]), tcp_flags=int(rows.tcpflags[i]),
            ttl=int(rows.ttl[i]), ethertype=int(rows.ethertype[i]),
            protocol=protocols.NAMES[int(rows.appid[i] or rows.l4id[i] or rows.l3id[i])],
            payload=bytes(buf[po : po + pl]) if po >= 0 else b"",
            l3=bytes(buf[l3o:frame_end]) if l3o >= 0 else b"",
        )
        dst_is_device = not (int(rows.flags[i]) & F_DST_GROUP)
        self.results.packets += 1
        for d in self._candidates(rows, i, pkt.payload):
            ev = self._evidence
            ev.clear()
            try:
                d.dissect(pkt, ev)
            except Exception as e:  # a dissector bug must not stop the capture
                ev.error(f"{type(e).__name__}: {e}")
            self._fold(d.name, pkt, src, dst if dst_is_device else None, ev)

    def _fold(self, source: str, pkt: Packet, src: tuple[str, str], dst: tuple[str, str] | None,
              ev: Evidence) -> None:
        res = self.results
        facts = [(src if about == "src" else dst, a, v, c) for about, a, v, c in ev.facts]
        facts += [((mac, ""), a, v, c) for mac, a, v, c in ev.mac_facts]
        for who, attribute, value, confidence in facts:
            if who is None or not (who[0] or who[1]):
                continue
            key = (who[0], who[1], attribute, value, source)
            st = res.facts.get(key)
            if st is None:
                res.facts[key] = FactStat(pkt.ts_ns, pkt.ts_ns, 1, confidence)
            else:
                st.first_ns = min(st.first_ns, pkt.ts_ns)
                st.last_ns = max(st.last_ns, pkt.ts_ns)
                st.count += 1
                st.confidence = max(st.confidence, confidence)
        for about, kind, details in ev.events:
            s, d = (src, dst or ("", pkt.dst_ip)) if about == "src" else (dst or ("", ""), src)
            res.events.append(EventRecord(pkt.ts_ns, pkt.number, s, d, source, kind, details))
        for about, reason in ev.errors:
            who = src if about == "src" else (dst or src)
            entry = res.errors.setdefault((who[0], who[1], source), [0, ""])
            entry[0] += 1
            entry[1] = reason
