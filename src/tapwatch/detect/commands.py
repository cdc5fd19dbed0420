"""`tapwatch alerts`, `learning`, `indicators` and `exclusions`: the detection CLI."""

from __future__ import annotations

import ipaddress
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy import func, select

from tapwatch import clock
from tapwatch.detect import alerts as lifecycle
from tapwatch.detect import indicators, learning
from tapwatch.detect.catalog import SEVERITIES
from tapwatch.detect.pcap import ExcerptError, write_excerpt
from tapwatch.store.alert_models import STATUSES, Alert
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.detect_models import BaselineEntry, Exclusion, Indicator
from tapwatch.store.inventory import iso
from tapwatch.store.models import Device
from tapwatch.terminal import print_table

db_option = click.option("--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH|URL",
                         help="Inventory database (default ./tapwatch.db; env TAPWATCH_DB).")
FORMATS = click.Choice(["table", "json", "csv"])
COLUMNS = ["id", "type", "title", "engine", "severity", "status", "count", "first_detected",
           "last_detected", "source", "destination", "protocol", "mitre"]


def _fail(message: str) -> None:
    click.echo(f"tapwatch: error: {message}", err=True)
    sys.exit(2)


def _who(side: dict[str, Any] | None) -> str:
    if not side:
        return ""
    return " ".join(x for x in (side.get("ip"), side.get("mac")) if x) or ""


@click.group("alerts")
def alerts_group() -> None:
    """Alerts raised by the detection engines."""


@alerts_group.command("list")
@db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--status", type=click.Choice([*STATUSES, "open"]), help="open = new or active")
@click.option("--severity", type=click.Choice(SEVERITIES))
@click.option("--type", "type_", metavar="TYPE", help="An alert type id from the catalog.")
def alerts_list(db: str | None, fmt: str, status: str | None, severity: str | None,
                type_: str | None) -> None:
    """List alerts, oldest first."""
    with sessions(open_engine(db))() as s:
        rows = [lifecycle.alert_json(a) for a in lifecycle.list_alerts(s, status, severity, type_)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_who(r[c]) if c in ("source", "destination") else r[c] for c in COLUMNS])
    else:
        table = Table(show_lines=False, header_style="bold")
        for c in ("id", "severity", "status", "type", "count", "first detected", "source", "destination",
                  "protocol"):
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(str(r["id"]), r["severity"], r["status"], r["type"], str(r["count"]),
                          (r["first_detected"] or "")[:19], _who(r["source"]), _who(r["destination"]),
                          r["protocol"] or "")
        print_table(table)
        click.echo(f"{len(rows)} alert{'s' if len(rows) != 1 else ''}")


@alerts_group.command("show")
@click.argument("alert_id", type=int)
@db_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def alerts_show(alert_id: int, db: str | None, fmt: str) -> None:
    """One alert with its evidence."""
    with sessions(open_engine(db))() as s:
        alert = s.get(Alert, alert_id)
        if alert is None:
            _fail(f"no alert with id {alert_id}")
        row = lifecycle.alert_json(alert)  # type: ignore[arg-type]
    if fmt == "json":
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"alert {row['id']}: {row['title']}  [{row['severity']}, {row['status']}]")
    for label, key in (("type", "type"), ("engine", "engine"), ("category", "category"),
                       ("MITRE ATT&CK", "mitre"), ("protocol", "protocol"), ("count", "count"),
                       ("first detected", "first_detected"), ("last detected", "last_detected"),
                       ("sensor", "sensor")):
        if row[key] is not None:
            click.echo(f"  {label:15s} {row[key]}")
    click.echo(f"  {'source':15s} {_who(row['source'])}"
               + (f" (device {row['source']['device_id']})" if row["source"]["device_id"] else ""))
    if row["destination"]:
        click.echo(f"  {'destination':15s} {_who(row['destination'])}"
                   + (f" (device {row['destination']['device_id']})" if row["destination"]["device_id"]
                      else ""))
    for k, v in row["details"].items():
        click.echo(f"  {k:15s} {v}")
    if row["evidence"]:
        click.echo(f"  {'packets':15s} " + ", ".join(str(e["packet"]) for e in row["evidence"]))
    if row["closed_reason"]:
        click.echo(f"  {'closed':15s} {row['closed_at']} ({row['closed_reason']})")


