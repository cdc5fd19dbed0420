"""Anomalies: scans (ports, addresses, PLCs, ARP), password guessing, a connection carrying
far more than it did while learning, and one IP address claimed by several MACs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from tapwatch.detect.alerts import Finding
from tapwatch.detect.baseline import ARP, CONNECTION, VOLUME, connection_key
from tapwatch.detect.context import Conn, Context, Endpoint, at, ip_kind, last_at

# server ports of industrial protocols: a client reaching many devices on them scans PLCs
INDUSTRIAL_PORTS = frozenset({102, 502, 789, 1911, 1962, 2222, 2404, 4840, 5007, 9600, 18245,
                              20000, 20547, 34962, 34963, 34964, 44818, 47808})


def run(ctx: Context) -> None:
    fresh = [c for c in ctx.inputs.connections
             if (CONNECTION, connection_key(c.client_key, c.server_key, c.transport, c.port))
             not in ctx.known_before]
    _port_scans(ctx, fresh)
    _address_scans(ctx, fresh)
    _plc_scans(ctx, fresh)
    _arp(ctx)
    _logins(ctx)
    _volume(ctx)


Timed = list[tuple[datetime, str]]
Groups = dict[tuple[Endpoint, Endpoint | None], Timed]


def densest(items: Sequence[tuple[datetime, str]],
            window: timedelta) -> tuple[int, datetime, datetime, list[str]]:
    """The most distinct values inside any window: (count, start, end, values)."""
    items = sorted(items)
    if not items:
        return 0, datetime.min, datetime.min, []
    best: tuple[int, datetime, datetime, list[str]] = (0, items[0][0], items[0][0], [])
    inside: dict[str, int] = defaultdict(int)
    lo = 0
    for ts, value in items:
        inside[value] += 1
        while ts - items[lo][0] > window:
            old = items[lo][1]
            inside[old] -= 1
            if not inside[old]:
                del inside[old]
            lo += 1
        if len(inside) > best[0]:
            best = (len(inside), items[lo][0], ts, sorted(inside))
    return best


def _scan(ctx: Context, type_id: str, groups: Groups, limit_name: str, unit: str) -> None:
    if not ctx.enabled(type_id):
        return
    limit = int(ctx.threshold(type_id, limit_name))
    window = timedelta(seconds=float(ctx.threshold(type_id, "window")))
    for (src, dst), items in groups.items():
        if len(items) < limit:
            continue
        count, start, end, values = densest(items, window)
        if count >= limit:
            ctx.scanners.add(src)
            ctx.report(Finding(type_id, start, src, dst, details={unit: count, "sample": values[:20]},
                               count=count, last_ts=end))


def _port_scans(ctx: Context, fresh: Iterable[Conn]) -> None:
    groups: Groups = defaultdict(list)
    for c in fresh:
        if c.transport in ("tcp", "udp"):
            groups[(c.client, c.server)].append((c.first, f"{c.transport}/{c.port}"))
    _scan(ctx, "port_scan", groups, "ports", "ports")


def _address_scans(ctx: Context, fresh: Iterable[Conn]) -> None:
    groups: Groups = defaultdict(list)
    for c in fresh:
        if ip_kind(c.server[1]) == "private":  # sweeping the local networks, not browsing
            groups[(c.client, None)].append((c.first, c.server[1] or ""))
    _scan(ctx, "address_scan", groups, "hosts", "hosts")


def _plc_scans(ctx: Context, fresh: Iterable[Conn]) -> None:
    groups: Groups = defaultdict(list)
    for c in fresh:
        if c.port in INDUSTRIAL_PORTS and ip_kind(c.server[1]) == "private":
            groups[(c.client, None)].append((c.first, c.server[1] or ""))
    _scan(ctx, "plc_scan", groups, "controllers", "controllers")


def _arp(ctx: Context) -> None:
    requests: Groups = defaultdict(list)
    claims: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    for s in ctx.inputs.signals:
        if s.kind == "arp_request":
            requests[((s.src[0], None), None)].append((at(s), s.details["target"]))
        elif s.kind == "arp_claim":
            claims[s.details["ip"]][s.details["mac"]].append(at(s))
    _scan(ctx, "arp_scan", requests, "targets", "targets")
    learned: dict[str, set[str]] = defaultdict(set)
    for kind, key in ctx.baseline.known:
        if kind == ARP:
            ip, _, mac = key.partition("|")
            learned[ip].add(mac)
    for ip, by_mac in claims.items():
        for mac, times in by_mac.items():
            if ctx.learning(min(times)):
                ctx.baseline.add(ARP, f"{ip}|{mac}", min(times))
                learned[ip].add(mac)
        macs = set(by_mac) | learned[ip]
        if len(macs) < 2:
            continue
        for mac, times in by_mac.items():
            if mac in learned[ip] or ctx.learning(min(times)):
                continue
            ctx.report(Finding("arp_spoofing", min(times), (mac, ip), None, "arp",
                               details={"ip": ip, "macs": sorted(macs)}, discriminator=ip,
                               count=len(times), last_ts=max(times), learn=[(ARP, f"{ip}|{mac}")]))


def _logins(ctx: Context) -> None:
    if not ctx.enabled("password_guessing"):
        return
    limit = int(ctx.threshold("password_guessing", "failures"))
    window = float(ctx.threshold("password_guessing", "window"))
    tries: dict[tuple[Endpoint, Endpoint, str], list] = defaultdict(list)  # type: ignore[type-arg]
    for s in ctx.inputs.signals:
        if s.kind == "login" and s.details.get("outcome") == "failure":
            tries[(s.src, s.dst, s.details.get("service", ""))].append(s)
    for (src, dst, service), found in tries.items():
        total = sum(s.count for s in found)
        first, last = min(at(s) for s in found), max(last_at(s) for s in found)
        windows = max(1.0, (last - first).total_seconds() / window)
        if total >= limit and total / windows >= limit:
            ctx.report(Finding("password_guessing", first, src, dst, service,
                               details={"failures": total, "service": service}, discriminator=service,
                               packets=[s.packet for s in found][:20], count=total, last_ts=last))


def _volume(ctx: Context) -> None:
    factor = float(ctx.threshold("abnormal_traffic_volume", "factor"))
    floor = int(ctx.threshold("abnormal_traffic_volume", "min_bytes"))
    for c in ctx.inputs.connections:
        ck = connection_key(c.client_key, c.server_key, c.transport, c.port)
        rate = c.bytes / max(60.0, (c.last - c.first).total_seconds())
        if ctx.learning(c.first):
            ctx.baseline.add(VOLUME, ck, c.first, value=rate)
            continue
        learned = ctx.baseline.value(VOLUME, ck)
        if learned and c.bytes >= floor and rate > factor * learned:
            ctx.report(Finding("abnormal_traffic_volume", c.first, c.client, c.server, c.protocol,
                               details={"bytes": c.bytes, "bytes_per_second": round(rate, 1),
                                        "learned_bytes_per_second": round(learned, 1)},
                               discriminator=f"{c.transport}/{c.port}", last_ts=c.last,
                               learn=[(VOLUME, ck, rate)]))
