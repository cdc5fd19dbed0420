"""Zeek logs as another source of addresses, connections and facts for the same inventory.

Reads conn, dhcp, dns, http, known_hosts, known_services, software and the ICSNPP identity
logs (cip_identity / enip_list_identity, bacnet_discovery), in Zeek's TSV format (#fields
header) or as JSON lines, plain or gzip. What they say goes through the store's own merge
functions (`merge_run`, `merge_facts`, `refresh_identity`), so a device seen by Zeek and in
a capture is one device. Facts carry the source "zeek:<log>" so their evidence says where
they came from. Each log file is remembered by content hash: importing it again adds nothing.
Malformed lines are reported with file and line, and the rest is imported.

Zeek logs MAC addresses only in dhcp.log (and in conn.log with the mac-logging policy);
other addresses get the MAC that Zeek or the stored inventory couples with the IP, when
exactly one MAC does.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.decode import protocols
from tapwatch.decode.aggregate import AddressRecord, ConnectionRecord, fill_missing_macs
from tapwatch.decode.kernel import NO_MAC, V4_MAPPED
from tapwatch.dissect.base import ATTRIBUTES
from tapwatch.dissect.stage import DissectResults, FactStat
from tapwatch.store import evidence, inventory
from tapwatch.store.identity import refresh_identity
from tapwatch.store.models import Address

LOGS = ("conn", "dhcp", "dns", "http", "known_hosts", "known_services", "software", "cip_identity",
        "enip_list_identity", "bacnet_discovery")
IPPROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58}
# Zeek service names that differ from the protocol catalog's
SERVICE_NAMES = {"ssl": "https", "dce_rpc": "dcerpc", "krb": "kerberos", "krb_tcp": "kerberos",
                 "cip": "enip", "enip": "enip", "spicy_modbus": "modbus"}
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


class ZeekError(ValueError):
    """A file that is not a Zeek log at all."""


@dataclass
class _Addr:
    first_ns: int
    last_ns: int
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    protocols: set[str] = field(default_factory=set)
    vlans: set[int] = field(default_factory=set)


@dataclass
class _Conn:
    client_ip: str
    server_ip: str
    transport: str
    port: int
    protocol: str
    first_ns: int
    last_ns: int
    packets_c2s: int = 0
    bytes_c2s: int = 0
    packets_s2c: int = 0
    bytes_s2c: int = 0


@dataclass
class ZeekReport:
    files: list[str] = field(default_factory=list)  # logs read
    skipped: list[str] = field(default_factory=list)  # already imported, or not a log we read
    records: int = 0
    problems: list[str] = field(default_factory=list)
    devices_new: int = 0
    devices_known: int = 0
    connections_new: int = 0
    facts: int = 0

    def summary(self) -> str:
        return (f"zeek: {len(self.files)} log{'s' if len(self.files) != 1 else ''}, {self.records} records; "
                f"devices: {self.devices_new} new, {self.devices_known} known; connections: "
                f"{self.connections_new} new; {self.facts} facts; {len(self.problems)} malformed lines"
                + (f"; {len(self.skipped)} skipped" if self.skipped else ""))


# -- reading logs ---------------------------------------------------------------------------


def _open_text(path: Path) -> list[str]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace").splitlines()


def log_kind(path: Path, lines: list[str]) -> str:
    """The log's #path, else its file name up to the first dot (conn.2024-05-01.log → conn)."""
    for line in lines[:12]:
        if line.startswith("#path"):
            return line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
    return path.name.split(".", 1)[0]


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def read_log(path: str | Path) -> tuple[str, list[tuple[int, dict[str, Any]]], list[str]]:
    """(log kind, [(line number, record)], problems) of a TSV or JSON-lines Zeek log."""
    p = Path(path)
    lines = _open_text(p)
    kind = log_kind(p, lines)
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    first = next((ln for ln in lines if ln.strip()), "")
    if first.lstrip().startswith("{"):
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{p}:{n}: not JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{p}:{n}: not a JSON object")
                continue
            records.append((n, _flatten(obj)))
        return kind, records, problems
    if not first.startswith("#"):
        raise ZeekError(f"{p}: not a Zeek log (no #fields header, not JSON lines)")
    sep, set_sep, empty, unset = "\t", ",", "(empty)", "-"
    fields: list[str] | None = None
    for n, line in enumerate(lines, 1):
        if line.startswith("#"):
            key, _, value = line.partition(" " if line.startswith("#separator") else sep)
            if key == "#separator":
                sep = _unescape(value.strip())
            elif key == "#set_separator":
                set_sep = value
            elif key == "#empty_field":
                empty = value
            elif key == "#unset_field":
                unset = value
            elif key == "#fields":
                fields = value.split(sep)
            continue
        if not line:
            continue
        if fields is None:
            problems.append(f"{p}:{n}: record before the #fields header")
            continue
        values = line.split(sep)
        if len(values) != len(fields):
            problems.append(f"{p}:{n}: {len(values)} fields where #fields names {len(fields)}")
            continue
        rec: dict[str, Any] = {}
        for name, v in zip(fields, values, strict=True):
            if v == unset:
                rec[name] = None
            elif v == empty:
                rec[name] = ""
            elif set_sep and set_sep in v and name in _SET_FIELDS:
                rec[name] = [_unescape(x) for x in v.split(set_sep)]
            else:
                rec[name] = _unescape(v)
        records.append((n, rec))
    if fields is None:
        raise ZeekError(f"{p}: not a Zeek log (no #fields header)")
    return kind, records, problems


