"""The `tapwatch` command line."""

from __future__ import annotations

import atexit
import csv
import gc
import importlib
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from tapwatch import __version__, terminal
from tapwatch.analyze import Analyzer, RunSummary
from tapwatch.capture import iter_capture_files
from tapwatch.dissect.base import EVENT_TYPES
from tapwatch.identify import taxonomy
from tapwatch.store import evidence, inventory
from tapwatch.store.alert_models import Alert
from tapwatch.store.db import dispose_all, open_engine, sessions
from tapwatch.store.identity import EDITABLE, refresh_identity
from tapwatch.store.models import Device
from tapwatch.terminal import print_table

FORMATS = click.Choice(["table", "json", "csv"])
db_option = click.option(
    "--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH|URL",
    help="Inventory database (default ./tapwatch.db; env TAPWATCH_DB).",
)

err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"tapwatch: error: {message}", err=True)
    sys.exit(code)


class LazyGroup(click.Group):
    """A group whose later commands live in their own packages and load on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attribute = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


# command -> "module:attribute" of the packages that add commands
LATER_COMMANDS = {
    "alerts": "tapwatch.detect.commands:alerts_group",
    "learning": "tapwatch.detect.commands:learning_group",
    "indicators": "tapwatch.detect.commands:indicators_group",
    "exclusions": "tapwatch.detect.commands:exclusions_group",
    "vulns": "tapwatch.vulns.commands:vulns",
    "recommendations": "tapwatch.vulns.commands:recommendations_group",
    "risk": "tapwatch.vulns.commands:risk_command",
    "report": "tapwatch.vulns.commands:report_group",
    "serve": "tapwatch.console.commands:serve",
    "users": "tapwatch.console.commands:users",
    "retention": "tapwatch.console.commands:retention",
    "support": "tapwatch.console.commands:support",
    "subscriptions": "tapwatch.plans.commands:subscriptions_group",
    "plans": "tapwatch.plans.commands:plans_group",
    "endpoints": "tapwatch.plans.commands:endpoints_group",
    "forwarding": "tapwatch.integrations.commands:forwarding",
    "export": "tapwatch.integrations.commands:export",
    "cmdb": "tapwatch.integrations.commands:cmdb",
    "metrics": "tapwatch.integrations.commands:metrics_command",
    "sensor": "tapwatch.sensor.commands:sensor",
    "sensors": "tapwatch.sensor.commands:sensors",
}


@click.group(cls=LazyGroup, lazy=LATER_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tapwatch")
def main() -> None:
    """tapwatch: agentless IoT/OT network security monitor."""


# -- analyze --------------------------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, required=False, type=click.Path())
@db_option
@click.option("--sensor", default=None, help="Sensor name recorded on devices (default: host name).")
@click.option("--zeek-logs", "zeek_logs", type=click.Path(exists=True), default=None, metavar="DIR",
              help="Also read Zeek logs (conn, dhcp, dns, http, known_*, software, ICSNPP identity).")
@click.option("--quiet", "-q", is_flag=True, help="Only print the summary.")
@click.option("--no-dissect", is_flag=True,
              help="Inventory only: skip protocol dissectors, identification and detection.")
@click.option("--no-detect", is_flag=True, help="Skip the learning baseline and the alert engines.")
@click.option("--learn-for", "learn_for", metavar="DURATION", default=None,
              help="Learn the baseline for this long from the first packet (e.g. 30m, 12h, 14d), "
                   "then raise alerts. Default: 14 days, or until 3 quiet days.")
@click.option("--no-learn", is_flag=True, help="Monitor from the first packet (every device is new).")
def analyze(paths: tuple[str, ...], db: str | None, sensor: str | None, quiet: bool,
            no_dissect: bool, no_detect: bool, learn_for: str | None, no_learn: bool,
            zeek_logs: str | None = None) -> None:
    """Analyze capture files (pcap, pcapng, gzip; directories recursively) into the inventory."""
    if not paths and not zeek_logs:
        fail("nothing to analyze: give capture files or directories, or --zeek-logs DIR")
    if learn_for and no_learn:
        fail("--learn-for and --no-learn contradict each other")
    summary = run_analysis(paths, db, sensor, quiet, dissect=not no_dissect, detect=not no_detect,
                           learn_for=parse_duration(learn_for) if learn_for else None,
                           no_learn=no_learn)
    for w in summary.warnings:
        click.echo(f"tapwatch: warning: {w}", err=True)
    print_summary(summary)
    if zeek_logs:
        from tapwatch.integrations.commands import analyze_zeek_logs
        analyze_zeek_logs(zeek_logs, db, sensor)
    if summary.errors:
        for f in summary.errors:
            click.echo(f"tapwatch: error: {f.error}", err=True)
        sys.exit(2)


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '12h', '14d', '2w' (or a number of seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    value, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        amount = float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (like 30m, 12h, 14d)") from None
    if amount < 0:
        raise click.BadParameter("a duration cannot be negative")
    return timedelta(seconds=amount * units[unit])


def run_analysis(paths: tuple[str, ...], db: str | None, sensor: str | None, quiet: bool,
                 dissect: bool = True, detect: bool = True, learn_for: timedelta | None = None,
                 no_learn: bool = False) -> RunSummary:
    """Analyze every capture: a progress bar on a terminal, one plain line per file otherwise."""
    for p in paths:
        if not Path(p).exists():
            fail(f"{p}: no such file or directory")
    engine = open_engine(db)
    show_bar = not quiet and sys.stderr.isatty()
    summary = RunSummary()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), console=err, transient=True, disable=not show_bar,
    ) as bar:
        task = bar.add_task("analyzing", total=None, rate="")
        started = [time.perf_counter()]

        def progress(path: str, done: int, packets: int) -> None:
            total = Path(path).stat().st_size
            elapsed = time.perf_counter() - started[0]
            rate = packets / elapsed if elapsed > 0 else 0
            bar.update(task, description=Path(path).name, completed=min(done, total), total=total,
                       rate=f"{packets:,} packets, {rate:,.0f}/s")

        analyzer = Analyzer(engine, sensor, progress if show_bar else None, dissect=dissect,
                            detect=detect, learn_for=learn_for, no_learn=no_learn)
        for path in iter_capture_files(paths):
            started[0] = time.perf_counter()
            result = analyzer.analyze_file(path)
            summary.files.append(result)
            if not quiet and not show_bar and result.status != "error":
                rate = result.packets / result.seconds if result.seconds else 0
                click.echo(f"{result.status} {result.path}: {result.packets:,} packets in "
                           f"{result.seconds:.2f} s ({rate:,.0f} packets/s)")
    return summary


def print_summary(summary: RunSummary) -> None:
    files = summary.files
    analyzed = sum(1 for f in files if f.status == "analyzed")
    dup = sum(1 for f in files if f.status == "duplicate")
    seconds = sum(f.seconds for f in files)
    rate = summary.packets / seconds if seconds else 0
    parts = [f"{len(files)} file{'s' if len(files) != 1 else ''} ({analyzed} analyzed"
             + (f", {dup} already ingested" if dup else "")
             + (f", {len(summary.errors)} failed" if summary.errors else "") + ")",
             f"{summary.packets:,} packets in {seconds:.2f} s ({rate:,.0f}/s)",
             f"devices: {summary.total('devices_new')} new, {summary.total('devices_known')} known",
             f"connections: {summary.total('connections_new')} new",
             f"events: {sum(f.events for f in files)}",
             *([f"alerts: {summary.alerts('raised')} new, {summary.alerts('updated')} updated"]
               if any(f.detection for f in files) else []),
             f"{len(summary.warnings)} warning{'s' if len(summary.warnings) != 1 else ''}"]
    click.echo("; ".join(parts))


# -- devices / connections ------------------------------------------------------------------


@main.group()
def devices() -> None:
    """The device inventory."""


@devices.command("list")
@db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--sort", type=click.Choice(sorted(inventory.DEVICE_SORTS)), default="id",
              show_default=True)
@click.option("--facts", "with_facts", is_flag=True,
              help="JSON: add each device's facts (the evidence behind its identity).")
def devices_list(db: str | None, fmt: str, sort: str, with_facts: bool = False) -> None:
    """List devices."""
    engine = open_engine(db)
    with sessions(engine)() as s:
        rows = evidence.devices_json(s, sort, with_facts)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        write_csv(rows, ["id", "mac", "ip", "ips", "vlans", "first_seen", "last_seen",
                         "packets_sent", "packets_received", "bytes_sent", "bytes_received",
                         "protocols", "is_gateway", "name", "vendor", "type", "model", "os",
                         "firmware"])
    else:
        print_devices(rows)


def write_csv(rows: list[dict[str, Any]], columns: list[str]) -> None:
    out = csv.writer(sys.stdout)
    out.writerow(columns)
    for r in rows:
        out.writerow([" ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                      for v in (r[c] for c in columns)])


def _short_time(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def _brief(items: list[str], keep: int = 5) -> str:
    return " ".join(items[:keep]) + (f" +{len(items) - keep}" if len(items) > keep else "")


def print_devices(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(rows)} devices", title_justify="left", expand=False)
    columns = (("ID", "right"), ("IP", "left"), ("MAC", "left"), ("Name", "left"),
               ("Type", "left"), ("Vendor", "left"), ("Model", "left"), ("OS / firmware", "left"),
               ("VLAN", "left"), ("Protocols", "left"), ("Packets", "right"),
               ("Last seen", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         max_width=28 if col in ("Model", "OS / firmware", "Name") else None,
                         overflow="ellipsis")
    for r in rows:
        ip = (r["ip"] or "") + (f" +{len(r['ips']) - 1}" if len(r["ips"]) > 1 else "")
        kind = r["type"] or ("gateway" if r["is_gateway"] else "")
        system = " ".join(x for x in (r["os"], r["firmware"]) if x)
        table.add_row(
            str(r["id"]), ip, r["mac"] or "", r["name"] or "", kind, r["vendor"] or "",
            r["model"] or "", system, ",".join(map(str, r["vlans"])), _brief(r["protocols"]),
            f"{r['packets_sent'] + r['packets_received']:,}", _short_time(r["last_seen"]),
        )
    print_table(table)


@devices.command("edit")
@click.argument("device_id", type=int)
@db_option
@click.option("--name")
@click.option("--vendor")
@click.option("--type", "type_", metavar="TYPE", help="A taxonomy type id, e.g. plc, hmi, printer.")
@click.option("--model")
@click.option("--os", "os_")
@click.option("--firmware")
@click.option("--purdue-level", type=click.IntRange(0, 5))
@click.option("--reset", "reset", multiple=True, type=click.Choice(EDITABLE),
              help="Forget a value you set, so identification decides again.")
def devices_edit(device_id: int, db: str | None, reset: tuple[str, ...], **values: Any) -> None:
    """Set what a device is; identification keeps your values from then on."""
    edits = {k.rstrip("_"): v for k, v in values.items() if v is not None}
    if "type" in edits and taxonomy.get(edits["type"]) is None:
        fail(f"unknown type {edits['type']!r} (known: {', '.join(sorted(taxonomy.TYPES))})")
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        device = s.get(Device, device_id)
        if device is None:
            fail(f"no device with id {device_id}")
            return
        overrides = {k: v for k, v in (device.overrides or {}).items() if k not in reset}
        device.overrides = {**overrides, **edits}
        refresh_identity(s, [device_id])
    click.echo(f"device {device_id}: " + (", ".join(f"{k}={v}" for k, v in edits.items())
                                         or "no change") + (f"; reset {', '.join(reset)}" if reset else ""))


@devices.command("show")
@click.argument("device_id", type=int)
@db_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def devices_show(device_id: int, db: str | None, fmt: str) -> None:
    """One device with the evidence behind what tapwatch thinks it is."""
    engine = open_engine(db)
    with sessions(engine)() as s:
        device = s.get(Device, device_id)
        if device is None:
            fail(f"no device with id {device_id}")
            return
        row = inventory.device_json(device, inventory.device_addresses(s, [device_id])[device_id])
        row["facts"] = [evidence.fact_json(f) for f in evidence.facts_of_devices(s, [device_id])[device_id]]
        row["protocol_errors"] = [
            {"protocol": e.protocol, "count": e.count, "last_reason": e.last_reason}
            for e in evidence.errors_of_devices(s, [device_id])[device_id]
        ]
    if fmt == "json":
        click.echo(json.dumps(row, indent=2))
        return
    print_device(row)


def print_device(row: dict[str, Any]) -> None:
    out = terminal.console(width=max(120, Console().width))  # wire values printed as they are
    title = row["name"] or row["ip"] or row["mac"] or f"device {row['id']}"
    out.print(Text(title, style="bold") + Text(f"  (id {row['id']})"))
    fields = [("MAC", row["mac"]), ("IP", ", ".join(row["ips"])), ("VLANs", row["vlans"]),
              ("Vendor", row["vendor"]), ("Type", row["type"]), ("Class", row.get("class")),
              ("Model", row["model"]), ("OS", row["os"]), ("Firmware", row["firmware"]),
              ("Purdue", row["purdue_level"]), ("Serial", row["serial"]), ("Module", row["module"]),
              ("Rack/slot", row["rack_slot"]), ("PLC mode", row["plc_mode"]),
              ("Gateway", "yes" if row["is_gateway"] else None),
              ("Protocols", " ".join(row["protocols"])),
              ("Traffic", f"{row['packets_sent']:,} packets sent, {row['packets_received']:,} received"),
              ("Seen", f"{_short_time(row['first_seen'])} – {_short_time(row['last_seen'])}")]
    for label, value in fields:
        if value not in (None, "", []):
            out.print(f"  {label:<10} {value}")
    if row["facts"]:
        table = Table(title="Evidence (facts as seen on the wire)", title_justify="left")
        for col in ("Attribute", "Value", "Source", "Conf.", "Count", "Last seen"):
            table.add_column(col, overflow="fold")
        for f in row["facts"]:
            table.add_row(f["attribute"], f["value"], f["source"], f"{f['confidence']:.2f}",
                          str(f["count"]), _short_time(f["last_seen"]))
        out.print(table)
    for e in row["protocol_errors"]:
        out.print(f"  protocol errors: {e['protocol']} ×{e['count']} (last: {e['last_reason']})")


@main.group()
def connections() -> None:
    """Who talks to whom."""


@connections.command("list")
@db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def connections_list(db: str | None, fmt: str) -> None:
    """List connections (client, server, transport, server port)."""
    engine = open_engine(db)
    with sessions(engine)() as s:
        rows = [inventory.connection_json(c) for c in inventory.list_connections(s)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        write_csv(rows, list(rows[0]) if rows else list(inventory.connection_json.__annotations__))
    else:
        table = Table(title=f"{len(rows)} connections", title_justify="left")
        for col in ("Client", "Server", "Transport", "Port", "Protocol", "Packets", "Bytes",
                    "First seen", "Last seen"):
            table.add_column(col, no_wrap=True,
                             justify="right" if col in ("Port", "Packets", "Bytes") else "left")
        for r in rows:
            table.add_row(
                r["client_ip"] or r["client_mac"] or "", r["server_ip"] or r["server_mac"] or "",
                r["transport"], str(r["server_port"]), r["protocol"], f"{r['packets']:,}",
                f"{r['bytes']:,}", _short_time(r["first_seen"]), _short_time(r["last_seen"]),
            )
        print_table(table)


# -- events -----------------------------------------------------------------------------------


@main.group()
def events() -> None:
    """What was done to devices: program downloads, PLC stops, writes, restarts…"""


@events.command("list")
@db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--type", "kind", type=click.Choice(sorted(EVENT_TYPES)), default=None,
              help="Only events of this type.")
def events_list(db: str | None, fmt: str, kind: str | None) -> None:
    """List events in time order."""
    engine = open_engine(db)
    with sessions(engine)() as s:
        rows = [evidence.event_json(e) for e in evidence.list_events(s, kind)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    flat = [{"id": r["id"], "time": r["time"], "type": r["type"], "protocol": r["protocol"],
             "source_ip": r["source"]["ip"], "source_device_id": r["source"]["device_id"],
             "destination_ip": r["destination"]["ip"],
             "destination_device_id": r["destination"]["device_id"], "packet": r["packet"],
             "count": r["count"], "last_time": r["last_time"],
             "details": json.dumps(r["details"], sort_keys=True)} for r in rows]
    if fmt == "csv":
        write_csv(flat, list(flat[0]) if flat else ["id", "time", "type", "protocol"])
        return
    table = Table(title=f"{len(rows)} events", title_justify="left")
    for col in ("Time", "Type", "Protocol", "Source", "Destination", "Count", "Packet", "Details"):
        table.add_column(col, overflow="fold")
    for r in flat:
        table.add_row(_short_time(r["time"]), r["type"], r["protocol"], r["source_ip"] or "",
                      r["destination_ip"] or "", str(r["count"]), str(r["packet"]), r["details"])
    print_table(table)


# -- demo -------------------------------------------------------------------------------------


@main.command()
@click.option("--dir", "directory", default="demo", show_default=True, type=click.Path(),
              help="Where the example capture and its inventory database are written.")
def demo(directory: str) -> None:
    """Generate the built-in example site capture, analyze it, and print its inventory."""
    from tapwatch.demo import DEMO_LEARNING, build_demo_capture
    from tapwatch.detect.commands import alerts_list

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    capture = build_demo_capture(out / "site.pcap")
    db = out / "tapwatch.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    click.echo(f"example site capture: {capture}")
    learn = timedelta(seconds=DEMO_LEARNING)
    summary = run_analysis((str(capture),), str(db), "demo-sensor", quiet=True, learn_for=learn)
    print_summary(summary)
    ctx = click.get_current_context()
    ctx.invoke(devices_list, db=str(db), fmt="table", sort="ip")
    click.echo(f"\nthe first {DEMO_LEARNING / 60:.0f} minutes were learned as normal; then an unknown "
               "laptop scanned the network and stopped the S7 PLC:")
    ctx.invoke(alerts_list, db=str(db), fmt="table", status=None, severity=None, type_=None)
    _demo_vulnerabilities(db)
    click.echo(f"\nexplore it: tapwatch devices list --db {db} --format json")
    with sessions(open_engine(str(db)))() as s:
        plc = s.scalar(select(Device.id).where(Device.ip == "10.20.0.60"))
    click.echo(f"            tapwatch devices show {plc} --db {db}   # the S7 PLC and its evidence")
    click.echo(f"            tapwatch events list --db {db}       # its program download and stop")
    with sessions(open_engine(str(db)))() as s:
        stop = s.scalar(select(Alert.id).where(Alert.type == "plc_stop"))
    click.echo(f"            tapwatch alerts show {stop} --db {db}     # the PLC stop and its evidence")
    click.echo(f"            tapwatch serve --db {db}             # the console in a browser")


def _demo_vulnerabilities(db: Path) -> None:
    """Match the site against a small built-in advisory (published S7-1200 CVEs), offline,
    as a site would with the feeds it imports."""
    from importlib.resources import as_file, files

    from tapwatch.vulns import importer, matcher

    engine = open_engine(str(db))
    with as_file(files("tapwatch.data") / "demo_advisory.json") as feed:
        importer.import_files(engine, [feed])
    with sessions(engine).begin() as s:
        matcher.refresh(s)
    with sessions(engine)() as s:
        plc = s.scalar(select(Device.id).where(Device.ip == "10.20.0.60"))
        rows = matcher.list_matches(s, plc) if plc else []
    engine.dispose()
    click.echo(f"\nthe S7 PLC's firmware carries {len(rows)} published vulnerabilities "
               "(built-in demo advisory):")
    for r in rows:
        click.echo(f"  {r['cve']}  CVSS {r['cvss_score']}  {r['title']} ({r['confidence']} {r['firmware']}, "
                   f"affected {r['affected_versions']}): {r['remediation'] or 'no fix published'}")


# -- command groups of later capabilities: imported when used, so `tapwatch analyze` does
# not pay for the console's web stack


def run() -> None:
    """The `tapwatch` program. At exit it closes its databases itself, after which nothing
    is left to finalize that the operating system does not reclaim anyway, so the
    collector's last pass over every object (numba's, the ORM's, the run's: about 0.3 s
    after a large capture) is skipped."""
    atexit.register(_exit_quickly)
    main()


def _exit_quickly() -> None:
    dispose_all()
    gc.freeze()


if __name__ == "__main__":
    run()
