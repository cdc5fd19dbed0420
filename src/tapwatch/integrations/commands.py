"""Command-line groups of the integrations: forwarding, export, cmdb, metrics (and Zeek in analyze)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tapwatch.store.alert_models import SEVERITIES
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.integration_models import ACTIONS, ForwardingRule
from tapwatch.terminal import print_table

db_option = click.option(
    "--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH|URL",
    help="Inventory database (default ./tapwatch.db; env TAPWATCH_DB).",
)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"tapwatch: error: {message}", err=True)
    sys.exit(code)


# -- zeek (called by `tapwatch analyze --zeek-logs DIR`) ----------------------------------------


def analyze_zeek_logs(directory: str, db: str | None, sensor: str | None) -> None:
    """Ingest Zeek logs into the inventory and print what happened; exit 2 if nothing was readable."""
    from tapwatch.integrations import zeek

    engine = open_engine(db)
    with sessions(engine).begin() as s:
        report = zeek.ingest(s, directory, sensor or socket.gethostname())
    for p in report.problems:
        click.echo(f"tapwatch: warning: {p}: line skipped", err=True)
    for p in report.skipped:
        click.echo(f"tapwatch: note: {p}", err=True)
    click.echo(report.summary())
    if not report.files and not any("imported before" in p for p in report.skipped):
        _fail(f"{directory}: no Zeek logs tapwatch reads (conn, dhcp, dns, http, known_hosts, "
              f"known_services, software, cip_identity, bacnet_discovery)")


# -- forwarding ---------------------------------------------------------------------------------


@click.group()
def forwarding() -> None:
    """Forward new alerts to syslog (CEF/LEEF), webhooks and e-mail."""


@forwarding.command("add")
@click.argument("name")
@db_option
@click.option("--action", type=click.Choice(ACTIONS), required=True)
@click.option("--min-severity", type=click.Choice(SEVERITIES), default="low", show_default=True)
@click.option("--engine", "engines", multiple=True, help="Only alerts of this engine (repeatable).")
@click.option("--protocol", "protocols", multiple=True, help="Only alerts on this protocol (repeatable).")
@click.option("--host", help="syslog receiver or SMTP relay.")
@click.option("--port", type=int, help="Default: syslog 514 (TLS 6514), SMTP 25 (TLS 465).")
@click.option("--transport", type=click.Choice(["udp", "tcp", "tls"]), default="udp", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["cef", "leef", "json"]), default="cef", show_default=True)
@click.option("--ca-file", type=click.Path(exists=True), help="TLS: trust this CA (PEM).")
@click.option("--insecure", is_flag=True, help="TLS: do not verify the receiver's certificate.")
@click.option("--url", help="Webhook URL.")
@click.option("--secret", help="Webhook HMAC secret (default: generated and printed once).")
@click.option("--retries", type=click.IntRange(0, 10), default=3, show_default=True)
@click.option("--backoff", type=click.FloatRange(0, 300), default=1.0, show_default=True,
              help="Seconds before the first webhook retry; doubled each time.")
@click.option("--security", type=click.Choice(["none", "starttls", "tls"]), default="none",
              show_default=True, help="SMTP connection security.")
@click.option("--username", help="SMTP login.")
@click.option("--password", envvar="TAPWATCH_SMTP_PASSWORD",
              help="SMTP password (env TAPWATCH_SMTP_PASSWORD).")
@click.option("--sender", help="E-mail From address.")
@click.option("--to", "recipients", multiple=True, help="E-mail recipient (repeatable).")
@click.option("--disabled", is_flag=True, help="Create the rule switched off.")
def forwarding_add(name: str, db: str | None, action: str, min_severity: str, engines: tuple[str, ...],
                   protocols: tuple[str, ...], fmt: str, insecure: bool, recipients: tuple[str, ...],
                   disabled: bool, **settings: Any) -> None:
    """Add a rule; it applies to alerts raised from now on."""
    from tapwatch.integrations import forwarding as fw

    if action == "syslog":
        keys = ("host", "port", "transport", "ca_file")
        config = {k: settings[k] for k in keys} | {"format": fmt}
        if insecure:
            config["verify"] = False
    elif action == "webhook":
        config = {k: settings[k] for k in ("url", "secret", "retries", "backoff")}
    else:
        config = {k: settings[k] for k in ("host", "port", "security", "username", "password", "sender",
                                           "ca_file")} | {"to": list(recipients)}
        if insecure:
            config["verify"] = False
    engine = open_engine(db)
    try:
        with sessions(engine).begin() as s:
            rule = fw.create_rule(s, name=name, action=action, config=config, min_severity=min_severity,
                                  engines=list(engines), protocols=list(protocols), enabled=not disabled,
                                  actor="cli")
            rule_id, secret = rule.id, (rule.config or {}).get("secret")
    except fw.RuleError as e:
        _fail(str(e))
        return
    click.echo(f"forwarding rule {rule_id} ({name}) added")
    if action == "webhook" and not settings.get("secret"):
        click.echo(f"webhook secret (shown once): {secret}")


@forwarding.command("list")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def forwarding_list(db: str | None, fmt: str) -> None:
    """List rules with their progress (secrets are not shown)."""
    from tapwatch.integrations import forwarding as fw

    with sessions(open_engine(db))() as s:
        rows = [fw.rule_json(r, fw.backlog(s, r)) for r in fw.list_rules(s)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} forwarding rules", title_justify="left")
    for col in ("ID", "Name", "On", "Action", "Target", "Conditions", "Sent", "Waiting", "Last error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        c = r["config"]
        target = (c.get("url") or f"{c.get('transport', 'smtp')}://{c.get('host')}:{c.get('port')}"
                  + (f" {c['format']}" if c.get("format") else "")
                  + (f" to {', '.join(c['to'])}" if c.get("to") else ""))
        cond = " ".join([f">={r['min_severity']}"] + [f"engine:{e}" for e in r["engines"]]
                        + [f"protocol:{p}" for p in r["protocols"]])
        table.add_row(str(r["id"]), r["name"], "yes" if r["enabled"] else "no", r["action"], target, cond,
                      str(r["delivered"]), str(r["backlog"]), r["last_error"] or "")
    print_table(table)


@forwarding.command("remove")
@click.argument("rule_id", type=int)
@db_option
def forwarding_remove(rule_id: int, db: str | None) -> None:
    """Remove a rule."""
    from tapwatch.integrations import forwarding as fw

    with sessions(open_engine(db)).begin() as s:
        if not fw.remove_rule(s, rule_id, "cli"):
            _fail(f"no forwarding rule with id {rule_id}")
    click.echo(f"forwarding rule {rule_id} removed")


@forwarding.command("test")
@click.argument("rule_id", type=int)
@db_option
def forwarding_test(rule_id: int, db: str | None) -> None:
    """Send a test message through a rule (its cursor does not move)."""
    from tapwatch.integrations import forwarding as fw

    with sessions(open_engine(db)).begin() as s:
        rule = s.get(ForwardingRule, rule_id)
        if rule is None:
            _fail(f"no forwarding rule with id {rule_id}")
            return
        error = fw.send_test(s, rule, "cli")
        name = rule.name
    if error:
        _fail(f"rule {rule_id} ({name}): test message not delivered: {error}", 1)
    click.echo(f"rule {rule_id} ({name}): test message delivered")


@forwarding.command("run")
@db_option
@click.option("--every", type=click.FloatRange(1), default=None, metavar="SECONDS",
              help="Keep running, one pass every SECONDS (otherwise one pass).")
def forwarding_run(db: str | None, every: float | None) -> None:
    """Forward alerts raised since each rule's last run (exit 1 if a rule failed)."""
    from tapwatch.integrations import forwarding as fw

    engine = open_engine(db)
    while True:
        with sessions(engine).begin() as s:
            report = fw.forward_new_alerts(s)
        click.echo(report.summary())
        if every is None:
            sys.exit(1 if report.failed else 0)
        time.sleep(every)