_SET_FIELDS = {"answers", "TTLs", "msg_types", "tags", "resp_mime_types", "orig_mime_types",
               "service", "resp_fuids", "orig_fuids", "requested_addr"}


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# -- turning records into observations -------------------------------------------------------


def _ip(value: Any) -> str | None:
    """A unicast host address, else None (multicast, broadcast, unspecified are never devices)."""
    if not value or not isinstance(value, str):
        return None
    addr = ipaddress.ip_address(value.strip())  # ValueError for junk: a malformed record
    if addr.is_multicast or addr.is_unspecified or str(addr) == "255.255.255.255":
        return None
    return str(addr)


def _mac(value: Any) -> str:
    if not value or not isinstance(value, str):
        return ""
    text = value.strip().lower()
    if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", text):
        raise ValueError(f"not a MAC address: {value[:40]!r}")
    if int(text[:2], 16) & 1:  # group address
        return ""
    return text


def _ns(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(round(float(value) * 1e9))
    if isinstance(value, str):
        try:
            return int(round(float(value) * 1e9))
        except ValueError:  # JSON logs may use ISO 8601 times
            from datetime import datetime

            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return int(dt.timestamp() * 1e9)
    raise ValueError("no timestamp")


def _int(value: Any) -> int:
    if value in (None, ""):
        return 0
    return int(float(value))


class _Collector:
    """What every log said, folded per address, connection and fact."""

    def __init__(self) -> None:
        self.addrs: dict[str, _Addr] = {}  # by IP; MACs are resolved at the end
        self.macs: dict[str, set[str]] = defaultdict(set)  # ip -> MACs Zeek coupled with it
        self.conns: dict[tuple[str, str, str, int], _Conn] = {}
        self.facts: dict[tuple[str, str, str, str], FactStat] = {}  # (ip|mac, attr, value, source)
        self.mac_facts: dict[tuple[str, str, str, str], FactStat] = {}

    def addr(self, ip: str, ts: int) -> _Addr:
        a = self.addrs.get(ip)
        if a is None:
            a = self.addrs[ip] = _Addr(ts, ts)
        a.first_ns, a.last_ns = min(a.first_ns, ts), max(a.last_ns, ts)
        return a

    def fact(self, ip: str | None, attr: str, value: Any, source: str, ts: int, confidence: float,
             mac: str = "") -> None:
        if attr not in ATTRIBUTES:
            raise ValueError(f"unknown fact attribute {attr}")
        if value in (None, "") or (ip is None and not mac):
            return
        text = str(value).strip().replace("\x00", "")[:1024]
        if not text:
            return
        table = self.facts if ip else self.mac_facts
        key = (ip or mac, attr, text, f"zeek:{source}"[:32])
        st = table.get(key)
        if st is None:
            table[key] = FactStat(ts, ts, 1, confidence)
        else:
            st.first_ns, st.last_ns = min(st.first_ns, ts), max(st.last_ns, ts)
            st.count += 1
        if ip:
            self.addr(ip, ts)


def _protocol_of(service: Any, transport: str, port: int) -> str:
    names = service if isinstance(service, list) else str(service or "").split(",")
    for name in names:
        name = SERVICE_NAMES.get(name.strip().lower(), name.strip().lower())
        if name and name in protocols.ID:
            return name
    table = protocols.TABLES.get(transport)
    if table is not None and 0 <= port < len(table) and table[port]:
        return protocols.NAMES[int(table[port])]
    return transport if transport in protocols.ID else "unknown"


def _count_side(a: _Addr, end: int, sent: tuple[int, int], received: tuple[int, int], vlan: int) -> _Addr:
    """Add one connection to one of its ends: a conn record counts the traffic of both
    sides, which the originator sent and the responder received and the other way round."""
    a.last_ns = max(a.last_ns, end)
    a.packets_sent += sent[0]
    a.bytes_sent += sent[1]
    a.packets_received += received[0]
    a.bytes_received += received[1]
    if vlan:
        a.vlans.add(vlan)
    return a


def _conn(c: _Collector, r: dict[str, Any], ts: int) -> None:
    orig, resp = _ip(r.get("id.orig_h")), _ip(r.get("id.resp_h"))
    transport = str(r.get("proto") or "").lower()
    port = _int(r.get("id.resp_p"))
    for ip, key in ((orig, "orig_l2_addr"), (resp, "resp_l2_addr")):
        mac = _mac(r.get(key))
        if ip and mac:
            c.macs[ip].add(mac)
    duration = float(r.get("duration") or 0)
    end = ts + int(duration * 1e9)
    opk, rpk = _int(r.get("orig_pkts")), _int(r.get("resp_pkts"))
    oby = _int(r.get("orig_ip_bytes")) or _int(r.get("orig_bytes"))
    rby = _int(r.get("resp_ip_bytes")) or _int(r.get("resp_bytes"))
    protocol = _protocol_of(r.get("service"), transport, port)
    vlan = _int(r.get("vlan"))
    if orig:
        _count_side(c.addr(orig, ts), end, (opk, oby), (rpk, rby), vlan)
    if resp:
        _count_side(c.addr(resp, ts), end, (rpk, rby), (opk, oby), vlan).protocols.add(protocol)
    if orig and resp and transport in IPPROTO:
        k = (orig, resp, transport, port)
        conn = c.conns.get(k)
        if conn is None:
            conn = c.conns[k] = _Conn(orig, resp, transport, port, protocol, ts, end)
        conn.first_ns, conn.last_ns = min(conn.first_ns, ts), max(conn.last_ns, end)
        conn.packets_c2s += opk
        conn.bytes_c2s += oby
        conn.packets_s2c += rpk
        conn.bytes_s2c += rby


def _dhcp(c: _Collector, r: dict[str, Any], ts: int) -> None:
    mac = _mac(r.get("mac"))
    ip = _ip(r.get("assigned_addr")) or _ip(r.get("client_addr"))
    if ip and ip == _ip(r.get("server_addr")):
        ip = None
    if ip and mac:
        c.macs[ip].add(mac)
    if ip:
        c.addr(ip, ts).protocols.add("dhcp")
    for attr, key, conf in (("hostname", "host_name", 0.8), ("fqdn", "client_fqdn", 0.8),
                            ("dhcp_vendor_class", "vendor_class", 0.8)):
        c.fact(ip, attr, r.get(key), "dhcp", ts, conf, mac=mac)


def _private(ip: str) -> bool:
    return not ipaddress.ip_address(ip).is_global


def _dns(c: _Collector, r: dict[str, Any], ts: int) -> None:
    """A local address in an answer is named by the query (the way DNS names devices)."""
    query = r.get("query")
    answers = r.get("answers") or []
    if isinstance(answers, str):
        answers = answers.split(",")
    if not query or r.get("qtype_name") not in (None, "A", "AAAA", "PTR"):
        return
    for ans in answers:
        try:
            ip = _ip(ans)
        except ValueError:
            continue  # names and other non-address answers
        if ip and _private(ip):
            c.fact(ip, "dns_name", str(query).rstrip("."), "dns", ts, 0.6)


def _http(c: _Collector, r: dict[str, Any], ts: int) -> None:
    orig, resp = _ip(r.get("id.orig_h")), _ip(r.get("id.resp_h"))
    c.fact(orig, "http_user_agent", r.get("user_agent"), "http", ts, 0.6)
    c.fact(resp, "http_host", r.get("host"), "http", ts, 0.4)
    c.fact(resp, "http_server", r.get("server"), "http", ts, 0.6)  # with http-server-header scripts


def _known_hosts(c: _Collector, r: dict[str, Any], ts: int) -> None:
    ip = _ip(r.get("host"))
    if ip:
        c.addr(ip, ts)


def _known_services(c: _Collector, r: dict[str, Any], ts: int) -> None:
    ip = _ip(r.get("host"))
    if ip:
        transport = str(r.get("port_proto") or "").lower()
        c.addr(ip, ts).protocols.add(_protocol_of(r.get("service"), transport, _int(r.get("port_num"))))


def _software(c: _Collector, r: dict[str, Any], ts: int) -> None:
    ip = _ip(r.get("host"))
    kind = str(r.get("software_type") or "")
    name = r.get("name")
    version = ".".join(str(r[k]) for k in ("version.major", "version.minor", "version.minor2")
                       if r.get(k) not in (None, ""))
    text = r.get("unparsed_version") or " ".join(x for x in (name, version) if x)
    if kind == "HTTP::BROWSER":
        c.fact(ip, "http_user_agent", r.get("unparsed_version") or name, "software", ts, 0.6)
    elif kind == "HTTP::SERVER":
        c.fact(ip, "http_server", text, "software", ts, 0.6)
    elif kind.startswith("OS::"):
        c.fact(ip, "os", name, "software", ts, 0.6)
        c.fact(ip, "os_version", version, "software", ts, 0.5)


def _sender(r: dict[str, Any]) -> str | None:
    """The host that sent the logged message (ICSNPP: source_h, or is_orig)."""
    if r.get("source_h"):
        return _ip(r["source_h"])
    is_orig = r.get("is_orig")
    if is_orig in (True, "T", "true"):
        return _ip(r.get("id.orig_h"))
    return _ip(r.get("id.resp_h"))  # identity answers come from the device queried


def _cip_identity(c: _Collector, r: dict[str, Any], ts: int, source: str) -> None:
    socket_ip = r.get("socket_address")
    ip = _ip(socket_ip) if socket_ip and socket_ip != "0.0.0.0" else _sender(r)
    if ip is None:
        return
    c.addr(ip, ts).protocols.add("enip")
    for attr, key, conf in (("vendor", "vendor_name", 0.9), ("enip_vendor_id", "vendor_id", 0.9),
                            ("enip_device_type", "device_type_name", 0.9),
                            ("product_code", "product_code", 0.9), ("firmware", "revision", 0.9),
                            ("serial", "serial_number", 0.9), ("cip_product_name", "product_name", 0.9),
                            ("vendor", "vendor", 0.9), ("enip_device_type", "device_type", 0.9)):
        c.fact(ip, attr, r.get(key), source, ts, conf)


def _bacnet_discovery(c: _Collector, r: dict[str, Any], ts: int) -> None:
    if str(r.get("pdu_service") or "").lower().replace("_", "-") not in ("i-am", "i-have"):
        return
    ip = _sender(r)
    if ip is None:
        return
    c.addr(ip, ts).protocols.add("bacnet")
    c.fact(ip, "bacnet_device_instance", r.get("instance_number"), "bacnet_discovery", ts, 0.9)
    c.fact(ip, "vendor", r.get("vendor"), "bacnet_discovery", ts, 0.8)
    c.fact(ip, "bacnet_object_name", r.get("object_name"), "bacnet_discovery", ts, 0.8)


# what each log kind contributes; the identity logs also name their kind as the facts' source
_HANDLERS: dict[str, Callable[[_Collector, dict[str, Any], int], None]] = {
    "conn": _conn, "dhcp": _dhcp, "dns": _dns, "http": _http, "known_hosts": _known_hosts,
    "known_services": _known_services, "software": _software, "bacnet_discovery": _bacnet_discovery,
}
_IDENTITY_KINDS = ("cip_identity", "enip_list_identity")


def _handle(c: _Collector, kind: str, r: dict[str, Any], ts: int) -> None:
    if kind in _IDENTITY_KINDS:
        _cip_identity(c, r, ts, kind)
    elif kind in _HANDLERS:
        _HANDLERS[kind](c, r, ts)


# -- into the inventory ----------------------------------------------------------------------


def _mac_int(mac: str) -> int:
    return int(NO_MAC) if not mac else int(mac.replace(":", ""), 16)


def _ip_pair(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return 0, int(V4_MAPPED) | int(addr)
    value = int(addr)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def _mask(names: set[str]) -> list[int]:
    words = [0, 0, 0, 0]
    for name in names:
        pid = protocols.ID.get(name)
        if pid:
            words[pid // 64] |= 1 << (pid % 64)
    return words


def _resolve_macs(session: Session, c: _Collector) -> dict[str, str]:
    """IP -> MAC: the one MAC Zeek saw with it, else the one the inventory couples with it."""
    out: dict[str, str] = {}
    unknown = []
    for ip in c.addrs:
        macs = c.macs.get(ip, set())
        if len(macs) == 1:
            out[ip] = next(iter(macs))
        elif not macs:
            unknown.append(ip)
        else:
            out[ip] = ""
    for part in inventory.chunks(sorted(unknown)):
        found: dict[str, set[str]] = defaultdict(set)
        q = select(Address.ip, Address.mac).where(Address.ip.in_(part), Address.role == "device",
                                                 Address.mac != "")
        for ip, mac in session.execute(q):
            found[ip].add(mac)
        for ip in part:
            out[ip] = next(iter(found[ip])) if len(found.get(ip, ())) == 1 else ""
    return out


def _records(c: _Collector, mac_of: dict[str, str]) -> tuple[list[AddressRecord], list[ConnectionRecord]]:
    addresses = []
    for ip, a in c.addrs.items():
        hi, lo = _ip_pair(ip)
        addresses.append(AddressRecord(
            mac=_mac_int(mac_of.get(ip, "")), ip_hi=hi, ip_lo=lo, first_ns=a.first_ns, last_ns=a.last_ns,
            packets_sent=a.packets_sent, bytes_sent=a.bytes_sent, packets_received=a.packets_received,
            bytes_received=a.bytes_received, flags=0, protocols=_mask(a.protocols), vlans=sorted(a.vlans)))
    connections = []
    for k in c.conns.values():
        chi, clo = _ip_pair(k.client_ip)
        shi, slo = _ip_pair(k.server_ip)
        connections.append(ConnectionRecord(
            client_mac=_mac_int(mac_of.get(k.client_ip, "")), client_hi=chi, client_lo=clo,
            server_mac=_mac_int(mac_of.get(k.server_ip, "")), server_hi=shi, server_lo=slo,
            ipproto=IPPROTO[k.transport], server_port=k.port,
            app=protocols.ID.get(k.protocol, 0), first_ns=k.first_ns, last_ns=k.last_ns,
            packets_c2s=k.packets_c2s, bytes_c2s=k.bytes_c2s, packets_s2c=k.packets_s2c,
            bytes_s2c=k.bytes_s2c))
    return addresses, connections


def _log_files(directory: Path) -> Iterator[Path]:
    for p in sorted(directory.rglob("*") if directory.is_dir() else [directory]):
        if p.is_file() and (p.name.endswith((".log", ".log.gz", ".json", ".json.gz", ".jsonl"))):
            yield p


def ingest(session: Session, directory: str | Path, sensor: str) -> ZeekReport:
    """Read every Zeek log under `directory` into the inventory (the caller's transaction)."""
    report = ZeekReport()
    c = _Collector()
    hashes: list[tuple[Path, str, int]] = []
    for path in _log_files(Path(directory)):
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        kind_guess = path.name.split(".", 1)[0]
        try:
            kind, rows, problems = read_log(path)
        except ZeekError as e:
            report.skipped.append(str(e))
            continue
        if kind not in LOGS:
            report.skipped.append(f"{path}: {kind or kind_guess}.log is not a log tapwatch reads")
            continue
        if inventory.is_ingested(session, digest):
            report.skipped.append(f"{path}: imported before")
            continue
        report.files.append(str(path))
        report.problems += problems
        for line, r in rows:
            try:
                ts = _ns(r.get("ts"))
                _handle(c, kind, r, ts)
            except (ValueError, TypeError) as e:
                report.problems.append(f"{path}:{line}: {e}")
                continue
            report.records += 1
        hashes.append((path, digest, len(raw)))
    if not hashes:
        return report
    mac_of = _resolve_macs(session, c)
    addresses, connections = fill_missing_macs(*_records(c, mac_of))
    stats = inventory.merge_run(session, addresses, connections, sensor)
    report.devices_new, report.devices_known = stats.devices_new, stats.devices_known
    report.connections_new = stats.connections_new
    results = DissectResults()
    for (ip, attr, value, source), st in c.facts.items():
        results.facts[(mac_of.get(ip, ""), ip, attr, value, source)] = st
    for (mac, attr, value, source), st in c.mac_facts.items():
        results.facts[(mac, "", attr, value, source)] = st
    report.facts = len(results.facts)
    touched = evidence.merge_facts(session, results)
    for path, digest, size in hashes:
        inventory.record_file(session, content_hash=digest, size=size, head_hash=digest[:32],
                              path=str(path), sensor=sensor, packets=0, first_ns=None, last_ns=None)
    session.flush()
    refresh_identity(session, stats.device_ids | evidence.device_ids_of(session, touched))
    return report
