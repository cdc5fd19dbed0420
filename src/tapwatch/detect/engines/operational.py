"""Operational alerts: a PLC stopped or changed mode, a device restarted, a device that was
talking stopped answering, and the sensor's interface went quiet."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tapwatch.detect.alerts import Finding
from tapwatch.detect.baseline import GAP
from tapwatch.detect.context import Context, at, last_at
from tapwatch.store.models import Device

BY_EVENT = {"plc_stop": "plc_stop", "mode_change": "plc_mode_change", "cold_restart": "device_restart",
            "warm_restart": "device_restart", "device_reset": "device_restart"}
MIN_PACKETS = 10  # a device that said less has no habit of talking to break


def run(ctx: Context) -> None:
    for e in ctx.inputs.events:
        type_id = BY_EVENT.get(e.kind)
        if type_id is None:
            continue
        # the operated device is the receiver; the actor is the sender
        ctx.report(Finding(type_id, at(e), e.src, e.dst, e.protocol,
                           details={"operation": e.kind, **e.details}, discriminator=e.kind,
                           packets=[e.packet], count=e.count, last_ts=last_at(e)))
    _disconnected(ctx)
    _quiet(ctx)


def _disconnected(ctx: Context) -> None:
    silence = timedelta(seconds=float(ctx.threshold("device_disconnected", "silence")))
    end = ctx.inputs.last
    since = ctx.inputs.first
    devices = ctx.inputs.devices
    if ctx.inputs.watch_since is not None:
        # live: the devices whose silence reached the threshold since the previous flush
        since = ctx.inputs.watch_since - silence
        devices = list(ctx.session.scalars(select(Device).where(
            Device.device_class == "OT", Device.last_seen >= since, Device.last_seen < end - silence)))
    for d in devices:
        if d.device_class != "OT" or d.is_gateway or d.packets_sent < MIN_PACKETS:
            continue
        # it had been talking at least as long as it has now been silent, and stopped in this run
        if since <= d.last_seen < end - silence and d.last_seen - d.first_seen >= silence:
            ctx.report(Finding("device_disconnected", d.last_seen, (d.mac, d.ip),
                               details={"device_id": d.id, "silent_seconds":
                                        int((end - d.last_seen).total_seconds())},
                               discriminator=d.last_seen.isoformat()))


def _quiet(ctx: Context) -> None:
    if ctx.inputs.gap is None:
        return
    start, end = ctx.inputs.gap
    seconds = (end - start).total_seconds()
    key = f"sensor {ctx.inputs.sensor or ''}"
    if ctx.learning(start):
        ctx.baseline.add(GAP, key, start, value=seconds)
        return
    learned = ctx.baseline.value(GAP, key) or 0.0
    if seconds > max(float(ctx.threshold("no_traffic", "gap")), 2 * learned):
        ctx.report(Finding("no_traffic", start, (None, None), None, None,
                           details={"sensor": ctx.inputs.sensor, "silent_seconds": int(seconds),
                                    "until": end.isoformat()},
                           discriminator=start.isoformat(), last_ts=end,
                           learn=[(GAP, key, seconds)]))