# -- export -------------------------------------------------------------------------------------


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@click.group()
def export() -> None:
    """Export inventory, alerts, recommendations and vulnerabilities for other tools."""


@export.command("inventory")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "netbox", "stix"]), default="csv",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File to write (default stdout).")
@click.option("--site", default="tapwatch", show_default=True, help="NetBox: site of devices without one.")
def export_inventory(db: str | None, fmt: str, output: str | None, site: str) -> None:
    """Devices with stable columns (EDR/CMDB), as a NetBox device import, or as STIX 2.1."""
    from tapwatch.integrations import exports, netbox, stix

    with sessions(open_engine(db))() as s:
        rows = exports.inventory_rows(s)
    if fmt == "csv":
        _write(exports.to_csv(rows, exports.INVENTORY_COLUMNS), output)
    elif fmt == "json":
        _write(exports.to_json(rows), output)
    elif fmt == "netbox":
        _write(exports.to_csv(netbox.rows(rows, site), netbox.COLUMNS), output)
    else:
        _write(exports.to_json(stix.inventory_bundle(rows)), output)


@export.command("alerts")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "stix"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False))
def export_alerts(db: str | None, fmt: str, output: str | None) -> None:
    """Alerts; as STIX 2.1, the alerts that name an indicator become indicators and sightings."""
    from tapwatch.integrations import exports, stix

    with sessions(open_engine(db))() as s:
        rows = exports.alert_rows(s)
    if fmt == "csv":
        _write(exports.to_csv(rows, exports.ALERT_COLUMNS), output)
    elif fmt == "json":
        _write(exports.to_json(rows), output)
    else:
        bundle, without = stix.alerts_bundle(rows)
        if without:
            click.echo(f"tapwatch: note: {without} alerts name no indicator and are not in the bundle",
                       err=True)
        _write(exports.to_json(bundle), output)


