"""Protocol violations: sessions full of malformed messages or messages whose lengths
disagree with their headers, function codes a protocol does not define (Modbus 0), and
connection attempts on port 0."""

from __future__ import annotations

from tapwatch.detect.alerts import Finding
from tapwatch.detect.baseline import MALFORMED, endpoint
from tapwatch.detect.context import Context, at, last_at


def run(ctx: Context) -> None:
    _errors(ctx)
    for s in ctx.inputs.signals:
        if s.kind == "illegal_function":
            protocol, code = s.details.get("protocol"), s.details.get("code")
            ctx.report(Finding("illegal_function_code", at(s), s.src, s.dst, protocol,
                               details={"function_code": code}, discriminator=f"{protocol}:{code}",
                               packets=[s.packet], count=s.count, last_ts=last_at(s)))
    for c in ctx.inputs.connections:
        if c.port == 0 and c.transport in ("tcp", "udp"):
            ctx.report(Finding("port_zero", c.first, c.client, c.server, c.transport,
                               details={"transport": c.transport, "packets": c.packets},
                               discriminator=c.transport, count=c.packets, last_ts=c.last))


def _errors(ctx: Context) -> None:
    """Protocol errors the dissectors counted per sender and protocol in this analysis.
    Protocol stacks that always err a little (and did so while learning) are normal."""
    when = ctx.inputs.last
    learning = ctx.learning(ctx.inputs.first)
    for (mac, ip, protocol), (count, reason, lengths) in ctx.inputs.errors.items():
        for type_id, n in (("unexpected_message_length", lengths), ("malformed_packets", count - lengths)):
            if not n or n < int(ctx.threshold(type_id, "errors")):
                continue
            key = f"{endpoint(mac, ip)} {protocol} {type_id}"
            if learning:
                ctx.baseline.add(MALFORMED, key, when, value=n)
                continue
            if (MALFORMED, key) in ctx.baseline:
                continue
            ctx.report(Finding(type_id, ctx.inputs.first, (mac or None, ip or None), None, protocol,
                               details={"errors": n, "last_reason": reason}, discriminator=protocol,
                               count=n, last_ts=when, learn=[(MALFORMED, key)]))
