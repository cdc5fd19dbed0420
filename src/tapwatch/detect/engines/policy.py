"""Policy violations: anything not in the baseline once learning is over — new devices,
connections and protocols, function codes a client never used on a server, programming
by devices that are not programming devices, firmware changes, OT devices reaching the
internet, remote logins over SSH/Telnet/SMB/RDP/VNC."""

from __future__ import annotations

from typing import Any

from tapwatch.detect.alerts import Finding
from tapwatch.detect.baseline import (
    CONNECTION,
    FUNCTION,
    PAIR,
    PROTOCOL,
    connection_key,
    endpoint,
    function_key,
    pair_key,
    protocol_key,
)
from tapwatch.detect.context import Conn, Context, at, ip_kind, last_at

PROGRAMMING = ("program_download", "program_upload")


def run(ctx: Context) -> None:
    _devices(ctx)
    _connections(ctx)
    _functions(ctx)
    _programming(ctx)
    _firmware(ctx)


def _devices(ctx: Context) -> None:
    for d in ctx.inputs.new_devices:
        if ctx.learning(d.first_seen):
            continue  # part of the baseline: authorized
        d.is_new, d.authorized = True, False
        ctx.report(Finding("new_device", d.first_seen, (d.mac, d.ip),
                           details={"device_id": d.id}, last_ts=d.last_seen))


def _connections(ctx: Context) -> None:
    base = ctx.baseline
    login_ports = {int(p): name for p, name in ctx.threshold("unauthorized_remote_login", "ports").items()}
    for c in ctx.inputs.connections:
        client, server = c.client_key, c.server_key
        ck = connection_key(client, server, c.transport, c.port)
        pk = pair_key(client, server)
        prk = protocol_key(client, server, c.protocol)
        if ctx.learning(c.first):
            base.add(CONNECTION, ck, c.first)
            base.add(PAIR, pk, c.first)
            base.add(PROTOCOL, prk, c.first)
            continue
        if (CONNECTION, ck) in base or ctx.scanning(c.client):
            continue  # known, or one probe of a scan (the scan is the alert)
        learn: list[tuple[Any, ...]] = [(CONNECTION, ck), (PAIR, pk), (PROTOCOL, prk)]
        client_device = ctx.device(c.client)
        if ip_kind(c.server[1]) == "public" and client_device is not None \
                and client_device.device_class == "OT":
            ctx.report(_finding("ot_internet_connectivity", c, learn))
        elif c.transport == "tcp" and c.port in login_ports:
            ctx.report(_finding("unauthorized_remote_login", c, learn, service=login_ports[c.port]))
        elif ip_kind(c.server[1]) == "group":
            continue  # announcements to everyone: the new device (if any) is the news
        elif (PAIR, pk) in base and (PROTOCOL, prk) not in base:
            ctx.report(_finding("new_protocol", c, learn))
        else:
            ctx.report(_finding("new_connection", c, learn))


def _finding(type_id: str, c: Conn, learn: list[tuple[Any, ...]], **extra: str) -> Finding:
    return Finding(type_id, c.first, c.client, c.server, c.protocol,
                   details={"transport": c.transport, "port": c.port, "protocol": c.protocol,
                            "bytes": c.bytes, "packets": c.packets, **extra},
                   discriminator=f"{c.transport}/{c.port}", last_ts=c.last, learn=learn)


def _functions(ctx: Context) -> None:
    base = ctx.baseline
    watched = set(ctx.threshold("unpermitted_function_code", "protocols"))
    for s in ctx.inputs.signals:
        if s.kind != "function" or s.details.get("protocol") not in watched:
            continue
        src, dst = endpoint(*s.src), endpoint(*s.dst)
        protocol, code = s.details["protocol"], s.details.get("code")
        fk = function_key(src, dst, protocol, code)  # type: ignore[arg-type]
        ts = at(s)
        if ctx.learning(ts):
            base.add(FUNCTION, fk, ts, count=s.count)
            continue
        if (FUNCTION, fk) in base or (PAIR, pair_key(src, dst)) not in base:
            continue  # known, or a new pair (its new connection is the alert)
        ctx.report(Finding("unpermitted_function_code", ts, s.src, s.dst, protocol,
                           details={"function_code": code, "function": s.details.get("name")},
                           discriminator=f"{protocol}:{code}", packets=[s.packet], count=s.count,
                           last_ts=last_at(s), learn=[(FUNCTION, fk)]))


def _programming(ctx: Context) -> None:
    for e in ctx.inputs.events:
        if e.kind not in PROGRAMMING:
            continue
        actor = ctx.device(e.src)
        ts = at(e)
        if ctx.learning(ts):
            if actor is not None:
                actor.programming_device = True  # seen programming while learning: normal
            continue
        if actor is not None and actor.programming_device:
            continue
        ctx.report(Finding("unauthorized_programming", ts, e.src, e.dst, e.protocol,
                           details={"operation": e.kind, **e.details}, discriminator=e.kind,
                           packets=[e.packet], count=e.count, last_ts=last_at(e)))


def _firmware(ctx: Context) -> None:
    for d in ctx.inputs.devices:
        before = ctx.inputs.firmware_before.get(d.id)
        if before and d.firmware and before != d.firmware and not ctx.learning(d.last_seen):
            ctx.report(Finding("firmware_change", d.last_seen, (d.mac, d.ip),
                               details={"from": before, "to": d.firmware, "device_id": d.id},
                               discriminator=d.firmware))
    for e in ctx.inputs.events:
        if e.kind == "firmware_update":
            ctx.report(Finding("firmware_change", at(e), e.dst, e.src, e.protocol,
                               details={"operation": "firmware_update", **e.details},
                               discriminator="update", packets=[e.packet], count=e.count,
                               last_ts=last_at(e)))