@alerts_group.command("update")
@click.argument("alert_ids", type=int, nargs=-1, required=True)
@db_option
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--learn", is_flag=True, help="Close and add the alert's traffic to the baseline.")
@click.option("--mute", is_flag=True, help="Close without learning.")
def alerts_update(alert_ids: tuple[int, ...], db: str | None, status: str | None, learn: bool,
                  mute: bool) -> None:
    """Change status, learn or mute one or more alerts."""
    if sum((status is not None, learn, mute)) != 1:
        _fail("give exactly one of --status, --learn, --mute")
    with sessions(open_engine(db)).begin() as s:
        for alert_id in alert_ids:
            alert = s.get(Alert, alert_id)
            if alert is None:
                _fail(f"no alert with id {alert_id} (nothing was changed)")
            assert alert is not None
            if learn:
                added = lifecycle.learn(s, alert)
                click.echo(f"alert {alert_id}: learned ({added} baseline entr{'y' if added == 1 else 'ies'}"
                           " added), closed")
            elif mute:
                lifecycle.mute(alert)
                click.echo(f"alert {alert_id}: muted, closed")
            else:
                lifecycle.set_status(alert, status or "new", at=clock.now().replace(tzinfo=None))
                click.echo(f"alert {alert_id}: {status}")


@alerts_group.command("pcap")
@click.argument("alert_id", type=int)
@db_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True)
def alerts_pcap(alert_id: int, db: str | None, output: str) -> None:
    """Write the packets behind an alert to a pcap file."""
    with sessions(open_engine(db))() as s:
        alert = s.get(Alert, alert_id)
        if alert is None:
            _fail(f"no alert with id {alert_id}")
        try:
            with open(output, "wb") as out:
                n = write_excerpt(s, alert, out)  # type: ignore[arg-type]
        except ExcerptError as e:
            Path(output).unlink(missing_ok=True)
            _fail(str(e))
    click.echo(f"{output}: {n} packet{'s' if n != 1 else ''}")


# -- learning ---------------------------------------------------------------------------------


@click.group("learning")
def learning_group() -> None:
    """The learning period that builds the baseline."""


@learning_group.command("status")
@db_option
def learning_status(db: str | None) -> None:
    """Whether the sensor is learning, since when, and how big the baseline is."""
    with sessions(open_engine(db))() as s:
        state = learning.current(s)
        entries = dict(s.execute(select(BaselineEntry.kind, func.count()).group_by(BaselineEntry.kind)).all())
    if state is None:
        click.echo("learning: not started (the first analysis starts it)")
    elif state.ended_at is None:
        click.echo(f"learning since {iso(state.started_at)}; ends {iso(state.ends_at) or 'when quiet'}"
                   f" or after {state.quiet_days} quiet days")
    else:
        click.echo(f"monitoring since {iso(state.ended_at)} (learning {iso(state.started_at)} → "
                   f"{iso(state.ended_at)}, ended by {state.ended_by})")
    click.echo("baseline: " + (", ".join(f"{n} {k}" for k, n in sorted(entries.items())) or "empty"))


@learning_group.command("stop")
@db_option
def learning_stop(db: str | None) -> None:
    """End learning now: what is analyzed after the newest traffic seen is monitored."""
    with sessions(open_engine(db)).begin() as s:
        newest = s.scalar(select(func.max(Device.last_seen)))
        at = newest or clock.now().replace(tzinfo=None)
        before = learning.current(s)
        if before is not None and before.ended_at is not None and before.ended_at <= at:
            click.echo(f"learning had already ended at {iso(before.ended_at)} ({before.ended_by})")
            return
        state = learning.stop(s, at)
        click.echo(f"learning stopped at {iso(state.ended_at)}; monitoring from there on")