@export.command("recommendations")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False))
def export_recommendations(db: str | None, fmt: str, output: str | None) -> None:
    """Recommendations: JSON as evaluated; CSV one row per recommendation and unhealthy device."""
    from tapwatch.integrations import exports
    from tapwatch.vulns import findings, matcher, recommendations

    with matcher.refreshed(open_engine(db)) as s:
        results = recommendations.evaluate(findings.gather(s))
    if fmt == "json":
        _write(exports.to_json(results), output)
    else:
        _write(exports.to_csv(exports.recommendation_rows(results), exports.RECOMMENDATION_COLUMNS), output)


@export.command("vulnerabilities")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False))
def export_vulnerabilities(db: str | None, fmt: str, output: str | None) -> None:
    """Each device's CVEs (the columns of `tapwatch vulns list --format csv`)."""
    from tapwatch.integrations import exports
    from tapwatch.vulns import matcher
    from tapwatch.vulns.commands import VULN_COLUMNS

    with matcher.refreshed(open_engine(db)) as s:
        rows = matcher.list_matches(s)
    _write(exports.to_json(rows) if fmt == "json" else exports.to_csv(rows, VULN_COLUMNS), output)


# -- cmdb -----------------------------------------------------------------------------------------


@click.group()
def cmdb() -> None:
    """Enrich devices from a CMDB or a network source (owner, location, business function)."""


@cmdb.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@db_option
@click.option("--format", "fmt", type=click.Choice(["cmdb-csv", "meraki-csv"]), default="cmdb-csv",
              show_default=True)
def cmdb_import(path: str, db: str | None, fmt: str) -> None:
    """Import a CMDB CSV or a Meraki client list; malformed rows are reported and skipped."""
    from tapwatch.integrations import cmdb as cmdb_mod

    with sessions(open_engine(db)).begin() as s:
        result = cmdb_mod.import_file(s, path, fmt, "cli")
    if result.error:
        _fail(result.error)
    for p in result.problems:
        click.echo(f"tapwatch: warning: {p}: row skipped", err=True)
    click.echo(f"{path}: {result.imported} records imported, {result.matched} matched to devices, "
               f"{result.locations_set} device locations set, {len(result.problems)} malformed rows skipped")


@cmdb.command("list")
@db_option
def cmdb_list(db: str | None) -> None:
    """The imported records as JSON (with the device each one is linked to)."""
    from tapwatch.integrations import cmdb as cmdb_mod

    with sessions(open_engine(db)).begin() as s:
        cmdb_mod.relink(s)
        click.echo(json.dumps(cmdb_mod.records(s), indent=2))


# -- metrics --------------------------------------------------------------------------------------


@click.command("metrics")
@db_option
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Serve these metrics on this port (loopback), read at each scrape, instead of printing.")
def metrics_command(db: str | None, port: int | None) -> None:
    """Print the inventory's Prometheus metrics, or serve them."""
    from tapwatch.integrations import metrics

    if port is not None:
        server = metrics.serve(metrics.database_registry(sessions(open_engine(db))), port)
        click.echo(f"metrics on http://127.0.0.1:{port}/metrics (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.shutdown()
        return
    with sessions(open_engine(db))() as s:
        click.echo(metrics.render_database(s).decode("utf-8"), nl=False)


COMMANDS = (forwarding, export, cmdb, metrics_command)
