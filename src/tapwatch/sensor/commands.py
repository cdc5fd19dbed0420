"""`tapwatch sensor …` (runs on the sensor) and `tapwatch sensors …` (manages them on the console)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tapwatch.console.commands import _engine, _fail, with_db


@click.group()
def sensor() -> None:
    """Live capture on this machine, and its link to a console."""


@sensor.command("run")
@click.option("--interface", "-i", required=True, help="Interface to capture (e.g. a SPAN port).")
@click.option("--bpf", default=None, help="Capture filter, tcpdump syntax.")
@click.option("--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH",
              help="The sensor's own inventory and outbox (default ./tapwatch.db; env TAPWATCH_DB).")
@click.option("--name", default=None, help="Sensor name recorded on devices (default: host name).")
@click.option("--console", "console_url", default=None, metavar="URL", help="Console to upload to.")
@click.option("--token", envvar="TAPWATCH_SENSOR_TOKEN", default=None,
              help="The sensor's token from `tapwatch sensors add` (env TAPWATCH_SENSOR_TOKEN).")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA certificate to trust for an https console (e.g. its self-signed cert).")
@click.option("--flush-seconds", default=10.0, show_default=True, type=click.FloatRange(0.2, 3600),
              help="How often the aggregation is merged into the store and queued for the console.")
@click.option("--outbox-limit-mb", default=512, show_default=True, type=click.IntRange(1),
              help="Outbox size limit; past it the oldest low-value batches are dropped.")
@click.option("--rolling-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep raw traffic as rotating pcap files here.")
@click.option("--rolling-gb", default=1.0, show_default=True, type=click.FloatRange(0.001),
              help="How much raw traffic --rolling-dir keeps (oldest files deleted first).")
@click.option("--ring-mb", default=64, show_default=True, type=click.IntRange(2, 4096),
              help="Kernel capture ring size.")
@click.option("--no-dissect", is_flag=True, help="Inventory only: skip protocol dissectors (and detection).")
@click.option("--no-detect", is_flag=True, help="Skip the detection engines (no alerts).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (loopback; 0 picks a free one).")
@click.option("--duration", default=0.0, type=click.FloatRange(0), help="Stop after this many seconds.")
@click.option("--quiet", "-q", is_flag=True, help="No status line per flush.")
def sensor_run(interface: str, bpf: str | None, db: str | None, name: str | None, console_url: str | None,
               token: str | None, ca_cert: str | None, flush_seconds: float, outbox_limit_mb: int,
               rolling_dir: Path | None, rolling_gb: float, ring_mb: int, no_dissect: bool,
               no_detect: bool, metrics_port: int | None, duration: float, quiet: bool) -> None:
    """Capture live traffic into the inventory; with --console, forward it there."""
    from tapwatch.sensor import daemon
    from tapwatch.sensor.engine import SensorPipeline, durable
    from tapwatch.sensor.live import LiveCaptureError, LiveSource
    from tapwatch.sensor.outbox import Outbox, set_state
    from tapwatch.sensor.rolling import RollingPcap
    from tapwatch.sensor.uploader import Uploader
    from tapwatch.store.db import open_engine

    if bool(console_url) != bool(token):
        raise click.UsageError("--console and --token go together")
    engine = open_engine(db)
    durable(engine)
    try:
        source = LiveSource(interface, bpf=bpf, ring_mb=ring_mb)
    except LiveCaptureError as e:
        _fail(str(e))
    rolling = RollingPcap(rolling_dir, int(rolling_gb * (1 << 30))) if rolling_dir else None
    if rolling_dir:
        from tapwatch.sensor.rolling import STATE_KEY
        from tapwatch.store.db import sessions

        with sessions(engine).begin() as s:  # alert excerpts (`tapwatch alerts pcap`) look there
            set_state(s, STATE_KEY, str(rolling_dir.resolve()))
    outbox = Outbox(outbox_limit_mb << 20) if console_url else None
    pipeline = SensorPipeline(engine, name or socket.gethostname(), outbox, rolling,
                              dissect=not no_dissect, detect=not no_detect)
    uploader = Uploader(engine, console_url, token, ca_cert=ca_cert) if console_url and token else None

    served = None
    if metrics_port is not None:
        from tapwatch.integrations.metrics import start_metrics_server

        served = start_metrics_server(metrics_port, sessions=pipeline.sessions)
        if not quiet:
            click.echo(f"metrics on http://127.0.0.1:{served.server.server_port}/metrics", err=True)

    def status(report: Any, health: dict[str, Any]) -> None:
        if served is not None:
            served.observe(health)
        if report.forwarding and "failed" in report.forwarding:
            click.echo(report.forwarding, err=True)  # a SIEM that refuses alerts is news even when quiet
        if quiet:
            return
        up = health.get("uploader")
        line = (f"{health['packets_per_s']:.0f} pkt/s {health['bytes_per_s'] * 8 / 1e6:.2f} Mbit/s, "
                f"drops {health['drops']}, link {'up' if health['link_up'] else 'DOWN'}; "
                f"+{report.stats.devices_new} devices, {report.connections} connections, "
                f"{report.facts} facts, {report.events} events"
                + (f", {report.detection.raised} new alerts" if report.detection else "")
                + f" in {report.seconds:.2f}s")
        if up is not None:
            line += f"; outbox {health.get('outbox_batches', 0)} batches, sent {up['sent']}"
            if up.get("held"):
                line += f" (held by the console: {up['held'][:100]})"
            elif not up["connected"] and up["last_error"]:
                line += f" (console unreachable: {up['last_error'][:80]})"
        click.echo(line, err=True)

    if not quiet:
        click.echo(f"tapwatch sensor on {interface}" + (f" (filter {bpf!r})" if bpf else "") +
                   (f", uploading to {console_url}" if console_url else ""), err=True)
    try:
        totals = daemon.run(source, pipeline, flush_seconds, uploader, duration, status)
    finally:
        if served is not None:
            served.stop()
    click.echo(json.dumps({"packets": totals.packets, "bytes": totals.bytes, "drops": totals.drops,
                           "kernel_packets": totals.kernel_packets, "flushes": totals.flushes,
                           "reopens": totals.reopens, "seconds": round(totals.seconds, 3)}))


@sensor.command("status")
@click.option("--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH")
def sensor_status(db: str | None) -> None:
    """What waits in the outbox, and what was dropped or rejected."""
    from tapwatch.sensor.outbox import Outbox, get_state
    from tapwatch.sensor.uploader import REJECTED
    from tapwatch.store.db import open_engine, sessions

    with sessions(open_engine(db))() as s:
        batches, size = Outbox.backlog(s)
        out = {"outbox_batches": batches, "outbox_bytes": size, "dropped": Outbox.dropped(s),
               "rejected": get_state(s, REJECTED, {})}
    click.echo(json.dumps(out, indent=2))


def _when(value: str) -> int:
    """ISO time (UTC unless it says otherwise) or nanoseconds since the epoch."""
    if value.isdigit():
        return int(value)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


@sensor.command("extract")
@click.option("--rolling-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--start", "start", required=True, help="ISO time or epoch ns.")
@click.option("--end", "end", required=True, help="ISO time or epoch ns.")
@click.option("--mac", default=None, help="Only packets to or from this MAC.")
@click.option("--ip", default=None, help="Only packets to or from this IP.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def sensor_extract(rolling_dir: Path, start: str, end: str, mac: str | None, ip: str | None,
                   output: Path) -> None:
    """Copy the packets of a time window (of one device) out of the rolling capture."""
    from tapwatch.sensor.rolling import extract

    try:
        result = extract(rolling_dir, _when(start), _when(end), output, mac=mac, ip=ip)
    except ValueError as e:
        _fail(str(e))
    click.echo(f"wrote {result.packets} packets from {result.files} files to {result.path}")


@click.group()
def sensors() -> None:
    """Sensors registered on this console."""


@sensors.command("add")
@click.argument("name")
@with_db
@click.option("--site", default=None)
@click.option("--zone", default=None)
def sensors_add(name: str, db: str | None, database_url: str | None, site: str | None,
                zone: str | None) -> None:
    """Register a sensor and print its activation token (shown once)."""
    from tapwatch.sensor.ingest import SensorError, add_sensor
    from tapwatch.store.db import sessions

    try:
        with sessions(_engine(db, database_url)).begin() as s:
            _sensor, token = add_sensor(s, name, site, zone, actor="cli")
    except SensorError as e:
        _fail(str(e))
    click.echo(f"sensor {name} registered (pending activation); its token, shown only now:", err=True)
    click.echo(token)


@sensors.command("list")
@with_db
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def sensors_list(db: str | None, database_url: str | None, fmt: str) -> None:
    """Sensors with their state and health."""
    from sqlalchemy import select

    from tapwatch.sensor.ingest import sensor_json
    from tapwatch.store.db import sessions
    from tapwatch.store.sensor_models import Sensor

    with sessions(_engine(db, database_url))() as s:
        rows = [sensor_json(x) for x in s.scalars(select(Sensor).order_by(Sensor.name))]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'SENSOR':<20} {'SITE':<12} {'ZONE':<12} {'STATE':<19} {'PKT/S':>9} {'DROPS':>8} "
               f"{'BACKLOG':>8} LAST CONNECTED")
    for r in rows:
        click.echo(f"{r['name']:<20} {r['site'] or '':<12} {r['zone'] or '':<12} {r['state']:<19} "
                   f"{r['packets_per_s']:>9.1f} {r['drops']:>8} {r['outbox_batches']:>8} "
                   f"{r['last_connected'] or 'never'}")