# -- indicators --------------------------------------------------------------------------------


@click.group("indicators")
def indicators_group() -> None:
    """Indicators of compromise (malicious IPs, networks and domains)."""


@indicators_group.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@db_option
def indicators_import(files: tuple[str, ...], db: str | None) -> None:
    """Import plain lists, CSV files or STIX 2.1 bundles; bad lines are reported and skipped."""
    problems = 0
    with sessions(open_engine(db)).begin() as s:
        for f in files:
            report = indicators.import_file(s, f)
            for p in report.problems:
                click.echo(f"tapwatch: warning: {p}", err=True)
            problems += len(report.problems)
            click.echo(f"{f}: {report.imported} indicator{'s' if report.imported != 1 else ''}")
        total = s.scalar(select(func.count(Indicator.id)))
    click.echo(f"{total} indicators in the database; applied to everything analyzed from now on")
    if problems:
        sys.exit(1)


@indicators_group.command("list")
@db_option
def indicators_list(db: str | None) -> None:
    with sessions(open_engine(db))() as s:
        for i in s.scalars(select(Indicator).order_by(Indicator.kind, Indicator.value)):
            click.echo(f"{i.kind:6s} {i.value}" + (f"  ({i.description})" if i.description else ""))


# -- exclusions --------------------------------------------------------------------------------


@click.group("exclusions")
def exclusions_group() -> None:
    """Exclusion rules (maintenance windows): matching alerts are not stored."""


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return dt.replace(tzinfo=None) if dt.tzinfo is None else dt.astimezone(tz=None).replace(tzinfo=None)


@exclusions_group.command("add")
@db_option
@click.option("--name", required=True)
@click.option("--from", "start", help="Window start (ISO 8601, capture time, UTC).")
@click.option("--to", "end", help="Window end.")
@click.option("--address", help="IP, MAC or CIDR subnet on either side of the alert.")
@click.option("--type", "type_", help="Alert type id.")
@click.option("--sensor")
def exclusions_add(db: str | None, name: str, start: str | None, end: str | None, address: str | None,
                   type_: str | None, sensor: str | None) -> None:
    from tapwatch.detect.catalog import catalog

    if type_ and type_ not in catalog():
        _fail(f"unknown alert type {type_!r}")
    if address and "/" in address:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            _fail(f"{address!r} is not a subnet")
    if not any((start, end, address, type_, sensor)):
        _fail("an exclusion needs at least one of --from, --to, --address, --type, --sensor")
    with sessions(open_engine(db)).begin() as s:
        rule = Exclusion(name=name, starts_at=_when(start), ends_at=_when(end), address=address,
                         alert_type=type_, sensor=sensor, created_at=clock.now().replace(tzinfo=None))
        s.add(rule)
        s.flush()
        click.echo(f"exclusion {rule.id} added")


@exclusions_group.command("list")
@db_option
def exclusions_list(db: str | None) -> None:
    with sessions(open_engine(db))() as s:
        for r in s.scalars(select(Exclusion).order_by(Exclusion.id)):
            parts = [f"{k}={v}" for k, v in (("from", iso(r.starts_at)), ("to", iso(r.ends_at)),
                                             ("address", r.address), ("type", r.alert_type),
                                             ("sensor", r.sensor)) if v]
            click.echo(f"{r.id:4d} {r.name}: {' '.join(parts)}{'' if r.enabled else ' (disabled)'}")


@exclusions_group.command("remove")
@click.argument("rule_id", type=int)
@db_option
def exclusions_remove(rule_id: int, db: str | None) -> None:
    with sessions(open_engine(db)).begin() as s:
        rule = s.get(Exclusion, rule_id)
        if rule is None:
            _fail(f"no exclusion with id {rule_id}")
        s.delete(rule)
    click.echo(f"exclusion {rule_id} removed")


COMMANDS = (alerts_group, learning_group, indicators_group, exclusions_group)
